"""Commands over HTTP: `POST /commands` with a bearer token, answered once they are carried out.

The path, the method and the token are checked as soon as a request's head is in, before its
body is read: a sender without the token can make the node hold no more than one head.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from runtime.transports.http1 import (
    MAX_HEADER_BYTES,
    HttpServer,
    Request,
    Response,
    json_response,
)
from runtime.wire.commands import CommandBodyError, Rejection, max_body_bytes, parse_body

log = logging.getLogger("runtime.commands")

ROUTES = {"/commands": "POST", "/stats": "GET"}


class CommandEndpoint:
    """`POST /commands` and `GET /stats` on their own port; the limits are HttpServer's."""

    def __init__(
        self,
        node: Any,
        host: str,
        port: int,
        *,
        token: str | None,
        max_payload_bytes: int,
        max_connections: int = 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self._token = token.encode() if token else None
        self._max_payload_bytes = max_payload_bytes
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
        method = ROUTES.get(request.path)
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
        if request.path == "/stats":
            return json_response(self.node.stats())
        return await self._commands(request.body)

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self._token
        )

    async def _commands(self, body: bytes) -> Response:
        try:
            commands, rejections = parse_body(body, max_payload_bytes=self._max_payload_bytes)
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
