"""A real HTTP origin for tests: records every event batch, and can fail on demand.

It keeps events the way MemoryOrigin does, so tests wait on either with the same `wait_for`.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tests.doubles.memory import MemoryOrigin


class RecordingOrigin(MemoryOrigin):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()
        self.fail_next = 0
        self.authorization: str | None = None
        # While set, batches are read and then held unanswered until it is released.
        self.hold: asyncio.Event | None = None
        self.url = ""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/events", self._events)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, port: int = 0) -> RecordingOrigin:  # type: ignore[override]
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{bound}/events"
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
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="origin overloaded")
        events = json.loads(body)["events"]
        await self.deliver([json.dumps(event).encode() for event in events])
        return web.Response(status=204)
