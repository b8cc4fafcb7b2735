"""API Gateway's @connections API on the command listener, driven by the real management clients:
boto3's `apigatewaymanagementapi` here, the JS SDK v3's in tests/js/connections_api.mjs.

Nodes are in-process with real sockets: one alone, or two peering over UDP on 127.0.0.1, where
a request to one node for a connection on the other is answered by asking the owner. boto3 is
blocking, so each call runs in a thread while the nodes serve on the test's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from runtime.core.execution import Outcome
from runtime.node.connections_api import ConnectionsApi, iso8601_ms
from runtime.node.server import Node
from runtime.node.service import NodeService, peers_from_settings
from runtime.transports.http_commands import CommandEndpoint, connections_target
from runtime.transports.udp_peers import UdpPeers
from runtime.wire.commands import Answer, Ask
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from runtime.wire.events import now_ms
from tests.conftest import TOKEN, node_settings
from tests.doubles.memory import MemoryOrigin
from tests.processes import ROOT
from tests.transports.test_udp_peers import free_udp_port

STAGE = "prod"
SECRET = "connections-api-secret-0123456789"
DOWN_SECONDS = 1.0
AGENT = "connections-api-test/1.0"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JS_DIR = ROOT / "tests" / "js"
JS_SCRIPT = JS_DIR / "connections_api.mjs"
NODE_JS = shutil.which("node")


# --- nodes with the @connections API --------------------------------------------------------------


def wire_connections_api(service: NodeService, mode: str) -> ConnectionsApi:
    """The node's ConnectionsApi, and the command endpoint serving it, before the service starts.

    TEST-ONLY STAND-IN until runtime/node/server.py and service.py construct them (the brief
    names the code): a node that already has `connections_api` is used as it is.
    """
    node = service.node
    api: ConnectionsApi | None = getattr(node, "connections_api", None)
    if api is None:
        api = _stand_in(node)
    endpoint = service.commands
    assert endpoint is not None
    if getattr(endpoint, "connections_mode", "off") == "off":
        s = service.settings
        host, port = s.command_listen  # type: ignore[misc]
        service.commands = CommandEndpoint(
            node,
            host,
            port,
            token=s.command_token,
            max_payload_bytes=s.send_buffer_bytes,
            connections_api=mode,
            stage=s.stage,
            connections=api,
        )
    return api


def _stand_in(node: Node) -> ConnectionsApi:
    s = node.settings
    api = ConnectionsApi(
        node.registry,
        node.cluster,  # type: ignore[arg-type]
        node.address,
        region=s.region,
        max_payload_bytes=s.send_buffer_bytes,
        writer=node.writer,
        peer_timeout=s.peer_down_seconds,
    )
    node.connections_api = api  # type: ignore[attr-defined]
    execute = node.execute

    async def execute_with_asks(commands: Any, *, from_peer: bool = False) -> Outcome:
        rest = []
        for command in commands:
            if isinstance(command, Ask) and from_peer:
                api.ask_received(command)
            elif isinstance(command, Answer) and from_peer:
                api.answer_received(command)
            else:
                rest.append(command)
        return await execute(rest, from_peer=from_peer) if rest else Outcome()

    node.execute = execute_with_asks  # type: ignore[method-assign]
    # Identity and activity, which the node records itself once wired.
    add = node.registry.add

    def add_with_identity(entry: Any) -> None:
        entry.source_ip = entry.handle.remote_address[0]
        entry.user_agent = entry.handle.request.headers.get("User-Agent", "")
        add(entry)

    node.registry.add = add_with_identity  # type: ignore[method-assign]
    offer = node.pump.offer

    def offer_marking_activity(key: str, event: bytes) -> bool:
        entry = node.registry.get(key)
        if entry is not None:
            entry.last_active_at = now_ms()
        return offer(key, event)

    node.pump.offer = offer_marking_activity  # type: ignore[method-assign]
    return api


@dataclasses.dataclass
class Gateway:
    service: NodeService
    origin: MemoryOrigin
    api: ConnectionsApi

    @property
    def node(self) -> Node:
        return self.service.node

    @property
    def ws_url(self) -> str:
        host, port = self.node.ws_address  # type: ignore[misc]
        return f"ws://{host}:{port}"

    @property
    def base_url(self) -> str:
        assert self.service.commands is not None
        return f"http://127.0.0.1:{self.service.commands.port}"

    def endpoint(self, stage: str = STAGE) -> str:
        return f"{self.base_url}/{stage}" if stage else self.base_url

    async def client(self) -> tuple[ClientConnection, str]:
        """A WebSocket client of this node, and its connection ID (from its CONNECT)."""
        before = len(self.origin.of_type("CONNECT"))
        client = await connect(self.ws_url, user_agent_header=AGENT, max_size=None)
        await self.origin.wait_for(lambda e: len(self.origin.of_type("CONNECT")) > before)
        return client, self.origin.of_type("CONNECT")[-1]["requestContext"]["connectionId"]


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    started: list[Gateway] = []

    async def start(mode: str = "token", **overrides: Any) -> Gateway:
        settings = node_settings(stage=STAGE, connections_api=mode, **overrides)
        peers = None if settings.local_only else peers_from_settings(settings)
        origin = MemoryOrigin()
        service = NodeService(settings, origin, peers)
        api = wire_connections_api(service, mode)
        await service.start()
        gateway = Gateway(service, origin, api)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if not gateway.node.draining:
            await gateway.service.stop()


async def start_pair(
    start_gateway: StartGateway, down_seconds: float = DOWN_SECONDS, **overrides: Any
) -> tuple[Gateway, Gateway]:
    """Two nodes peering over UDP on 127.0.0.1, each up in the other's eyes."""
    ports = free_udp_port(), free_udp_port()
    gateways = []
    for own, other in (ports, ports[::-1]):
        gateways.append(
            await start_gateway(
                local_only=False,
                peer_secret=SECRET,
                peer_listen=("127.0.0.1", own),
                peer_advertise=NodeAddress("127.0.0.1", own),
                peers=(NodeAddress("127.0.0.1", other),),
                peer_down_seconds=down_seconds,
                peer_metrics_interval=0,
                **overrides,
            )
        )
    a, b = gateways
    await until(lambda: bool(a.node.cluster.peers() and b.node.cluster.peers()))  # type: ignore[union-attr]
    return a, b


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- the management clients -----------------------------------------------------------------------


