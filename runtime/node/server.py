"""The node: accepts WebSocket clients, turns what they do into events, and carries out commands.

Decisions live in the pure modules (wire/, core/); this module only moves bytes between the
websockets server, the origin pump and the cluster transport, and owns the connection lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from runtime.config import Settings, default_api_id
from runtime.core.browser_origins import compile_allowed_origins
from runtime.core.execution import Outcome
from runtime.core.outbox import EventOutbox
from runtime.core.rate_limit import TokenBuckets
from runtime.core.registry import ConnectionEntry, ConnectionRegistry
from runtime.core.router import Route, Router
from runtime.core.send_buffer import SendLimits
from runtime.logs import LogThrottle
from runtime.names import HEALTH_PATH
from runtime.node.connection import NodeConnection
from runtime.node.connections_api import ConnectionsApi
from runtime.node.frames import message_frame
from runtime.node.graphql import GraphqlGateway
from runtime.node.handshake import (
    handshake_details,
    offered_subprotocols,
    source_ip,
    subprotocol_selector,
)
from runtime.node.metrics import connections_metric
from runtime.node.origin_pump import OriginPump
from runtime.node.writer import ClientWriter
from runtime.transports.base import (
    ClusterTransport,
    ConnectHandler,
    HandshakeAuthorizer,
    OriginTransport,
    Refuse,
)
from runtime.transports.echo_origin import EchoOrigin
from runtime.transports.graphql_origin import GraphqlOriginClient
from runtime.wire import events, graphql_ws
from runtime.wire.commands import (
    Answer,
    Ask,
    Broadcast,
    Close,
    Command,
    CommandError,
    PeerCommand,
    Publish,
    Send,
)
from runtime.wire.connect_answer import ConnectAnswer
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from runtime.wire.events import HandshakeDetails

log = logging.getLogger("runtime.node")
metrics_log = logging.getLogger("runtime.metrics")  # logged at any --log-level: scaling needs it

KEEPALIVE_KEY = "$keepalive"
KEEPALIVE_IDS_PER_EVENT = 1000
SERVER_HEADER = "wsgateway"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Passage:
    """What a handshake brought through the door (authorizer, $connect handler) before its 101:
    the connection ID the authorizer and handler saw, and what they answered."""

    connection_id: str
    connected_at: int
    authorizer: dict[str, object]
    subprotocol: str | None  # chosen by the $connect handler
    headers: tuple[tuple[str, str], ...]  # the $connect handler's, for the 101
    connect_handled: bool


@dataclass(slots=True)
class Admission:
    """A handshake's CONNECT, built before the 101 so that one the node cannot take is refused
    with an HTTP status rather than accepted and dropped."""

    connection_id: str
    connected_at: int
    details: HandshakeDetails
    fragment: str
    connect: bytes
    disconnect_room: int  # event-buffer bytes its DISCONNECT may need (0: it sends no events)
    connect_sent: bytes | None  # the CONNECT the origin gets (None: --connect-event suppress)


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
        # Handshake rates: per source IP (a table bounded in keys) and for the whole node.
        self.ip_rate = (
            TokenBuckets(settings.handshake_rate_per_ip, settings.handshake_burst_per_ip, 100_000)
            if settings.handshake_rate_per_ip > 0
            else None
        )
        self.node_rate = (
            TokenBuckets(settings.handshake_rate, settings.handshake_burst, 1)
            if settings.handshake_rate > 0
            else None
        )
        self.issuer = ConnectionIdIssuer(settings.region, settings.peer_address)
        self.router = Router(settings.peer_address, settings.region)
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
        self.throttle = LogThrottle()
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
        self.draining = False
        self.ws_address: tuple[str, int] | None = None
        self._server: Server | None = None
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._loops: list[asyncio.Task[None]] = []
        # Handshakes between their 101 and their handler; a handshake that dies in between
        # never reaches the handler, and its entry goes with its connection.
        self._admissions: weakref.WeakKeyDictionary[ServerConnection, Admission] = (
            weakref.WeakKeyDictionary()
        )
        self._passages: weakref.WeakKeyDictionary[ServerConnection, Passage] = (
            weakref.WeakKeyDictionary()
        )

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
            select_subprotocol=subprotocol_selector(offered, chosen=self._chosen_subprotocol),
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
        self.draining = True
        started = time.monotonic()
        deadline = started + self.settings.drain_seconds
        flush_reserve = min(5.0, self.settings.drain_seconds / 3)
        log.info("draining", extra={"connections": len(self.registry)})
        for entry in self.registry:
            self._close(entry, 1001, "going away")
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

    # Handshake

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        refusal = self._check_request(connection, request)
        if refusal is not None or (self.authorizer is None and self.connect_handler is None):
            return refusal
        return await self._pass_door(connection, request)

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """What needs no one else's answer: health, draining, the cap and the handshake rates."""
        path = request.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            if self.draining:
                return _text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
            return _text_response(http.HTTPStatus.OK, "ok\n")
        if self.draining:
            return _text_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "This node is shutting down; reconnect.\n"
            )
        assert self._server is not None
        # Open connections; handshakes racing this one are caught in _handle.
        if len(self._server.all_connections) >= self.settings.max_connections:
            self.counters["handshakesRefusedFull"] += 1
            self._warn("connection limit reached", limit=self.settings.max_connections)
            return _text_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                "This node is at its connection limit; retry later.\n",
            )
        if self.ip_rate is not None or self.node_rate is not None:
            return self._check_rate(connection, request)
        return None

    def _check_rate(self, connection: ServerConnection, request: Request) -> Response | None:
        now = time.monotonic()
        headers = list(request.headers.raw_items())
        for limiter, key, kind in (
            (self.ip_rate, source_ip(connection, headers, self.settings.trust_forwarded_for), "ip"),
            (self.node_rate, "", "node"),
        ):
            if limiter is not None and not limiter.allow(key, now):
                self.counters["handshakesRefusedRate"] += 1
                self._warn(f"handshake refused: {kind} handshake rate exceeded", sourceIp=key)
                wait = max(1, int(limiter.retry_after(key, now) + 0.999))
                return _text_response(
                    http.HTTPStatus.TOO_MANY_REQUESTS,
                    "Too many handshakes; retry later.\n",
                    (("Retry-After", str(wait)),),
                )
        return None

    async def _pass_door(self, connection: ServerConnection, request: Request) -> Response | None:
        """Ask the authorizer, then the $connect handler, as API Gateway does before a 101.

        Both see the connection ID the connection will have if accepted. A refusal sends no
        event to the origin: the connection never existed.
        """
        details = handshake_details(connection, self.settings.trust_forwarded_for, request)
        connection_id = self.issuer.issue()
        connected_at = now_ms()
        context = events.request_context_fields(self.context, connection_id, connected_at, details)
        context.update(eventType="CONNECT", routeKey=events.CONNECT_ROUTE)
        authorizer: dict[str, object] = {}
        if self.authorizer is not None:
            verdict = await self.authorizer.authorize(details, context)
            if isinstance(verdict, Refuse):
                self.counters["handshakesRefusedAuthorizer"] += 1
                return _text_response(_status(verdict.status), verdict.reason, verdict.headers)
            authorizer = dict(verdict.context)
            if len(events.dumps(authorizer)) > MAX_AUTHORIZER_CONTEXT_BYTES:
                self.counters["handshakesRefusedAuthorizer"] += 1
                self._warn(
                    "handshake refused: the authorizer's context is too large",
                    maxBytes=MAX_AUTHORIZER_CONTEXT_BYTES,
                )
                return _text_response(
                    _status(self.settings.authorizer_error_status), "Authorizer error.\n"
                )
        passage = Passage(connection_id, connected_at, authorizer, None, (), False)
        if self.connect_handler is not None:
            fragment = events.connection_fragment(
                self.context, connection_id, connected_at, details, authorizer
            )
            event = events.connect_event(fragment, 0, connected_at, details)
            answer = await self.connect_handler.call(event)
            refusal = self._read_connect_answer(request, answer, passage)
            if refusal is not None:
                return refusal
        self._passages[connection] = passage
        return None

    def _read_connect_answer(
        self, request: Request, answer: ConnectAnswer, passage: Passage
    ) -> Response | None:
        if not 200 <= answer.status < 300:
            self.counters["handshakesRefusedConnectHandler"] += 1
            return _text_response(_status(answer.status), answer.body, answer.headers)
        headers = []
        for name, value in answer.headers:
            if name.lower() != "sec-websocket-protocol":
                headers.append((name, value))
                continue
            offered = offered_subprotocols(request)
            if value not in offered:
                self.counters["handshakesRefusedConnectHandler"] += 1
                self._warn(
                    "handshake refused: the $connect handler chose a subprotocol the client "
                    "did not offer",
                    chosen=value,
                    offered=",".join(offered),
                )
                return _text_response(
                    _status(self.settings.connect_handler_error_status),
                    "The $connect handler chose a subprotocol the client did not offer.\n",
                )
            passage.subprotocol = value
        passage.headers = tuple(headers)
        passage.connect_handled = True
        return None

    def _chosen_subprotocol(self, connection: ServerConnection) -> str | None:
        passage = self._passages.get(connection)
        return passage.subprotocol if passage is not None else None

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        """Build the CONNECT now that the subprotocol is chosen, and refuse with an HTTP status
        a handshake whose CONNECT could never reach the origin or finds no room to wait in."""
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        passage = self._passages.get(connection)  # before _admission, which takes it
        if passage is not None:
            for name, value in passage.headers:
                response.headers[name] = value
        admission = self._admission(connection)
        if admission.disconnect_room:
            size = len(admission.connect)
            if size > self.max_event_bytes:
                self.counters["handshakesRefusedTooLarge"] += 1
                self._warn(
                    "handshake refused: its CONNECT event is too large for the origin",
                    sourceIp=admission.details.source_ip,
                    eventBytes=size,
                    maxEventBytes=self.max_event_bytes,
                )
                return _refusal(
                    http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"The request headers are too large to pass on: {size} bytes as a CONNECT "
                    f"event, and the most is {self.max_event_bytes}.\n",
                )
            if not self.pump.can_admit_connection(size, admission.disconnect_room):
                self._refused_buffer_full()
                return _refusal(
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    "This node is holding all the events it can for its origin; retry later.\n",
                )
        self._admissions[connection] = admission
        return None

    def _admission(self, connection: ServerConnection) -> Admission:
        details = handshake_details(connection, self.settings.trust_forwarded_for)
        passage = self._passages.pop(connection, None)
        if passage is not None:
            connection_id, connected_at = passage.connection_id, passage.connected_at
            authorizer, handled = passage.authorizer, passage.connect_handled
        else:
            connection_id, connected_at = self.issuer.issue(), now_ms()
            authorizer, handled = {}, False
        fragment = events.connection_fragment(
            self.context, connection_id, connected_at, details, authorizer
        )
        connect = events.connect_event(fragment, 0, connected_at, details, connect_handled=handled)
        if handled and self.settings.connect_event == "suppress":
            connect_sent: bytes | None = None
        else:
            connect_sent = connect
        graphql = self.graphql is not None and details.subprotocol in graphql_ws.PROTOCOLS
        sends_events = not graphql and self.settings.origin_transport != "none"
        room = events.disconnect_event_bound(fragment) if sends_events else 0
        return Admission(
            connection_id, connected_at, details, fragment, connect, room, connect_sent
        )

    def _refused_buffer_full(self) -> None:
        self.counters["handshakesRefusedBufferFull"] += 1
        outbox = self.pump.outbox
        self._warn(
            "handshake refused: the event buffer is full",
            bufferedEventBytes=outbox.nbytes,
            reservedEventBytes=outbox.reserved_bytes,
            eventBufferBytes=outbox.max_bytes,
        )

    def _warn(self, message: str, **fields: object) -> None:
        """A warning clients can cause at will: one line per kind every 10 s at most."""
        held = self.throttle.allow(message, time.monotonic())
        if held is not None:
            log.warning(message, extra={**fields, "heldBack": held})

    # Connections

    async def _handle(self, connection: ServerConnection) -> None:
        if len(self.registry) >= self.settings.max_connections:
            # Handshakes that passed the check together may exceed the limit; never let them in.
            self.counters["handshakesRefusedFull"] += 1
            await connection.close(1013, "connection limit reached; retry later")
            return
        admission = self._admissions.pop(connection)
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
            self._refused_buffer_full()
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
                self._close(entry, 1011, "event refused by the origin transport")

    def _close(self, entry: ConnectionEntry[ServerConnection], code: int, reason: str) -> None:
        self.writer.close(entry, code, reason)

    # Commands

    async def execute(self, commands: Sequence[PeerCommand], *, from_peer: bool = False) -> Outcome:
        """Carry out commands in order; returns once local writes are done and peers have theirs."""
        outcome = Outcome()
        forwards: dict[NodeAddress, list[Command]] = {}
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
            try:
                if isinstance(command, Publish) and self.graphql is None:
                    raise CommandError(
                        "publish needs GraphQL mode: this node has no --graphql-origin-url "
                        "or --graphql-origin-function"
                    )
                route = self.router.route(
                    command, self.registry, from_peer=from_peer, members=members
                )
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
            if route.to_every_node and self.cluster is not None:
                for peer in self.cluster.peers():
                    if peer != self.address:
                        forwards.setdefault(peer, []).append(command)
            for connection_id in route.gone_ids:
                self._gone(connection_id, command.action)
        if forwards:
            await asyncio.gather(*(self._forward(node, batch) for node, batch in forwards.items()))
        return outcome

    def _deliver_locally(self, route: Route) -> None:
        command = route.command
        if isinstance(command, Publish):
            assert self.graphql is not None  # checked in execute
            self.graphql.publish(command.keys, command.context)
            return
        if isinstance(command, Close):
            for connection_id in route.local_ids:
                entry = self.registry.get(connection_id)
                if entry is not None:
                    self._close(entry, command.code, command.reason)
            return
        if isinstance(command, Broadcast):
            frame = message_frame(command.payload, command.binary)
            for entry in self.registry:
                if not entry.graphql:
                    self._write(entry, frame, command)
            return
        if route.local_ids:
            frame = message_frame(command.payload, command.binary)
            get = self.registry.get
            for connection_id in route.local_ids:
                entry = get(connection_id)
                if entry is None or not self._write(entry, frame, command):
                    self._gone(connection_id, command.action)

    def _write(
        self, entry: ConnectionEntry[ServerConnection], frame: bytes, command: Send | Broadcast
    ) -> bool:
        """Write one frame to a client; a client that reads too slowly is closed with 1013."""
        return self.writer.write(entry, frame, command)

    async def _forward(self, node: NodeAddress, commands: list[Command]) -> None:
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
            if isinstance(command, Send | Close):
                for connection_id in command.connection_ids:
                    self._gone(connection_id, command.action)

    def _gone(self, connection_id: str, action: str) -> None:
        self.counters["gone"] += 1
        if not self.settings.gone_events:
            return
        event = events.gone_event(self.context, connection_id, action, now_ms())
        if not self.pump.offer(connection_id, event):
            # GONE is advice, not client data: with the origin backed up it is dropped and
            # counted, so a flood of commands to unknown IDs cannot grow memory.
            self.counters["goneDropped"] += 1

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
        s = self.settings
        while True:
            await asyncio.sleep(s.metrics_interval)
            fields = connections_metric(
                s.metrics_namespace, s.service_name, len(self.registry), now_ms()
            )
            metrics_log.info("connections", extra=fields)

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
                    self._close(entry, 1011, "origin unavailable")

    def stats(self) -> dict[str, object]:
        return {
            "connections": len(self.registry),
            "bufferedEvents": len(self.pump.outbox),
            "bufferedEventBytes": self.pump.outbox.nbytes,
            "reservedEventBytes": self.pump.outbox.reserved_bytes,
            "eventsDelivered": self.pump.delivered,
            "draining": self.draining,
            **self.counters,
            **self.writer.stats(),
            **self.connections_api.stats(),
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
        return {**self.counters, **self.writer.counters, **graphql}


# Event-buffer bytes a connection keeps for its DISCONNECT with a browser's Host and User-Agent
# (events.disconnect_event_bound gives 836 for one); longer headers keep more.
DISCONNECT_ROOM_TYPICAL = 1024

# Room for an event's envelope around a MESSAGE body (request context, IDs, timestamps).
EVENT_ENVELOPE_BYTES = 8 * 1024


def largest_message_fitting(max_event_bytes: int) -> int:
    """The largest binary message whose event (base64 body, envelope) fits one origin message."""
    return max(1024, (max_event_bytes - EVENT_ENVELOPE_BYTES) * 3 // 4)


# The authorizer's answer rides in every event of the connection: keep it small.
MAX_AUTHORIZER_CONTEXT_BYTES = 4096


def _status(code: int) -> http.HTTPStatus:
    """A refusal's status: the one asked for when HTTP knows it, else 403 (refused all the same)."""
    try:
        status = http.HTTPStatus(code)
    except ValueError:
        return http.HTTPStatus.FORBIDDEN
    return status if 400 <= status.value <= 599 else http.HTTPStatus.FORBIDDEN


def _text_response(
    status: http.HTTPStatus, text: str, extra: Sequence[tuple[str, str]] = ()
) -> Response:
    """An answer from process_request; the library adds the Server header to it."""
    body = text.encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    for name, value in extra:
        if name.lower() not in _OWN_HEADERS:
            headers[name] = value
    return Response(status.value, status.phrase, headers, body)


_OWN_HEADERS = frozenset({"content-type", "content-length", "connection", "server"})


def _refusal(status: http.HTTPStatus, text: str) -> Response:
    """An answer from process_response, which replaces the one the library gave its Server."""
    response = _text_response(status, text)
    response.headers["Server"] = SERVER_HEADER
    return response


def _close_status(connection: ServerConnection) -> tuple[int, str]:
    """The close code and reason the connection ended with, whichever side started it."""
    protocol = connection.protocol
    received, sent = protocol.close_rcvd, protocol.close_sent
    if sent is not None and (received is None or not protocol.close_rcvd_then_sent):
        return sent.code, sent.reason
    if received is not None:
        return received.code, received.reason
    return 1006, ""
