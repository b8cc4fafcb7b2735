"""`python -m runtime local`, as `make run` starts it: two clients on different nodes chat through
SQS, SNS, the chat origin and UDP between the nodes; Ctrl-C stops everything."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from tests.processes import LocalPorts, start_local_system, stop_local_system


async def chat_line(client: ClientConnection, text: str, timeout: float = 15) -> dict[str, Any]:
    """Wait for the chat line saying `text`; its sender sees it too, and system notices pass."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(client.recv(), deadline - time.monotonic()))
        if message.get("text") == text and not message.get("system"):
            return dict(message)


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

        alice = await connect(urls["node"][0] + "?room=test")
        bob = await connect(urls["node"][1] + "?room=test")
        await asyncio.sleep(1.0)  # both CONNECTs reach the origin through SQS
        await alice.send("hello from node 1")
        line = await chat_line(bob, "hello from node 1")
        await bob.send("hello from node 2")
        reply = await chat_line(alice, "hello from node 2")
        assert line["from"] != reply["from"]  # two connections, on two nodes
        await alice.close()
        await bob.close()

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
