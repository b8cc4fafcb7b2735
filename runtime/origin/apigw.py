"""API Gateway WebSocket handlers as the gateway's origin, with no line of theirs changed.

Set a Lambda function's handler to `runtime.origin.apigw.handler` and name the team's own
functions in its environment. Each event reaches the function of its route with `(event, context)`
as API Gateway would call it, and the boto3 `apigatewaymanagementapi` clients it makes (any
`endpoint_url`) are answered here: `post_to_connection` and `delete_connection` become the
gateway's commands, `get_connection` asks the node that holds the connection.
docs/coming-from-api-gateway.md is the guide.

Settings (environment variables, read at the first invocation):

- `WSGW_HANDLER`: `module.function` for every route.
- `WSGW_ROUTE_HANDLERS`: functions per route, as JSON (`{"$connect": "app.connect", ...}`) or
  `$connect=app.connect,sendmessage=app.send`. A route's own entry wins over `WSGW_HANDLER`; a
  message whose route has neither goes to the `$default` entry. One of the two is required.
- `WSGW_GONE_ROUTE`: where GONE events go. `$disconnect` (default): to the $disconnect function,
  as a DISCONNECT with code 1006; `none`: nowhere; any other name: that route's function, as is.
- `WSGW_ASYNC_CONNECT`: `skip` (default) leaves out the CONNECT events the node marks
  `connectHandled` (it called $connect during the handshake already); `run` hands them too.
- `WSGW_POST_VIA`: `commands` (default): posts and deletes are buffered and published through the
  SNS commands topic once the invocation's events are handled (once per SQS batch, in as few
  messages as fit; for a bare event, when its function returns); `connections`: each is an HTTP
  call to the node's @connections API at once, which answers GoneException exactly.
- `WSGW_CONNECTIONS_URL` (a node's command listener, `http://10.0.0.5:8081`) or
  `WSGW_CONNECTIONS_PORT` (every node's command port, reached at the address inside each
  connection ID): where the @connections API is. `WSGW_CONNECTIONS_TOKEN` goes with each call as
  `X-Gateway-Token`; `WSGW_CONNECTIONS_TIMEOUT` bounds it (seconds, default 5).
- GatewayClient's own: `WSGW_ENVIRONMENT` (required with `WSGW_POST_VIA=commands`) and
  `WSGW_ACCOUNT_ID`.

Two invocation shapes: an SQS batch from the events queue, answered with `batchItemFailures`
(a record may hold many events packed by the node; each goes to its function on its own, as
API Gateway would have called it); and a bare API Gateway event (the node's synchronous
$connect call invokes this same entry point), answered with the function's own result.

How boto3 calls land here: botocore emits `before-call.<service>.<operation>` just before it
would send a request, and sends nothing when a handler answers with `(http_response, parsed)`:
that is how botocore's own Stubber answers calls, and `_make_api_call` then returns `parsed` or,
for a status of 300 or more, raises the client's modeled exception for its error code (so
`client.exceptions.GoneException` is caught as on API Gateway). The hook is added to
`botocore.handlers.BUILTIN_HANDLERS`, which every botocore session registers when it is created
(boto3 makes one per `boto3.session.Session()`, and its default session), and to boto3's default
session if it exists already. A client copies its session's handlers when it is made, so the
clients a handler makes (in its function, or in its module, which is imported after the hook)
are covered; a client made before the first invocation, from a session made before it, is not.
The hook answers only while an event is being handled here; at any other time it lets botocore
go on, so other code in the process keeps reaching the real API Gateway.
"""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

import boto3
import botocore.handlers
from botocore import parsers
from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.exceptions import EndpointConnectionError

from runtime.origin.client import GatewayClient, MessageTooLarge, Savepoint
from runtime.origin.events import EventFormatError, handle_records, read_records
from runtime.wire.connection_id import InvalidConnectionId, parse_connection_id

__all__ = [
    "ApiGatewayOrigin",
    "ApiGatewaySettings",
    "ClosedConnections",
    "HandlerSetupError",
    "answer_status",
    "entry_point_from_environment",
    "gone_as_disconnect",
    "handler",
    "install",
    "parse_route_handlers",
]

log = logging.getLogger(__name__)

Event = dict[str, Any]
RouteFunction = Callable[[Event, Any], Any]