def management_client(endpoint: str, token: str | None = TOKEN) -> Any:
    """boto3's client as an API Gateway handler builds it, plus the node's token header."""
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15),
    )
    if token is not None:

        def add_token(request: Any, **_: Any) -> None:
            request.headers["X-Gateway-Token"] = token

        client.meta.events.register("before-sign.apigatewaymanagementapi.*", add_token)
    return client


async def call(client: Any, operation: str, **params: Any) -> Any:
    return await asyncio.to_thread(getattr(client, operation), **params)


async def error_code(client: Any, operation: str, **params: Any) -> str:
    """The error code boto3 read from the answer (it raises a ClientError subclass)."""
    with pytest.raises(client.exceptions.ClientError) as caught:
        await call(client, operation, **params)
    return str(caught.value.response["Error"]["Code"])


async def raw(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers or {}) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def closed_with(client: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), 5)
    return client.close_code


# --- one node -------------------------------------------------------------------------------------


async def test_post_get_delete_on_the_node_holding_the_connection(
    start_gateway: StartGateway,
) -> None:
    g = await start_gateway()
    ws, cid = await g.client()
    api = management_client(g.endpoint())
    started = datetime.datetime.now(datetime.UTC)

    await call(api, "post_to_connection", ConnectionId=cid, Data="héllo ✓".encode())
    assert await asyncio.wait_for(ws.recv(), 5) == "héllo ✓"  # UTF-8: a text frame
    await call(api, "post_to_connection", ConnectionId=cid, Data=b"\xff\x00binary")
    assert await asyncio.wait_for(ws.recv(), 5) == b"\xff\x00binary"  # else binary
    await call(api, "post_to_connection", ConnectionId=cid, Data=b"")
    assert await asyncio.wait_for(ws.recv(), 5) == ""

    info = await call(api, "get_connection", ConnectionId=cid)
    connected = info["ConnectedAt"]
    assert abs((connected - started).total_seconds()) < 5
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": AGENT}
    assert info["LastActiveAt"] == connected  # the client has sent nothing yet

    await asyncio.sleep(0.02)
    await ws.send("activity")
    await g.origin.wait_for(lambda e: bool(g.origin.of_type("MESSAGE")))
    later = await call(api, "get_connection", ConnectionId=cid)
    assert later["LastActiveAt"] > connected
    assert later["ConnectedAt"] == connected

    await call(api, "delete_connection", ConnectionId=cid)
    assert await closed_with(ws) == 1000
    await g.origin.wait_for(lambda e: bool(g.origin.of_type("DISCONNECT")))
    for operation, params in (
        ("post_to_connection", {"Data": b"late"}),
        ("get_connection", {}),
        ("delete_connection", {}),
    ):
        assert await error_code(api, operation, ConnectionId=cid, **params) == "GoneException"


