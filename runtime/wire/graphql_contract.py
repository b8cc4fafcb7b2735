"""The GraphQL origin's requests and answers (docs/protocol.md, "GraphQL mode"), checked here.

An answer that breaks the contract is an origin fault: the node logs it and tells the client the
operation failed, rather than forwarding whatever came back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.wire.graphql_ws import Operation

MAX_DIGEST_LENGTH = 256
# A subscription's keys, as the origin names them and publishes address them: one definition
# for the node (here and in commands.py) and the origin SDK (runtime/origin/graphql.py).
MAX_KEYS = 100
MAX_KEY_LENGTH = 256
MAX_REJECT_MESSAGE = 1000


class BadOriginAnswer(ValueError):
    """The origin answered, but not as the contract says."""


@dataclass(frozen=True, slots=True)
class InitAnswer:
    accept: bool
    context: Any = None
    payload: Any = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    digest: str
    input_context: Any
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OperationAnswer:
    """Exactly what the client should get: a result, errors, a subscription, or an end."""

    result: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None
    subscription: SubscriptionSpec | None = None
    complete: bool = False


def init_request(
    node: str, connection_id: str, subprotocol: str, payload: Any, connect: Any
) -> dict[str, Any]:
    return {
        "type": "connection_init",
        "node": node,
        "connectionId": connection_id,
        "subprotocol": subprotocol,
        "payload": payload,
        "connect": connect,
    }


def start_request(
    node: str, connection_id: str, operation: Operation, context: Any
) -> dict[str, Any]:
    return {
        "type": "start",
        "node": node,
        "connectionId": connection_id,
        "operationId": operation.id,
        "query": operation.query,
        "variables": operation.variables,
        "operationName": operation.operation_name,
        "extensions": operation.extensions,
        "context": context,
    }


def subscription_query_request(
    node: str,
    digest: str,
    query: str,
    variables: Any,
    operation_name: str | None,
    input_context: Any,
    publish_context: Any,
) -> dict[str, Any]:
    return {
        "type": "subscription_query",
        "node": node,
        "inputDigest": digest,
        "query": query,
        "variables": variables,
        "operationName": operation_name,
        "inputContext": input_context,
        "publishContext": publish_context,
    }


def keepalive_request(node: str, keys: list[str]) -> dict[str, Any]:
    return {"type": "subscription_keepalive", "node": node, "keys": keys}


def requester_of(request: dict[str, Any]) -> str | None:
    """Whom a request serves: the client connection behind a connection_init or a start, or
    None for the node's own work (publish executions, keepalives), so that the origin's places
    can be shared fairly between them."""
    connection_id = request.get("connectionId")
    return connection_id if isinstance(connection_id, str) else None


def parse_init_answer(answer: dict[str, Any]) -> InitAnswer:
    accept = answer.get("accept")
    if accept is True:
        payload = answer.get("payload")
        if payload is not None and not isinstance(payload, dict):
            # graphql-ws clients close on a connection_ack whose payload is not an object.
            raise BadOriginAnswer('"payload" of an accepted connection_init must be an object')
        return InitAnswer(True, answer.get("context"), payload)
    if accept is False:
        message = answer.get("message", "")
        if not isinstance(message, str):
            raise BadOriginAnswer('"message" of a refused connection_init must be a string')
        return InitAnswer(False, message=message[:MAX_REJECT_MESSAGE] or "connection refused")
    raise BadOriginAnswer('a connection_init answer needs "accept": true or false')


def parse_start_answer(answer: dict[str, Any]) -> OperationAnswer:
    if "subscription" in answer:
        parsed = OperationAnswer(
            result=_result(answer.get("result")), subscription=_subscription(answer)
        )
        return parsed
    if "errors" in answer:
        return OperationAnswer(errors=_errors(answer["errors"]))
    result = _result(answer.get("result"))
    if result is None:
        raise BadOriginAnswer('a start answer needs "result", "errors" or "subscription"')
    return OperationAnswer(result=result, complete=True)


def parse_query_answer(answer: dict[str, Any]) -> OperationAnswer:
    """A subscription_query answer; no result and no end means: nothing for this input."""
    if "errors" in answer:
        return OperationAnswer(errors=_errors(answer["errors"]), complete=True)
    complete = answer.get("complete", False)
    if not isinstance(complete, bool):
        raise BadOriginAnswer('"complete" must be true or false')
    return OperationAnswer(result=_result(answer.get("result")), complete=complete)


def _result(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not ("data" in value or "errors" in value):
        raise BadOriginAnswer('"result" must be an object with "data" and/or "errors"')
    return value


def _errors(value: Any) -> list[dict[str, Any]]:
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(error, dict) and isinstance(error.get("message"), str) for error in value
        )
    ):
        raise BadOriginAnswer('"errors" must be a non-empty list of objects with a "message"')
    return value


def _subscription(answer: dict[str, Any]) -> SubscriptionSpec:
    spec = answer["subscription"]
    if not isinstance(spec, dict):
        raise BadOriginAnswer('"subscription" must be an object')
    digest = spec.get("inputDigest")
    if not isinstance(digest, str) or not digest or len(digest) > MAX_DIGEST_LENGTH:
        raise BadOriginAnswer(
            f'"subscription.inputDigest" must be a string of 1 to {MAX_DIGEST_LENGTH} characters'
        )
    keys = spec.get("keys")
    if (
        not isinstance(keys, list)
        or not 1 <= len(keys) <= MAX_KEYS
        or not all(isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH for key in keys)
    ):
        raise BadOriginAnswer(
            f'"subscription.keys" must be a list of 1 to {MAX_KEYS} strings of 1 to '
            f"{MAX_KEY_LENGTH} characters"
        )
    return SubscriptionSpec(digest, spec.get("inputContext"), tuple(dict.fromkeys(keys)))
