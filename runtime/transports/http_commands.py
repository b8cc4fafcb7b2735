"""Commands over HTTP: `POST /commands` with a bearer token, answered once they are carried out;
presence queries (`GET /channels/...`, runtime/transports/http_presence.py) with the same token;
and, with --connections-api, API Gateway's @connections API for its SDKs' management clients.

The path, the method and the token are checked as soon as a request's head is in, before its
body is read: a sender without the token can make the node hold no more than one head.

@connections: `POST|GET|DELETE /<stage>/@connections/<connectionId>` (the ID percent-decoded),
answered with API Gateway's statuses and error shape: the code in the x-amzn-ErrorType header
(which botocore, the JS SDK v3 and the Go SDK v2 read first for rest-json) and
`{"message": ...}` as the body. SDKs sign with SigV4 in Authorization, which the node cannot
check (it holds no AWS secret), so in token mode the command token travels in X-Gateway-Token
(or as a bearer token); a wrong or missing one is 403 ForbiddenException, checked before the
stage, which must be the node's --stage (else 403 ForbiddenException, as API Gateway answers a
stage it does not serve). A connection that is not connected, an ID that does not parse and an
owner that cannot be reached are 410 GoneException; a message over the node's largest payload
is 413 PayloadTooLargeException (by Content-Length, before the body is read); too many requests
waiting for other nodes, 429 LimitExceededException; a method other than POST, GET and DELETE,
or no ID in the path, 400 BadRequestException.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import unquote

from runtime.core.execution import CommandExecutor
from runtime.transports.http1 import MAX_HEADER_BYTES, Request, Response, json_response
from runtime.transports.http1_server import HttpServer
from runtime.transports.http_presence import PresenceQueries, presence_response
from runtime.wire.channels import DEFAULT_RULES, ChannelRules
from runtime.wire.commands import CommandBodyError, Rejection, max_body_bytes, parse_body
from runtime.wire.presence import presence_target

log = logging.getLogger("runtime.commands")

ROUTES = {"/commands": "POST", "/stats": "GET"}

CONNECTIONS_SEGMENT = "@connections"
CONNECTIONS_METHODS = ("POST", "GET", "DELETE")
CONNECTIONS_MODES = ("off", "token", "network")
# API Gateway's error codes, by status, as its management API's SDKs know them.
AWS_ERRORS = {
    400: "BadRequestException",
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
}


class CommandNode(CommandExecutor, Protocol):
    """What `POST /commands` and `GET /stats` are answered by: the node."""

    def stats(self) -> Mapping[str, object]: ...


class ConnectionActions(Protocol):
    """What @connections requests are carried out by (runtime/node/connections_api.py)."""

    async def post(self, connection_id: str, payload: bytes, binary: bool) -> int: ...

    async def get(self, connection_id: str) -> tuple[int, dict[str, Any] | None]: ...

    async def delete(self, connection_id: str) -> int: ...


def connections_target(path: str) -> tuple[str, str | None] | None:
    """(stage, connection ID or None when missing) of an @connections path, None for any other.

    `/<stage>/@connections/<id>`, or `/@connections/<id>` (no stage: refused as a wrong one).
    Everything after `@connections/` is the ID, percent-decoded: `%3D` is `=`.
    """
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1] == CONNECTIONS_SEGMENT:  # no stage
        stage, rest = "", "/".join(parts[2:])
    elif len(parts) >= 3 and parts[2] == CONNECTIONS_SEGMENT:
        stage, rest = parts[1], parts[3] if len(parts) == 4 else ""
    else:
        return None
    return unquote(stage), (unquote(rest) if rest else None)


def aws_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error as API Gateway sends it: the code in x-amzn-ErrorType, the message in JSON."""
    aws = {"x-amzn-ErrorType": AWS_ERRORS[status], "x-amzn-RequestId": str(uuid.uuid4())}
    return json_response({"message": message}, status, headers={**aws, **(headers or {})})


def aws_response(status: int) -> Response:
    """A success without a body (PostToConnection's 200, DeleteConnection's 204)."""
    return Response(status, b"", {"x-amzn-RequestId": str(uuid.uuid4())})