async def test_get_answers_api_gateways_wire_shape(start_gateway: StartGateway) -> None:
    g = await start_gateway()
    _, cid = await g.client()
    status, headers, body = await raw(
        "GET", f"{g.endpoint()}/@connections/{cid}", headers={"X-Gateway-Token": TOKEN}
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["x-amzn-RequestId"]
    document = json.loads(body)
    assert set(document) == {"connectedAt", "identity", "lastActiveAt"}
    assert ISO_MS.match(document["connectedAt"]) and ISO_MS.match(document["lastActiveAt"])
    assert document["identity"] == {"sourceIp": "127.0.0.1", "userAgent": AGENT}


async def test_ids_are_percent_decoded(start_gateway: StartGateway) -> None:
    g = await start_gateway()
    ws, cid = await g.client()
    every_char_encoded = "".join(f"%{byte:02X}" for byte in cid.encode())
    status, _, _ = await raw(
        "POST",
        f"{g.endpoint()}/@connections/{every_char_encoded}",
        data=b"decoded",
        headers={"X-Gateway-Token": TOKEN},
    )
    assert status == 200
    assert await asyncio.wait_for(ws.recv(), 5) == "decoded"
    # API Gateway's IDs end in "=", which SDKs send as %3D: decoded, it is not one of ours.
    api = management_client(g.endpoint())
    assert await error_code(api, "get_connection", ConnectionId=cid + "=") == "GoneException"


async def test_unknown_and_malformed_ids_are_gone(start_gateway: StartGateway) -> None:
    g = await start_gateway()
    ws, cid = await g.client()
    ours_never_issued = ConnectionIdIssuer(g.node.settings.region, g.node.address).issue()
    stranger = ConnectionIdIssuer(g.node.settings.region, NodeAddress("127.0.0.9", 9)).issue()
    other_region = ConnectionIdIssuer("eu-north-9", g.node.address).issue()
    api = management_client(g.endpoint())
    for bad in (
        ours_never_issued,
        stranger,  # a node outside the cluster (this one has none): never asked
        other_region,
        "not-an-id",
        cid[:-2],
        cid + "A",
        "x" * 500,
        "é/../../commands",
        "%ZZ",
    ):
        for operation, params in (
            ("post_to_connection", {"Data": b"x"}),
            ("get_connection", {}),
            ("delete_connection", {}),
        ):
            code = await error_code(api, operation, ConnectionId=bad, **params)
            assert code == "GoneException", (bad, operation)
    # The raw answer: status, the code header SDKs read first, and a JSON message.
    status, headers, body = await raw(
        "GET", f"{g.endpoint()}/@connections/nope", headers={"X-Gateway-Token": TOKEN}
    )
    assert status == 410
    assert headers["x-amzn-ErrorType"] == "GoneException"
    assert "not connected" in json.loads(body)["message"]
    # None of it reached the connection.
    await call(api, "post_to_connection", ConnectionId=cid, Data=b"only this")
    assert await asyncio.wait_for(ws.recv(), 5) == "only this"


async def test_a_graphql_connection_is_not_the_apis(start_gateway: StartGateway) -> None:
    """GraphQL connections never reach the event origin, so its API does not know them."""
    g = await start_gateway()
    _, cid = await g.client()
    entry = g.node.registry.get(cid)
    assert entry is not None
    entry.graphql = True  # as the node marks a GraphQL connection
    api = management_client(g.endpoint())
    assert await error_code(api, "get_connection", ConnectionId=cid) == "GoneException"


async def test_oversized_posts_are_payload_too_large(start_gateway: StartGateway) -> None:
    g = await start_gateway(send_buffer_bytes=64 * 1024)
    ws, cid = await g.client()
    api = management_client(g.endpoint())
    largest = bytes([0x41]) * (64 * 1024)
    await call(api, "post_to_connection", ConnectionId=cid, Data=largest)
    assert await asyncio.wait_for(ws.recv(), 5) == largest.decode()
    code = await error_code(api, "post_to_connection", ConnectionId=cid, Data=largest + b"A")
    assert code == "PayloadTooLargeException"

    # Refused by its Content-Length, before the body is read ...
    status, headers, body = await raw(
        "POST",
        f"{g.endpoint()}/@connections/{cid}",
        data=bytes(1 << 20),
        headers={"X-Gateway-Token": TOKEN},
    )
    assert (status, headers["x-amzn-ErrorType"]) == (413, "PayloadTooLargeException")
    assert "65536" in json.loads(body)["message"]

    # ... and a chunked body, which has none, once it is in.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield bytes(32 * 1024)

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{g.endpoint()}/@connections/{cid}", data=chunks(), headers={"X-Gateway-Token": TOKEN}
        ) as response,
    ):
        assert response.status == 413
        assert response.headers["x-amzn-ErrorType"] == "PayloadTooLargeException"
    # The client got none of them.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)


