"""The door end to end, part one: $connect handlers and handshake rates, on real nodes with real
WebSocket clients over 127.0.0.1.

The $connect handler is an aiohttp server (tests/transports/test_connect_handler.py's) that
answers each handshake as its `door` query parameter says, or a function on moto's simple Lambda
backend, which answers with queued results. What matters at the node: a refused handshake gets
the handler's status (or the error status), never opens, and leaves no trace at the origin, not
even a DISCONNECT; an accepted one carries what the handler decided.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from runtime.transports.connect_handler import FAILED_TEXT, TIMED_OUT_TEXT
from tests.aws import MotoEndpoint, queue_lambda_results
from tests.conftest import TOKEN, RunningNode, StartNode
from tests.transports.test_connect_handler import HandlerServer

pytestmark = pytest.mark.timeout(30)

ERROR = 503  # --connect-handler-error-status here; no handler answers with it
COOKIE = "session=abc123; Path=/; HttpOnly"


# --- helpers ------------------------------------------------------------------------------------


def door_answers(server: HandlerServer) -> Callable[[web.Request], Any]:
    """Answers a $connect event as its `door` query parameter says (no parameter: accept)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        event = await request.json()
        door = (event.get("queryStringParameters") or {}).get("door", "")
        if door in ("401", "403", "500"):
            return web.Response(status=int(door), text=f"handler says {door}")
        if door == "lambda403":
            return web.json_response({"statusCode": 403, "body": "lambda-style no"})
        if door == "slow":
            await server.hold(5)
            return web.Response(status=200)
        if door.startswith("proto-"):
            return web.Response(status=200, headers={"Sec-WebSocket-Protocol": door[6:]})
        if door == "cookie":
            return web.Response(status=200, headers={"Set-Cookie": COOKIE, "X-Other": "no"})
        return web.Response(status=200)

    return answer


@asynccontextmanager
async def door_handler() -> AsyncIterator[HandlerServer]:
    """A running $connect handler answering as `door_answers` says."""
    server = HandlerServer()
    server.answer = door_answers(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def handler() -> AsyncIterator[HandlerServer]:
    async with door_handler() as server:
        yield server


def seen(server: HandlerServer) -> list[dict[str, Any]]:
    """The $connect events the handler received, in order."""
    return [json.loads(body) for body in server.bodies]


async def start_with_handler(
    start_node: StartNode, handler: HandlerServer, **overrides: Any
) -> RunningNode:
    settings: dict[str, Any] = {
        "connect_handler_url": handler.url,
        "connect_handler_error_status": ERROR,
        "connect_handler_timeout": 0.5,
    }
    return await start_node(**(settings | overrides))


async def refused(url: str, **options: Any) -> Response:
    """The HTTP answer to a handshake that must be refused (fails if it opens)."""
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, open_timeout=10, **options):
            pass
    return caught.value.response


async def one_accepted_connection(node: RunningNode, url: str, **options: Any) -> str:
    """Open, talk and close one client, wait for its DISCONNECT, and check that it is the only
    connection the origin ever heard of: any event of a refused handshake (it would have been
    offered first) shows up here. Returns its connection ID."""
    async with connect(url, **options) as client:
        await client.send("after")
    events = await node.origin.wait_for(
        lambda e: any(x["requestContext"]["eventType"] == "DISCONNECT" for x in e)
    )
    ids = {event["requestContext"]["connectionId"] for event in events}
    (disconnect,) = node.origin.of_type("DISCONNECT")
    assert ids == {disconnect["requestContext"]["connectionId"]}
    return disconnect["requestContext"]["connectionId"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def get_stats(node: RunningNode) -> dict[str, Any]:
    url = node.commands_url.rsplit("/", 1)[0] + "/stats"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        assert response.status == 200
        return await response.json()


# --- 1. $connect refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("door", "status", "text"),
    [
        ("401", 401, "handler says 401"),
        ("403", 403, "handler says 403"),
        ("lambda403", 403, "lambda-style no"),
        ("500", 500, "handler says 500"),
        ("slow", ERROR, TIMED_OUT_TEXT),
    ],
)
async def test_a_refusing_handler_refuses_and_the_origin_hears_nothing(
    start_node: StartNode, handler: HandlerServer, door: str, status: int, text: str
) -> None:
    node = await start_with_handler(start_node, handler)
    started = time.monotonic()
    response = await refused(f"{node.ws_url}/?door={door}")
    assert response.status_code == status
    assert response.body.decode() == text
    if door == "slow":  # the timeout, not the handler's late answer, decided
        assert time.monotonic() - started < 2
    accepted = await one_accepted_connection(node, node.ws_url)
    refused_event, accepted_event = seen(handler)
    refused_id = refused_event["requestContext"]["connectionId"]
    assert accepted == accepted_event["requestContext"]["connectionId"] != refused_id
    (connect_event,) = node.origin.of_type("CONNECT")
    assert connect_event["requestContext"]["connectHandled"] is True
    assert node.node.stats()["handshakesRefusedConnectHandler"] == 1
    assert node.node.stats()["connectionsOpened"] == 1


