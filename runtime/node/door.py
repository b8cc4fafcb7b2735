"""The door: what a handshake meets before its 101, and what it brings through.

In order, as API Gateway does before a WebSocket connection exists: the health check and the
node's own refusals (draining, at its connection limit, handshake rates per source IP and per
node), then the authorizer, then the synchronous $connect handler, and last, once the subprotocol
is chosen, the CONNECT event built and checked against what the origin can carry and the room
left in the event buffer. Every refusal is an HTTP status with a text body, and a refused
handshake sends no event: its connection never existed.

The node (runtime/node/server.py) calls it from the websockets server's process_request and
process_response hooks and takes the admission when the connection opens.
"""

from __future__ import annotations

import http
import logging
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from runtime.config import Settings
from runtime.core.rate_limit import TokenBuckets
from runtime.logs import LogThrottle
from runtime.names import HEALTH_PATH
from runtime.node.handshake import handshake_details, offered_subprotocols, source_ip
from runtime.node.origin_pump import OriginPump
from runtime.transports.base import ConnectHandler, HandshakeAuthorizer, Refuse
from runtime.wire import events, graphql_ws
from runtime.wire.connect_answer import ConnectAnswer
from runtime.wire.connection_id import ConnectionIdIssuer
from runtime.wire.events import HandshakeDetails, now_ms

log = logging.getLogger("runtime.node")

SERVER_HEADER = "wsgateway"
IP_RATE_KEYS = 100_000  # source IPs whose handshake rates are tracked at once


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


class Door:
    """One node's door; its counters (handshakesRefused*) join the node's stats."""

    def __init__(
        self,
        settings: Settings,
        context: events.NodeContext,
        issuer: ConnectionIdIssuer,
        pump: OriginPump,
        *,
        authorizer: HandshakeAuthorizer | None,
        connect_handler: ConnectHandler | None,
        graphql: bool,
    ) -> None:
        self.settings = settings
        self.context = context
        self.issuer = issuer
        self.pump = pump
        self.authorizer = authorizer
        self.connect_handler = connect_handler
        self.graphql = graphql  # GraphQL mode: its connections send no events
        self.counters: Counter[str] = Counter()
        self.throttle = LogThrottle()
        # Handshake rates: per source IP (a table bounded in keys) and for the whole node.
        self.ip_rate = (
            TokenBuckets(
                settings.handshake_rate_per_ip, settings.handshake_burst_per_ip, IP_RATE_KEYS
            )
            if settings.handshake_rate_per_ip > 0
            else None
        )
        self.node_rate = (
            TokenBuckets(settings.handshake_rate, settings.handshake_burst, 1)
            if settings.handshake_rate > 0
            else None
        )
        # Handshakes between the door and their 101 (passages), and between their 101 and their
        # handler (admissions); one that dies in between never opens, and its entry goes with
        # its connection.
        self._passages: weakref.WeakKeyDictionary[ServerConnection, Passage] = (
            weakref.WeakKeyDictionary()
        )
        self._admissions: weakref.WeakKeyDictionary[ServerConnection, Admission] = (
            weakref.WeakKeyDictionary()
        )

    async def process_request(
        self,
        connection: ServerConnection,
        request: Request,
        *,
        draining: bool,
        open_connections: int,
    ) -> Response | None:
        """Before the 101: an answer (health, or a refusal), or None to go on."""
        refusal = self._check_request(connection, request, draining, open_connections)
        if refusal is not None or (self.authorizer is None and self.connect_handler is None):
            return refusal
        return await self._pass_door(connection, request)

    def _check_request(
        self, connection: ServerConnection, request: Request, draining: bool, open_connections: int
    ) -> Response | None:
        """What needs no one else's answer: health, draining, the cap and the handshake rates."""
        path = request.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            if draining:
                return _text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
            return _text_response(http.HTTPStatus.OK, "ok\n")
        if draining:
            return _text_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "This node is shutting down; reconnect.\n"
            )
        # Open connections; handshakes racing this one are caught when they open.
        if open_connections >= self.settings.max_connections:
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

    def chosen_subprotocol(self, connection: ServerConnection) -> str | None:
        """The subprotocol the $connect handler chose for this handshake, if it chose one."""
        passage = self._passages.get(connection)
        return passage.subprotocol if passage is not None else None

    def process_response(
        self, connection: ServerConnection, response: Response, max_event_bytes: int
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
            if size > max_event_bytes:
                self.counters["handshakesRefusedTooLarge"] += 1
                self._warn(
                    "handshake refused: its CONNECT event is too large for the origin",
                    sourceIp=admission.details.source_ip,
                    eventBytes=size,
                    maxEventBytes=max_event_bytes,
                )
                return _refusal(
                    http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"The request headers are too large to pass on: {size} bytes as a CONNECT "
                    f"event, and the most is {max_event_bytes}.\n",
                )
            if not self.pump.can_admit_connection(size, admission.disconnect_room):
                self.refused_buffer_full()
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
        graphql = self.graphql and details.subprotocol in graphql_ws.PROTOCOLS
        sends_events = not graphql and self.settings.origin_transport != "none"
        room = events.disconnect_event_bound(fragment) if sends_events else 0
        return Admission(
            connection_id, connected_at, details, fragment, connect, room, connect_sent
        )

    def admitted(self, connection: ServerConnection) -> Admission:
        """The admission of a handshake that got its 101, taken once, as it opens."""
        return self._admissions.pop(connection)

    def refused_full(self) -> None:
        """A handshake found the node at its connection limit as it opened."""
        self.counters["handshakesRefusedFull"] += 1

    def refused_buffer_full(self) -> None:
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