HANDLER_VARIABLE = "WSGW_HANDLER"
ROUTES_VARIABLE = "WSGW_ROUTE_HANDLERS"
GONE_VARIABLE = "WSGW_GONE_ROUTE"
ASYNC_CONNECT_VARIABLE = "WSGW_ASYNC_CONNECT"
POST_VIA_VARIABLE = "WSGW_POST_VIA"
CONNECTIONS_URL_VARIABLE = "WSGW_CONNECTIONS_URL"
CONNECTIONS_PORT_VARIABLE = "WSGW_CONNECTIONS_PORT"
CONNECTIONS_TOKEN_VARIABLE = "WSGW_CONNECTIONS_TOKEN"
CONNECTIONS_TIMEOUT_VARIABLE = "WSGW_CONNECTIONS_TIMEOUT"

SERVICE = "apigatewaymanagementapi"
HOOK_EVENT = f"before-call.{SERVICE}"
OPERATIONS = {"PostToConnection": "POST", "GetConnection": "GET", "DeleteConnection": "DELETE"}
# A connection its $connect function refused in an asynchronous CONNECT is closed with 4000 + the
# status (4401 for 401), as the node's GraphQL mode does: 1008 is not a code origins may send.
REFUSED_CLOSE_BASE = 4000
GONE_CLOSE_CODE = 1006  # what a $disconnect function sees for a connection that vanished
GONE_REASON = "gone"
MAX_ROUTE_KEY_LENGTH = 128
MAX_NODE_ANSWER_BYTES = 1 << 20
CLOSED_REMEMBERED = 10_000
# The status of an API Gateway error, for a node's answer that lacks x-amzn-ErrorType.
ERROR_TYPES = {
    400: "BadRequestException",
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
}

_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class HandlerSetupError(ValueError):
    """A WSGW_* setting that is missing or malformed, or names a function that cannot be found."""


# Settings ----------------------------------------------------------------------------------


