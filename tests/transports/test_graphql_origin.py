"""The GraphQL origin clients against real servers: aiohttp and raw sockets for HTTP, moto's
Lambda API (in server mode, reached by boto3) for Lambda.

moto runs Lambda code only in docker. Its "simple" backend (`{"lambda": {"use_docker": false}}`
in /moto-api/config) runs nothing: an invoke answers the next result queued through
/moto-api/static/lambda-simple/response, or else echoes the payload. A result over 6 MB comes
back as a real FunctionError (`Function.ResponseSizeTooLarge`). The simple backend answers for
any function name, so the unknown-function test uses moto's default backend, which looks the
function up (and fails) before it would need docker.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from runtime.transports.graphql_origin import (
    GraphqlOriginUnavailable,
    HttpGraphqlOrigin,
    LambdaGraphqlOrigin,
    OriginSlots,
)
from tests.aws import MotoEndpoint, queue_lambda_results

pytestmark = pytest.mark.timeout(30)

REQUEST: dict[str, Any] = {
    "type": "start",
    "node": "10.0.1.5:9100",
    "connectionId": "AQl1cy1",
    "operationId": "1",
    "query": "query Q($id: ID!) { user(id: $id) { name } }",
    "variables": {"id": "7", "note": "naïve ☃"},
    "operationName": "Q",
    "extensions": None,
    "context": None,
}

# --- HTTP -------------------------------------------------------------------------------------


Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GraphqlServer:
    """An aiohttp origin: answers with `answer(request)`, records what it saw."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.peers: set[int] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.in_flight_for: Counter[str] = Counter()  # by the request's connectionId
        self.most_in_flight_for: Counter[str] = Counter()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername")[1])
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))
        requester = str(json.loads(self.bodies[-1]).get("connectionId"))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.in_flight_for[requester] += 1
        self.most_in_flight_for[requester] = max(
            self.most_in_flight_for[requester], self.in_flight_for[requester]
        )
        try:
            return await self.answer(request)
        finally:
            self.in_flight -= 1
            self.in_flight_for[requester] -= 1

    async def start(self) -> GraphqlServer:
        app = web.Application()
        app.router.add_post("/graphql", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/graphql"
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


Serve = Callable[[Answer], Awaitable[GraphqlServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start GraphqlServers with given answers; all stop when the test ends."""
    servers: list[GraphqlServer] = []

    async def start(answer: Answer) -> GraphqlServer:
        servers.append(await GraphqlServer(answer).start())
        return servers[-1]

    yield start
    for server in servers:
        await server.stop()


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"echo": json.loads(await request.read())})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the socket closes


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and reads requests, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for writer in held:
        writer.close()
    await server.wait_closed()


async def test_http_round_trip(serve: Serve) -> None:
    server = await serve(echo)
    origin = HttpGraphqlOrigin(server.url)
    await origin.start()
    try:
        assert await origin.call(REQUEST) == {"echo": REQUEST}
    finally:
        await origin.close()
    body = server.bodies[0]
    assert body == json.dumps(REQUEST, separators=(",", ":")).encode()
    assert b"na\\u00efve \\u2603" in body  # ASCII escapes: a lone surrogate would stay valid
    headers = server.headers[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "wsgateway-node"
    assert "Authorization" not in headers


async def test_http_bearer_token(serve: Serve) -> None:
    server = await serve(echo)
    origin = HttpGraphqlOrigin(server.url, token="s3cret")
    try:
        await origin.call({"type": "subscription_keepalive", "node": "n", "keys": []})
    finally:
        await origin.close()
    assert server.headers[0]["Authorization"] == "Bearer s3cret"


async def test_http_error_status_is_unavailable(serve: Serve) -> None:
    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="resolver exploded" + "x" * 500)

    server = await serve(fail)
    origin = HttpGraphqlOrigin(server.url)
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="answered 500: resolver exploded") as e:
            await origin.call(REQUEST)
    finally:
        await origin.close()
    assert len(str(e.value)) < 300  # the body is cut


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("<html>oops</html>", "text/html"), ("[1, 2]", "application/json"), ("", "text/plain")],
)
async def test_http_answer_that_is_not_an_object_is_unavailable(
    serve: Serve, body: str, content_type: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=200, text=body, content_type=content_type)

    server = await serve(answer)
    origin = HttpGraphqlOrigin(server.url)
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="no JSON object"):
            await origin.call(REQUEST)
    finally:
        await origin.close()


async def test_http_no_answer_is_unavailable_within_the_timeout(silent_server: str) -> None:
    origin = HttpGraphqlOrigin(silent_server + "/graphql", timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="no answer"):
            await origin.call(REQUEST)
    finally:
        await origin.close()
    assert 0.25 < time.monotonic() - started < 2


async def test_http_connection_refused_is_unavailable() -> None:
    origin = HttpGraphqlOrigin(f"http://127.0.0.1:{closed_port()}/graphql", timeout=2)
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="cannot connect"):
            await origin.call(REQUEST)
    finally:
        await origin.close()


async def test_http_concurrency_bounds_the_connections(serve: Serve) -> None:
    async def slow_echo(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return await echo(request)

    server = await serve(slow_echo)
    origin = HttpGraphqlOrigin(server.url, concurrency=4)
    try:
        answers = await asyncio.gather(
            *(origin.call({"type": "start", "operationId": str(i)}) for i in range(20))
        )
    finally:
        await origin.close()
    assert [a["echo"]["operationId"] for a in answers] == [str(i) for i in range(20)]
    assert server.most_in_flight == 4  # used every connection, never more
    assert len(server.peers) <= 4  # kept alive: no connection beyond the first four


class Gate:
    """Holds requests whose operationId it names until `open` is set (at most 10 s)."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.open = asyncio.Event()

    async def answer(self, request: web.Request) -> web.Response:
        if json.loads(await request.read()).get("operationId") in self.held:
            await asyncio.wait_for(self.open.wait(), 10)
        return await echo(request)


def start(operation_id: str, connection_id: str = "AQl1cy1") -> dict[str, Any]:
    return {**REQUEST, "operationId": operation_id, "connectionId": connection_id}


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_http_timed_out_request_keeps_its_connection_until_the_answer(serve: Serve) -> None:
    gate = Gate("slow")
    server = await serve(gate.answer)
    origin = HttpGraphqlOrigin(server.url, concurrency=1, timeout=0.3)
    try:
        with pytest.raises(GraphqlOriginUnavailable, match=r"no answer .* within 0.3s"):
            await origin.call(start("slow"))
        # Its place is still taken: the next request is not sent beside it.
        with pytest.raises(GraphqlOriginUnavailable, match="no answer"):
            await origin.call(start("next", "AQother"))
        assert len(server.bodies) == 1
        assert origin.stats()["graphqlOriginInFlight"] == 1
        gate.open.set()
        await until(lambda: origin.stats()["graphqlOriginInFlight"] == 0)
        assert (await origin.call(start("after")))["echo"]["operationId"] == "after"
        assert origin.stats()["graphqlOriginCallsAbandoned"] == 1
        assert origin.stats()["graphqlOriginQueueTimeouts"] == 1
    finally:
        await origin.close()
    assert server.most_in_flight == 1
    assert len(server.peers) == 1  # the late answer arrived; the connection was used again


async def test_http_call_cancelled_before_it_is_sent_is_withdrawn(serve: Serve) -> None:
    gate = Gate("first")
    server = await serve(gate.answer)
    origin = HttpGraphqlOrigin(server.url, concurrency=1)
    try:
        first = asyncio.ensure_future(origin.call(start("first")))
        waiting = asyncio.ensure_future(origin.call(start("waiting", "AQother")))
        await until(lambda: origin.stats()["graphqlOriginWaiting"] == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert origin.stats()["graphqlOriginWaiting"] == 0
        gate.open.set()
        assert (await first)["echo"]["operationId"] == "first"
        assert (await origin.call(start("then")))["echo"]["operationId"] == "then"
        assert origin.stats()["graphqlOriginCallsWithdrawn"] == 1
    finally:
        await origin.close()
    sent = [json.loads(body)["operationId"] for body in server.bodies]
    assert sent == ["first", "then"]


async def test_http_call_cancelled_once_sent_ends_with_its_request(serve: Serve) -> None:
    gate = Gate("held")
    server = await serve(gate.answer)
    origin = HttpGraphqlOrigin(server.url, concurrency=2)
    try:
        call = asyncio.ensure_future(origin.call(start("held")))
        await until(lambda: server.in_flight == 1)
        call.cancel()
        await asyncio.sleep(0.05)
        assert not call.done()  # the origin is still working on it
        gate.open.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert origin.stats()["graphqlOriginInFlight"] == 0
        assert (await origin.call(start("next")))["echo"]["operationId"] == "next"
    finally:
        await origin.close()
    assert len(server.peers) == 1


async def test_http_one_connection_takes_at_most_half_the_places(serve: Serve) -> None:
    gate = Gate(*(f"flood{number}" for number in range(12)))
    server = await serve(gate.answer)
    origin = HttpGraphqlOrigin(server.url, concurrency=4)
    try:
        flood = [
            asyncio.ensure_future(origin.call(start(f"flood{number}", "AQflood")))
            for number in range(12)
        ]
        await until(lambda: server.in_flight == 2)
        # Another connection, and the node's own work, are answered while the flood waits.
        assert (await origin.call(start("init", "AQhonest")))["echo"]["operationId"] == "init"
        keepalive = {"type": "subscription_keepalive", "node": "n", "keys": ["k"]}
        assert (await origin.call(keepalive))["echo"] == keepalive
        gate.open.set()
        await asyncio.gather(*flood)
    finally:
        await origin.close()
    assert server.most_in_flight_for["AQflood"] == 2
    assert server.most_in_flight <= 4


async def test_places_go_round_the_requesters_in_turn() -> None:
    slots = OriginSlots(1, 1)
    order: list[str] = []
    answer = asyncio.Event()

    async def exchange(name: str) -> None:
        order.append(name)
        await answer.wait()

    deadline = asyncio.get_running_loop().time() + 5
    calls = [
        asyncio.ensure_future(slots.send(requester, lambda n=name: exchange(n), deadline))
        for requester, name in [
            ("A", "A1"),
            ("A", "A2"),
            ("A", "A3"),
            ("B", "B1"),
            (None, "node1"),
            ("C", "C1"),
        ]
    ]
    await until(lambda: order == ["A1"])
    answer.set()  # from now on each answers at once, and the next in turn goes
    await asyncio.gather(*calls)
    assert order == ["A1", "B1", "node1", "C1", "A2", "A3"]
    assert slots.stats() == {"graphqlOriginInFlight": 0, "graphqlOriginWaiting": 0}


async def test_http_unencodable_request_raises() -> None:
    origin = HttpGraphqlOrigin(f"http://127.0.0.1:{closed_port()}/graphql")
    try:
        with pytest.raises(TypeError):
            await origin.call({"type": "start", "variables": {1, 2}})
    finally:
        await origin.close()


# --- Lambda -----------------------------------------------------------------------------------


def lambda_origin(endpoint: MotoEndpoint, name: str, **options: Any) -> LambdaGraphqlOrigin:
    return LambdaGraphqlOrigin(name, region=endpoint.region, endpoint_url=endpoint.url, **options)


async def test_lambda_round_trip(moto_endpoint: MotoEndpoint, simple_function: str) -> None:
    origin = lambda_origin(moto_endpoint, simple_function)
    await origin.start()
    try:
        assert await origin.call(REQUEST) == REQUEST  # nothing queued: moto echoes the payload
        await queue_lambda_results(moto_endpoint, '{"accept": true, "payload": {"n": 1}}')
        assert await origin.call(REQUEST) == {"accept": True, "payload": {"n": 1}}
    finally:
        await origin.close()


@pytest.mark.parametrize("result", ["[1, 2]", "null", "not json at all"])
async def test_lambda_answer_that_is_not_an_object_is_unavailable(
    moto_endpoint: MotoEndpoint, simple_function: str, result: str
) -> None:
    origin = lambda_origin(moto_endpoint, simple_function)
    await queue_lambda_results(moto_endpoint, result)
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="no JSON object"):
            await origin.call(REQUEST)
    finally:
        await origin.close()


async def test_lambda_function_error_is_unavailable_with_its_message(
    moto_endpoint: MotoEndpoint, simple_function: str
) -> None:
    origin = lambda_origin(moto_endpoint, simple_function)
    # Over Lambda's limit: a FunctionError.
    await queue_lambda_results(moto_endpoint, "x" * 6_000_001)
    try:
        with pytest.raises(
            GraphqlOriginUnavailable,
            match=r"\(Unhandled\): Response payload size exceeded maximum allowed payload size",
        ):
            await origin.call(REQUEST)
    finally:
        await origin.close()


async def test_lambda_unknown_function_is_unavailable(
    moto_endpoint: MotoEndpoint, environment_name: str, lambda_backend: Callable[[bool], None]
) -> None:
    lambda_backend(True)  # the simple backend answers for any name; this one looks it up
    origin = lambda_origin(moto_endpoint, f"{environment_name}-missing")
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="ResourceNotFoundException"):
            await origin.call(REQUEST)
    finally:
        await origin.close()


async def test_lambda_concurrent_calls(moto_endpoint: MotoEndpoint, simple_function: str) -> None:
    origin = lambda_origin(moto_endpoint, simple_function, concurrency=4)
    await origin.start()
    try:
        answers = await asyncio.gather(
            *(origin.call({"type": "start", "operationId": str(i)}) for i in range(20))
        )
    finally:
        await origin.close()
    assert [a["operationId"] for a in answers] == [str(i) for i in range(20)]


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, so that boto3 gets as far as the network."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.mark.usefixtures("aws_credentials")
async def test_lambda_no_answer_is_unavailable_within_the_timeout(silent_server: str) -> None:
    origin = LambdaGraphqlOrigin(
        "graphql", region="us-east-1", endpoint_url=silent_server, timeout=0.3
    )
    await origin.start()
    started = time.monotonic()
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="graphql failed: Read timeout"):
            await origin.call(REQUEST)
    finally:
        await origin.close()
    assert 0.25 < time.monotonic() - started < 2  # one try, no retry


@pytest.mark.usefixtures("aws_credentials")
async def test_lambda_connection_refused_is_unavailable() -> None:
    origin = LambdaGraphqlOrigin(
        "graphql", region="us-east-1", endpoint_url=f"http://127.0.0.1:{closed_port()}"
    )
    try:
        with pytest.raises(GraphqlOriginUnavailable, match="Could not connect"):
            await origin.call(REQUEST)
    finally:
        await origin.close()


async def test_lambda_closed_origin_is_unavailable() -> None:
    origin = LambdaGraphqlOrigin("graphql", region="us-east-1")
    await origin.close()
    with pytest.raises(GraphqlOriginUnavailable, match="closed"):
        await origin.call(REQUEST)
