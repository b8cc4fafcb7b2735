"""`python -m runtime local`, as `make run` starts it: two clients on different nodes chat through
SQS, SNS, the chat origin, the nodes' channels and UDP between the nodes; Ctrl-C stops
everything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from tests.processes import LocalPorts, start_local_system, stop_local_system


async def next_where(
    client: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    """The next message `wanted` accepts; the others (notices, lines of others) pass."""
    async with asyncio.timeout(timeout):
        while not wanted(message := json.loads(await client.recv())):
            pass
    return dict(message)


async def say(client: ClientConnection, room: str, text: str) -> None:
    await client.send(json.dumps({"room": room, "text": text}))


async def test_two_clients_on_two_nodes_chat() -> None:
    ports = LocalPorts.free()
    process, urls = await start_local_system(ports)
    try:
        assert urls["page"] == [f"http://127.0.0.1:{ports.page}/"]
        assert urls["node"] == [f"ws://127.0.0.1:{port}/" for port in ports.nodes]
        async with aiohttp.ClientSession() as session:
            async with session.get(urls["page"][0]) as response:
                assert response.status == 200
                assert "wsgateway chat" in await response.text()
            async with session.get(urls["page"][0] + "config.json") as response:
                assert (await response.json())["nodes"] == urls["node"]

        alice = await connect(urls["node"][0] + "?room=test&name=alice")
        alice_id = (await next_where(alice, lambda m: "you" in m))["you"]
        await next_where(alice, lambda m: m.get("joined") == alice_id)  # her subscribe took
        bob = await connect(urls["node"][1] + "?room=test&name=bob")
        bob_id = (await next_where(bob, lambda m: "you" in m))["you"]
        joined = await next_where(alice, lambda m: m.get("joined") == bob_id)
        notice = {"room": "test", "from": None, "system": True, "joined": bob_id, "name": "bob"}
        assert joined == notice
        await next_where(bob, lambda m: m.get("joined") == bob_id)

        await say(alice, "test", "hello from node 1")
        line = await next_where(bob, lambda m: m.get("text") == "hello from node 1")
        assert line == {"room": "test", "from": alice_id, "text": "hello from node 1"}
        await next_where(alice, lambda m: m.get("text") == "hello from node 1")  # hers too
        await say(bob, "test", "hello from node 2")
        reply = await next_where(alice, lambda m: m.get("text") == "hello from node 2")
        assert reply["from"] == bob_id != alice_id  # two connections, on two nodes
        await bob.send("not JSON")
        assert "error" in await next_where(bob, lambda m: "error" in m)

        await bob.close()  # his subscription ends with him: the room hears he left
        left = await next_where(alice, lambda m: m.get("left") == bob_id)
        assert left["name"] == "bob"
        await alice.close()

        assert await stop_local_system(process) == 0
    finally:
        await stop_local_system(process)


async def graphql_client(url: str, protocol: str) -> ClientConnection:
    client = await connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    await client.send(json.dumps({"type": "connection_init", "payload": {"token": protocol}}))
    assert json.loads(await client.recv())["type"] == "connection_ack"
    if protocol == "graphql-ws":
        assert json.loads(await client.recv()) == {"type": "ka"}
    return client


async def not_ka(client: ClientConnection, timeout: float) -> Any:
    """The next message but legacy keep-alives, which come every 15 s on a slow machine too."""
    async with asyncio.timeout(timeout):
        while (message := json.loads(await client.recv())) == {"type": "ka"}:
            pass
    return message


async def test_graphql_publish_crosses_sns_sqs_and_the_cluster() -> None:
    """A mutation on node 2 publishes through the commands topic; subscribers on both hear it."""
    ports = LocalPorts.free()
    process, urls = await start_local_system(ports)
    try:
        assert urls["graphql"] == [f"http://127.0.0.1:{ports.graphql}/"]
        subscribe = {
            "query": 'subscription { messageAdded(room: "local") { room text } }',
        }
        modern = await graphql_client(urls["node"][0], "graphql-transport-ws")
        legacy = await graphql_client(urls["node"][1], "graphql-ws")
        await modern.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        await legacy.send(json.dumps({"id": "1", "type": "start", "payload": subscribe}))
        poster = await graphql_client(urls["node"][1], "graphql-transport-ws")
        await asyncio.sleep(0.5)  # both subscriptions registered with their nodes
        post = {"query": 'mutation { post(room: "local", text: "via SNS") { id } }'}
        await poster.send(json.dumps({"id": "p", "type": "subscribe", "payload": post}))
        assert json.loads(await asyncio.wait_for(poster.recv(), 10))["type"] == "next"
        expected = {"data": {"messageAdded": {"room": "local", "text": "via SNS"}}}
        heard_modern = json.loads(await asyncio.wait_for(modern.recv(), 15))
        heard_legacy = await not_ka(legacy, 15)
        assert heard_modern == {"id": "1", "type": "next", "payload": expected}
        assert heard_legacy == {"id": "1", "type": "data", "payload": expected}
        for client in (modern, legacy, poster):
            await client.close()
        assert await stop_local_system(process) == 0
    finally:
        await stop_local_system(process)
