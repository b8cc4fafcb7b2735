"""The reference implementation's own scenarios, against a real node over 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
from websockets.asyncio.client import connect

from runtime.config import default_api_id
from runtime.wire.connection_id import NodeAddress
from tests.conftest import StartNode, connect_id, send
from tests.doubles.memory import MemoryCluster, MemoryOrigin


async def test_connect_event_carries_subprotocol_and_request(start_node: StartNode) -> None:
    node = await start_node(subprotocols=("graphql-ws", "chat"))
    async with connect(
        node.ws_url + "/rooms/a?room=lobby&tag=x&tag=y",
        subprotocols=["chat"],
        additional_headers={"X-Custom": "1"},
        user_agent_header="test-agent",
    ) as client:
        assert client.subprotocol == "chat"
        events = await node.origin.wait_for(lambda e: len(e) >= 1)
    event = events[0]
    context = event["requestContext"]
    assert context["eventType"] == "CONNECT"
    assert context["routeKey"] == "$connect"
    assert context["subprotocol"] == "chat"
    assert context["sequenceNumber"] == 0
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "test-agent"
    assert context["stage"] == "local" and context["region"] == "local"
    assert context["apiId"] == default_api_id("local", "local")
    assert event["path"] == "/rooms/a"
    assert event["headers"]["X-Custom"] == "1"
    assert event["queryStringParameters"] == {"room": "lobby", "tag": "y"}
    assert event["multiValueQueryStringParameters"]["tag"] == ["x", "y"]


async def test_client_message_reaches_origin_and_send_reaches_client(
    start_node: StartNode,
) -> None:
    node = await start_node()
    async with connect(node.ws_url) as client:
        await client.send("hello")
        await client.send(b"\x00\xffbin")
        events = await node.origin.wait_for(lambda e: len(e) >= 3)
        text, binary = events[1], events[2]
        assert text["requestContext"]["eventType"] == "MESSAGE"
        assert text["body"] == "hello" and text["isBase64Encoded"] is False
        assert base64.b64decode(binary["body"]) == b"\x00\xffbin"
        assert binary["isBase64Encoded"] is True

        connection_id = connect_id(node.origin)
        status, answer = await node.post_commands(send([connection_id], "from origin"))
        assert (status, answer) == (200, {"accepted": 1})
        assert await asyncio.wait_for(client.recv(), 2) == "from origin"

        payload = base64.b64encode(b"\x01\x02").decode()
        status, _ = await node.post_commands(send([connection_id], payload, isBase64Encoded=True))
        assert status == 200
        assert await asyncio.wait_for(client.recv(), 2) == b"\x01\x02"


async def test_command_for_a_client_of_another_node(start_node: StartNode) -> None:
    cluster = MemoryCluster()
    a_address, b_address = NodeAddress("127.0.0.1", 9201), NodeAddress("127.0.0.1", 9202)
    a_origin, b_origin = MemoryOrigin(), MemoryOrigin()
    a_link, b_link = cluster.join(a_address), cluster.join(b_address)
    a = await start_node(origin=a_origin, cluster=a_link, peer_advertise=a_address)
    b = await start_node(origin=b_origin, cluster=b_link, peer_advertise=b_address)
    async with connect(a.ws_url) as client_a, connect(b.ws_url) as client_b:
        await a_origin.wait_for(lambda e: len(e) >= 1)
        await b_origin.wait_for(lambda e: len(e) >= 1)
        id_a, id_b = connect_id(a_origin), connect_id(b_origin)
        # Posted to B, for a client of A, and one of B, in one command.
        status, answer = await b.post_commands(send([id_a, id_b], "both"))
        assert (status, answer) == (200, {"accepted": 1})
        assert await asyncio.wait_for(client_a.recv(), 2) == "both"
        assert await asyncio.wait_for(client_b.recv(), 2) == "both"
        # A broadcast posted to A reaches every client of every node exactly once.
        status, _ = await a.post_commands({"commands": [{"action": "broadcast", "data": "all"}]})
        assert status == 200
        assert await asyncio.wait_for(client_a.recv(), 2) == "all"
        assert await asyncio.wait_for(client_b.recv(), 2) == "all"
        for client in (client_a, client_b):
            try:
                extra = await asyncio.wait_for(client.recv(), 0.3)
            except TimeoutError:
                continue
            raise AssertionError(f"duplicate delivery: {extra!r}")


async def test_keepalives_list_live_connections(start_node: StartNode) -> None:
    node = await start_node(keepalive_interval=0.1)
    async with connect(node.ws_url), connect(node.ws_url):
        await node.origin.wait_for(lambda e: len(e) >= 2)
        ids = {connect_id(node.origin, 0), connect_id(node.origin, 1)}
        events = await node.origin.wait_for(
            lambda e: any(
                x["requestContext"]["eventType"] == "KEEPALIVE" and set(x["connectionIds"]) == ids
                for x in e
            )
        )
    keepalive = next(x for x in events if x["requestContext"]["eventType"] == "KEEPALIVE")
    assert keepalive["requestContext"]["routeKey"] == "$keepalive"


async def test_keepalives_off_when_interval_is_zero(start_node: StartNode) -> None:
    node = await start_node(keepalive_interval=0)
    async with connect(node.ws_url):
        await asyncio.sleep(0.4)
    assert not node.origin.of_type("KEEPALIVE")


async def test_client_close_yields_disconnect_and_zero_connections(start_node: StartNode) -> None:
    node = await start_node()
    async with connect(node.ws_url) as client:
        await node.origin.wait_for(lambda e: len(e) >= 1)
        assert node.node.stats()["connections"] == 1
        await client.close(4000, "done here")
    events = await node.origin.wait_for(lambda e: len(e) >= 2)
    disconnect = events[1]
    assert disconnect["requestContext"]["eventType"] == "DISCONNECT"
    assert disconnect["requestContext"]["routeKey"] == "$disconnect"
    assert disconnect["disconnectStatusCode"] == 4000
    assert disconnect["disconnectReason"] == "done here"
    async with aiohttp.ClientSession() as session:
        url = node.commands_url.replace("/commands", "/stats")
        headers = {"Authorization": "Bearer test-token"}
        async with session.get(url, headers=headers) as response:
            assert (await response.json())["connections"] == 0


async def test_thousand_messages_arrive_in_order(start_node: StartNode) -> None:
    node = await start_node()
    async with connect(node.ws_url) as client:
        for index in range(1000):
            await client.send(f"m{index}")
        events = await node.origin.wait_for(lambda e: len(e) >= 1001, timeout=10)
    messages = [e for e in events if e["requestContext"]["eventType"] == "MESSAGE"]
    assert [e["body"] for e in messages] == [f"m{i}" for i in range(1000)]
    assert [e["requestContext"]["sequenceNumber"] for e in messages] == list(range(1, 1001))
    assert len({e["requestContext"]["messageId"] for e in messages}) == 1000


async def test_route_selection_expression(start_node: StartNode) -> None:
    node = await start_node(route_selection_expression="$request.body.action")
    async with connect(node.ws_url) as client:
        await client.send(json.dumps({"action": "join", "room": "a"}))
        await client.send(json.dumps({"other": 1}))
        await client.send("not json")
        await client.send(b'{"action": "binary"}')
        events = await node.origin.wait_for(lambda e: len(e) >= 5)
    assert [e["requestContext"]["routeKey"] for e in events[1:5]] == [
        "join",
        "$default",
        "$default",
        "$default",
    ]


async def test_close_command_closes_with_code_and_reason(start_node: StartNode) -> None:
    node = await start_node()
    async with connect(node.ws_url) as client:
        await node.origin.wait_for(lambda e: len(e) >= 1)
        connection_id = connect_id(node.origin)
        status, _ = await node.post_commands(
            {
                "commands": [
                    {
                        "action": "close",
                        "connectionIds": [connection_id],
                        "code": 4001,
                        "reason": "kicked",
                    }
                ]
            }
        )
        assert status == 200
        await asyncio.wait_for(client.wait_closed(), 2)
        assert (client.close_code, client.close_reason) == (4001, "kicked")
    events = await node.origin.wait_for(lambda e: len(e) >= 2)
    assert events[1]["disconnectStatusCode"] == 4001


async def test_healthz_and_plain_http(start_node: StartNode) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as session:
        async with session.get(node.http_url + "/healthz") as response:
            assert response.status == 200
        async with session.get(node.http_url + "/") as response:
            assert response.status == 426
            assert "WebSocket" in await response.text()


async def test_source_ip_from_forwarded_for_only_when_trusted(start_node: StartNode) -> None:
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}
    untrusting = await start_node()
    async with connect(untrusting.ws_url, additional_headers=headers):
        events = await untrusting.origin.wait_for(lambda e: len(e) >= 1)
    assert events[0]["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    trusting = await start_node(trust_forwarded_for=True)
    async with connect(trusting.ws_url, additional_headers=headers):
        events = await trusting.origin.wait_for(lambda e: len(e) >= 1)
    assert events[0]["requestContext"]["identity"]["sourceIp"] == "203.0.113.9"


async def test_compressed_client_messages_with_permessage_deflate(start_node: StartNode) -> None:
    node = await start_node(compression="deflate")
    async with connect(node.ws_url, compression="deflate") as client:
        assert client.response is not None
        assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
        text = "compressible " * 2000
        await client.send(text)
        events = await node.origin.wait_for(lambda e: len(e) >= 2)
        assert events[1]["body"] == text
        status, _ = await node.post_commands(send([connect_id(node.origin)], text))
        assert status == 200
        assert await asyncio.wait_for(client.recv(), 5) == text  # compressed by the library

    plain = await start_node()  # the default: no extension offered back
    async with connect(plain.ws_url, compression="deflate") as client:
        assert client.response is not None
        assert "Sec-WebSocket-Extensions" not in client.response.headers