def parse_route_handlers(text: str) -> dict[str, str]:
    """`WSGW_ROUTE_HANDLERS` as {route key: module.function}: JSON, or `route=ref,route=ref`."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise HandlerSetupError(f"{ROUTES_VARIABLE} is not valid JSON ({exc})") from None
        if not isinstance(document, dict) or not all(
            isinstance(value, str) for value in document.values()
        ):
            raise HandlerSetupError(
                f'{ROUTES_VARIABLE} as JSON must map route keys to "module.function" strings'
            )
        routes = dict(document)
    else:
        routes = {}
        for item in text.split(","):
            route, equals, reference = (part.strip() for part in item.partition("="))
            if not equals:
                raise HandlerSetupError(
                    f"{ROUTES_VARIABLE} items must be route=module.function (got {item.strip()!r})"
                )
            if route in routes:
                raise HandlerSetupError(f"{ROUTES_VARIABLE} names route {route!r} twice")
            routes[route] = reference
    for route, reference in routes.items():
        if not 0 < len(route) <= MAX_ROUTE_KEY_LENGTH or route != route.strip():
            raise HandlerSetupError(
                f"{ROUTES_VARIABLE}: route keys must be 1 to {MAX_ROUTE_KEY_LENGTH} characters "
                f"without surrounding spaces (got {route!r})"
            )
        _check_reference(f"{ROUTES_VARIABLE}[{route!r}]", reference)
    return routes


def _check_reference(variable: str, reference: str) -> None:
    if not _REFERENCE.fullmatch(reference):
        raise HandlerSetupError(
            f"{variable} must be module.function, as in a Lambda handler setting "
            f"(got {reference!r})"
        )


@dataclass(frozen=True)
class ApiGatewaySettings:
    """What the entry point hands to whom, and where the @connections API is; checked at once."""

    handler: str = ""
    route_handlers: Mapping[str, str] = field(default_factory=dict)
    gone_route: str | None = "$disconnect"
    async_connect: str = "skip"
    post_via: str = "commands"
    connections_url: str = ""
    connections_port: int | None = None
    connections_token: str = ""
    connections_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.handler and not self.route_handlers:
            raise HandlerSetupError(
                f"set {HANDLER_VARIABLE} (module.function for every route) or "
                f"{ROUTES_VARIABLE} (for example $connect=app.connect,sendmessage=app.send)"
            )
        if self.handler:
            _check_reference(HANDLER_VARIABLE, self.handler)
        for route, reference in self.route_handlers.items():
            _check_reference(f"{ROUTES_VARIABLE}[{route!r}]", reference)
        if self.gone_route is not None and not 0 < len(self.gone_route) <= MAX_ROUTE_KEY_LENGTH:
            raise HandlerSetupError(
                f"{GONE_VARIABLE} must be $disconnect, none or a route key of 1 to "
                f"{MAX_ROUTE_KEY_LENGTH} characters (got {self.gone_route!r})"
            )
        if self.async_connect not in ("skip", "run"):
            raise HandlerSetupError(
                f"{ASYNC_CONNECT_VARIABLE} must be skip or run (got {self.async_connect!r})"
            )
        if self.post_via not in ("commands", "connections"):
            raise HandlerSetupError(
                f"{POST_VIA_VARIABLE} must be commands or connections (got {self.post_via!r})"
            )
        if self.connections_url and self.connections_port is not None:
            raise HandlerSetupError(
                f"set {CONNECTIONS_URL_VARIABLE} or {CONNECTIONS_PORT_VARIABLE}, not both"
            )
        if self.connections_url:
            parts = urlsplit(self.connections_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise HandlerSetupError(
                    f"{CONNECTIONS_URL_VARIABLE} must be an http:// or https:// URL such as "
                    f"http://10.0.0.5:8081 (got {self.connections_url!r})"
                )
        if self.connections_port is not None and not 0 < self.connections_port < 65536:
            raise HandlerSetupError(
                f"{CONNECTIONS_PORT_VARIABLE} must be a port from 1 to 65535 "
                f"(got {self.connections_port})"
            )
        if not 0 < self.connections_timeout <= 60:
            raise HandlerSetupError(
                f"{CONNECTIONS_TIMEOUT_VARIABLE} must be more than 0 and at most 60 seconds "
                f"(got {self.connections_timeout:g})"
            )
        if self.post_via == "connections" and not self.knows_connections_api:
            raise HandlerSetupError(
                f"{POST_VIA_VARIABLE}=connections needs {CONNECTIONS_URL_VARIABLE} or "
                f"{CONNECTIONS_PORT_VARIABLE}"
            )

    @property
    def knows_connections_api(self) -> bool:
        return bool(self.connections_url) or self.connections_port is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ApiGatewaySettings:
        gone = environ.get(GONE_VARIABLE, "$disconnect").strip() or "$disconnect"
        port_text = environ.get(CONNECTIONS_PORT_VARIABLE, "").strip()
        timeout_text = environ.get(CONNECTIONS_TIMEOUT_VARIABLE, "").strip() or "5"
        try:
            port = int(port_text) if port_text else None
        except ValueError:
            raise HandlerSetupError(
                f"{CONNECTIONS_PORT_VARIABLE} must be a port number (got {port_text!r})"
            ) from None
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise HandlerSetupError(
                f"{CONNECTIONS_TIMEOUT_VARIABLE} must be a number of seconds (got {timeout_text!r})"
            ) from None
        settings = cls(
            handler=environ.get(HANDLER_VARIABLE, "").strip(),
            route_handlers=parse_route_handlers(environ.get(ROUTES_VARIABLE, "")),
            gone_route=None if gone.lower() == "none" else gone,
            async_connect=environ.get(ASYNC_CONNECT_VARIABLE, "").strip().lower() or "skip",
            post_via=environ.get(POST_VIA_VARIABLE, "").strip().lower() or "commands",
            connections_url=environ.get(CONNECTIONS_URL_VARIABLE, "").strip(),
            connections_port=port,
            connections_token=environ.get(CONNECTIONS_TOKEN_VARIABLE, ""),
            connections_timeout=timeout,
        )
        if settings.post_via == "commands" and not environ.get("WSGW_ENVIRONMENT"):
            raise HandlerSetupError(
                "set WSGW_ENVIRONMENT (the gateway's environment name): post_to_connection and "
                "delete_connection publish to its commands topic "
                f"(or set {POST_VIA_VARIABLE}=connections)"
            )
        return settings


# The user's functions ----------------------------------------------------------------------


def load_function(reference: str, variable: str) -> RouteFunction:
    """Import `module.function`; errors name the setting that asked for it."""
    module_name, _, name = reference.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerSetupError(
            f"{variable}={reference}: cannot import module {module_name!r} ({exc})"
        ) from exc
    except Exception as exc:
        exc.add_note(f"while importing {module_name!r} for {variable}={reference}")
        raise
    function = getattr(module, name, None)
    if function is None:
        raise HandlerSetupError(
            f"{variable}={reference}: module {module_name!r} has no attribute {name!r}"
        )
    if not callable(function):
        raise HandlerSetupError(
            f"{variable}={reference}: {name!r} is a {type(function).__name__}, not a function"
        )
    return cast(RouteFunction, function)  # a callable the user named: its signature is theirs


@dataclass(frozen=True)
class RouteTable:
    """Which function each route key reaches, every one imported at the first invocation, so a
    bad name fails at once rather than when its rare route first comes."""

    every_route: RouteFunction | None
    routes: Mapping[str, RouteFunction]

    @classmethod
    def load(cls, settings: ApiGatewaySettings) -> RouteTable:
        every = load_function(settings.handler, HANDLER_VARIABLE) if settings.handler else None
        routes = {
            route: load_function(reference, f"{ROUTES_VARIABLE}[{route!r}]")
            for route, reference in settings.route_handlers.items()
        }
        return cls(every, routes)

    def function_for(self, route: str, *, message: bool = False) -> RouteFunction | None:
        """The route's own function, else WSGW_HANDLER's, else (messages only) $default's."""
        function = self.routes.get(route) or self.every_route
        if function is None and message:
            function = self.routes.get("$default")
        return function


