"""A GraphQL origin on graphql-core: answers the node's requests in GraphQL mode.

The contract is docs/protocol.md, "GraphQL mode". The node speaks GraphQL over WebSocket to the
clients and sends this origin one JSON request per step; `GraphqlOrigin.handle` answers it:

- `connection_init`: `on_connect(payload, connect_event)` returns the connection's context (any
  JSON value, kept by the node and sent back with each `start`), or raises `Reject`.
- `start`: a query or mutation is executed at once, with the connection's context as
  `info.context`. A subscription is not executed: the answer describes it by an input digest
  and the keys that should re-run it (`subscription_keys`).
- `subscription_query`: a `publish` command named one of the keys; the subscription operation is
  executed once, with graphql-core's `execute` (not `subscribe`: there is no event stream here),
  and **the publish command's `context` is the root value**. So the subscription field's resolver
  receives the publish context as its parent (`root`) and maps it to the field's value. Without a
  resolver, graphql-core's default one reads the field's name from it, as with graphql-js PubSub
  payloads (`{"messageAdded": {...}}`). A resolver returning `SKIP` drops this update for this
  input: the answer is `{"result": null}` and subscribers get nothing.
- `subscription_keepalive`: `on_keepalive(keys)` learns which keys still have subscribers.

Subscriptions with the same digest share one execution per publish, on each node. The digest
covers the normalized document, the operation and the variables, plus `digest_context(context)`
when given; by default nothing of the connection's context, so every client with the same query
and variables shares one execution. A re-execution therefore sees as `info.context` only what the
digest covers: `digest_context(context)`, or None without it, never one subscriber's full context.
Keys should likewise depend only on what the digest covers.

Resolvers may be sync or async. `handle` is sync (a Lambda handler, a threaded HTTP server); an
awaitable result runs to completion on an event loop of its own, in a worker thread when `handle`
is called from inside a running loop (from async code, prefer `asyncio.to_thread(origin.handle)`).

Needs graphql-core (3.2), which the rest of the origin SDK does not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from inspect import isawaitable
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionContext,
    ExecutionResult,
    GraphQLError,
    GraphQLFormattedError,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationType,
    assert_valid_schema,
    execute,
    get_argument_values,
    parse,
    print_ast,
    validate,
)
from graphql.execution.collect_fields import collect_fields

from runtime.wire.graphql_contract import MAX_KEY_LENGTH, MAX_KEYS

__all__ = [
    "MAX_KEYS",
    "MAX_KEY_LENGTH",
    "SKIP",
    "BadRequest",
    "GraphqlOrigin",
    "Reject",
    "SubscriptionStart",
]

DOCUMENT_CACHE_SIZE = 512  # parsed and validated documents, by query text

Errors = list[GraphQLFormattedError]


class Reject(Exception):
    """Raised by `on_connect` to refuse a connection; the message is what the client is told."""


class BadRequest(ValueError):
    """The request is not one the contract describes: an HTTP wrapper answers 400."""


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()
"""Returned by a subscription field's resolver: this publish does not concern this input."""


@dataclass(frozen=True, slots=True)
class SubscriptionStart:
    """What `subscription_keys` is given for a subscription that starts."""

    field_name: str  # the subscription root field (not its alias)
    arguments: dict[str, Any]  # its arguments, coerced, with the variables applied
    variables: dict[str, Any]  # the request's variables, as sent
    context: Any  # the connection's context, from on_connect
    operation_name: str | None


_canonical = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode


