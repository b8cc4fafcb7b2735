"""Events the node sends to the origin, shaped like API Gateway WebSocket events.

Every field API Gateway sends is here, by the same name and in the same place, so handlers written
for it read ours unchanged; our own additions (sequenceNumber, subprotocol, connectHandled) sit
beside them. docs/protocol.md lists what still differs.

Each event is encoded once, to JSON bytes, where it is created; batching then only joins bytes. The
fields shared by every event of a connection are encoded at CONNECT into a fragment, so a MESSAGE
costs one small string format and the encoding of its body.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
dumps = _dumps  # compact JSON, as every event is encoded
# Valid text that SQS and SNS refuse in a message (they take #x20-#xFFFD and beyond, but not
# these two noncharacters); JSON escaping carries them as they are. Control characters are
# escaped by the encoder already.
_REFUSED_BY_QUEUES = ("\ufffe", "\uffff")


def _text_json(value: str) -> str:
    """A client's string as JSON that any origin transport can carry."""
    encoded = _dumps(value)
    if "\ufffe" in encoded or "\uffff" in encoded:  # at once false for Latin-1 text
        for char in _REFUSED_BY_QUEUES:
            encoded = encoded.replace(char, f"\\u{ord(char):04x}")
    return encoded


CONNECT_ROUTE = "$connect"
DISCONNECT_ROUTE = "$disconnect"
DEFAULT_ROUTE = "$default"
KEEPALIVE_ROUTE = "$keepalive"
GONE_ROUTE = "$gone"
JOIN_ROUTE = "$join"
LEAVE_ROUTE = "$leave"
OCCUPANCY_ROUTE = "$occupancy"
ROUTE_EXPRESSION_PREFIX = "$request.body."
MAX_ROUTE_KEY_LENGTH = 128
_DEFAULT_ROUTE_JSON = '"$default"'


# A random prefix per process and a counter: unique without a system call per event.
_MESSAGE_ID_PREFIX = base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")
_message_counter = itertools.count()


def now_ms() -> int:
    """The events' clock: milliseconds since the epoch, as API Gateway's requestTimeEpoch."""
    return time.time_ns() // 1_000_000


