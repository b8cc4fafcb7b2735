"""A real HTTP origin for tests: records every event batch, and can fail on demand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class RecordingOrigin:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()
        self.fail_next = 0
        self.authorization: str | None = None
        self.url = ""
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/events", self._events)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, port: int = 0) -> RecordingOrigin:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/events"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _events(self, request: web.Request) -> web.Response:
        self.requests += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(tuple(peer[:2]))
        self.authorization = request.headers.get("Authorization")
        body = await request.read()
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="origin overloaded")
        async with self._changed:
            self.events.extend(json.loads(body)["events"])
            self._changed.notify_all()
        return web.Response(status=204)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["requestContext"]["eventType"] == event_type]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        async def satisfied() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))

        try:
            await asyncio.wait_for(satisfied(), timeout)
        except TimeoutError:
            kinds = [e["requestContext"]["eventType"] for e in self.events]
            raise AssertionError(f"origin condition not met in {timeout}s; got {kinds}") from None
        return self.events