# Events -------------------------------------------------------------------------------------


def gone_as_disconnect(event: Mapping[str, Any]) -> Event:
    """A GONE event as the DISCONNECT API Gateway's $disconnect would have had: the connection
    vanished (1006). `requestContext.action` still says which command found it gone."""
    context = dict(event["requestContext"])
    context.update(
        eventType="DISCONNECT",
        routeKey="$disconnect",
        disconnectStatusCode=GONE_CLOSE_CODE,
        disconnectReason=GONE_REASON,
    )
    context.setdefault("identity", {"sourceIp": None, "userAgent": None})
    return {
        "requestContext": context,
        "disconnectStatusCode": GONE_CLOSE_CODE,
        "disconnectReason": GONE_REASON,
        "isBase64Encoded": False,
    }


def answer_status(result: object) -> int:
    """A $connect function's answer as API Gateway reads it: no statusCode accepts (200), a
    statusCode (an integer, or its digits) decides, anything else is the integration failing."""
    if not isinstance(result, Mapping) or result.get("statusCode") is None:
        return 200
    status = result["statusCode"]
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return 500
    return status


def _is_bare_event(document: object) -> bool:
    if not isinstance(document, Mapping):
        return False
    context = document.get("requestContext")
    return isinstance(context, Mapping) and isinstance(context.get("eventType"), str)


# Connections known to be closed ------------------------------------------------------------


class ClosedConnections:
    """IDs this container knows are closed (a DISCONNECT or GONE it handled, a delete it sent, a
    410 it was told), the oldest forgotten past `limit`. IDs are never reused, so a call naming
    one may answer GoneException at once, as API Gateway would."""

    def __init__(self, limit: int = CLOSED_REMEMBERED) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, connection_id: str) -> None:
        with self._lock:
            self._ids[connection_id] = None
            self._ids.move_to_end(connection_id)
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)

    def __contains__(self, connection_id: object) -> bool:
        with self._lock:
            return connection_id in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


# The management API, answered ----------------------------------------------------------------


