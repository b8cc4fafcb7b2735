"""Presence across the cluster: a channel's member count and member list, from every node that
holds members of it.

A query reads this node's table at once and asks, concurrently, each peer that holds the channel
or has not told its channels yet (a publish goes to the same peers), over the authenticated peer
link: a `PresenceAsk` with a request ID, answered by a `PresenceAnswer` that the command runner
hands back here. Each ask waits at most `peer_timeout` (--peer-down-seconds, the time after which
a silent peer is down anyway); a peer that has not answered by then is left out and named in the
result, which is then partial. A peer that is down is not asked: its members left presence with
it. The pages merge by connection ID (runtime/core/presence.py).

At most `max_pending` asks wait at once; a query that would pass it is refused (PresenceBusy).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Protocol

from runtime.core.channels import ChannelTable, PeerInterest
from runtime.core.presence import Page, PresenceBusy, PresenceResult, local_page, merge_pages
from runtime.logs import LogThrottle
from runtime.wire.commands import PeerCommand
from runtime.wire.connection_id import NodeAddress
from runtime.wire.presence import (
    MAX_PAGE_SIZE,
    PresenceAnswer,
    PresenceAsk,
    is_cursor,
    members_json,
    parse_members,
)

log = logging.getLogger("runtime.presence")

MAX_PENDING_ASKS = 10_000


class ChannelState(Protocol):
    """What presence reads of the node's channels (runtime/node/channels.py's ChannelHub)."""

    @property
    def table(self) -> ChannelTable: ...

    @property
    def interest(self) -> PeerInterest: ...


class PresenceLink(Protocol):
    """The part of the cluster transport asks and answers travel on."""

    def peers(self) -> Sequence[NodeAddress]: ...

    async def forward(self, node: NodeAddress, commands: Sequence[PeerCommand]) -> bool: ...


class Presence:
    """Counts and member pages of channels, over the whole cluster; answers peers' asks."""

    def __init__(
        self,
        channels: ChannelState,
        cluster: PresenceLink | None,
        address: NodeAddress,
        *,
        peer_timeout: float,
        max_pending: int = MAX_PENDING_ASKS,
    ) -> None:
        self.channels = channels
        self.cluster = cluster
        self.address = address
        self.peer_timeout = peer_timeout
        self.max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[PresenceAnswer | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()
        self._throttle = LogThrottle()  # a peer that stops answering times out every query

    # Queries

    async def count(self, channel: str) -> PresenceResult:
        """The channel's member count over the cluster."""
        return await self._query(channel, "", 0)

    async def members(self, channel: str, after: str, limit: int) -> PresenceResult:
        """The first `limit` members (1 to MAX_PAGE_SIZE) by connection ID after `after`
        ("" for the first page); the page's `next` is the cursor of the next one."""
        if not 0 < limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE} (got {limit})")
        if after and not is_cursor(after):
            raise ValueError(f"after must be a connection ID (got {after[:40]!r})")
        return await self._query(channel, after, limit)

    # From peers (the command runner dispatches them here)

    def answer(self, ask: PresenceAsk) -> None:
        """A peer asks what this node holds of a channel: answer to `reply_to`."""
        self.counters["presenceAsksReceived"] += 1
        page = self._local(ask.channel, ask.after, min(ask.limit, MAX_PAGE_SIZE))
        answer = PresenceAnswer(ask.request_id, page.count, members_json(page.members), page.more)
        self._spawn(self._send_answer(ask.reply_to, answer))

    def answer_received(self, answer: PresenceAnswer) -> None:
        """A peer answered; a query that stopped waiting finds nothing here."""
        waiter = self._pending.get(answer.request_id)
        if waiter is None or waiter.done():
            self.counters["presenceLateAnswers"] += 1
            return
        waiter.set_result(answer)

    # Lifecycle and numbers

    async def close(self) -> None:
        """Stop: waiting queries end now (the peers they wait for count as missing)."""
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_result(None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {"presencePending": len(self._pending), **self.counters}

    # Inside

    def _local(self, channel: str, after: str, limit: int) -> Page:
        """This node's page, read in one step (the table changes only between awaits)."""
        table = self.channels.table
        if limit <= 0:
            return Page(table.count(channel))  # a count reads len() alone
        return local_page(table.members(channel), after, limit)

    async def _query(self, channel: str, after: str, limit: int) -> PresenceResult:
        self.counters["presenceQueries"] += 1
        here = self._local(channel, after, limit)
        peers = []
        if self.cluster is not None:
            now = asyncio.get_running_loop().time()
            peers = self.channels.interest.targets(channel, self.cluster.peers(), now)
        if not peers:
            return PresenceResult(merge_pages([here], limit))
        if len(self._pending) + len(peers) > self.max_pending:
            self.counters["presenceRefusedBusy"] += 1
            raise PresenceBusy(
                f"{len(self._pending)} presence asks are waiting for other nodes; retry later"
            )
        waiters: dict[NodeAddress, tuple[int, asyncio.Future[PresenceAnswer | None]]] = {}
        loop = asyncio.get_running_loop()
        for peer in peers:
            ask = PresenceAsk(next(self._ids), self.address, channel, after, limit)
            waiter: asyncio.Future[PresenceAnswer | None] = loop.create_future()
            self._pending[ask.request_id] = waiter
            waiters[peer] = (ask.request_id, waiter)
            self._spawn(self._send_ask(peer, ask, waiter))
        self.counters["presenceAsksSent"] += len(peers)
        try:
            await asyncio.wait(
                [waiter for _, waiter in waiters.values()], timeout=self.peer_timeout
            )
        finally:
            for request_id, _ in waiters.values():
                del self._pending[request_id]
        pages = [here]
        missing = []
        for peer, (_, waiter) in waiters.items():
            page = _page_of(peer, waiter.result()) if waiter.done() else None
            if page is None:
                missing.append(peer)
            else:
                pages.append(page)
        if missing:
            self._missing(missing)
        return PresenceResult(merge_pages(pages, limit), tuple(missing))

    def _missing(self, peers: list[NodeAddress]) -> None:
        self.counters["presencePartial"] += 1
        held = self._throttle.allow("missing", time.monotonic())
        if held is not None:
            log.warning(
                "peers did not answer a presence query in time; answered without them",
                extra={
                    "peers": [str(peer) for peer in peers],
                    "seconds": self.peer_timeout,
                    "heldBack": held,
                },
            )

    async def _send_ask(
        self, peer: NodeAddress, ask: PresenceAsk, waiter: asyncio.Future[PresenceAnswer | None]
    ) -> None:
        assert self.cluster is not None  # only peers of the cluster are asked
        try:
            delivered = await self.cluster.forward(peer, [ask])
        except Exception:
            log.exception("asking a peer for presence failed", extra={"peer": str(peer)})
            delivered = False
        if not delivered and not waiter.done():
            self.counters["presencePeerUnreachable"] += 1
            waiter.set_result(None)

    async def _send_answer(self, reply_to: NodeAddress, answer: PresenceAnswer) -> None:
        if self.cluster is None:
            return
        try:
            delivered = await self.cluster.forward(reply_to, [answer])
        except Exception:
            log.exception("answering a peer's presence ask failed", extra={"peer": str(reply_to)})
            return
        if not delivered:
            self.counters["presenceAnswersLost"] += 1  # the asker leaves this node out

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _page_of(peer: NodeAddress, answer: PresenceAnswer | None) -> Page | None:
    """A peer's answer as a page; None (the peer counts as missing) if it could not be read."""
    if answer is None:
        return None
    try:
        members = parse_members(answer.members)
    except (ValueError, RecursionError) as exc:
        log.error(
            "unreadable presence answer from a peer", extra={"peer": str(peer), "error": str(exc)}
        )
        return None
    return Page(answer.count, tuple(sorted(members)), answer.more)
