"""Presence on real nodes: three in-process nodes over real UDP on 127.0.0.1 (the channel tests'
cluster, each node behind a faulty proxy), real WebSocket clients subscribed by /commands, and
the presence queries over HTTP on the command listener.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from runtime.node.service import build_service
from tests.conftest import TOKEN, RunningNode, StartNode, node_settings
from tests.node.test_channels import (
    Cluster,
    clients_on,
    cluster,
    commands,
    subscribe,
    wait_until,
)
from tests.origin_server import RecordingOrigin

__all__ = ["cluster"]  # the fixture, shared with the channel tests


async def get(
    node: RunningNode, path: str, token: str | None = TOKEN, method: str = "GET"
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, node.listener_url + path, headers=headers) as response,
    ):
        return response.status, json.loads(await response.read())


def known_everywhere(cluster: Cluster, *channels: str) -> bool:
    """Every node knows which peers hold `channels` (news of a subscribe reaches the nodes that
    did not carry it out a moment after its command is answered)."""
    return all(
        node.node.channels.interest.synced(peer.node.address)
        and (
            peer.node.channels.table.count(channel) == 0
            or channel in node.node.channels.interest.channels_of(peer.node.address)
        )
        for node in cluster.nodes
        for peer in cluster.nodes
        if peer is not node
        for channel in channels
    )


async def count(node: RunningNode, channel: str) -> dict[str, Any]:
    status, body = await get(node, f"/channels/{quote(channel, safe='')}")
    assert status == 200, body
    return body


async def all_members(node: RunningNode, channel: str, limit: int) -> list[dict[str, Any]]:
    """Every member, following `next` page by page; each page within its limit."""
    members: list[dict[str, Any]] = []
    after = ""
    for _ in range(1000):
        status, body = await get(
            node, f"/channels/{quote(channel, safe='')}/members?limit={limit}&after={after}"
        )
        assert status == 200, body
        assert len(body["members"]) <= limit and "partial" not in body
        members += body["members"]
        if body["next"] is None:
            return members
        assert body["next"] == body["members"][-1]["connectionId"]
        after = body["next"]
    raise AssertionError("paging did not end")


async def test_count_and_member_pages_across_three_nodes(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    groups = [await clients_on(node, cluster.origin, 4) for node in (a, b, c)]
    ids = [connection_id for _clients, group_ids in groups for connection_id in group_ids]
    named = {connection_id: {"name": f"user{n}"} for n, connection_id in enumerate(ids[::2])}
    body = await commands(
        a,
        *(subscribe([i], "room:1", userInfo=info) for i, info in named.items()),
        subscribe(ids[1::2], "room:1"),
        subscribe(ids[4:6], "user/7"),  # node b's only
    )
    assert body["rejected"] == []
    await wait_until(lambda: known_everywhere(cluster, "room:1", "user/7"))
    for node in cluster.nodes:
        assert await count(node, "room:1") == {"channel": "room:1", "count": 12}
        for limit in (1, 5, 12, 1000):
            members = await all_members(node, "room:1", limit)
            assert [m["connectionId"] for m in members] == sorted(ids)
            assert {m["connectionId"]: m.get("userInfo") for m in members} == {
                i: named.get(i) for i in ids
            }
            assert all(("userInfo" in m) == (m["connectionId"] in named) for m in members)
    # A "/" in a name travels as %2F; only the node holding the channel is asked.
    asked = b.node.presence.counters["presenceAsksReceived"]
    c_asked = c.node.presence.counters["presenceAsksReceived"]
    assert await count(a, "user/7") == {"channel": "user/7", "count": 2}
    assert [m["connectionId"] for m in await all_members(a, "user/7", 10)] == sorted(ids[4:6])
    assert b.node.presence.counters["presenceAsksReceived"] == asked + 2
    assert c.node.presence.counters["presenceAsksReceived"] == c_asked
    # A channel nobody is in: no error.
    assert await count(c, "nobody") == {"channel": "nobody", "count": 0}
    status, body = await get(c, "/channels/nobody/members")
    assert (status, body) == (200, {"channel": "nobody", "members": [], "next": None})
    # Members leave: by unsubscribe, and by closing.
    await commands(c, {"action": "unsubscribe", "connectionIds": ids[:3], "channels": ["room:1"]})
    await groups[2][0][0].close()
    await wait_until(lambda: c.node.channels.table.count("room:1") == 3)
    assert (await count(b, "room:1"))["count"] == 8
    listed = [m["connectionId"] for m in await all_members(b, "room:1", 3)]
    assert listed == sorted(ids[3:8] + ids[9:])
    for clients, _ids in groups:
        for client in clients:
            await client.close()


async def test_answers_are_whole_through_loss_duplication_and_reordering(
    cluster: Cluster,
) -> None:
    groups = [await clients_on(node, cluster.origin, 5) for node in cluster.nodes]
    ids = [connection_id for _clients, group_ids in groups for connection_id in group_ids]
    await commands(cluster.nodes[0], subscribe(ids, "busy", userInfo=[1, "two"]))
    await wait_until(lambda: known_everywhere(cluster, "busy"))
    cluster.faults(loss=0.2, duplicate=0.2, reorder=0.2)
    for node in cluster.nodes:
        assert await count(node, "busy") == {"channel": "busy", "count": 15}
        members = await all_members(node, "busy", 4)
        assert members == [{"connectionId": i, "userInfo": [1, "two"]} for i in sorted(ids)]
    assert sum(proxy.counts["lost"] for proxy in cluster.proxies) > 0
    cluster.faults(loss=0, duplicate=0, reorder=0)
    for clients, _ids in groups:
        for client in clients:
            await client.close()


async def test_a_silenced_peer_drops_its_members_within_the_liveness_timeout(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.nodes
    groups = [await clients_on(node, cluster.origin, 2) for node in (a, b, c)]
    ids = [connection_id for _clients, group_ids in groups for connection_id in group_ids]
    await commands(a, subscribe(ids, "room"))
    await wait_until(lambda: known_everywhere(cluster, "room"))
    assert (await count(a, "room"))["count"] == 6
    # c's peer link stops dead, as if the process were killed: no goodbye, no news.
    c_address = str(c.node.address)
    assert c.node.cluster is not None
    await c.node.cluster.stop()
    cluster.proxies[2].loss = 1.0
    down_after = a.node.settings.peer_down_seconds
    started = time.monotonic()
    first = await count(a, "room")  # asked before a knows: c cannot answer
    assert time.monotonic() - started < down_after + 1.5
    assert first == {"channel": "room", "count": 4, "partial": True, "missingNodes": [c_address]}
    await wait_until(lambda: c.node.address not in a.node.cluster.peers(), down_after + 3)  # type: ignore[union-attr]
    print(f"c down at a after {time.monotonic() - started:.2f} s (down after {down_after} s)")
    started = time.monotonic()
    assert await count(a, "room") == {"channel": "room", "count": 4}  # c is not asked now
    assert time.monotonic() - started < 0.5
    members = await all_members(b, "room", 1)
    assert [m["connectionId"] for m in members] == sorted(ids[:4])
    for clients, _ids in groups:
        for client in clients:
            await client.close()


async def test_a_peer_that_does_not_answer_in_time_is_named_missing(cluster: Cluster) -> None:
    """The answer does not wait past the bound for a peer that is up but silent: it comes
    without that peer's members, partial, naming it."""
    a, _b, c = cluster.nodes
    groups = [await clients_on(node, cluster.origin, 1) for node in (a, c)]
    await commands(a, subscribe(groups[0][1] + groups[1][1], "room"))
    await wait_until(lambda: known_everywhere(cluster, "room"))
    a.node.presence.peer_timeout = 0.2  # shorter than the liveness timeout: c is still up
    cluster.proxies[2].loss = 1.0
    started = time.monotonic()
    status, body = await get(a, "/channels/room/members?limit=10")
    elapsed = time.monotonic() - started
    assert status == 200 and 0.2 <= elapsed < 1.5, elapsed
    assert body == {
        "channel": "room",
        "members": [{"connectionId": groups[0][1][0]}],
        "next": None,
        "partial": True,
        "missingNodes": [str(c.node.address)],
    }
    assert a.node.presence.counters["presencePartial"] == 1
    cluster.proxies[2].loss = 0.0
    await wait_until(lambda: a.node.presence.stats()["presencePending"] == 0)
    for clients, _ids in groups:
        for client in clients:
            await client.close()


