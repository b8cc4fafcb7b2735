"""Presence pages, sans-I/O: one node's page and the merge of several nodes' pages give, page by
page, every member of the cluster once, in connection ID order, whatever the limits and sizes."""

from __future__ import annotations

import random
import time

import pytest

from runtime.core.channels import ChannelTable, Member, member
from runtime.core.presence import Page, local_page, merge_pages
from runtime.wire.presence import MAX_PAGE_BYTES, entry_size


def members_of(ids: list[str], info: bytes = b"") -> dict[str, Member]:
    return {connection_id: member(info, False) for connection_id in ids}


def test_a_page_is_the_first_ids_after_the_cursor() -> None:
    members = members_of([f"id{n:03d}" for n in range(50)][::-1])
    page = local_page(members, "", 10)
    assert page.count == 50
    assert [entry[0] for entry in page.members] == [f"id{n:03d}" for n in range(10)]
    assert page.more and page.next == "id009"
    page = local_page(members, "id045", 10)
    assert [entry[0] for entry in page.members] == ["id046", "id047", "id048", "id049"]
    assert not page.more and page.next is None
    assert local_page(members, "id049", 10) == Page(50)
    assert local_page(members, "", 0) == Page(50)  # the count alone
    assert local_page({}, "", 10) == Page(0)
    exact = local_page(members, "id039", 10)  # exactly ten left: no more
    assert len(exact.members) == 10 and not exact.more


def test_a_page_carries_user_info_as_kept() -> None:
    table = ChannelTable(10, 100)
    table.subscribe("b", ["room"], b'{"name":"Bo"}')
    table.subscribe("a", ["room"])
    page = local_page(table.members("room"), "", 5)
    assert page.members == (("a", b""), ("b", b'{"name":"Bo"}'))


def test_a_page_ends_before_its_bytes_pass_the_bound_but_never_empty() -> None:
    info = b'"' + b"x" * 1000 + b'"'
    members = members_of([f"id{n:02d}" for n in range(20)], info)
    size = entry_size(("id00", info))
    page = local_page(members, "", 20, max_bytes=5 * size)
    assert len(page.members) == 5 and page.more and page.next == "id04"
    page = local_page(members, "", 20, max_bytes=10)
    assert len(page.members) == 1 and page.more


def pages_through(nodes: list[dict[str, Member]], limit: int, max_bytes: int) -> list[str]:
    """Every member, by following `next` through merged pages as a client would."""
    seen: list[str] = []
    after = ""
    for _ in range(10_000):
        merged = merge_pages(
            [local_page(node, after, limit, max_bytes) for node in nodes], limit, max_bytes
        )
        assert merged.count == sum(map(len, nodes))
        assert 0 < len(merged.members) <= limit or not merged.more
        seen += [entry[0] for entry in merged.members]
        if merged.next is None:
            return seen
        after = merged.next
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("seed", range(20))
def test_merged_pages_list_every_member_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [
        members_of(
            [f"{rng.getrandbits(40):010x}" for _ in range(rng.choice((0, 1, 7, 60)))],
            rng.choice((b"", b'{"n":1}', b'"' + b"y" * 300 + b'"')),
        )
        for _ in range(rng.randint(1, 4))
    ]
    every = sorted(connection_id for node in nodes for connection_id in node)
    limit = rng.choice((1, 2, 5, 10, 100))
    max_bytes = rng.choice((MAX_PAGE_BYTES, 1000, 1))
    assert pages_through(nodes, limit, max_bytes) == every


def test_a_node_with_more_bounds_the_merged_page() -> None:
    # Node one's page stops at "b" (limit 2, bytes); node two's members past it must wait.
    one = Page(5, (("a", b""), ("b", b"")), True)
    two = Page(3, (("c", b""), ("d", b""), ("e", b"")), False)
    merged = merge_pages([one, two], 10)
    assert merged == Page(8, (("a", b""), ("b", b"")), True)
    assert merged.next == "b"
    assert merge_pages([one, two], 0) == Page(8)


def test_a_page_of_a_large_channel_sorts_no_more_than_it_needs() -> None:
    members = members_of([f"{n * 7919 % 100_003:06d}" for n in range(100_000)])
    started = time.perf_counter()
    page = local_page(members, "050000", 100)
    elapsed = time.perf_counter() - started
    assert [entry[0] for entry in page.members][:2] == ["050001", "050002"]
    assert len(page.members) == 100 and page.more
    print(f"a page of 100 out of 100,000 members: {elapsed * 1000:.1f} ms")