async def test_a_dead_handler_url_is_the_error_status_and_no_event(start_node: StartNode) -> None:
    node = await start_node(
        connect_handler_url=f"http://127.0.0.1:{closed_port()}/connect",
        connect_handler_error_status=ERROR,
        connect_handler_timeout=2.0,
    )
    for _ in range(3):
        response = await refused(node.ws_url)
        assert (response.status_code, response.body.decode()) == (ERROR, FAILED_TEXT)
    assert node.node.stats()["connectHandler"]["errors"] == 3
    await node.service.stop()  # flushes whatever was offered to the origin
    assert node.origin.events == []


async def test_the_handler_sees_an_api_gateway_connect_event(
    start_node: StartNode, handler: HandlerServer
) -> None:
    node = await start_with_handler(start_node, handler, stage="prod", region="eu-west-1")
    async with connect(
        node.ws_url + "/chat?room=lobby&tag=x&tag=y",
        additional_headers={"X-Custom": "1"},
        user_agent_header="door-test",
    ) as client:
        await client.send("hi")
        await node.origin.wait_for(lambda e: len(e) >= 2)
    (event,) = seen(handler)
    context = event["requestContext"]
    assert context["routeKey"] == "$connect"
    assert context["eventType"] == "CONNECT"
    assert context["apiId"] == node.node.context.api_id != ""
    assert (context["stage"], context["region"]) == ("prod", "eu-west-1")
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "door-test"
    assert "connectHandled" not in context  # the handler is what handles it
    assert event["headers"]["X-Custom"] == "1"
    assert event["queryStringParameters"] == {"room": "lobby", "tag": "y"}
    assert event["multiValueQueryStringParameters"] == {"room": ["lobby"], "tag": ["x", "y"]}
    assert event["path"] == "/chat"
    # The origin's CONNECT is the same connection, the same moment, marked as handled.
    (connect_event,) = node.origin.of_type("CONNECT")
    origin_context = connect_event["requestContext"]
    assert origin_context["connectionId"] == context["connectionId"]
    assert origin_context["connectedAt"] == context["connectedAt"]
    assert origin_context["connectHandled"] is True
    (message,) = node.origin.of_type("MESSAGE")
    assert message["requestContext"]["connectionId"] == context["connectionId"]


