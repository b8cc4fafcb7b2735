"""Bad input from clients and origins: each gets a clear error and loses nothing else."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from tests.conftest import StartNode, connect_id, send
from tests.doubles.memory import MemoryCluster
from tests.transports.test_sqs_origin import wait_until


async def test_oversized_message_closes_1009(start_node: StartNode) -> None:
    node = await start_node(max_message_bytes=1024)
    async with connect(node.ws_url, max_size=None) as client:
        await client.send("x" * 1024)  # exactly the limit: accepted
        await client.send("y" * 1025)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(client.recv(), 2)
        assert client.close_code == 1009
    events = await node.origin.wait_for(lambda e: len(e) >= 3)
    assert events[1]["body"] == "x" * 1024
    assert events[2]["requestContext"]["eventType"] == "DISCONNECT"
    assert events[2]["disconnectStatusCode"] == 1009


async def test_invalid_utf8_closes_1007(start_node: StartNode) -> None:
    node = await start_node()
    async with connect(node.ws_url) as client:
        await client.send("fine")
        await client.send(b"\xff\xfe not utf-8", text=True)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(client.recv(), 2)
        assert client.close_code == 1007
    events = await node.origin.wait_for(lambda e: len(e) >= 3)
    assert events[1]["body"] == "fine"
    assert events[2]["disconnectStatusCode"] == 1007


async def test_unknown_subprotocol_refused_with_400(start_node: StartNode) -> None:
    node = await start_node(subprotocols=("chat",))
    with pytest.raises(InvalidStatus) as caught:
        async with connect(node.ws_url, subprotocols=["mqtt"]):
            pass
    assert caught.value.response.status_code == 400
    assert b"chat" in caught.value.response.body
    # A client offering none is still welcome.
    async with connect(node.ws_url) as client:
        assert client.subprotocol is None


async def test_origin_allowlist(start_node: StartNode) -> None:
    node = await start_node(allowed_origins=("https://app.example.com", "https://*.example.org"))
    for allowed in ("https://app.example.com", "https://a.b.example.org", None):
        async with connect(node.ws_url, origin=allowed):  # type: ignore[arg-type]
            pass
    for foreign in ("https://evil.example.net", "https://example.org", "http://app.example.com"):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(node.ws_url, origin=foreign):  # type: ignore[arg-type]
                pass
        assert caught.value.response.status_code == 403


async def test_max_connections_answers_503(start_node: StartNode) -> None:
    node = await start_node(max_connections=2)
    async with connect(node.ws_url), connect(node.ws_url):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(node.ws_url):
                pass
        assert caught.value.response.status_code == 503
    await asyncio.sleep(0.1)
    async with connect(node.ws_url):  # room again once the others left
        pass


async def test_command_endpoint_requires_token(start_node: StartNode) -> None:
    node = await start_node()
    for token in (None, "wrong"):
        status, answer = await node.post_commands(send(["x"], "y"), token=token)
        assert status == 401
        assert "token" in answer["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", '{"commands": [...]}'),
        (b'{"commands": 3}', '"commands" must be a list'),
    ],
)
async def test_malformed_command_bodies(start_node: StartNode, body: bytes, fragment: str) -> None:
    node = await start_node()
    status, answer = await node.post_commands(body)
    assert status == 400
    assert fragment in answer["error"]
    assert answer["accepted"] == 0


async def test_partly_bad_body_applies_the_good_commands(start_node: StartNode) -> None:
    node = await start_node()
    async with connect(node.ws_url) as client:
        await node.origin.wait_for(lambda e: len(e) >= 1)
        good = connect_id(node.origin)
        body = {
            "commands": [
                {"action": "send", "connectionIds": [good], "data": "one"},
                {"action": "explode"},
                {"action": "send", "connectionIds": ["garbage!"], "data": "lost"},
                {"action": "send", "connectionIds": [good], "data": "x", "isBase64Encoded": True},
                {"action": "close", "connectionIds": [good], "code": 1234},
                {"action": "send", "connectionIds": [good], "data": "two"},
            ]
        }
        status, answer = await node.post_commands(body)
        assert status == 400
        assert answer["accepted"] == 2
        rejected = {item["index"]: item["error"] for item in answer["rejected"]}
        assert set(rejected) == {1, 2, 3, 4}
        assert '"action"' in rejected[1]
        assert "base64" in rejected[2] and "garbage!" in rejected[2]
        assert "base64" in rejected[3]
        assert '"code"' in rejected[4]
        assert await asyncio.wait_for(client.recv(), 2) == "one"
        assert await asyncio.wait_for(client.recv(), 2) == "two"


async def test_unknown_connection_ids_yield_gone(start_node: StartNode) -> None:
    cluster = MemoryCluster()
    here = NodeAddress("127.0.0.1", 9301)
    node = await start_node(cluster=cluster.join(here), peer_advertise=here)
    async with connect(node.ws_url) as client:
        await node.origin.wait_for(lambda e: len(e) >= 1)
        closed_id = connect_id(node.origin)
        await client.close()
    await node.origin.wait_for(lambda e: len(e) >= 2)
    never_id = ConnectionIdIssuer("local", here).issue()
    dead_peer_id = ConnectionIdIssuer("local", NodeAddress("127.0.0.1", 9399)).issue()
    status, answer = await node.post_commands(send([closed_id, never_id, dead_peer_id], "hi"))
    assert (status, answer) == (200, {"accepted": 1})
    events = await node.origin.wait_for(
        lambda e: len([x for x in e if x["requestContext"]["eventType"] == "GONE"]) >= 3
    )
    gone = [e["requestContext"] for e in events if e["requestContext"]["eventType"] == "GONE"]
    assert {g["connectionId"] for g in gone} == {closed_id, never_id, dead_peer_id}
    assert all(g["action"] == "send" and g["routeKey"] == "$gone" for g in gone)


async def test_connection_id_of_another_region_is_rejected(start_node: StartNode) -> None:
    node = await start_node()
    foreign = ConnectionIdIssuer("eu-west-1", NodeAddress("127.0.0.1", 9100)).issue()
    status, answer = await node.post_commands(send([foreign], "hi"))
    assert status == 400
    assert "eu-west-1" in answer["rejected"][0]["error"]


async def test_oversized_command_data_is_rejected(start_node: StartNode) -> None:
    node = await start_node(send_buffer_bytes=4096)
    async with connect(node.ws_url):
        await node.origin.wait_for(lambda e: len(e) >= 1)
        status, answer = await node.post_commands(send([connect_id(node.origin)], "z" * 5000))
    assert status == 400
    assert "5000 bytes" in answer["error"]


async def test_oversized_command_body_gets_413(start_node: StartNode) -> None:
    node = await start_node(send_buffer_bytes=1024)
    async with aiohttp.ClientSession() as session:
        body = b'{"commands": []' + b" " * (17 * 1024 * 1024) + b"}"
        headers = {"Authorization": "Bearer test-token"}
        async with session.post(node.commands_url, data=body, headers=headers) as response:
            assert response.status == 413


async def test_command_endpoint_unknown_path_and_wrong_method(start_node: StartNode) -> None:
    node = await start_node()
    base = node.commands_url.rsplit("/", 1)[0]
    headers = {"Authorization": "Bearer test-token"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/nowhere", headers=headers) as response:
            assert response.status == 404
            assert "/nowhere" in (await response.json())["error"]
        async with session.get(node.commands_url, headers=headers) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
        async with session.post(f"{base}/stats", headers=headers) as response:
            assert response.status == 405
        async with session.get(f"{base}/stats", headers=headers) as response:
            assert response.status == 200
            assert "connections" in await response.json()


async def test_forwarded_for_that_is_no_ip_address_falls_back_to_the_peer(
    start_node: StartNode,
) -> None:
    node = await start_node(trust_forwarded_for=True)
    for value, expected in (
        ("198.51.100.1, <script>alert(1)</script>", "127.0.0.1"),
        ("198.51.100.1, 2001:DB8::1", "2001:db8::1"),  # the canonical spelling
        ("", "127.0.0.1"),
    ):
        before = len(node.origin.of_type("CONNECT"))
        async with connect(node.ws_url, additional_headers={"X-Forwarded-For": value}):
            await node.origin.wait_for(
                lambda e, before=before: len(node.origin.of_type("CONNECT")) > before
            )
        identity = node.origin.of_type("CONNECT")[-1]["requestContext"]["identity"]
        assert identity["sourceIp"] == expected


async def test_refusals_carry_one_server_header(start_node: StartNode) -> None:
    node = await start_node(max_connections=1, max_message_bytes=16 * 1024)
    node.node.max_event_bytes = 20_000  # as if the origin took small messages
    async with connect(node.ws_url):
        with pytest.raises(InvalidStatus) as full:
            async with connect(node.ws_url):
                pass
    with pytest.raises(InvalidStatus) as too_large:
        async with connect(node.ws_url, additional_headers=[("X-Pad", "p" * 8000)] * 2):
            pass
    for refusal, status in ((full, 503), (too_large, 431)):
        response = refusal.value.response
        assert response.status_code == status
        assert response.headers.get_all("Server") == ["wsgateway"]


async def test_command_endpoint_limits_come_from_the_settings(start_node: StartNode) -> None:
    node = await start_node(command_max_connections=2, command_header_timeout=0.3)
    assert node.service.commands is not None
    host, port = "127.0.0.1", node.service.commands.port
    idle = [await asyncio.open_connection(host, port) for _ in range(2)]
    extra_reader, extra_writer = await asyncio.open_connection(host, port)
    assert (await asyncio.wait_for(extra_reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
    for reader, _ in idle:  # silent past the header deadline: 408, then closed
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408 ")
    for _, writer in [*idle, (extra_reader, extra_writer)]:
        writer.close()
    commands = node.service.commands
    await wait_until(lambda: not commands.open_connections)  # room once the server saw them go
    status, _ = await node.post_commands({"commands": []})
    assert status == 200
