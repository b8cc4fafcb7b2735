"""A GraphQL origin over real HTTP for tests: `POST /` runs one request of the GraphQL-mode
contract (docs/protocol.md) through a GraphqlOrigin or a plain function, and records it.

It serves with the node's own HttpServer. Requests are handled on the event loop, one at a time,
so an origin's callbacks (a chat example's `publish`) run there too: schedule async work with
`asyncio.get_running_loop().create_task(...)`. A ValueError from the handler (BadRequest for a
malformed request) is answered 400 with its message; `fail_with` and `delay` make the origin
fail or slow on demand, for tests of a dead or late origin.

A handler runs to its end even when the node closes the connection it came on, as most HTTP
servers (and Lambda) do: that is what makes a node that gives up on a request and sends another
one pile up work at the origin. `most_running` and `most_running_for` record how much ran at once.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from typing import Any

from runtime.origin.graphql import GraphqlOrigin
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_server import HttpServer

Handle = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]
MAX_BODY_BYTES = 16 << 20


class RunningGraphqlOrigin:
    """The origin being served: what it was asked, and switches to make it misbehave."""

    def __init__(self, handle: Handle) -> None:
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.authorization: str | None = None  # the last request's Authorization header
        self.fail_with: int | None = None  # answer every request with this status instead
        self.delay = 0.0  # seconds to wait before answering
        self.running = 0  # requests being handled now
        self.most_running = 0
        self.running_for: Counter[str] = Counter()  # by the request's connectionId
        self._most_for: Counter[str] = Counter()
        self._handle = handle
        self._handlers: set[asyncio.Task[Response]] = set()
        self._changed = asyncio.Condition()
        self._server = HttpServer(self._route, max_body_bytes=MAX_BODY_BYTES, name="graphql-origin")

    def count(self, kind: str) -> int:
        """How many requests of this "type" arrived (failed ones too)."""
        return sum(1 for request in self.requests if request.get("type") == kind)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request.get("type") == kind]

    def most_running_for(self, connection_id: str) -> int:
        """The most requests for this connection that were being handled at once."""
        return self._most_for[connection_id]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until `predicate(self.requests)` holds; fail loudly with what did arrive."""

        async def satisfied() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.requests))

        try:
            await asyncio.wait_for(satisfied(), timeout)
        except TimeoutError:
            kinds = [request.get("type") for request in self.requests]
            raise AssertionError(
                f"GraphQL origin condition not met in {timeout}s; requests: {kinds}"
            ) from None
        return self.requests

    async def start(self, host: str) -> RunningGraphqlOrigin:
        port = await self._server.start(host, 0)
        self.url = f"http://{host}:{port}/"
        return self

    async def stop(self) -> None:
        await self._server.stop(timeout=1.0)
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _route(self, request: Request) -> Response:
        if request.method != "POST" or request.path != "/":
            return json_response({"error": "POST / only"}, 404)
        self.authorization = request.headers.get("authorization")
        try:
            document = json.loads(request.body)
        except ValueError as exc:
            return json_response({"error": f"body is not JSON: {exc}"}, 400)
        async with self._changed:
            self.requests.append(document)
            self._changed.notify_all()
        # Shielded: the HttpServer cancels its worker when the node closes the connection.
        handler = asyncio.ensure_future(self._answer(document))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        return await asyncio.shield(handler)

    async def _answer(self, document: dict[str, Any]) -> Response:
        connection_id = document.get("connectionId")
        key = connection_id if isinstance(connection_id, str) else ""
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.running_for[key] += 1
        self._most_for[key] = max(self._most_for[key], self.running_for[key])
        try:
            return await self._run(document)
        finally:
            self.running -= 1
            self.running_for[key] -= 1

    async def _run(self, document: dict[str, Any]) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            return json_response({"error": "failing on purpose"}, self.fail_with)
        try:
            answer = self._handle(document)
            if isawaitable(answer):
                answer = await answer
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(answer)


async def start_graphql_origin(
    origin: GraphqlOrigin | Handle, *, host: str = "127.0.0.1"
) -> RunningGraphqlOrigin:
    """Serve `origin` (its `handle`, or a function of the request) on a free port of `host`."""
    handle = origin.handle if isinstance(origin, GraphqlOrigin) else origin
    return await RunningGraphqlOrigin(handle).start(host)
