"""The two GraphQL-over-WebSocket subprotocols, as messages: parsing what clients send, building
what the node answers. No I/O and no state; `runtime.core.graphql_session` decides what to do
with them.

`graphql-transport-ws` is the modern protocol of the `graphql-ws` library; `graphql-ws` is the
legacy one of `subscriptions-transport-ws`. They share a shape ({"id", "type", "payload"}) but not
their message names, their error payloads, nor how they treat a misbehaving client.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MODERN = "graphql-transport-ws"
LEGACY = "graphql-ws"
PROTOCOLS = (MODERN, LEGACY)

MAX_OPERATION_ID_LENGTH = 256
# Objects and arrays within one another, the message itself included. Python's JSON parser and
# encoder recurse once per level and fail near 1,000 minus the stack in use, so a document that
# parsed could still fail to be encoded again (into a request to the origin) a few frames deeper.
# Far below that, and far above any GraphQL variables a client sends.
MAX_NESTING = 100

# Close codes of the modern protocol (the legacy one has none of its own).
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
SUBPROTOCOL_NOT_ACCEPTABLE = 4406
INIT_TIMEOUT = 4408
DUPLICATE_OPERATION = 4409
TOO_MANY_INITS = 4429
INTERNAL_ERROR = 4500

_CLIENT_TYPES = {
    MODERN: frozenset({"connection_init", "ping", "pong", "subscribe", "complete"}),
    LEGACY: frozenset({"connection_init", "start", "stop", "connection_terminate"}),
}
START_TYPES = frozenset({"subscribe", "start"})
STOP_TYPES = frozenset({"complete", "stop"})


class InvalidMessage(ValueError):
    """A client message the protocol does not allow; the text is what the client is told.

    `operation_id` names the operation when the message had a usable one, so a legacy client's
    `error` answer reaches the operation that is waiting for it.
    """

    def __init__(self, message: str, operation_id: str | None = None) -> None:
        super().__init__(message)
        self.operation_id = operation_id


class MalformedJson(InvalidMessage):
    """Not JSON the node reads: malformed, or nested too deep (the legacy protocol answers these
    with connection_error, as its server does when JSON.parse throws)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """A `subscribe` (modern) or `start` (legacy) request."""

    id: str
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ClientMessage:
    type: str
    id: str | None = None
    payload: Any = None
    operation: Operation | None = None


def parse_client_message(protocol: str, data: str | bytes) -> ClientMessage:
    """Check one client message against `protocol`; raises `InvalidMessage` naming the fault."""
    if isinstance(data, bytes):
        raise InvalidMessage("binary messages are not part of the protocol; send JSON text")
    document = _load(data)
    if not isinstance(document, dict):
        raise InvalidMessage("message must be a JSON object")
    if "\\u" in data and _has_lone_surrogate(document):
        # JSON may escape half of a UTF-16 pair ("\ud83d"); such text cannot be UTF-8 anywhere on.
        raise InvalidMessage("message holds lone surrogates (\\ud800-\\udfff): not valid text")
    kind = document.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage('"type" must be a string')
    if kind not in _CLIENT_TYPES[protocol]:
        raise InvalidMessage(f"unknown message type {kind[:64]!r} for {protocol}")
    payload = document.get("payload")
    if kind in START_TYPES:
        operation_id = _operation_id(document)
        try:
            operation = _operation(operation_id, payload)
        except InvalidMessage as exc:
            raise InvalidMessage(str(exc), operation_id) from None
        return ClientMessage(kind, operation.id, payload, operation)
    if kind in STOP_TYPES:
        return ClientMessage(kind, _operation_id(document))
    if protocol == MODERN and payload is not None and not isinstance(payload, dict):
        raise InvalidMessage(f'"payload" of {kind} must be an object')
    return ClientMessage(kind, payload=payload)


_TOO_DEEP = f"message is nested deeper than {MAX_NESTING} levels of objects and arrays"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _load(data: str) -> Any:
    try:
        document = json.loads(data)
    except RecursionError:
        raise MalformedJson(_TOO_DEEP) from None
    except ValueError as exc:
        raise MalformedJson(f"message is not valid JSON: {exc}") from None
    # Fewer brackets than the limit cannot nest deeper: most messages skip the walk.
    if data.count("{") + data.count("[") > MAX_NESTING and _nesting(document) > MAX_NESTING:
        raise MalformedJson(_TOO_DEEP)
    return document


def _nesting(document: Any) -> int:
    """How deep objects and arrays go; walked without recursion, as deep as the parser went."""
    deepest = 0
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _has_lone_surrogate(document: Any) -> bool:
    """Looks at every string, keys included, without recursion; a pair the client escaped
    correctly was joined by the parser, so any surrogate left is alone."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _operation_id(document: dict[str, Any]) -> str:
    value = document.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidMessage('"id" must be a non-empty string')
    if len(value) > MAX_OPERATION_ID_LENGTH:
        raise InvalidMessage(f'"id" must be at most {MAX_OPERATION_ID_LENGTH} characters')
    return value


def _operation(operation_id: str, payload: Any) -> Operation:
    if not isinstance(payload, dict):
        raise InvalidMessage('"payload" must be an object with a "query"')
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidMessage('"payload.query" must be a non-empty string')
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise InvalidMessage('"payload.variables" must be an object or null')
    name = payload.get("operationName")
    if name is not None and not isinstance(name, str):
        raise InvalidMessage('"payload.operationName" must be a string or null')
    extensions = payload.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise InvalidMessage('"payload.extensions" must be an object or null')
    return Operation(operation_id, query, variables, name or None, extensions)


# Server messages, as the text of one WebSocket message each. ASCII-escaped: an origin's answer may
# hold a lone surrogate (JavaScript cut a string mid-pair), which as an escape is still valid JSON
# the client's JSON.parse reads back, where raw it could not be encoded as UTF-8 at all.

_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

KEEP_ALIVE = '{"type":"ka"}'


def pong(payload: Any = None) -> str:
    """The answer to a ping, echoing its payload as the graphql-ws server does."""
    if payload is None:
        return '{"type":"pong"}'
    return '{"type":"pong","payload":' + _encode(payload) + "}"


def encode_json(value: Any) -> str:
    return _encode(value)


def connection_ack(payload: Any = None) -> str:
    if payload is None:
        return '{"type":"connection_ack"}'
    return '{"type":"connection_ack","payload":' + _encode(payload) + "}"


def connection_error(message: str) -> str:
    """Legacy only: the connection as a whole failed (init refused, unparsable message)."""
    return _encode({"type": "connection_error", "payload": {"message": message}})


def result_message(protocol: str, operation_id: str, result_json: str) -> str:
    """An execution result (already JSON text, so a shared result is encoded once)."""
    kind = "next" if protocol == MODERN else "data"
    return (
        '{"id":' + _encode(operation_id) + ',"type":"' + kind + '","payload":' + result_json + "}"
    )


def error_message(protocol: str, operation_id: str | None, errors: list[dict[str, Any]]) -> str:
    """Errors of one operation: a list in the modern protocol, the first error in the legacy one."""
    payload: Any = errors if protocol == MODERN else errors[0]
    document: dict[str, Any] = {"type": "error", "payload": payload}
    if operation_id is not None:
        document = {"id": operation_id, **document}
    return _encode(document)


def complete_message(operation_id: str) -> str:
    return '{"id":' + _encode(operation_id) + ',"type":"complete"}'


def errors_of(message: str) -> list[dict[str, Any]]:
    return [{"message": message}]
