"""Channels on one node: its connections' subscriptions, and what it knows of its peers' channels.

A subscription lives on the node holding its connection and ends with it. A publish is one
command: the node that takes it writes to its own subscribers and forwards it, over the
authenticated peer links, only to the peers holding the channel (and to peers whose channels it
does not know yet: just up, not yet synced), which write to theirs and forward nothing. The peer
link delivers each message once and in order, so every subscriber gets a publish once, and the
publishes of one publisher in their order.

Peers learn a node's channels from `Interest` news: the full list when a peer comes up (a new or
restarted node), then each channel gained or lost, sent as it happens and never waited for (a
slow peer must hold up no command). A node forwarding a subscribe expects the owner to hold the
channel from then on, for a while, whatever news crosses it (runtime/core/channels.py,
PeerInterest), so "subscribe, then publish" through one node reaches the new subscriber.

The tables are sans-I/O (runtime/core/channels.py); this module routes and sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Container, Coroutine, Iterable
from dataclasses import replace
from typing import Any

from websockets.asyncio.server import ServerConnection

from runtime.core.channels import (
    ChannelTable,
    Member,
    Membership,
    PeerInterest,
    SubscriptionRefused,
    interest_messages,
)
from runtime.core.registry import ConnectionRegistry
from runtime.node.frames import message_frame
from runtime.node.origin_pump import OriginPump
from runtime.node.writer import ClientWriter
from runtime.transports.base import ClusterTransport
from runtime.wire import events
from runtime.wire.commands import (
    ChannelPublish,
    CommandError,
    Interest,
    PeerCommand,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.connection_id import NodeAddress
from runtime.wire.events import now_ms

log = logging.getLogger("runtime.node")

# Peers learn which nodes have subscribers asking for a channel's OCCUPANCY events from a mark in
# their channel news: "#" is no channel character, so a mark never names a real channel.
OCCUPANCY_MARK = "#occupancy#"

Forwards = dict[NodeAddress, list[PeerCommand]]


class ChannelHub:
    """This node's channels: subscribe, unsubscribe and publish, and the news peers need."""

    def __init__(
        self,
        registry: ConnectionRegistry[ServerConnection],
        writer: ClientWriter,
        pump: OriginPump,
        context: events.NodeContext,
        *,
        address: NodeAddress,
        cluster: ClusterTransport | None,
        max_per_connection: int,
        max_total: int,
    ) -> None:
        self.registry = registry
        self.writer = writer
        self.pump = pump
        self.context = context
        self.address = address
        self.cluster = cluster
        self.table = ChannelTable(max_per_connection, max_total)
        self.interest = PeerInterest()
        # Channel -> the connections here that asked for its OCCUPANCY events.
        self.occupancy: dict[str, set[str]] = {}
        self.counters: Counter[str] = Counter()
        self._news: set[asyncio.Task[None]] = set()

    # Commands (called by the CommandRunner, in command order)

    def subscribe(self, command: Subscribe, local_ids: Iterable[str]) -> None:
        """Subscribe the connections held here; raises CommandError (all or nothing for the
        command's local connections) when one is a GraphQL connection or a limit is reached."""
        entries = []
        for connection_id in local_ids:
            entry = self.registry.get(connection_id)
            if entry is None:
                continue
            if entry.graphql:
                raise CommandError(
                    f"connection {connection_id!r} is a GraphQL connection: it cannot "
                    "subscribe to channels (its subscriptions are GraphQL operations)"
                )
            entries.append(entry.connection_id)  # the registry's string, kept by the table
        gained: list[str] = []
        joined: list[Membership] = []
        done: list[tuple[str, dict[str, Member | None]]] = []
        channels = tuple(dict.fromkeys(command.channels))
        for connection_id in entries:
            before = {name: self.table.members(name).get(connection_id) for name in channels}
            try:
                subscribed = self.table.subscribe(
                    connection_id, channels, command.user_info, command.presence_events
                )
            except SubscriptionRefused as exc:
                self._undo(done)  # all or nothing: this command's other connections as they were
                self.counters["subscriptionsRefused"] += 1
                raise CommandError(str(exc)) from None
            done.append((connection_id, before))
            gained += subscribed.new_channels
            joined += subscribed.joined
        self.counters["subscriptions"] += len(joined)
        marked, unmarked = self._mark_occupancy(entries, channels, command.occupancy_events)
        self._tell_peers(Interest(self.address, (*gained, *marked), unmarked, False))
        self._presence("JOIN", joined)

    def _undo(self, done: list[tuple[str, dict[str, Member | None]]]) -> None:
        for connection_id, before in done:
            added = [name for name, member in before.items() if member is None]
            self.table.unsubscribe(connection_id, added)
            for name, member in before.items():
                if member is not None:  # had it: its userInfo and flag as they were
                    self.table.subscribe(
                        connection_id, (name,), member.user_info, member.presence_events
                    )

    def unsubscribe(self, command: Unsubscribe, local_ids: Iterable[str]) -> None:
        lost: list[str] = []
        left: list[Membership] = []
        for connection_id in local_ids:
            ended = self.table.unsubscribe(connection_id, command.channels)
            lost += ended.gone_channels
            left += ended.left
        _marked, unmarked = self._mark_occupancy(
            [membership.connection_id for membership in left],
            [membership.channel for membership in left],
            False,
        )
        self._tell_peers(Interest(self.address, (), (*lost, *unmarked), False))
        self._presence("LEAVE", left, "unsubscribed")

    def expect(self, node: NodeAddress, command: Subscribe) -> None:
        """A subscribe went to `node`, which holds the connection: it holds the channels now."""
        self.interest.expect(node, command.channels, self._now())

    def publish(self, command: ChannelPublish, *, from_peer: bool, forwards: Forwards) -> None:
        """Write to this node's subscribers; unless a peer sent it, forward it to the peers
        holding the channel (or not yet synced)."""
        members = self.table.members(command.channel)
        if members:
            frame = message_frame(command.payload, command.binary)
            excepted = command.except_ids
            skip: Container[str] = frozenset(excepted) if len(excepted) > 8 else excepted
            get = self.registry.get
            written = 0
            for connection_id in members:
                if connection_id in skip:
                    continue
                entry = get(connection_id)
                if entry is not None and self.writer.write(entry, frame, command):
                    written += 1
            self.counters["channelMessagesSent"] += written
        if from_peer or self.cluster is None:
            return
        for peer in self.interest.targets(command.channel, self.cluster.reachable(), self._now()):
            forwards.setdefault(peer, []).append(command)
            self.counters["channelPublishesForwarded"] += 1

    def apply(self, news: Interest) -> None:
        """A peer's channels, as it told them; a peer that just came up to this node asks for
        this node's own list back (it may have restarted faster than this node noticed)."""
        self.interest.apply(news)
        if news.full and news.answer_me and self.cluster is not None:
            self._spawn(self._sync(news.node, answer_me=False))

    # The connection's life and the peers'

    def connection_closed(self, connection_id: str) -> None:
        """Its subscriptions end; peers hear of the channels this node no longer holds."""
        if not self.table.of(connection_id):
            return
        ended = self.table.drop(connection_id)
        self._presence("LEAVE", ended.left, "disconnected")
        _marked, unmarked = self._mark_occupancy(
            [connection_id], [membership.channel for membership in ended.left], False
        )
        if ended.gone_channels or unmarked:
            self._announce(Interest(self.address, (), (*ended.gone_channels, *unmarked), False))

    def peer_up(self, peer: NodeAddress) -> None:
        """A new or restarted peer: it knows nothing of this node's channels, and this node
        nothing of its (until its own full list arrives)."""
        self.interest.forget(peer)
        if self.cluster is not None:
            self._spawn(self._sync(peer, answer_me=True))

    def peer_down(self, peer: NodeAddress) -> None:
        self.interest.forget(peer)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def stats(self) -> dict[str, int]:
        return {
            **self.counters,
            "channels": len(self.table.channels()),
            "channelSubscriptions": self.table.total,
        }

    async def close(self) -> None:
        for task in list(self._news):
            task.cancel()
        await asyncio.gather(*self._news, return_exceptions=True)

    # Occupancy

    def occupancy_channels(self) -> list[str]:
        """The channels this node reports OCCUPANCY for: those its subscribers asked it of, where
        no other asking node has a lower address (so one node of the cluster reports each)."""
        if self.cluster is None:
            return list(self.occupancy)
        peers = self.cluster.peers()
        own = str(self.address)
        return [
            channel
            for channel in self.occupancy
            if not any(
                str(peer) < own and self.interest.holds(peer, OCCUPANCY_MARK + channel)
                for peer in peers
            )
        ]

    def _mark_occupancy(
        self, connection_ids: Iterable[str], channels: Iterable[str], asks: bool
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Record which connections ask for OCCUPANCY of which channels; the marks to announce
        (channels now asked of this node) and to take back (no longer asked)."""
        marked: list[str] = []
        unmarked: list[str] = []
        names = list(dict.fromkeys(channels))
        for connection_id in connection_ids:
            for channel in names:
                askers = self.occupancy.get(channel)
                if asks and connection_id in self.table.members(channel):
                    if askers is None:
                        askers = self.occupancy[channel] = set()
                        marked.append(OCCUPANCY_MARK + channel)
                    askers.add(connection_id)
                elif askers is not None and connection_id in askers:
                    askers.discard(connection_id)
                    if not askers:
                        del self.occupancy[channel]
                        unmarked.append(OCCUPANCY_MARK + channel)
        return tuple(marked), tuple(unmarked)

    # Presence events for the origin

    def _presence(self, kind: str, changes: Iterable[Membership], reason: str = "") -> None:
        """JOIN or LEAVE for each subscription that asked for them. Like GONE they are advice:
        with the origin backed up they are dropped and counted, never buffered without bound."""
        now = now_ms()
        for change in changes:
            if not change.member.presence_events:
                continue
            event = events.presence_event(
                self.context,
                kind,
                change.connection_id,
                change.channel,
                change.member.user_info,
                now,
                reason,
            )
            if self.pump.offer(change.connection_id, event):
                self.counters[f"{kind.lower()}Events"] += 1
            else:
                self.counters["presenceEventsDropped"] += 1

    # News for peers

    def _tell_peers(self, news: Interest) -> None:
        """News a command caused, sent now, ahead of the command's own forwards, and not waited
        for: a slow peer must not hold up the command (nor the peer that forwarded it)."""
        if news.added or news.removed:
            self._announce(news)

    def _announce(self, news: Interest) -> None:
        if self.cluster is None:
            return
        for peer in self.cluster.peers():
            self._spawn(self._send(peer, [news]))

    async def _sync(self, peer: NodeAddress, *, answer_me: bool) -> None:
        """Every channel held here, read and sent in one step: news made later goes after it."""
        held = [*self.table.channels(), *(OCCUPANCY_MARK + name for name in self.occupancy)]
        messages = interest_messages(self.address, sorted(held))
        messages[0] = replace(messages[0], answer_me=answer_me)
        await self._send(peer, messages)

    async def _send(self, peer: NodeAddress, messages: list[Interest]) -> None:
        """One forward: the link sends it at once, in order with every other message to that
        peer, and the peer applies all of it before the next command it carries out."""
        assert self.cluster is not None
        cluster = self.cluster
        try:
            sent = await cluster.forward(peer, messages)
        except ValueError:  # one message too large for the link: the parts one by one
            parts = await asyncio.gather(*(cluster.forward(peer, [part]) for part in messages))
            sent = all(parts)
        if sent:
            self.counters["interestNewsSent"] += len(messages)
        # A peer that went down syncs in full when it comes back up.

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._news.add(task)
        task.add_done_callback(self._news.discard)