@dataclass(frozen=True)
class ManagementAnswer:
    """An HTTP answer as API Gateway's management API would give it, before botocore reads it."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


def error_answer(status: int, code: str, message: str) -> ManagementAnswer:
    return ManagementAnswer(
        status,
        {"x-amzn-ErrorType": code, "Content-Type": "application/json"},
        json.dumps({"message": message}).encode(),
    )


@dataclass
class _Handling:
    """One event being handled on a thread: its calls are buffered until its function returns."""

    event: Mapping[str, Any] | None
    closing: list[str] = field(default_factory=list)  # deleted: closed once published


class _ThreadState(threading.local):
    """One thread's share of a ManagementApi: its client, the event it handles, and the closes
    it made that are not published yet."""

    def __init__(self) -> None:
        self.gateway: GatewayClient | None = None
        self.handling: _Handling | None = None
        self.unpublished_closes: list[str] | None = None


class ManagementApi:
    """Answers the apigatewaymanagementapi calls of the functions the entry point runs.

    Posts and deletes go into this thread's GatewayClient (one per thread: it is not
    thread-safe); while an event is handled on the thread they wait for its function to return,
    and in an SQS batch for the batch's end, else (a thread the function started) they are
    published at once. For an SQS batch it is `handle_records`' CommandBuffer: a connection a
    function deleted counts as closed (GoneException) for the rest of the batch, and from the
    batch's publish on for good; if its record fails instead, the delete is forgotten with it.
    """

    def __init__(
        self,
        settings: ApiGatewaySettings,
        gateway_factory: Callable[[], GatewayClient],
        closed: ClosedConnections,
    ) -> None:
        self.settings = settings
        self.closed = closed
        self._gateway_factory = gateway_factory
        self._local = _ThreadState()

    def gateway(self) -> GatewayClient:
        gateway = self._local.gateway
        if gateway is None:
            gateway = self._local.gateway = self._gateway_factory()
        return gateway

    @contextmanager
    def handling(self, event: Mapping[str, Any] | None, *, publish: bool = True) -> Iterator[None]:
        """Buffer the calls made while one event is handled, or drop them if it fails (its record
        comes back and makes them again). With `publish`, publish them when it is done; without
        (an event of an SQS batch), leave them to `flush` after the batch's last event."""
        gateway = self.gateway()
        mark = gateway.savepoint()
        outer = self._local.handling
        handling = self._local.handling = _Handling(event)
        _enter(self)
        try:
            yield
            if publish:
                gateway.flush()
        except BaseException:
            gateway.rollback(mark)
            raise
        finally:
            self._local.handling = outer
            _leave(self)
        if publish:
            for connection_id in handling.closing:
                self.closed.add(connection_id)
        else:
            self._unpublished_closes().extend(handling.closing)

    # The batch's commands, as handle_records' CommandBuffer ------------------------------------

    def savepoint(self) -> tuple[Savepoint, int]:
        """A mark in this thread's buffered commands and in the deletes among them."""
        return self.gateway().savepoint(), len(self._unpublished_closes())

    def rollback(self, mark: tuple[Savepoint, int]) -> None:
        """Drop what was buffered since `mark`: the record that made it comes back."""
        savepoint, closes = mark
        self.gateway().rollback(savepoint)
        del self._unpublished_closes()[closes:]

    def flush(self) -> None:
        """Publish this thread's buffered commands; the connections they delete are closed."""
        closes = self._unpublished_closes()
        self.gateway().flush()
        for connection_id in closes:
            self.closed.add(connection_id)
        closes.clear()

    def _unpublished_closes(self) -> list[str]:
        """Connections deleted by handled events of this thread's batch, not yet published."""
        closes = self._local.unpublished_closes
        if closes is None:
            closes = self._local.unpublished_closes = []
        return closes

    def close(self, connection_id: str, code: int, reason: str) -> None:
        """A close of our own (a refused CONNECT), buffered with the event's other calls."""
        self.gateway().close(connection_id, code, reason)
        self._closing(connection_id)

    def answer(
        self, operation: str, connection_id: str, data: object, url: str
    ) -> ManagementAnswer:
        """What API Gateway would answer this call; posts and deletes are sent as commands."""
        try:
            parse_connection_id(connection_id)
        except InvalidConnectionId as exc:
            return error_answer(410, "GoneException", f"Invalid connectionId: {exc}")
        if connection_id in self.closed or connection_id in self._unpublished_closes():
            return error_answer(410, "GoneException", f"connection {connection_id} is gone")
        if operation == "GetConnection" or self.settings.post_via == "connections":
            return self._over_http(operation, connection_id, _payload(data), url)
        if operation == "PostToConnection":
            return self._post(connection_id, _payload(data))
        return self._delete(connection_id)

    def _post(self, connection_id: str, payload: bytes) -> ManagementAnswer:
        try:  # API Gateway sends Data as text: bytes that are UTF-8 go as text here too
            data: str | bytes = payload.decode("utf-8")
        except UnicodeDecodeError:
            data = payload
        try:
            self.gateway().send(connection_id, data)
        except MessageTooLarge as exc:
            return error_answer(413, "PayloadTooLargeException", str(exc))
        return self._sent(ManagementAnswer(200, {"Content-Type": "application/json"}, b"{}"))

    def _delete(self, connection_id: str) -> ManagementAnswer:
        self.gateway().close(connection_id)
        answer = self._sent(ManagementAnswer(204, {}))
        if answer.status < 300:
            self._closing(connection_id)
        return answer

    def _closing(self, connection_id: str) -> None:
        handling = self._local.handling
        if handling is not None:
            handling.closing.append(connection_id)
        else:
            self.closed.add(connection_id)

    def _sent(self, answer: ManagementAnswer) -> ManagementAnswer:
        """Outside an event being handled nothing publishes later: publish now."""
        if self._local.handling is not None:
            return answer
        try:
            self.gateway().flush()
        except Exception as exc:
            log.exception("publishing an apigatewaymanagementapi call's command failed")
            return error_answer(500, "InternalServerErrorException", str(exc))
        return answer

    # The node's @connections API ---------------------------------------------------------------

    def _over_http(
        self, operation: str, connection_id: str, payload: bytes, url: str
    ) -> ManagementAnswer:
        settings = self.settings
        if settings.connections_url:
            parts = urlsplit(settings.connections_url)
            scheme, host = parts.scheme, parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
            prefix = parts.path.rstrip("/")
        elif settings.connections_port is not None:
            scheme, host = "http", parse_connection_id(connection_id).node.host
            port, prefix = settings.connections_port, ""
        else:
            return error_answer(
                403,
                "ForbiddenException",
                f"{operation} needs the node's @connections API: set {CONNECTIONS_URL_VARIABLE} "
                f"(a node's command listener, e.g. http://10.0.0.5:8081) or "
                f"{CONNECTIONS_PORT_VARIABLE} (the command port of every node)",
            )
        path = f"{prefix}/{quote(self._stage(url), safe='')}/@connections/"
        path += quote(connection_id, safe="")
        headers = {"Content-Type": "application/octet-stream"} if payload else {}
        if settings.connections_token:
            headers["X-Gateway-Token"] = settings.connections_token
        factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        connection = factory(host, port, timeout=settings.connections_timeout)
        try:
            connection.request(OPERATIONS[operation], path, body=payload or None, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_NODE_ANSWER_BYTES)
            status, answer_headers = response.status, dict(response.getheaders())
        except ConnectionRefusedError:
            if settings.connections_port is None:
                raise EndpointConnectionError(endpoint_url=settings.connections_url) from None
            # Nothing listens where the connection's node was: the node, and the connection,
            # are gone.
            self.closed.add(connection_id)
            return error_answer(410, "GoneException", f"connection {connection_id} is gone")
        except (OSError, http.client.HTTPException) as exc:
            raise EndpointConnectionError(
                endpoint_url=f"{scheme}://{host}:{port}", error=exc
            ) from exc
        finally:
            connection.close()
        if status == 410:
            self.closed.add(connection_id)
        if status == 200 and operation == "GetConnection":
            body = _connection_info_on_the_wire(body)
        if status >= 300 and not any(name.lower() == "x-amzn-errortype" for name in answer_headers):
            code = ERROR_TYPES.get(status)
            if code is not None:
                answer_headers["x-amzn-ErrorType"] = code
        return ManagementAnswer(status, answer_headers, body)

    def _stage(self, url: str) -> str:
        """The stage of the event being handled (the node's own), else the client's URL's."""
        handling = self._local.handling
        if handling is not None and handling.event is not None:
            stage = handling.event.get("requestContext", {}).get("stage")
            if isinstance(stage, str) and stage:
                return stage
        path = urlsplit(url).path
        return path.partition("/@connections/")[0].strip("/")


