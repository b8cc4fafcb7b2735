"""Events the node sends to the origin, shaped like API Gateway WebSocket events.

Each event is encoded once, to JSON bytes, where it is created; batching then only joins bytes. The
fields shared by every event of a connection are encoded at CONNECT into a fragment, so a MESSAGE
costs one small string format and the encoding of its body.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
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
ROUTE_EXPRESSION_PREFIX = "$request.body."
MAX_ROUTE_KEY_LENGTH = 128
_DEFAULT_ROUTE_JSON = '"$default"'


# A random prefix per process and a counter: unique without a system call per event.
_MESSAGE_ID_PREFIX = base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")
_message_counter = itertools.count()


def new_message_id() -> str:
    """A unique ID per event, so origins can de-duplicate redeliveries."""
    return f"{_MESSAGE_ID_PREFIX}{next(_message_counter):x}"


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What every event of a node says about where it came from."""

    stage: str
    region: str
    domain_name: str = ""


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
) -> str:
    """The requestContext members shared by every event of one connection, encoded once."""
    host = _first(details.headers, "host") or node.domain_name
    context: dict[str, object] = {
        "connectionId": connection_id,
        "connectedAt": connected_at,
        "domainName": host,
        "stage": node.stage,
        "region": node.region,
        "identity": {
            "sourceIp": details.source_ip,
            "userAgent": _first(details.headers, "user-agent") or "",
        },
    }
    if details.subprotocol is not None:
        context["subprotocol"] = details.subprotocol
    return _dumps(context)[1:-1]


def connect_event(fragment: str, sequence: int, now_ms: int, details: HandshakeDetails) -> bytes:
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
    extra = {
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "path": details.path,
        "isBase64Encoded": False,
    }
    return _event("CONNECT", CONNECT_ROUTE, fragment, sequence, now_ms, _dumps(extra)[1:-1])


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
    extra = (
        f'"disconnectStatusCode":{code},"disconnectReason":{reason_json},"isBase64Encoded":false'
    )
    return _event("DISCONNECT", DISCONNECT_ROUTE, fragment, sequence, now_ms, extra)


# RFC 6455 leaves a close frame 123 bytes of reason after its code. As JSON it is at most twice
# that, quotes aside, unless it holds control characters (six bytes each): those are cut.
MAX_CLOSE_REASON_BYTES = 123
MAX_REASON_JSON_BYTES = 2 * MAX_CLOSE_REASON_BYTES + 2


def disconnect_event_bound(fragment: str) -> int:
    """The most bytes a DISCONNECT of this connection can take, whatever its code and reason:
    room for it is set aside at CONNECT, since a DISCONNECT can never be refused."""
    longest = disconnect_event(fragment, 1 << 63, 10**14, 4999, "")
    # The empty reason's quotes are in `longest`; 16 more for message IDs to grow.
    return len(longest) + MAX_REASON_JSON_BYTES + 16


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
        return key if 0 < len(key) <= MAX_ROUTE_KEY_LENGTH else DEFAULT_ROUTE


def _event(
    event_type: str, route_key: str, fragment: str, sequence: int, now_ms: int, rest: str
) -> bytes:
    route = _DEFAULT_ROUTE_JSON if route_key == DEFAULT_ROUTE else _dumps(route_key)
    return (
        f'{{"requestContext":{{"eventType":"{event_type}","routeKey":{route},'
        f'"messageId":"{new_message_id()}","requestTimeEpoch":{now_ms},'
        f'"sequenceNumber":{sequence},{fragment}}},{rest}}}'
    ).encode()


def _node_context(event_type: str, route_key: str, node: NodeContext, now_ms: int) -> dict:
    return {
        "eventType": event_type,
        "routeKey": route_key,
        "messageId": new_message_id(),
        "requestTimeEpoch": now_ms,
        "domainName": node.domain_name,
        "stage": node.stage,
        "region": node.region,
    }


def _first(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key.lower() == name:
            return value
    return None