class CommandEndpoint:
    """`POST /commands` and `GET /stats` on their own port, and with `connections_api` "token" or
    "network" the @connections API of `stage`; the limits are HttpServer's."""

    def __init__(
        self,
        node: CommandNode,
        host: str,
        port: int,
        *,
        token: str | None,
        max_payload_bytes: int,
        channel_rules: ChannelRules = DEFAULT_RULES,
        max_connections: int = 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_header_bytes: int = MAX_HEADER_BYTES,
        connections_api: str = "off",
        stage: str = "",
        connections: ConnectionActions | None = None,
        presence: PresenceQueries | None = None,
    ) -> None:
        if connections_api not in CONNECTIONS_MODES:
            raise ValueError(
                f"connections_api must be one of {', '.join(CONNECTIONS_MODES)} "
                f"(got {connections_api!r})"
            )
        if connections_api != "off" and connections is None:
            raise ValueError(f"connections_api {connections_api!r} needs the connections to act on")
        if connections_api == "token" and not token:
            raise ValueError("connections_api 'token' needs a command token")
        self.node = node
        self.connections_mode = connections_api
        self.stage = stage
        self._connections = connections
        self._presence = presence
        self.host = host
        self.port = port
        self._token = token.encode() if token else None
        self._max_payload_bytes = max_payload_bytes
        self._channel_rules = channel_rules
        self._server = HttpServer(
            self._route,
            max_body_bytes=max_body_bytes(max_payload_bytes),
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            max_connections=max_connections,
            max_header_bytes=max_header_bytes,
            check_head=self._check_head,
            name="commands",
        )

    async def start(self) -> None:
        self.port = await self._server.start(self.host, self.port)
        log.info("command endpoint listening", extra={"commandAddress": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        await self._server.stop()

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def _check_head(self, request: Request) -> Response | None:
        """Refuse a request by its head alone, before its body is read (None: read it)."""
        presence = self._presence_target(request.path)
        if self.connections_mode != "off" and presence is None:
            target = connections_target(request.path)
            if target is not None:
                return self._check_connections_head(request, target[0], target[1])
        method = "GET" if presence is not None else ROUTES.get(request.path)
        if method is None:
            return json_response({"error": f"no such path: {request.path}"}, 404)
        if request.method != method:
            return json_response(
                {"error": f"{request.path} takes {method}"}, 405, headers={"Allow": method}
            )
        if not self._authorized(request):
            return json_response(
                {"error": "missing or wrong bearer token"},
                401,
                headers={"WWW-Authenticate": 'Bearer realm="commands"'},
            )
        return None

    async def _route(self, request: Request) -> Response:
        """Runs only for requests `_check_head` let through."""
        presence = self._presence_target(request.path)
        if presence is not None:
            assert self._presence is not None  # else no target
            channel, members = presence
            return await presence_response(
                self._presence, channel, members, request.query, self._channel_rules
            )
        if self.connections_mode != "off":
            target = connections_target(request.path)
            if target is not None and target[1] is not None:
                return await self._connection_request(request, target[1])
        if request.path == "/stats":
            return json_response(self.node.stats())
        return await self._commands(request.body)

    def _presence_target(self, path: str) -> tuple[str, bool] | None:
        """(channel, members?) of a presence query, before @connections: a channel may be
        named "@connections"."""
        return presence_target(path) if self._presence is not None else None

    def _check_connections_head(
        self, request: Request, stage: str, connection_id: str | None
    ) -> Response | None:
        if self.connections_mode == "token" and not self._connections_authorized(request):
            return aws_error(
                403, "Forbidden: send the command token in X-Gateway-Token or as a bearer token"
            )
        if stage != self.stage:
            return aws_error(
                403,
                f"Forbidden: this node serves stage {self.stage!r}, not {stage!r} "
                f"(use /{self.stage}/@connections/<connectionId>)",
            )
        if request.method not in CONNECTIONS_METHODS:
            return aws_error(
                400,
                f"@connections takes POST, GET or DELETE (got {request.method})",
                headers={"Allow": ", ".join(CONNECTIONS_METHODS)},
            )
        if connection_id is None:
            return aws_error(400, f"no connection ID in the path: /{stage}/@connections/<id>")
        declared = request.headers.get("content-length", "")
        if (
            request.method == "POST"
            and declared.isdigit()
            and int(declared) > self._max_payload_bytes
        ):
            return self._too_large(int(declared))
        return None

    def _connections_authorized(self, request: Request) -> bool:
        assert self._token is not None  # checked in __init__
        given = request.headers.get("x-gateway-token")
        if given is not None and hmac.compare_digest(given.strip().encode(), self._token):
            return True
        return self._authorized(request)

    def _too_large(self, size: int) -> Response:
        return aws_error(
            413,
            f"Message too long: {size} bytes; the most one message may be is "
            f"{self._max_payload_bytes}",
        )

    async def _connection_request(self, request: Request, connection_id: str) -> Response:
        connections = self._connections
        assert connections is not None  # checked in __init__
        if request.method == "GET":
            status, info = await connections.get(connection_id)
            if status == 200:
                return json_response(info, headers={"x-amzn-RequestId": str(uuid.uuid4())})
        elif request.method == "DELETE":
            status = await connections.delete(connection_id)
        else:
            body = request.body
            if len(body) > self._max_payload_bytes:  # a chunked body, which had no length
                return self._too_large(len(body))
            status = await connections.post(connection_id, body, not _is_utf8(body))
        if status in (200, 204):
            return aws_response(status)
        if status == 413:
            return self._too_large(len(request.body))
        if status == 429:
            return aws_error(
                429, "Too many @connections requests are waiting for other nodes; retry later"
            )
        return aws_error(
            410,
            f"Gone: connection {connection_id[:128]!r} is not connected (closed, never was, or "
            "on a node that cannot be reached)",
        )

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self._token
        )

    async def _commands(self, body: bytes) -> Response:
        try:
            commands, rejections = parse_body(
                body, max_payload_bytes=self._max_payload_bytes, rules=self._channel_rules
            )
        except CommandBodyError as exc:
            log.warning("command body rejected", extra={"error": str(exc)})
            return json_response({"error": str(exc), "accepted": 0}, 400)
        for rejection in rejections:
            log.warning(
                "command rejected", extra={"index": rejection.index, "error": rejection.error}
            )
        # parse_body dropped the bad ones; remember where the good ones stood in the body.
        rejected_at = {rejection.index for rejection in rejections}
        positions = [
            index for index in range(len(commands) + len(rejections)) if index not in rejected_at
        ]
        outcome = await self.node.execute(commands)
        for position, error in outcome.rejections:
            index = positions[position]
            rejections.append(Rejection(index, f"commands[{index}]: {error}"))
        if rejections:
            rejections.sort(key=lambda rejection: rejection.index)
            return json_response(
                {
                    "error": rejections[0].error,
                    "accepted": outcome.accepted,
                    "rejected": [rejection.as_json() for rejection in rejections],
                },
                400,
            )
        return json_response({"accepted": outcome.accepted})


def _is_utf8(data: bytes) -> bool:
    """A posted message that is UTF-8 goes out as a text frame; any other as a binary one."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