class GraphqlOrigin:
    """Answers the node's GraphQL-mode requests for one schema; see the module docstring."""

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        on_connect: Callable[[Any, dict[str, Any]], Any] | None = None,
        subscription_keys: Callable[[SubscriptionStart], Sequence[str]] | None = None,
        digest_context: Callable[[Any], Any] | None = None,
        on_keepalive: Callable[[list[str]], None] | None = None,
    ) -> None:
        assert_valid_schema(schema)  # a broken schema fails here, not at the first request
        if schema.subscription_type is not None and subscription_keys is None:
            raise ValueError("a schema with subscriptions needs subscription_keys=")
        self.schema = schema
        self._on_connect = on_connect
        self._subscription_keys = subscription_keys
        self._digest_context = digest_context
        self._on_keepalive = on_keepalive
        self._document = functools.lru_cache(maxsize=DOCUMENT_CACHE_SIZE)(self._parse_and_validate)

    def lambda_handler(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """For `--graphql-origin-function`: the request is the event, the answer the result."""
        return self.handle(event)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request; BadRequest when it is not one the contract describes."""
        if not isinstance(request, Mapping):
            raise BadRequest(f"a request must be a JSON object (got {_kind(request)})")
        kind = request.get("type")
        if kind == "connection_init":
            return self._connection_init(request)
        if kind == "start":
            return self._start(request)
        if kind == "subscription_query":
            return self._subscription_query(request)
        if kind == "subscription_keepalive":
            return self._keepalive(request)
        raise BadRequest(
            '"type" must be connection_init, start, subscription_query or '
            f"subscription_keepalive (got {kind!r})"
        )

    # Requests ----------------------------------------------------------------------------------

    def _connection_init(self, request: Mapping[str, Any]) -> dict[str, Any]:
        connect = request.get("connect")
        if connect is None:
            connect = {}
        if not isinstance(connect, dict):
            raise BadRequest(f'"connect" must be an object (got {_kind(connect)})')
        if self._on_connect is None:
            return {"accept": True}
        try:
            context = self._on_connect(request.get("payload"), connect)
        except Reject as refusal:
            return {"accept": False, "message": str(refusal)}
        _check_json(context, "on_connect must return a JSON value (the connection's context)")
        return {"accept": True} if context is None else {"accept": True, "context": context}

    def _start(self, request: Mapping[str, Any]) -> dict[str, Any]:
        query, variables, operation_name = _operation_fields(request)
        context = request.get("context")
        prepared = self._prepare(query, variables, operation_name)
        if isinstance(prepared, list):
            return {"errors": prepared}
        document, operation = prepared
        if operation.operation.operation != OperationType.SUBSCRIPTION:
            result = _settle(
                execute(
                    self.schema,
                    document,
                    context_value=context,
                    variable_values=variables,
                    operation_name=operation_name,
                )
            )
            return {"result": _formatted(result)}
        return self._subscribe(document, operation, variables, context)

    def _subscribe(
        self,
        document: DocumentNode,
        operation: ExecutionContext,
        variables: dict[str, Any] | None,
        context: Any,
    ) -> dict[str, Any]:
        root = self.schema.subscription_type
        assert root is not None  # _prepare refused subscriptions without one
        try:
            fields = collect_fields(
                self.schema,
                operation.fragments,
                operation.variable_values,
                root,
                operation.operation.selection_set,
            )
        except GraphQLError as error:
            return {"errors": [error.formatted]}
        if len(fields) != 1:  # validation allows a single field, but @skip may remove it
            return {"errors": [{"message": "A subscription must select exactly one field."}]}
        [field_nodes] = fields.values()
        field_name = field_nodes[0].name.value
        try:
            arguments = get_argument_values(
                root.fields[field_name], field_nodes[0], operation.variable_values
            )
        except GraphQLError as error:
            return {"errors": [error.formatted]}
        name = operation.operation.name.value if operation.operation.name else None
        start = SubscriptionStart(field_name, arguments, dict(variables or {}), context, name)
        assert self._subscription_keys is not None
        try:
            keys = _checked_keys(self._subscription_keys(start))
        except GraphQLError as error:  # the application refuses this subscription
            return {"errors": [error.formatted]}
        shared: dict[str, Any] = {"query": print_ast(document), "operationName": name}
        shared["variables"] = variables or {}
        input_context: dict[str, Any] = {"context": None}
        if self._digest_context is not None:
            part = self._digest_context(context)
            _check_json(part, "digest_context must return a JSON value")
            shared["context"] = input_context["context"] = part
        try:
            canonical = _canonical(shared)
        except ValueError as exc:  # NaN, which Python's json.loads lets through
            raise BadRequest(f'"variables" must be JSON: {exc}') from None
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
        return {
            "subscription": {"inputDigest": digest, "inputContext": input_context, "keys": keys}
        }

    def _subscription_query(self, request: Mapping[str, Any]) -> dict[str, Any]:
        query, variables, operation_name = _operation_fields(request)
        input_context = request.get("inputContext")
        context = input_context.get("context") if isinstance(input_context, dict) else None
        prepared = self._prepare(query, variables, operation_name)
        if isinstance(prepared, list):
            return {"errors": prepared}
        document, operation = prepared
        if operation.operation.operation != OperationType.SUBSCRIPTION:
            raise BadRequest("subscription_query names an operation that is not a subscription")
        watch = _SkipWatch()
        result = _settle(
            execute(
                self.schema,
                document,
                root_value=request.get("publishContext"),
                context_value=context,
                variable_values=variables,
                operation_name=operation_name,
                middleware=[watch],
            )
        )
        if watch.skipped:
            return {"result": None}
        return {"result": _formatted(result)}

    def _keepalive(self, request: Mapping[str, Any]) -> dict[str, Any]:
        keys = request.get("keys")
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise BadRequest(f'"keys" must be a list of strings (got {_kind(keys)})')
        if self._on_keepalive is not None:
            self._on_keepalive(keys)
        return {}

    # Documents ---------------------------------------------------------------------------------

    def _prepare(
        self, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> tuple[DocumentNode, ExecutionContext] | Errors:
        """The document and its chosen operation with coerced variables, or request errors."""
        document = self._document(query)
        if isinstance(document, list):
            return document
        built = ExecutionContext.build(
            self.schema, document, raw_variable_values=variables, operation_name=operation_name
        )
        if isinstance(built, list):
            return [error.formatted for error in built]
        kind = built.operation.operation
        if self.schema.get_root_type(kind) is None:
            return [{"message": f"Schema is not configured to execute {kind.value} operation."}]
        return document, built

    def _parse_and_validate(self, query: str) -> DocumentNode | Errors:
        try:
            document = parse(query)
            # graphql-core's rules may raise too: a subscription's root @skip(if: $var)
            errors = validate(self.schema, document)
        except GraphQLError as error:
            return [error.formatted]
        if errors:
            return [error.formatted for error in errors]
        return document


class _SkipWatch:
    """Middleware noting that the subscription root field's resolver returned SKIP."""

    def __init__(self) -> None:
        self.skipped = False

    def resolve(
        self, next_: Callable[..., Any], root: Any, info: GraphQLResolveInfo, **args: Any
    ) -> Any:
        value = next_(root, info, **args)
        if info.path.prev is not None:
            return value
        if isawaitable(value):
            return self._later(value)
        return self._seen(value)

    async def _later(self, value: Any) -> Any:
        return self._seen(await value)

    def _seen(self, value: Any) -> Any:
        if value is SKIP:
            self.skipped = True
            return None
        return value


def _operation_fields(request: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None, str | None]:
    query = request.get("query")
    if not isinstance(query, str):
        raise BadRequest(f'"query" must be a string (got {_kind(query)})')
    variables = request.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise BadRequest(f'"variables" must be an object or null (got {_kind(variables)})')
    operation_name = request.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise BadRequest(f'"operationName" must be a string or null (got {_kind(operation_name)})')
    return query, variables, operation_name


def _checked_keys(keys: Any) -> list[str]:
    """The keys as the node takes them, or a clear error naming the broken rule."""
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise TypeError(f"subscription_keys must return a list of strings (got {_kind(keys)})")
    unique = list(dict.fromkeys(keys))
    if not 1 <= len(unique) <= MAX_KEYS:
        raise ValueError(f"subscription_keys must return 1 to {MAX_KEYS} keys (got {len(unique)})")
    for key in unique:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            shown = repr(key[:40]) if isinstance(key, str) else _kind(key)
            raise ValueError(
                f"subscription_keys must return strings of 1 to {MAX_KEY_LENGTH} characters "
                f"(got {shown})"
            )
    return unique


def _formatted(result: ExecutionResult) -> dict[str, Any]:
    """The result as the client gets it; "errors" only when there are some."""
    formatted: dict[str, Any] = dict(result.formatted)
    if not formatted.get("errors"):
        formatted.pop("errors", None)
    return formatted


def _settle(value: Any) -> Any:
    """A value, or what an awaitable (from async resolvers) yields on an event loop of its own."""
    if not isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with ThreadPoolExecutor(max_workers=1) as worker:  # asyncio.run refuses a running loop
        return worker.submit(asyncio.run, wait()).result()


def _check_json(value: Any, problem: str) -> None:
    try:
        _canonical(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{problem}: {exc}") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