def new_message_id() -> str:
    """A unique ID per event, so origins can de-duplicate redeliveries."""
    return f"{_MESSAGE_ID_PREFIX}{next(_message_counter):x}"


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What every event of a node says about where it came from."""

    stage: str
    region: str
    domain_name: str = ""
    api_id: str = ""


# API Gateway's identity keys; only the ones a WebSocket handshake can tell are ever set.
_IDENTITY_KEYS = (
    "accountId",
    "apiKey",
    "apiKeyId",
    "caller",
    "cognitoAuthenticationProvider",
    "cognitoAuthenticationType",
    "cognitoIdentityId",
    "cognitoIdentityPoolId",
    "principalOrgId",
    "user",
    "userArn",
)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_request_time_cache: tuple[int, str] = (-1, "")


def request_time(now_ms: int) -> str:
    """API Gateway's requestTime ("04/Dec/2026:02:51:04 +0000"), formatted once per second."""
    global _request_time_cache
    second = now_ms // 1000
    cached_second, text = _request_time_cache
    if second != cached_second:
        t = time.gmtime(second)
        text = (
            f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
        _request_time_cache = (second, text)
    return text


@dataclass(frozen=True, slots=True)
class HandshakeDetails:
    """What a client sent when it connected, as the CONNECT event reports it."""

    path: str
    headers: Sequence[tuple[str, str]]
    query: Sequence[tuple[str, str]]
    source_ip: str
    subprotocol: str | None


def connection_fragment(
    node: NodeContext,
    connection_id: str,
    connected_at: int,
    details: HandshakeDetails,
    authorizer: Mapping[str, object] | None = None,
) -> str:
    """The requestContext members shared by every event of one connection, encoded once.

    `authorizer` is what the handshake's authorizer answered (principalId, context, JWT claims):
    API Gateway repeats it in every event of the connection, and so do we.
    """
    context: dict[str, object] = request_context_fields(node, connection_id, connected_at, details)
    if authorizer:
        context["authorizer"] = dict(authorizer)
    if details.subprotocol is not None:
        context["subprotocol"] = details.subprotocol
    return _dumps(context)[1:-1]


def request_context_fields(
    node: NodeContext, connection_id: str, connected_at: int, details: HandshakeDetails
) -> dict[str, object]:
    """The per-connection requestContext members, as authorizers and $connect handlers see them."""
    identity: dict[str, object] = dict.fromkeys(_IDENTITY_KEYS)
    identity["sourceIp"] = details.source_ip
    identity["userAgent"] = header_value(details.headers, "user-agent") or ""
    return {
        "connectionId": connection_id,
        "connectedAt": connected_at,
        "apiId": node.api_id,
        "domainName": header_value(details.headers, "host") or node.domain_name,
        "stage": node.stage,
        "region": node.region,
        "identity": dict(sorted(identity.items())),
    }


def connect_event(
    fragment: str,
    sequence: int,
    now_ms: int,
    details: HandshakeDetails,
    *,
    connect_handled: bool = False,
) -> bytes:
    """The CONNECT event; `connect_handled` marks one whose $connect the node already called."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in details.headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in details.query:
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)
    extra: dict[str, object] = {"headers": single, "multiValueHeaders": multi}
    if query_single:  # API Gateway leaves both out when there is no query string
        extra["queryStringParameters"] = query_single
        extra["multiValueQueryStringParameters"] = query_multi
    extra["path"] = details.path
    extra["isBase64Encoded"] = False
    marked = ',"connectHandled":true' if connect_handled else ""
    return _event("CONNECT", CONNECT_ROUTE, fragment, sequence, now_ms, _dumps(extra)[1:-1], marked)


def message_event(
    fragment: str, sequence: int, now_ms: int, route_key: str, data: str | bytes
) -> bytes:
    if isinstance(data, str):
        body = f'"body":{_text_json(data)},"isBase64Encoded":false'
    else:
        body = f'"body":"{base64.b64encode(data).decode("ascii")}","isBase64Encoded":true'
    return _event("MESSAGE", route_key, fragment, sequence, now_ms, body)


def disconnect_event(fragment: str, sequence: int, now_ms: int, code: int, reason: str) -> bytes:
    reason_json = _text_json(reason)
    while len(reason_json.encode()) > MAX_REASON_JSON_BYTES:
        # Only a reason of control characters escapes past this; what is left still says it.
        reason = reason[: len(reason) * 3 // 4]
        reason_json = _text_json(reason)
    # In requestContext, where API Gateway puts them; at the top level too, for our older readers.
    status = f'"disconnectStatusCode":{code},"disconnectReason":{reason_json}'
    extra = f'{status},"isBase64Encoded":false'
    return _event("DISCONNECT", DISCONNECT_ROUTE, fragment, sequence, now_ms, extra, "," + status)


# RFC 6455 leaves a close frame 123 bytes of reason after its code. As JSON it is at most twice
# that, quotes aside, unless it holds control characters (six bytes each): those are cut.
MAX_CLOSE_REASON_BYTES = 123
MAX_REASON_JSON_BYTES = 2 * MAX_CLOSE_REASON_BYTES + 2


def disconnect_event_bound(fragment: str) -> int:
    """The most bytes a DISCONNECT of this connection can take, whatever its code and reason:
    room for it is set aside at CONNECT, since a DISCONNECT can never be refused."""
    longest = disconnect_event(fragment, 1 << 63, 10**14, 4999, "")
    # The empty reason's quotes are in `longest` (twice); 32 more for message IDs to grow.
    return len(longest) + 2 * MAX_REASON_JSON_BYTES + 32


def keepalive_events(
    node: NodeContext, connection_ids: Iterable[str], now_ms: int, per_event: int
) -> list[bytes]:
    """One KEEPALIVE per `per_event` live connections, so no event grows without bound."""
    ids = list(connection_ids)
    events = []
    for start in range(0, len(ids), per_event):
        context = _node_context("KEEPALIVE", KEEPALIVE_ROUTE, node, now_ms)
        events.append(
            _dumps(
                {"requestContext": context, "connectionIds": ids[start : start + per_event]}
            ).encode()
        )
    return events


def gone_event(node: NodeContext, connection_id: str, action: str, now_ms: int) -> bytes:
    """A command named a connection that does not exist: API Gateway's 410, delivered later."""
    context = _node_context("GONE", GONE_ROUTE, node, now_ms)
    context["connectionId"] = connection_id
    context["action"] = action
    return _dumps({"requestContext": context}).encode()


def presence_event(
    node: NodeContext,
    kind: str,
    connection_id: str,
    channel: str,
    user_info: bytes,
    now_ms: int,
    reason: str = "",
) -> bytes:
    """JOIN or LEAVE: a subscription with presence events began or ended on this node.

    `userInfo` is the JSON the subscribe gave (left out when none); a LEAVE says why it ended:
    "unsubscribed" or "disconnected".
    """
    route = JOIN_ROUTE if kind == "JOIN" else LEAVE_ROUTE
    context = _node_context(kind, route, node, now_ms)
    context["connectionId"] = connection_id
    context["channel"] = channel
    if reason:
        context["reason"] = reason
    event = _dumps({"requestContext": context})
    if user_info:
        event = f'{event[:-1]},"userInfo":{user_info.decode()}}}'
    return event.encode()


def occupancy_event(
    node: NodeContext, channel: str, count: int, partial: bool, now_ms: int
) -> bytes:
    """OCCUPANCY: a channel's member count over the cluster, sent every interval for channels
    whose subscribers asked; `partial` when a node did not answer in time."""
    context = _node_context("OCCUPANCY", OCCUPANCY_ROUTE, node, now_ms)
    context["channel"] = channel
    body: dict[str, object] = {"requestContext": context, "count": count}
    if partial:
        body["partial"] = True
    return _dumps(body).encode()


class RouteSelector:
    """Picks a message's routeKey from `$request.body.<field>[.<field>...]`, as API Gateway does."""

    def __init__(self, expression: str | None) -> None:
        self.path: tuple[str, ...] = ()
        if expression:
            if not expression.startswith(ROUTE_EXPRESSION_PREFIX) or not all(
                expression[len(ROUTE_EXPRESSION_PREFIX) :].split(".")
            ):
                raise ValueError(
                    "route selection expression must look like $request.body.<field> "
                    f"(got {expression!r})"
                )
            self.path = tuple(expression[len(ROUTE_EXPRESSION_PREFIX) :].split("."))

    def select(self, data: str | bytes) -> str:
        if not self.path or not isinstance(data, str) or data.lstrip(" \t\r\n")[:1] != "{":
            return DEFAULT_ROUTE
        try:
            value: object = json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return DEFAULT_ROUTE
        for field in self.path:
            if not isinstance(value, Mapping) or field not in value:
                return DEFAULT_ROUTE
            value = value[field]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return DEFAULT_ROUTE
        key = str(value)
        # Route keys starting with "$" are the gateway's own ($connect, $disconnect, ...): a
        # client naming one would reach a handler meant for the gateway alone.
        if not 0 < len(key) <= MAX_ROUTE_KEY_LENGTH or key.startswith("$"):
            return DEFAULT_ROUTE
        return key


def _event(
    event_type: str,
    route_key: str,
    fragment: str,
    sequence: int,
    now_ms: int,
    rest: str,
    context_extra: str = "",
) -> bytes:
    route = _DEFAULT_ROUTE_JSON if route_key == DEFAULT_ROUTE else _dumps(route_key)
    message_id = new_message_id()
    return (
        f'{{"requestContext":{{"eventType":"{event_type}","routeKey":{route},'
        f'"messageId":"{message_id}","requestId":"{message_id}",'
        f'"extendedRequestId":"{message_id}","requestTime":"{request_time(now_ms)}",'
        f'"requestTimeEpoch":{now_ms},"messageDirection":"IN",'
        f'"sequenceNumber":{sequence},{fragment}{context_extra}}},{rest}}}'
    ).encode()


def _node_context(
    event_type: str, route_key: str, node: NodeContext, now_ms: int
) -> dict[str, object]:
    message_id = new_message_id()
    return {
        "eventType": event_type,
        "routeKey": route_key,
        "messageId": message_id,
        "requestId": message_id,
        "extendedRequestId": message_id,
        "requestTime": request_time(now_ms),
        "requestTimeEpoch": now_ms,
        "messageDirection": "IN",
        "apiId": node.api_id,
        "domainName": node.domain_name,
        "stage": node.stage,
        "region": node.region,
    }


def header_value(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    """The first value of a header, by its lower-case name."""
    for key, value in pairs:
        if key.lower() == name:
            return value
    return None