async def test_a_count_over_100000_members_answers_fast(origin: RecordingOrigin) -> None:
    """100,000 members of one channel, put straight into the node's table (100,000 sockets are
    beyond a test machine); the count and a page go through HTTP as any query does."""
    settings = node_settings(origin_url=origin.url)
    service = await build_service(settings)
    await service.start()
    node = RunningNode(service, origin)
    try:
        table = service.node.channels.table
        for n in range(100_000):
            table.subscribe(f"member{n:06d}", ["crowd"], b'{"n":1}' if n % 2 else b"")
        await count(node, "crowd")  # a first request opens its connection
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            body = await count(node, "crowd")
            timings.append(time.perf_counter() - started)
            assert body == {"channel": "crowd", "count": 100_000}
        started = time.perf_counter()
        status, page = await get(node, "/channels/crowd/members?limit=1000&after=member049999")
        page_time = time.perf_counter() - started
        assert status == 200
        assert page["members"][0] == {"connectionId": "member050000"}
        assert page["members"][1] == {"connectionId": "member050001", "userInfo": {"n": 1}}
        assert page["next"] == "member050999"
        print(
            f"count of 100,000 members over HTTP: best {min(timings) * 1000:.1f} ms, "
            f"worst {max(timings) * 1000:.1f} ms; a page of 1000: {page_time * 1000:.1f} ms"
        )
        assert min(timings) < 0.05
    finally:
        await service.stop()


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/channels/bad%20name", 400, "holds ' '"),
        ("/channels/" + "x" * 129, 400, "1 to 128 characters"),
        ("/channels/", 400, "1 to 128 characters"),
        ("/channels/room?limit=5", 400, "takes none"),
        ("/channels/room/members?limit=0", 400, "from 1 to 1000"),
        ("/channels/room/members?limit=1001", 400, "from 1 to 1000"),
        ("/channels/room/members?limit=ten", 400, "from 1 to 1000"),
        ("/channels/room/members?limit=" + "9" * 5000, 400, "from 1 to 1000"),
        ("/channels/room/members?limit=-1", 400, "from 1 to 1000"),
        ("/channels/room/members?after=not%20an%20id", 400, "after must be a connection ID"),
        ("/channels/room/members?after=" + "a" * 200, 400, "after must be a connection ID"),
        ("/channels/room/members?page=2", 400, "unknown query parameter 'page'"),
        ("/channels/room/members?limit=1&limit=2", 400, "given twice"),
        ("/channels/room/members?" + "&".join(f"x{n}=1" for n in range(20)), 400, "too many"),
        ("/channels/room/other", 404, "no such path"),
        ("/channels", 404, "no such path"),
    ],
)
async def test_bad_queries_are_refused_with_the_reason(
    start_node: StartNode, path: str, status: int, error: str
) -> None:
    node = await start_node()
    got, body = await get(node, path)
    assert got == status, body
    assert error in body["error"]


async def test_presence_takes_the_command_token_and_get_only(start_node: StartNode) -> None:
    node = await start_node()
    assert (await get(node, "/channels/room", token=None))[0] == 401
    assert (await get(node, "/channels/room/members", token="wrong"))[0] == 401
    status, body = await get(node, "/channels/room", method="POST")
    assert status == 405 and "takes GET" in body["error"]
    assert await get(node, "/channels/room") == (200, {"channel": "room", "count": 0})


async def test_presence_answers_beside_the_connections_api(start_node: StartNode) -> None:
    """A channel may be named "@connections": presence paths are matched first."""
    node = await start_node(connections_api="token", stage="prod")
    assert await get(node, "/channels/@connections") == (
        200,
        {"channel": "@connections", "count": 0},
    )
    status, _body = await get(node, "/prod/@connections/abc")
    assert status == 410  # and the @connections API still answers its own paths