async def test_connect_event_suppress_sends_no_connect_but_the_disconnect(
    start_node: StartNode, handler: HandlerServer
) -> None:
    node = await start_with_handler(start_node, handler, connect_event="suppress")
    async with connect(node.ws_url) as client:
        await client.send("hello")
    events = await node.origin.wait_for(
        lambda e: any(x["requestContext"]["eventType"] == "DISCONNECT" for x in e)
    )
    assert [event["requestContext"]["eventType"] for event in events] == ["MESSAGE", "DISCONNECT"]
    (handled,) = seen(handler)
    handled_id = handled["requestContext"]["connectionId"]
    assert {event["requestContext"]["connectionId"] for event in events} == {handled_id}
    # A refused handshake under suppress sends nothing either.
    assert (await refused(f"{node.ws_url}/?door=403")).status_code == 403
    await node.service.stop()
    assert len(node.origin.events) == 2


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, moto_endpoint: MotoEndpoint) -> MotoEndpoint:
    """boto3's own chain (what the node uses) pointed at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint.url)
    return moto_endpoint


async def test_a_lambda_handler_on_moto_decides(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    node = await start_node(
        connect_handler_function=simple_function,
        connect_handler_error_status=ERROR,
        aws_region=aws.region,
    )
    await queue_lambda_results(
        aws,
        '{"statusCode": 401, "body": "function says no"}',
        json.dumps({"statusCode": 200, "headers": {"Set-Cookie": COOKIE}}),
    )
    response = await refused(node.ws_url)
    assert (response.status_code, response.body.decode()) == (401, "function says no")
    async with connect(node.ws_url) as client:
        assert client.response is not None
        assert client.response.headers["Set-Cookie"] == COOKIE
        await client.send("after")
    await node.origin.wait_for(lambda e: len(node.origin.of_type("DISCONNECT")) == 1)
    (connect_event,) = node.origin.of_type("CONNECT")
    assert connect_event["requestContext"]["connectHandled"] is True
    assert len({e["requestContext"]["connectionId"] for e in node.origin.events}) == 1
    assert node.node.stats()["connectHandler"] == {
        "calls": 2,
        "accepted": 1,
        "refused": 1,
        "errors": 0,
        "timeouts": 0,
    }


# --- 2. the handler's subprotocol and headers ---------------------------------------------------


@pytest.mark.parametrize("configured", [(), ("a",)])
async def test_the_handler_chooses_the_subprotocol(
    start_node: StartNode, handler: HandlerServer, configured: tuple[str, ...]
) -> None:
    node = await start_with_handler(start_node, handler, subprotocols=configured)
    async with connect(f"{node.ws_url}/?door=proto-b", subprotocols=["a", "b"]) as client:
        assert client.subprotocol == "b"
        await client.send("hi")
        events = await node.origin.wait_for(lambda e: len(e) >= 2)
    assert events[0]["requestContext"]["subprotocol"] == "b"
    assert events[1]["requestContext"]["subprotocol"] == "b"


async def test_a_subprotocol_the_client_did_not_offer_is_refused(
    start_node: StartNode, handler: HandlerServer
) -> None:
    node = await start_with_handler(start_node, handler)
    response = await refused(f"{node.ws_url}/?door=proto-z", subprotocols=["a", "b"])
    assert response.status_code == ERROR
    assert "Sec-WebSocket-Protocol" not in response.headers
    # The same choice with no subprotocol offered at all is refused the same way.
    assert (await refused(f"{node.ws_url}/?door=proto-b")).status_code == ERROR
    await one_accepted_connection(node, node.ws_url)
    assert node.node.stats()["handshakesRefusedConnectHandler"] == 2


async def test_the_handlers_cookie_reaches_the_101(
    start_node: StartNode, handler: HandlerServer
) -> None:
    node = await start_with_handler(start_node, handler)
    async with connect(f"{node.ws_url}/?door=cookie") as client:
        assert client.response is not None
        assert client.response.status_code == 101
        assert client.response.headers["Set-Cookie"] == COOKIE
        assert "X-Other" not in client.response.headers  # about the HTTP answer, not the 101
        await client.send("ok")
        echoed = await node.origin.wait_for(lambda e: len(e) >= 2)
    assert echoed[1]["body"] == "ok"


# --- 5. handshake rates -------------------------------------------------------------------------


async def handshake_burst(
    url: str, sources: Iterator[str | None], count: int
) -> tuple[list[ClientConnection], list[Response], float]:
    """`count` handshakes at once, each from the next source IP (X-Forwarded-For; None: none).
    Returns the clients that opened (still open), the refusals, and the seconds it took."""

    async def one(source: str | None) -> ClientConnection | Response:
        headers = {"X-Forwarded-For": source} if source is not None else {}
        try:
            return await connect(url, additional_headers=headers)
        except InvalidStatus as exc:
            return exc.response

    started = time.monotonic()
    outcomes = await asyncio.gather(*(one(next(sources)) for _ in range(count)))
    elapsed = time.monotonic() - started
    opened = [o for o in outcomes if isinstance(o, ClientConnection)]
    refusals = [o for o in outcomes if isinstance(o, Response)]
    return opened, refusals, elapsed


def repeat(value: str | None) -> Iterator[str | None]:
    while True:
        yield value


async def test_per_ip_handshake_rate(start_node: StartNode) -> None:
    node = await start_node(
        handshake_rate_per_ip=2, handshake_burst_per_ip=3, trust_forwarded_for=True
    )
    noisy = "198.51.100.1"
    opened, refusals, elapsed = await handshake_burst(node.ws_url, repeat(noisy), 10)
    try:
        # Three from the burst, and one more for each half second the burst took (~none).
        assert 3 <= len(opened) <= 3 + int(elapsed * 2)
        assert len(opened) + len(refusals) == 10
        for response in refusals:
            assert response.status_code == 429
            assert int(response.headers["Retry-After"]) >= 1
        # Others are not held back by the noisy one: another forwarded source, and the peer.
        async with connect(node.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.2"}):
            pass
        async with connect(node.ws_url):
            pass
        # The noisy source is still refused, and /healthz answers whatever the rates say.
        assert (
            await refused(node.ws_url, additional_headers={"X-Forwarded-For": noisy})
        ).status_code == 429
        async with (
            aiohttp.ClientSession() as session,
            session.get(node.http_url + "/healthz") as health,
        ):
            assert health.status == 200
    finally:
        for client in opened:
            await client.close()
    await node.service.stop()
    sources = Counter(
        e["requestContext"]["identity"]["sourceIp"] for e in node.origin.of_type("CONNECT")
    )
    assert sources == {noisy: len(opened), "198.51.100.2": 1, "127.0.0.1": 1}
    assert node.node.stats()["handshakesRefusedRate"] == len(refusals) + 1


async def test_per_node_handshake_rate(start_node: StartNode) -> None:
    node = await start_node(handshake_rate=2, handshake_burst=3, trust_forwarded_for=True)
    addresses = (f"198.51.100.{n}" for n in range(1, 100))
    opened, refusals, elapsed = await handshake_burst(node.ws_url, addresses, 10)
    try:
        assert 3 <= len(opened) <= 3 + int(elapsed * 2)
        assert all(r.status_code == 429 and "Retry-After" in r.headers for r in refusals)
        # Node-wide: a source the burst never used is refused all the same, until a token comes.
        fresh = {"X-Forwarded-For": "203.0.113.50"}
        response = await refused(node.ws_url, additional_headers=fresh)
        assert response.status_code == 429
        wait = int(response.headers["Retry-After"])
        assert wait == 1  # a token every half second
        await asyncio.sleep(0.6)
        async with connect(node.ws_url, additional_headers=fresh):
            pass
    finally:
        for client in opened:
            await client.close()
    await node.service.stop()
    assert len(node.origin.of_type("CONNECT")) == len(opened) + 1


async def test_the_cap_and_the_rate_come_before_the_handler(
    start_node: StartNode, handler: HandlerServer
) -> None:
    """Refusals that need no one's answer never cost a handler call, nor a rate token for one
    refused at the cap (the cap is checked first)."""
    node = await start_with_handler(
        start_node,
        handler,
        handshake_rate_per_ip=0.1,
        handshake_burst_per_ip=2,
        max_connections=1,
    )
    async with connect(node.ws_url):
        assert (await refused(node.ws_url)).status_code == 503  # at the cap
    async with connect(node.ws_url):  # the second token
        pass
    response = await refused(node.ws_url)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 1  # a token every ten seconds
    assert len(handler.bodies) == 2
    assert node.node.stats()["handshakesRefusedFull"] == 1
    assert node.node.stats()["handshakesRefusedRate"] == 1
