"""Carrying out commands on one node: each routed, delivered to the connections held here,
forwarded to the nodes that hold the others, or answered with GONE.

Every command source (HTTP `/commands`, the SQS commands queue, peers, the echo origin) reaches it
through the node's `execute`. Decisions are the router's (runtime/core/router.py); this module
acts on them: writes through the node's ClientWriter (slow-client limits), GraphQL publishes
through the gateway, forwards through the cluster transport, GONE events through the pump.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection

from runtime.core.execution import Outcome
from runtime.core.registry import ConnectionRegistry
from runtime.core.router import Route, Router
from runtime.node.channels import ChannelHub
from runtime.node.connections_api import ConnectionsApi
from runtime.node.frames import message_frame
from runtime.node.graphql import GraphqlGateway
from runtime.node.origin_pump import OriginPump
from runtime.node.presence import Presence
from runtime.node.writer import ClientWriter
from runtime.transports.base import ClusterTransport
from runtime.wire import events
from runtime.wire.commands import (
    Answer,
    Ask,
    Broadcast,
    ChannelPublish,
    Close,
    CommandError,
    Interest,
    PeerCommand,
    PresenceAnswer,
    PresenceAsk,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.connection_id import NodeAddress
from runtime.wire.events import now_ms

log = logging.getLogger("runtime.node")


class CommandRunner:
    """One node's commands; its counters (commands*, gone*) join the node's stats."""

    def __init__(
        self,
        router: Router,
        registry: ConnectionRegistry[ServerConnection],
        writer: ClientWriter,
        pump: OriginPump,
        context: events.NodeContext,
        connections_api: ConnectionsApi,
        channels: ChannelHub,
        presence: Presence,
        *,
        address: NodeAddress,
        cluster: ClusterTransport | None,
        graphql: GraphqlGateway | None,
        gone_events: bool,
    ) -> None:
        self.router = router
        self.registry = registry
        self.writer = writer
        self.pump = pump
        self.context = context
        self.connections_api = connections_api
        self.channels = channels
        self.presence = presence
        self.address = address
        self.cluster = cluster
        self.graphql = graphql
        self.gone_events = gone_events  # --gone-events: tell the origin of unknown connections
        self.counters: Counter[str] = Counter()

    async def execute(self, commands: Sequence[PeerCommand], *, from_peer: bool = False) -> Outcome:
        """Carry out commands in order; returns once local writes are done and peers have theirs."""
        outcome = Outcome()
        forwards: dict[NodeAddress, list[PeerCommand]] = {}
        members = self.cluster.members() if self.cluster is not None else frozenset()
        for position, command in enumerate(commands):
            if isinstance(command, Ask):  # peer-only: parse_command never makes them
                if from_peer:
                    self.connections_api.ask_received(command)
                continue
            if isinstance(command, Answer):
                if from_peer:
                    self.connections_api.answer_received(command)
                continue
            if isinstance(command, Interest):
                if from_peer:
                    self.channels.apply(command)
                continue
            if isinstance(command, PresenceAsk):
                if from_peer:
                    self.presence.answer(command)
                continue
            if isinstance(command, PresenceAnswer):
                if from_peer:
                    self.presence.answer_received(command)
                continue
            try:
                if isinstance(command, Publish) and self.graphql is None:
                    raise CommandError(
                        "publish needs GraphQL mode: this node has no --graphql-origin-url "
                        "or --graphql-origin-function"
                    )
                route = self.router.route(
                    command, self.registry, from_peer=from_peer, members=members
                )
                # Channel commands may be refused by this node's own state (a limit, a GraphQL
                # connection): checked before anything of the command is carried out.
                self._channel_command(route, from_peer, forwards)
            except CommandError as exc:
                outcome.rejections.append((position, str(exc)))
                self.counters["commandsRejected"] += 1
                log.warning("command rejected", extra={"action": command.action, "error": str(exc)})
                continue
            outcome.accepted += 1
            self.counters["commandsAccepted"] += 1
            self._deliver_locally(route)
            for node, narrowed in route.forwards.items():
                forwards.setdefault(node, []).append(narrowed)
                if isinstance(narrowed, Subscribe):
                    self.channels.expect(node, narrowed)
            if route.to_every_node and self.cluster is not None:
                for peer in self.cluster.peers():
                    if peer != self.address:
                        forwards.setdefault(peer, []).append(command)
            for connection_id in route.gone_ids:
                self._gone(connection_id, command.action)
        if forwards:
            await asyncio.gather(*(self._forward(node, batch) for node, batch in forwards.items()))
        return outcome

    def _channel_command(
        self, route: Route, from_peer: bool, forwards: dict[NodeAddress, list[PeerCommand]]
    ) -> None:
        command = route.command
        if isinstance(command, Subscribe):
            self.channels.subscribe(command, route.local_ids)
        elif isinstance(command, Unsubscribe):
            self.channels.unsubscribe(command, route.local_ids)
        elif isinstance(command, ChannelPublish):
            self.channels.publish(command, from_peer=from_peer, forwards=forwards)

    def _deliver_locally(self, route: Route) -> None:
        command = route.command
        if isinstance(command, Subscribe | Unsubscribe):
            # Carried out by _channel_command; a connection not held here is GONE, as for send.
            for connection_id in route.local_ids:
                if self.registry.get(connection_id) is None:
                    self._gone(connection_id, command.action)
            return
        if isinstance(command, ChannelPublish):
            return
        if isinstance(command, Publish):
            assert self.graphql is not None  # checked in execute
            self.graphql.publish(command.keys, command.context)
            return
        if isinstance(command, Close):
            for connection_id in route.local_ids:
                entry = self.registry.get(connection_id)
                if entry is not None:
                    self.writer.close(entry, command.code, command.reason)
            return
        if isinstance(command, Broadcast):
            frame = message_frame(command.payload, command.binary)
            for entry in self.registry:
                if not entry.graphql:
                    self.writer.write(entry, frame, command)
            return
        if route.local_ids:
            frame = message_frame(command.payload, command.binary)
            get = self.registry.get
            for connection_id in route.local_ids:
                entry = get(connection_id)
                if entry is None or not self.writer.write(entry, frame, command):
                    self._gone(connection_id, command.action)

    async def _forward(self, node: NodeAddress, commands: list[PeerCommand]) -> None:
        delivered = False
        if self.cluster is not None:
            try:
                delivered = await self.cluster.forward(node, commands)
            except Exception:
                log.exception("forwarding to peer failed", extra={"peer": str(node)})
        if delivered:
            self.counters["commandsForwarded"] += len(commands)
            return
        log.warning("peer unreachable; commands for it are GONE", extra={"peer": str(node)})
        for command in commands:
            if isinstance(command, Send | Close | Subscribe | Unsubscribe):
                for connection_id in command.connection_ids:
                    self._gone(connection_id, command.action)

    def _gone(self, connection_id: str, action: str) -> None:
        self.counters["gone"] += 1
        if not self.gone_events:
            return
        event = events.gone_event(self.context, connection_id, action, now_ms())
        if not self.pump.offer(connection_id, event):
            # GONE is advice, not client data: with the origin backed up it is dropped and
            # counted, so a flood of commands to unknown IDs cannot grow memory.
            self.counters["goneDropped"] += 1
