"""Presence, sans-I/O: one node's page of a channel's members, and the merge of every node's
pages into the cluster's answer.

Members are listed by connection ID, so a page is "the first `limit` IDs after a cursor" on each
node, and the cluster's page is the first `limit` of their union: stable while membership does
not change, whichever node answers, with no state kept between pages. A node picks its page with
`heapq.nsmallest` (about n log limit, never a sort of the whole channel), and a count is `len()`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from runtime.core.channels import Member
from runtime.wire.connection_id import NodeAddress
from runtime.wire.presence import MAX_PAGE_BYTES, MemberEntry, entry_size


class PresenceBusy(Exception):
    """Too many presence asks are waiting for other nodes: the query is refused (retry later)."""


@dataclass(frozen=True, slots=True)
class Page:
    """A channel's `count` of members (on one node, or the cluster), and `members`, sorted by
    connection ID; `more` when members past the last one listed exist."""

    count: int
    members: tuple[MemberEntry, ...] = ()
    more: bool = False

    @property
    def next(self) -> str | None:
        """The cursor of the next page: the last member's ID, while more remain."""
        return self.members[-1][0] if self.more and self.members else None


@dataclass(frozen=True, slots=True)
class PresenceResult:
    """A cluster's answer: its page, and the nodes that did not answer in time (when any did
    not, the count and the list lack their members)."""

    page: Page
    missing: tuple[NodeAddress, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def local_page(
    members: Mapping[str, Member], after: str, limit: int, max_bytes: int = MAX_PAGE_BYTES
) -> Page:
    """This node's page of `members` (a channel's, read without awaiting): the first `limit` IDs
    greater than `after` ("": from the start), cut short if their JSON would pass `max_bytes`
    (never before the first). `limit` 0 is the count alone."""
    if limit <= 0 or not members:
        return Page(len(members))
    ids: Iterable[str] = members if not after else (key for key in members if key > after)
    chosen = heapq.nsmallest(limit + 1, ids)
    more = len(chosen) > limit
    entries = [(connection_id, members[connection_id].user_info) for connection_id in chosen]
    kept, cut = _within(entries[:limit], max_bytes)
    return Page(len(members), kept, more or cut)


def merge_pages(pages: Sequence[Page], limit: int, max_bytes: int = MAX_PAGE_BYTES) -> Page:
    """The cluster's page from every node's page for the same cursor and limit: counts add up;
    the members are the first `limit` of the union, but none past the last member of a page
    that had more (its next members, unseen, would come first)."""
    count = sum(page.count for page in pages)
    if limit <= 0:
        return Page(count)
    cuts = [page.members[-1][0] for page in pages if page.more and page.members]
    cut = min(cuts) if cuts else None
    union = heapq.merge(*(page.members for page in pages))
    entries: list[MemberEntry] = []
    more = cut is not None
    for entry in union:
        if len(entries) == limit or (cut is not None and entry[0] > cut):
            more = True
            break
        entries.append(entry)
    kept, short = _within(entries, max_bytes)
    return Page(count, kept, more or short)


def _within(entries: list[MemberEntry], max_bytes: int) -> tuple[tuple[MemberEntry, ...], bool]:
    """The leading entries whose JSON fits `max_bytes` (at least one), and whether any were
    left out."""
    size = 0
    for position, entry in enumerate(entries):
        size += entry_size(entry)
        if size > max_bytes and position > 0:
            return tuple(entries[:position]), True
    return tuple(entries), False