async def test_wrong_or_missing_token_is_forbidden(start_gateway: StartGateway) -> None:
    g = await start_gateway()
    ws, cid = await g.client()
    # boto3's own Authorization is a SigV4 signature, not the token.
    for client in (
        management_client(g.endpoint(), token=None),
        management_client(g.endpoint(), token="wrong"),
        management_client(g.endpoint(), token=""),
    ):
        for operation, params in (
            ("post_to_connection", {"Data": b"x"}),
            ("get_connection", {}),
            ("delete_connection", {}),
        ):
            code = await error_code(client, operation, ConnectionId=cid, **params)
            assert code == "ForbiddenException"
    url = f"{g.endpoint()}/@connections/{cid}"
    status, headers, _ = await raw("POST", url, b"x", {"Authorization": "Bearer wrong"})
    assert (status, headers["x-amzn-ErrorType"]) == (403, "ForbiddenException")
    # Nothing was delivered; the token as a bearer token is accepted too.
    status, _, _ = await raw("POST", url, b"bearer", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert await asyncio.wait_for(ws.recv(), 5) == "bearer"


async def test_network_mode_needs_no_token(start_gateway: StartGateway) -> None:
    g = await start_gateway("network")
    ws, cid = await g.client()
    api = management_client(g.endpoint(), token=None)
    await call(api, "post_to_connection", ConnectionId=cid, Data=b"open")
    assert await asyncio.wait_for(ws.recv(), 5) == "open"
    # /commands keeps its own token.
    status, _, _ = await raw("POST", f"{g.base_url}/commands", b'{"commands": []}')
    assert status == 401


async def test_wrong_or_missing_stage_is_forbidden(start_gateway: StartGateway) -> None:
    g = await start_gateway()
    ws, cid = await g.client()
    for endpoint in (g.endpoint("staging"), g.endpoint("PROD"), g.endpoint("")):
        api = management_client(endpoint)
        code = await error_code(api, "post_to_connection", ConnectionId=cid, Data=b"x")
        assert code == "ForbiddenException", endpoint
    status, _, body = await raw(
        "GET", f"{g.base_url}/staging/@connections/{cid}", headers={"X-Gateway-Token": TOKEN}
    )
    assert status == 403 and f"/{STAGE}/@connections" in json.loads(body)["message"]
    # Without the token, the right stage is not told.
    status, _, body = await raw("GET", f"{g.base_url}/staging/@connections/{cid}")
    assert status == 403 and STAGE not in json.loads(body)["message"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)


async def test_other_methods_and_a_missing_id_are_bad_requests(
    start_gateway: StartGateway,
) -> None:
    g = await start_gateway()
    _, cid = await g.client()
    token = {"X-Gateway-Token": TOKEN}
    for method in ("PUT", "PATCH", "OPTIONS"):
        status, headers, _ = await raw(method, f"{g.endpoint()}/@connections/{cid}", b"", token)
        assert (status, headers["x-amzn-ErrorType"]) == (400, "BadRequestException"), method
        assert headers["Allow"] == "POST, GET, DELETE"
    for path in ("/@connections/", "/@connections"):
        status, headers, _ = await raw("GET", f"{g.endpoint()}{path}", None, token)
        assert (status, headers["x-amzn-ErrorType"]) == (400, "BadRequestException"), path


async def test_commands_and_stats_are_unchanged(start_gateway: StartGateway) -> None:
    g = await start_gateway()
    ws, cid = await g.client()
    body = {"commands": [{"action": "send", "connectionIds": [cid], "data": "cmd"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{g.base_url}/commands", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        assert (response.status, await response.json()) == (200, {"accepted": 1})
    assert await asyncio.wait_for(ws.recv(), 5) == "cmd"
    status, _, _ = await raw("GET", f"{g.base_url}/stats", None, {"X-Gateway-Token": TOKEN})
    assert status == 401  # /stats takes the bearer token only, as before
    status, _, _ = await raw("GET", f"{g.base_url}/nowhere", None)
    assert status == 404


async def test_connections_api_off_serves_no_such_path(start_gateway: StartGateway) -> None:
    g = await start_gateway("off")
    _, cid = await g.client()
    status, headers, _ = await raw(
        "POST", f"{g.endpoint()}/@connections/{cid}", b"x", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 404 and "x-amzn-ErrorType" not in headers


def test_the_endpoint_refuses_settings_it_cannot_serve() -> None:
    g: Any = object()
    with pytest.raises(ValueError, match="one of off, token, network"):
        CommandEndpoint(g, "127.0.0.1", 0, token="t", max_payload_bytes=1024, connections_api="on")
    with pytest.raises(ValueError, match="needs the connections"):
        CommandEndpoint(
            g, "127.0.0.1", 0, token="t", max_payload_bytes=1024, connections_api="network"
        )
    with pytest.raises(ValueError, match="needs a command token"):
        CommandEndpoint(
            g,
            "127.0.0.1",
            0,
            token=None,
            max_payload_bytes=1024,
            connections_api="token",
            connections=g,
        )


# --- two nodes ------------------------------------------------------------------------------------


async def test_a_connection_on_the_other_node_is_answered_by_its_owner(
    start_gateway: StartGateway,
) -> None:
    a, b = await start_pair(start_gateway)
    ws, cid = await b.client()
    api = management_client(a.endpoint())  # asks A; B holds the connection

    await call(api, "post_to_connection", ConnectionId=cid, Data="across ✓".encode())
    assert await asyncio.wait_for(ws.recv(), 5) == "across ✓"
    await call(api, "post_to_connection", ConnectionId=cid, Data=bytes(range(256)))
    assert await asyncio.wait_for(ws.recv(), 5) == bytes(range(256))

    info = await call(api, "get_connection", ConnectionId=cid)
    assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": AGENT}
    assert info["LastActiveAt"] == info["ConnectedAt"]
    await asyncio.sleep(0.02)
    await ws.send("hello")
    await b.origin.wait_for(lambda e: bool(b.origin.of_type("MESSAGE")))
    assert (await call(api, "get_connection", ConnectionId=cid))["LastActiveAt"] > info[
        "LastActiveAt"
    ]

    await call(api, "delete_connection", ConnectionId=cid)
    assert await closed_with(ws) == 1000
    await b.origin.wait_for(lambda e: bool(b.origin.of_type("DISCONNECT")))
    assert b.origin.of_type("DISCONNECT")[0]["requestContext"]["connectionId"] == cid
    assert await error_code(api, "get_connection", ConnectionId=cid) == "GoneException"
    assert await error_code(api, "delete_connection", ConnectionId=cid) == "GoneException"
    assert a.api.stats()["connectionsApiAsksSent"] == 7
    assert b.api.stats()["connectionsApiAsksReceived"] == 7
    assert a.api.pending == 0


async def test_the_owners_payload_bound_holds_for_asks(start_gateway: StartGateway) -> None:
    """A node that allows more than the owner: the owner refuses, and says so with 413."""
    a, b = await start_pair(start_gateway)
    ws, cid = await b.client()
    b.api.max_payload_bytes = 1024
    api = management_client(a.endpoint())
    code = await error_code(api, "post_to_connection", ConnectionId=cid, Data=bytes(1025))
    assert code == "PayloadTooLargeException"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 0.3)


async def test_a_killed_owner_is_gone_within_the_bound(start_gateway: StartGateway) -> None:
    a, b = await start_pair(start_gateway)
    ws, cid = await b.client()
    api = management_client(a.endpoint())
    await call(api, "post_to_connection", ConnectionId=cid, Data=b"before")
    assert await asyncio.wait_for(ws.recv(), 5) == b"before".decode()
    peers = b.service.cluster
    assert isinstance(peers, UdpPeers) and peers.transport is not None
    peers.transport.abort()  # B's peer link dies: nothing more from B
    for operation, params in (
        ("get_connection", {}),
        ("post_to_connection", {"Data": b"lost?"}),
        ("delete_connection", {}),
    ):
        started = time.monotonic()
        assert await error_code(api, operation, ConnectionId=cid, **params) == "GoneException"
        assert time.monotonic() - started < DOWN_SECONDS + 0.5, operation
    assert a.api.pending == 0


async def test_pending_asks_are_bounded(start_gateway: StartGateway) -> None:
    """10,000 asks may wait for answers; the next is 429 LimitExceededException at once, and
    every waiting one ends with 410 at the bound, leaving nothing behind."""
    bound = 5.0  # the 10,000 asks take a few seconds to cross the link; the peer stays up
    a, b = await start_pair(start_gateway, bound)
    ws, cid = await b.client()
    b.api.ask_received = lambda ask: None  # type: ignore[method-assign]  # B never answers
    started = time.monotonic()
    posts = [asyncio.ensure_future(a.api.post(cid, b"wait", False)) for _ in range(10_000)]
    await until(lambda: a.api.pending == 10_000)
    assert await a.api.post(cid, b"one more", False) == 429
    api = management_client(a.endpoint())
    code = await error_code(api, "get_connection", ConnectionId=cid)
    assert code == "LimitExceededException"
    assert time.monotonic() - started < bound / 2  # refused at once, not after a wait
    statuses = await asyncio.wait_for(asyncio.gather(*posts), bound + 5)
    assert set(statuses) == {410}
    assert time.monotonic() - started >= bound
    assert a.api.pending == 0
    assert a.api.stats()["connectionsApiRefusedBusy"] == 2
    assert a.api.stats()["connectionsApiAsksTimedOut"] == 10_000
    # Room again: once the link has carried the backlog, an answered ask goes through.
    del b.api.ask_received
    await until(lambda: not a.api._tasks, 10)
    assert await a.api.post(cid, b"through", False) == 200
    assert await asyncio.wait_for(ws.recv(), 5) == "through"


async def test_a_late_answer_finds_nothing_to_resolve(start_gateway: StartGateway) -> None:
    a, _ = await start_pair(start_gateway)
    a.api.answer_received(Answer(123_456, 200, b"{}"))
    assert a.api.stats()["connectionsApiLateAnswers"] == 1
    assert a.api.pending == 0


@pytest.mark.parametrize(
    ("status", "info"), [(500, b""), (200, b"not json"), (200, b"[1, 2]"), (200, b"")]
)
async def test_an_answer_the_asker_cannot_use_is_gone(
    start_gateway: StartGateway, status: int, info: bytes
) -> None:
    a, b = await start_pair(start_gateway)
    _, cid = await b.client()

    def answer_badly(ask: Ask) -> None:
        b.api._spawn(b.api._answer(ask.reply_to, Answer(ask.request_id, status, info)))

    b.api.ask_received = answer_badly  # type: ignore[method-assign]
    api = management_client(a.endpoint())
    started = time.monotonic()
    assert await error_code(api, "get_connection", ConnectionId=cid) == "GoneException"
    assert time.monotonic() - started < DOWN_SECONDS / 2  # answered, not timed out
    assert a.api.stats().get("connectionsApiAsksTimedOut", 0) == 0


async def test_closing_ends_every_wait_with_gone(start_gateway: StartGateway) -> None:
    a, b = await start_pair(start_gateway)
    _, cid = await b.client()
    b.api.ask_received = lambda ask: None  # type: ignore[method-assign]
    waiting = asyncio.ensure_future(a.api.get(cid))
    await until(lambda: a.api.pending == 1)
    await a.api.close()
    assert await asyncio.wait_for(waiting, DOWN_SECONDS / 2) == (410, None)
    assert a.api.pending == 0


def test_times_are_written_as_api_gateway_writes_them() -> None:
    assert iso8601_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert iso8601_ms(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/prod/@connections/abc", ("prod", "abc")),
        ("/prod/@connections/abc%3D", ("prod", "abc=")),
        ("/prod/@connections/a%2Fb/c", ("prod", "a/b/c")),
        ("/pr%6Fd/@connections/x", ("prod", "x")),
        ("/@connections/abc", ("", "abc")),
        ("/prod/@connections/", ("prod", None)),
        ("/prod/@connections", ("prod", None)),
        ("/@connections", None),
        ("/commands", None),
        ("/stats", None),
        ("/prod/connections/abc", None),
        ("/", None),
    ],
)
def test_connections_paths(path: str, target: tuple[str, str | None] | None) -> None:
    assert connections_target(path) == target


# --- the JS SDK v3 --------------------------------------------------------------------------------


@pytest.mark.skipif(
    NODE_JS is None or not (JS_DIR / "node_modules" / "@aws-sdk").is_dir(),
    reason="LOUD SKIP: Node.js or tests/js/node_modules is missing (`make jsclients` installs "
    "them with npm when node and npm exist); the JS SDK @connections test did not run",
)
async def test_the_js_sdk_client_posts_gets_and_deletes(start_gateway: StartGateway) -> None:
    a, b = await start_pair(start_gateway)
    local_ws, local_id = await a.client()
    remote_ws, remote_id = await b.client()
    assert NODE_JS is not None
    process = await asyncio.create_subprocess_exec(
        NODE_JS,
        str(JS_SCRIPT),
        a.endpoint(),
        TOKEN,
        local_id,
        remote_id,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, (stdout.decode(), stderr.decode())
    report = json.loads(stdout)
    for ws, key in ((local_ws, "local"), (remote_ws, "remote")):
        assert await asyncio.wait_for(ws.recv(), 5) == f"from js to {key}"
        assert await asyncio.wait_for(ws.recv(), 5) == b"\xff\xfe"
        observed = report[key]
        assert observed["post"] == 200 and observed["delete"] == 204
        assert ISO_MS.match(observed["get"]["ConnectedAt"])
        assert ISO_MS.match(observed["get"]["LastActiveAt"])
        assert observed["get"]["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": AGENT}
        assert await closed_with(ws) == 1000
        assert observed["afterDelete"] == {"name": "GoneException", "status": 410}
    assert report["malformed"] == {"name": "GoneException", "status": 410}
    assert report["wrongToken"] == {"name": "ForbiddenException", "status": 403}
    assert report["tooLarge"] == {"name": "PayloadTooLargeException", "status": 413}
