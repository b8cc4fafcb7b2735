"""The node: accepts WebSocket clients, turns what they do into events, and carries out commands.

Decisions live in the pure modules (wire/, core/). The node's parts have modules of their own: the
door (what a handshake meets before its 101), the command runner, the client writer, the origin
pump and the GraphQL gateway. This module builds them, owns each connection from its 101 to its
DISCONNECT, and the node's own life (start, drain, stop, periodic work).

Longer than 400 lines because a connection's life and the node's are one story: draining closes
every connection and waits for their DISCONNECTs, and the periodic work reads the same registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from runtime.config import Settings, default_api_id
from runtime.core.browser_origins import compile_allowed_origins
from runtime.core.execution import Outcome
from runtime.core.outbox import EventOutbox
from runtime.core.registry import ConnectionEntry, ConnectionRegistry
from runtime.core.router import Router
from runtime.core.send_buffer import SendLimits
from runtime.node.channels import ChannelHub
from runtime.node.commands import CommandRunner
from runtime.node.connection import NodeConnection
from runtime.node.connections_api import ConnectionsApi
from runtime.node.door import SERVER_HEADER, Door
from runtime.node.graphql import GraphqlGateway
from runtime.node.handshake import (
    subprotocol_selector,
)
from runtime.node.metrics import MetricsLine, Totals
from runtime.node.occupancy import OccupancyReporter
from runtime.node.origin_pump import OriginPump
from runtime.node.presence import Presence
from runtime.node.writer import ClientWriter
from runtime.transports.base import (
    ClusterTransport,
    ConnectHandler,
    HandshakeAuthorizer,
    OriginTransport,
)
from runtime.transports.echo_origin import EchoOrigin
from runtime.transports.graphql_origin import GraphqlOriginClient
from runtime.wire import events, graphql_ws
from runtime.wire.commands import (
    PeerCommand,
)
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from runtime.wire.events import now_ms

log = logging.getLogger("runtime.node")
metrics_log = logging.getLogger("runtime.metrics")  # logged at any --log-level: scaling needs it

KEEPALIVE_KEY = "$keepalive"
KEEPALIVE_IDS_PER_EVENT = 1000


class Node:
    def __init__(
        self,
        settings: Settings,
        origin: OriginTransport | None,
        cluster: ClusterTransport | None = None,
        graphql_origin: GraphqlOriginClient | None = None,
        authorizer: HandshakeAuthorizer | None = None,
        connect_handler: ConnectHandler | None = None,
    ) -> None:
        self.settings = settings
        self.authorizer = authorizer
        self.connect_handler = connect_handler
        # None: the built-in echo origin, which answers through this node.
        self.origin: OriginTransport = origin if origin is not None else EchoOrigin(self)
        self.cluster = cluster
        self.address: NodeAddress = settings.peer_address
        self.max_event_bytes = settings.event_buffer_bytes // 2  # lowered at start, per origin
        self.context = events.NodeContext(
            stage=settings.stage,
            region=settings.region,
            domain_name=settings.domain_name,
            api_id=settings.api_id or default_api_id(settings.stage, settings.region),
        )
        self.routes = events.RouteSelector(settings.route_selection_expression)
        self.limits = SendLimits(settings.send_buffer_messages, settings.send_buffer_bytes)
        self.registry: ConnectionRegistry[ServerConnection] = ConnectionRegistry()
        self.pump = OriginPump(
            EventOutbox(
                max_bytes=settings.event_buffer_bytes, max_events=settings.event_buffer_events
            ),
            self.origin,
            on_dropped=self._events_dropped,
        )
        self.counters: Counter[str] = Counter()
        self.door = Door(
            settings,
            self.context,
            ConnectionIdIssuer(settings.region, settings.peer_address),
            self.pump,
            authorizer=authorizer,
            connect_handler=connect_handler,
            graphql=graphql_origin is not None,
        )
        # Every write to a client goes through it, with the slow-client limits.
        self.writer = ClientWriter(self.limits)
        # API Gateway's @connections API, answered here or by asking the owning peer.
        self.connections_api = ConnectionsApi(
            self.registry,
            cluster,
            settings.peer_address,
            region=settings.region,
            max_payload_bytes=settings.send_buffer_bytes,
            writer=self.writer,
            peer_timeout=settings.peer_down_seconds,
        )
        self.graphql: GraphqlGateway | None = None
        if graphql_origin is not None:
            self.graphql = GraphqlGateway(
                graphql_origin,
                node_address=str(settings.peer_address),
                writer=self.writer,
                init_timeout=settings.graphql_init_timeout,
                ka_interval=settings.graphql_ka_interval,
                keepalive_interval=settings.keepalive_interval,
                max_operations=settings.graphql_max_operations,
            )
        self.channels = ChannelHub(
            self.registry,
            self.writer,
            self.pump,
            self.context,
            address=self.address,
            cluster=cluster,
            max_per_connection=settings.max_subscriptions_per_connection,
            max_total=settings.max_subscriptions,
        )
        # Channel counts and member lists over the cluster, answered here or asked of peers.
        self.presence = Presence(
            self.channels, cluster, self.address, peer_timeout=settings.peer_down_seconds
        )
        self.occupancy = OccupancyReporter(
            self.channels, self.presence, self.pump, self.context, settings.occupancy_interval
        )
        self.commands = CommandRunner(
            Router(settings.peer_address, settings.region),
            self.registry,
            self.writer,
            self.pump,
            self.context,
            self.connections_api,
            self.channels,
            self.presence,
            address=self.address,
            cluster=cluster,
            graphql=self.graphql,
            gone_events=settings.gone_events,
        )
        self.draining = False
        self.drain_started = False  # by `drain`, not `stop`: the Drains metric
        self.metrics = MetricsLine(settings.metrics_namespace, settings.service_name)
        self.ws_address: tuple[str, int] | None = None
        self._server: Server | None = None
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._loops: list[asyncio.Task[None]] = []

    # Lifecycle

    async def start(self) -> None:
        s = self.settings
        await self.origin.start()
        for door in (self.authorizer, self.connect_handler):
            if door is not None:
                await door.start()
        # An event must fit one origin message, and half the event buffer: the other half is
        # the most ever set aside for DISCONNECTs, so any one event fits an emptied buffer.
        self.max_event_bytes = min(self.origin.max_event_bytes, s.event_buffer_bytes // 2)
        max_message = min(s.max_message_bytes, largest_message_fitting(self.max_event_bytes))
        if max_message < s.max_message_bytes:
            log.warning(
                "client messages limited to fit one origin message",
                extra={"maxMessageBytes": max_message, "originMessageBytes": self.max_event_bytes},
            )
        # Room for DISCONNECTs is kept in the event buffer, at most half of it: about 1 KiB per
        # connection with a browser's headers. Say so if the connection limit cannot be reached.
        room = s.max_connections * DISCONNECT_ROOM_TYPICAL
        if room > s.event_buffer_bytes // 2 and s.origin_transport != "none":
            log.warning(
                "the event buffer may refuse handshakes (503) below the connection limit",
                extra={
                    "maxConnections": s.max_connections,
                    "eventBufferBytes": s.event_buffer_bytes,
                    "suggestedEventBufferBytes": 2 * room,
                },
            )
        self.pump.start()
        if self.graphql is not None:
            await self.graphql.start()
        # With a GraphQL origin and no --subprotocols, both GraphQL ones, the modern one first.
        offered = s.subprotocols or (graphql_ws.PROTOCOLS if self.graphql is not None else ())
        self._server = await serve(
            self._handle,
            s.listen[0],
            s.listen[1],
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=subprotocol_selector(offered, chosen=self.door.chosen_subprotocol),
            subprotocols=[Subprotocol(name) for name in offered] or None,
            origins=compile_allowed_origins(s.allowed_origins),
            # With deflate, messages to a connection that negotiated it go through the library
            # (see _write); the others keep the frame built once for all.
            compression="deflate" if s.compression == "deflate" else None,
            max_size=max_message,
            max_queue=s.receive_queue_messages,
            ping_interval=s.ping_interval or None,
            ping_timeout=s.ping_timeout,
            close_timeout=s.close_timeout,
            # The authorizer and the $connect handler run inside the handshake.
            open_timeout=10 + s.authorizer_timeout + s.connect_handler_timeout,
            server_header=SERVER_HEADER,
            create_connection=NodeConnection,
        )
        sockname = self._server.sockets[0].getsockname()
        self.ws_address = (sockname[0], sockname[1])
        if s.keepalive_interval > 0:
            self._loops.append(asyncio.create_task(self._keepalive_loop(), name="keepalive"))
        self._loops.append(asyncio.create_task(self._stale_loop(), name="origin-watch"))
        self._loops.append(asyncio.create_task(self.occupancy.run(), name="occupancy"))
        if s.metrics_interval > 0:
            self._loops.append(asyncio.create_task(self._metrics_loop(), name="metrics"))
        log.info(
            "node listening",
            extra={
                "websocketAddress": f"{self.ws_address[0]}:{self.ws_address[1]}",
                "nodeAddress": str(self.address),
                "region": s.region,
                "stage": s.stage,
            },
        )

    async def drain(self) -> bool:
        """Stop taking clients, close each with 1001, deliver their DISCONNECTs, then stop.

        Returns False if the drain timeout cut it short (the log says what was left).
        """
        if self.draining:
            return False
        self.draining = self.drain_started = True
        started = time.monotonic()
        deadline = started + self.settings.drain_seconds
        flush_reserve = min(5.0, self.settings.drain_seconds / 3)
        log.info("draining", extra={"connections": len(self.registry)})
        if self.settings.metrics_interval > 0:
            self._log_metrics()  # now: the task may be gone before the next interval
        for entry in self.registry:
            self.writer.close(entry, 1001, "going away")
        await self._wait_no_connections(deadline - flush_reserve - time.monotonic())
        for entry in self.registry:  # those that never answered the close
            entry.handle.transport.abort()
        await self._wait_no_connections(min(1.0, deadline - time.monotonic()))
        flushed = await self.pump.flush(max(0.0, deadline - time.monotonic()))
        left = len(self.pump.outbox)
        await self.stop()
        level = logging.INFO if flushed and not left else logging.ERROR
        log.log(
            level,
            "drained" if level == logging.INFO else "drain timed out",
            extra={
                "seconds": round(time.monotonic() - started, 3),
                "undeliveredEvents": left,
                **self._counted(),
            },
        )
        return level == logging.INFO

    async def stop(self) -> None:
        """Stop now: close whatever is still open and release the transports."""
        self.draining = True
        for task in self._loops:
            task.cancel()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.settings.close_timeout + 1)
            except TimeoutError:
                log.warning("connections still open at stop", extra={"count": len(self.registry)})
        await self.pump.flush(0.5)
        await self.pump.stop()
        await self.connections_api.close()
        await self.channels.close()
        await self.presence.close()
        await self.origin.close()
        for door in (self.authorizer, self.connect_handler):
            if door is not None:
                await door.close()
        if self.graphql is not None:
            await self.graphql.stop()
        self.writer.cancel()

    async def _wait_no_connections(self, timeout: float) -> None:
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_connections.wait(), timeout)

    # Handshake: the door decides

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        assert self._server is not None
        return await self.door.process_request(
            connection,
            request,
            draining=self.draining,
            open_connections=len(self._server.all_connections),
        )

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        return self.door.process_response(connection, response, self.max_event_bytes)

    # Connections

    async def _handle(self, connection: ServerConnection) -> None:
        if len(self.registry) >= self.settings.max_connections:
            # Handshakes that passed the check together may exceed the limit; never let them in.
            self.door.refused_full()
            await connection.close(1013, "connection limit reached; retry later")
            return
        admission = self.door.admitted(connection)
        connection_id, details = admission.connection_id, admission.details
        subprotocol = details.subprotocol
        graphql = self.graphql if subprotocol in graphql_ws.PROTOCOLS else None
        if graphql is None and self.settings.origin_transport == "none":
            self.counters["handshakesRefusedNotGraphql"] += 1
            await connection.close(
                graphql_ws.SUBPROTOCOL_NOT_ACCEPTABLE,
                f"Subprotocol not acceptable: use {' or '.join(graphql_ws.PROTOCOLS)}",
            )
            return
        connect = admission.connect
        if graphql is None and not self.pump.admit_connection(
            connection_id, admission.connect_sent, admission.disconnect_room
        ):
            # Handshakes that passed the check together may not all fit; never buffer past it.
            self.door.refused_buffer_full()
            await connection.close(1013, "event buffer full; retry later")
            return
        fragment = admission.fragment
        entry = ConnectionEntry(connection_id, connection, fragment, admission.connected_at)
        entry.graphql = graphql is not None
        entry.disconnect_room = admission.disconnect_room
        entry.source_ip = details.source_ip
        entry.user_agent = events.header_value(details.headers, "user-agent") or ""
        entry.sequence()  # 0: the CONNECT's
        self.registry.add(entry)
        self._no_connections.clear()
        self.counters["connectionsOpened"] += 1
        log.info(
            "connected",
            extra={
                "connectionId": connection_id,
                "sourceIp": details.source_ip,
                "subprotocol": details.subprotocol,
                "path": details.path,
            },
        )
        try:
            if graphql is not None and subprotocol is not None:
                await graphql.serve(entry, connection, subprotocol, json.loads(connect))
            else:
                await self._relay(entry, connection)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection handler failed", extra={"connectionId": connection_id})
            await connection.close(1011, "internal error")
        finally:
            self.registry.remove(connection_id)
            self.channels.connection_closed(connection_id)
            if not len(self.registry):
                self._no_connections.set()
            code, reason = _close_status(connection)
            self.counters["connectionsClosed"] += 1
            if graphql is None:
                disconnect = events.disconnect_event(
                    fragment, entry.sequence(), now_ms(), code, reason
                )
                self.pump.add_disconnect(connection_id, disconnect, entry.disconnect_room)
            log.info(
                "disconnected",
                extra={"connectionId": connection_id, "code": code, "reason": reason},
            )

    async def _relay(
        self, entry: ConnectionEntry[ServerConnection], connection: ServerConnection
    ) -> None:
        """Each client message becomes a MESSAGE event, read as fast as the origin takes them."""
        connection_id, fragment = entry.connection_id, entry.fragment
        pump = self.pump
        select = self.routes.select
        max_event = self.max_event_bytes
        while True:
            if not pump.has_room:
                await self._wait_for_room(connection)
            data = await connection.recv()
            self.counters["messagesReceived"] += 1
            now = entry.last_active_at = now_ms()
            event = events.message_event(fragment, entry.sequence(), now, select(data), data)
            if len(event) > max_event:
                # JSON escaping can grow a text message up to six times; refuse it here,
                # where the client learns why, rather than wedge the origin with it.
                entry.next_sequence -= 1  # this event never existed
                self.counters["messagesTooLargeForOrigin"] += 1
                await connection.close(1009, "message too big once encoded for the origin")
                return
            if not pump.offer(connection_id, event):
                # Read while there was room, but others took it first: this message waits
                # here (one per client, as documented) and the buffer keeps its bound.
                self.counters["readsPaused"] += 1
                await pump.wait_for_room(len(event))
                pump.add(connection_id, event)

    async def _wait_for_room(self, connection: ServerConnection) -> None:
        """Backpressure: read nothing more from this client until the origin catches up."""
        self.counters["readsPaused"] += 1
        room = asyncio.ensure_future(self.pump.wait_for_room())
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await asyncio.wait((room, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            closed.cancel()

    def _events_dropped(self, dropped: list[tuple[str, bytes]]) -> None:
        """The origin transport can never carry these (it logged why): their clients are told."""
        for key, _ in dropped:
            self.counters["eventsDropped"] += 1
            entry = self.registry.get(key)
            if entry is not None and not entry.closing:
                log.warning(
                    "closing a connection whose event the origin transport refused",
                    extra={"connectionId": key},
                )
                self.writer.close(entry, 1011, "event refused by the origin transport")

    # Commands

    async def execute(self, commands: Sequence[PeerCommand], *, from_peer: bool = False) -> Outcome:
        """Carry out commands in order; returns once local writes are done and peers have theirs."""
        return await self.commands.execute(commands, from_peer=from_peer)

    def peer_up(self, peer: NodeAddress) -> None:
        self.channels.peer_up(peer)

    def peer_down(self, peer: NodeAddress) -> None:
        self.channels.peer_down(peer)

    # Periodic work

    async def _keepalive_loop(self) -> None:
        interval = self.settings.keepalive_interval
        while True:
            await asyncio.sleep(interval)
            ids = [entry.connection_id for entry in self.registry if not entry.graphql]
            if not ids or not self.pump.has_room:
                continue  # a backed-up origin gets no keep-alives; the next one lists everyone
            for event in events.keepalive_events(
                self.context, ids, now_ms(), KEEPALIVE_IDS_PER_EVENT
            ):
                if not self.pump.offer(KEEPALIVE_KEY, event):
                    self.counters["keepalivesSkipped"] += 1
                    break

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_interval)
            self._log_metrics()

    def _log_metrics(self) -> None:
        fields = self.metrics.fields(len(self.registry), self._totals(), now_ms())
        metrics_log.info("metrics", extra=fields)

    def _totals(self) -> Totals:
        """The metrics' totals, read from the counters the node and its parts keep."""
        graphql = self.graphql
        graphql_in = graphql.counters["graphqlMessagesReceived"] if graphql is not None else 0
        peers = self.cluster.stats() if self.cluster is not None else {}
        pump = self.pump
        return Totals(
            messages_in=self.counters["messagesReceived"] + graphql_in,
            messages_out=self.writer.counters["messagesSent"],
            events_sent=pump.delivered,
            origin_errors=pump.failures + pump.dropped,
            origin_round_trips=pump.round_trips,
            origin_round_trip_seconds=pump.round_trip_seconds,
            peer_datagrams_in=_count(peers, "datagrams_received"),
            peer_datagrams_out=_count(peers, "datagrams_sent"),
            drains=int(self.drain_started),
        )

    async def _stale_loop(self) -> None:
        """Close connections whose events have waited too long for an unreachable origin (1011)."""
        limit = self.settings.origin_unavailable_seconds
        period = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(period)
            stale = self.pump.outbox.stale_keys(time.monotonic(), limit)
            for key in stale:
                entry = self.registry.get(key)
                if entry is not None and not entry.closing:
                    self.counters["closedOriginUnavailable"] += 1
                    log.warning(
                        "origin unavailable too long; closing",
                        extra={"connectionId": key, "seconds": limit},
                    )
                    self.writer.close(entry, 1011, "origin unavailable")

    def stats(self) -> dict[str, object]:
        return {
            "connections": len(self.registry),
            "bufferedEvents": len(self.pump.outbox),
            "bufferedEventBytes": self.pump.outbox.nbytes,
            "reservedEventBytes": self.pump.outbox.reserved_bytes,
            "eventsDelivered": self.pump.delivered,
            "draining": self.draining,
            **self._counted(),
            **self.connections_api.stats(),
            **self.channels.stats(),
            **self.presence.stats(),
            **self.occupancy.counters,
            **(self.graphql.stats() if self.graphql is not None else {}),
            **({"peers": self.cluster.stats()} if self.cluster is not None else {}),
            **({"authorizer": self.authorizer.stats()} if self.authorizer is not None else {}),
            **(
                {"connectHandler": self.connect_handler.stats()}
                if self.connect_handler is not None
                else {}
            ),
        }

    def _counted(self) -> dict[str, int]:
        """Every counter of the node and of its parts that count for it (the drain log's)."""
        graphql = self.graphql.counters if self.graphql is not None else {}
        parts = (self.door.counters, self.commands.counters, self.writer.counters, graphql)
        return {
            key: value for counters in (self.counters, *parts) for key, value in counters.items()
        }


# Event-buffer bytes a connection keeps for its DISCONNECT with a browser's Host and User-Agent
# (events.disconnect_event_bound gives 836 for one); longer headers keep more.
DISCONNECT_ROOM_TYPICAL = 1024

# Room for an event's envelope around a MESSAGE body (request context, IDs, timestamps).
EVENT_ENVELOPE_BYTES = 8 * 1024


def largest_message_fitting(max_event_bytes: int) -> int:
    """The largest binary message whose event (base64 body, envelope) fits one origin message."""
    return max(1024, (max_event_bytes - EVENT_ENVELOPE_BYTES) * 3 // 4)


def _count(stats: Mapping[str, object], key: str) -> int:
    """A counter from a transport's stats (typed loosely: they are served as JSON)."""
    value = stats.get(key, 0)
    return value if isinstance(value, int) else 0


def _close_status(connection: ServerConnection) -> tuple[int, str]:
    """The close code and reason the connection ended with, whichever side started it."""
    protocol = connection.protocol
    received, sent = protocol.close_rcvd, protocol.close_sent
    if sent is not None and (received is None or not protocol.close_rcvd_then_sent):
        return sent.code, sent.reason
    if received is not None:
        return received.code, received.reason
    return 1006, ""