@runtime_checkable
class _Readable(Protocol):
    """A file botocore was given as Data."""

    def read(self) -> bytes | str: ...


def _payload(data: object) -> bytes:
    """PostToConnection's Data as botocore serialized it: bytes, a bytearray or a file."""
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, _Readable):
        chunk = data.read()
        return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
    raise TypeError(f"PostToConnection Data must be bytes, str or a file (got {type(data)})")


_WIRE_NAMES = {
    "ConnectedAt": "connectedAt",
    "LastActiveAt": "lastActiveAt",
    "Identity": "identity",
    "SourceIp": "sourceIp",
    "UserAgent": "userAgent",
}


def _connection_info_on_the_wire(body: bytes) -> bytes:
    """GetConnection's JSON with API Gateway's member names (connectedAt, identity.sourceIp),
    which botocore's model reads, whichever spelling the node used."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict):
        return body

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {_WIRE_NAMES.get(key, key): rename(item) for key, item in value.items()}
        return value

    return json.dumps(rename(document)).encode()


# The botocore hook ---------------------------------------------------------------------------


class _ApisOnThread(threading.local):
    """The ManagementApis handling events on this thread, innermost last."""

    def __init__(self) -> None:
        self.apis: list[ManagementApi] = []


_this_thread = _ApisOnThread()
_handling_anywhere: list[ManagementApi] = []
_handling_lock = threading.Lock()
_install_lock = threading.Lock()


def _enter(api: ManagementApi) -> None:
    _this_thread.apis = [*_this_thread.apis, api]
    with _handling_lock:
        _handling_anywhere.append(api)


def _leave(api: ManagementApi) -> None:
    _this_thread.apis = _this_thread.apis[:-1]
    with _handling_lock:
        _handling_anywhere.remove(api)


def _answering() -> ManagementApi | None:
    """The API of the event handled on this thread, else of one handled on any thread (the
    function's own worker threads), else None: botocore goes on as usual."""
    apis = _this_thread.apis
    if apis:
        return apis[-1]
    with _handling_lock:
        return _handling_anywhere[-1] if _handling_anywhere else None


class _Body:
    """What AWSResponse reads its content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _before_call(
    model: Any, params: Mapping[str, Any], **_: Any
) -> tuple[AWSResponse, dict[str, Any]] | None:
    api = _answering()
    if api is None or model.name not in OPERATIONS:
        return None
    connection_id = unquote(str(params.get("url_path", "")).rpartition("/")[2])
    url = str(params.get("url", ""))
    answer = api.answer(model.name, connection_id, params.get("body"), url)
    return botocore_answer(model, url, answer)


def botocore_answer(
    model: Any, url: str, answer: ManagementAnswer
) -> tuple[AWSResponse, dict[str, Any]]:
    """`answer` read by botocore's own parser for the operation's protocol, as if it had come
    over HTTP: the same parsed result, and the same error code for the modeled exception."""
    headers = HeadersDict({"x-amzn-RequestId": str(uuid.uuid4()), **answer.headers})
    parser = parsers.create_parser(model.metadata["protocol"])
    response = {"status_code": answer.status, "headers": headers, "body": answer.body}
    if answer.status < 300:
        parsed = parser.parse(response, model.output_shape)
    else:
        parsed = parser.parse(response, None)
        code = parsed.get("Error", {}).get("Code")
        shape = model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:  # the modeled error's own fields, as botocore's endpoint adds them
            parsed.update(parser.parse(response, shape))
    return AWSResponse(url, answer.status, headers, _Body(answer.body)), parsed


def install() -> None:
    """Make boto3 apigatewaymanagementapi clients made from now on ask this module first.

    Idempotent. The hook answers only while the entry point handles an event (see the module
    docstring for which clients it reaches).
    """
    with _install_lock:
        spec = (HOOK_EVENT, _before_call)
        if spec not in botocore.handlers.BUILTIN_HANDLERS:
            botocore.handlers.BUILTIN_HANDLERS.append(spec)
        session = boto3.DEFAULT_SESSION
        if session is not None:  # made before us; at most one registration either way
            session.events.unregister(HOOK_EVENT, _before_call)
            session.events.register(HOOK_EVENT, _before_call)


# The entry point -----------------------------------------------------------------------------


class ApiGatewayOrigin:
    """The Lambda entry point for API Gateway handlers; see the module docstring.

    SQS batch: each event of each record (a record holds many when the node packs them) goes to
    its route's function, in order. A record fails (and comes back, all its events) at the first
    of its events whose function raises: its later events are not handled now, the posts and
    deletes of all its events are dropped, and on a FIFO queue its group's later records wait
    with it. The other records' posts and deletes are published once, after the batch's last
    event. A statusCode in a function's answer does not fail its event. KEEPALIVE never reaches
    a function. An asynchronous CONNECT whose $connect answers a non-2xx statusCode is refused
    as API Gateway would have refused it: the connection is closed with 4000 + the status (4401
    for 401) and the event succeeds.

    Bare event: the function's result comes back unchanged (None as {"statusCode": 200}); an
    exception goes up to the caller (the node refuses the handshake with its error status).
    """

    def __init__(
        self,
        settings: ApiGatewaySettings,
        *,
        gateway_factory: Callable[[], GatewayClient] = GatewayClient,
    ) -> None:
        self.settings = settings
        self.closed = ClosedConnections()
        self.management = ManagementApi(settings, gateway_factory, self.closed)
        self._routes: RouteTable | None = None
        self._loading = threading.Lock()

    def routes(self) -> RouteTable:
        """The user's functions, imported once, after the hook is installed."""
        with self._loading:
            if self._routes is None:
                install()
                self._routes = RouteTable.load(self.settings)
            return self._routes

    def __call__(self, lambda_event: Any, context: Any = None) -> Any:
        routes = self.routes()
        if isinstance(lambda_event, Mapping) and "Records" in lambda_event:
            records = read_records(lambda_event)

            def on_event(event: Event) -> None:
                self._handle(routes, event, context, synchronous=False)

            failed = handle_records(records, on_event, self.management)
            return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
        if _is_bare_event(lambda_event):
            result = self._handle(routes, dict(lambda_event), context, synchronous=True)
            return {"statusCode": 200} if result is None else result
        raise EventFormatError(
            "runtime.origin.apigw.handler takes an SQS batch (a Records list) or an API Gateway "
            "WebSocket event (an object with requestContext.eventType)"
        )

    def _handle(self, routes: RouteTable, event: Event, context: Any, *, synchronous: bool) -> Any:
        request = event["requestContext"]
        kind = request["eventType"]
        connection_id = request.get("connectionId")
        if kind in ("DISCONNECT", "GONE") and isinstance(connection_id, str):
            self.closed.add(connection_id)  # the node says so: posts to it are gone from now
        target = self._target(routes, event)
        if target is None:
            return None
        function, handed = target
        with self.management.handling(handed, publish=synchronous):
            result = function(handed, context)
            if kind == "CONNECT" and not synchronous:
                self._refuse_if_told(handed, result)
        return result

    def _target(self, routes: RouteTable, event: Event) -> tuple[RouteFunction, Event] | None:
        request = event["requestContext"]
        kind = request["eventType"]
        route = request.get("routeKey")
        if kind == "KEEPALIVE":
            return None
        if kind == "GONE":
            gone_route = self.settings.gone_route
            if gone_route is None:
                return None
            if gone_route == "$disconnect":
                function = routes.function_for("$disconnect")
                return None if function is None else (function, gone_as_disconnect(event))
            function = routes.function_for(gone_route)
            return None if function is None else (function, event)
        handled = kind == "CONNECT" and request.get("connectHandled") is True
        if handled and self.settings.async_connect == "skip":
            return None
        if kind not in ("CONNECT", "MESSAGE", "DISCONNECT") or not isinstance(route, str):
            log.warning(
                "an event of an unknown type or without a routeKey is not handed to any function",
                extra={"eventType": kind},
            )
            return None
        function = routes.function_for(route, message=kind == "MESSAGE")
        if function is None:
            if kind == "MESSAGE":
                log.warning(
                    "no function for route %r, and no $default: the message is dropped",
                    route,
                    extra={"connectionId": request.get("connectionId")},
                )
            return None
        return function, event

    def _refuse_if_told(self, event: Event, result: Any) -> None:
        status = answer_status(result)
        if 200 <= status < 300:
            return
        connection_id = event["requestContext"]["connectionId"]
        log.warning(
            "$connect answered %d after the node had accepted the connection; closing it with %d",
            status,
            REFUSED_CLOSE_BASE + status,
            extra={"connectionId": connection_id},
        )
        self.management.close(
            connection_id, REFUSED_CLOSE_BASE + status, f"refused by $connect ({status})"
        )


def entry_point_from_environment() -> Callable[[Any, Any], Any]:
    """A Lambda handler whose ApiGatewayOrigin is built from os.environ at its first call."""
    built: list[ApiGatewayOrigin] = []
    lock = threading.Lock()

    def entry_point(lambda_event: Any, context: Any = None) -> Any:
        with lock:
            if not built:
                built.append(ApiGatewayOrigin(ApiGatewaySettings.from_environ(os.environ)))
        return built[0](lambda_event, context)

    return entry_point


handler = entry_point_from_environment()
