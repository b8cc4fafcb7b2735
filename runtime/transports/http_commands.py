"""Commands over HTTP: `POST /commands` with a bearer token, answered once they are carried out."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from runtime.wire.commands import CommandBodyError, Rejection, parse_body

log = logging.getLogger("runtime.commands")

MiB = 1024 * 1024


class CommandEndpoint:
    def __init__(
        self,
        node: Any,
        host: str,
        port: int,
        *,
        token: str | None,
        max_payload_bytes: int,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self._token = token.encode() if token else None
        self._max_payload_bytes = max_payload_bytes
        # Room for the largest payload, base64-inflated, plus many connection IDs.
        max_body = max(16 * MiB, 2 * max_payload_bytes + 4 * MiB)
        app = web.Application(client_max_size=max_body)
        app.router.add_post("/commands", self._commands)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the bound port, when 0 was asked for
        log.info("command endpoint listening", extra={"commandAddress": f"{self.host}:{self.port}"})

    async def stop(self) -> None:
        await self._runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self._token
        )

    def _unauthorized(self) -> web.Response:
        return web.json_response(
            {"error": "missing or wrong bearer token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="commands"'},
        )

    async def _commands(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            commands, rejections = parse_body(body, max_payload_bytes=self._max_payload_bytes)
        except CommandBodyError as exc:
            log.warning("command body rejected", extra={"error": str(exc)})
            return web.json_response({"error": str(exc), "accepted": 0}, status=400)
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
            return web.json_response(
                {
                    "error": rejections[0].error,
                    "accepted": outcome.accepted,
                    "rejected": [rejection.as_json() for rejection in rejections],
                },
                status=400,
            )
        return web.json_response({"accepted": outcome.accepted})

    async def _stats(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return web.json_response(self.node.stats())
