"""GraphQL mode end to end: two `python -m runtime serve` processes peered over UDP, a graphql-core
origin (the chat example) over HTTP, and clients of both subprotocols.

A subscription started on node A receives data after a publish posted to node B, and each node
executes the shared input once however many of its clients subscribed to it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from runtime.origin.examples.graphql_chat import build_origin
from tests.graphql_origin_server import RunningGraphqlOrigin, start_graphql_origin
from tests.processes import NodeProcess, start_cluster

SECRET = "graphql-cluster-secret-0123456789"
TOKEN = "graphql-cluster-token"
SUBSCRIBE = "subscription Added($room: String!) { messageAdded(room: $room) { id room text } }"
POST = "mutation Post($room: String!, $text: String!) { post(room: $room, text: $text) { id } }"
MODERN = "graphql-transport-ws"
HISTORY = "query History($room: String!) { messages(room: $room) { text } }"


@dataclass
class Cluster:
    origin: RunningGraphqlOrigin
    nodes: list[NodeProcess]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """Two nodes and the chat origin, whose `post` publishes through node B's /commands."""
    nodes: list[NodeProcess] = []
    pending: set[asyncio.Task[Any]] = set()

    def publish(keys: list[str], context: Any) -> None:
        command = {"action": "publish", "keys": keys, "context": context}
        task = asyncio.get_running_loop().create_task(nodes[1].post([command]))
        pending.add(task)
        task.add_done_callback(pending.discard)

    origin = await start_graphql_origin(build_origin(publish))
    try:
        nodes.extend(
            await start_cluster(
                2,
                "--origin-transport",
                "none",
                "--graphql-origin-url",
                origin.url,
                "--peer-down-seconds",
                "1",
                token=TOKEN,
                secret=SECRET,
            )
        )
        yield Cluster(origin, nodes)
        for task in list(pending):
            await task  # a publish that failed fails the test
        errors = [record for node in nodes for record in node.logs if record["level"] == "ERROR"]
        # Each with its traceback, which the truncated dict of the default message leaves out.
        assert not errors, "\n".join(f"{r['message']}\n{r.get('exception', '')}" for r in errors)
    finally:
        for node in nodes:
            await node.kill()
        await origin.stop()


async def distinct_inputs(node: NodeProcess, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (found := (await node.stats())["graphqlDistinctInputs"]) != expected:
        assert time.monotonic() < deadline, f"{found} distinct inputs, expected {expected}"
        await asyncio.sleep(0.05)


async def receive(client: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(client.recv(), timeout))  # type: ignore[no-any-return]


async def initialised(url: str, protocol: str, token: str = "user") -> ClientConnection:
    client = await connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    await client.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert (await receive(client))["type"] == "connection_ack"
    if protocol == "graphql-ws":
        assert await receive(client) == {"type": "ka"}
    return client


async def test_subscription_on_a_receives_a_publish_posted_to_b_executed_once_per_node(
    cluster: Cluster,
) -> None:
    node_a, node_b = cluster.nodes
    origin = cluster.origin
    modern_a = await initialised(node_a.ws_url, "graphql-transport-ws")
    legacy_a = await initialised(node_a.ws_url, "graphql-ws")
    modern_b = await initialised(node_b.ws_url, "graphql-transport-ws")
    elsewhere_a = await initialised(node_a.ws_url, "graphql-transport-ws")
    lobby = {"query": SUBSCRIBE, "variables": {"room": "lobby"}, "operationName": "Added"}
    await modern_a.send(json.dumps({"id": "1", "type": "subscribe", "payload": lobby}))
    await legacy_a.send(json.dumps({"id": "7", "type": "start", "payload": lobby}))
    await modern_b.send(json.dumps({"id": "x", "type": "subscribe", "payload": lobby}))
    kitchen = {**lobby, "variables": {"room": "kitchen"}}
    await elsewhere_a.send(json.dumps({"id": "1", "type": "subscribe", "payload": kitchen}))
    await origin.wait_for(lambda requests: origin.count("start") == 4)
    # The origin counts a request before it answers; the node indexes it once the answer is in.
    await distinct_inputs(node_a, 2)
    await distinct_inputs(node_b, 1)

    # A mutation through node B; the origin publishes {room: lobby} to node B's /commands.
    post = {"query": POST, "variables": {"room": "lobby", "text": "hello"}}
    await modern_b.send(json.dumps({"id": "p", "type": "subscribe", "payload": post}))
    expected = {"data": {"messageAdded": {"id": "1", "room": "lobby", "text": "hello"}}}
    answers: dict[str, list[Any]] = {"modern_a": [], "legacy_a": [], "modern_b": []}
    answers["modern_a"].append(await receive(modern_a))
    answers["legacy_a"].append(await receive(legacy_a))
    for _ in range(3):  # the mutation's next and complete, and the subscription's next
        answers["modern_b"].append(await receive(modern_b))
    assert answers["modern_a"] == [{"id": "1", "type": "next", "payload": expected}]
    assert answers["legacy_a"] == [{"id": "7", "type": "data", "payload": expected}]
    assert {"id": "x", "type": "next", "payload": expected} in answers["modern_b"]
    assert {"id": "p", "type": "complete"} in answers["modern_b"]

    await origin.wait_for(lambda requests: origin.count("subscription_query") >= 2)
    await asyncio.sleep(0.2)  # time for any extra execution to show up
    queries = origin.of_type("subscription_query")
    assert len(queries) == 2, queries  # once per node, not once per subscriber
    assert len({request["node"] for request in queries}) == 2
    assert len({request["inputDigest"] for request in queries}) == 1  # same input on both
    assert all(request["publishContext"]["text"] == "hello" for request in queries)

    # The kitchen subscriber heard nothing; its room's history is separate.
    await elsewhere_a.send(json.dumps({"type": "ping"}))
    assert await receive(elsewhere_a) == {"type": "pong"}
    history = {"query": HISTORY, "variables": {"room": "lobby"}}
    await elsewhere_a.send(json.dumps({"id": "h", "type": "subscribe", "payload": history}))
    assert await receive(elsewhere_a) == {
        "id": "h",
        "type": "next",
        "payload": {"data": {"messages": [{"text": "hello"}]}},
    }

    # Leaving removes the subscriptions on each node.
    for client in (modern_a, legacy_a, modern_b, elsewhere_a):
        await client.close()
    deadline = time.monotonic() + 5
    while any([(await node.stats())["graphqlSubscriptions"] for node in cluster.nodes]):
        assert time.monotonic() < deadline, "subscriptions left after the clients closed"
        await asyncio.sleep(0.05)


async def test_graphql_core_origin_refuses_and_reports_errors(cluster: Cluster) -> None:
    node_a = cluster.nodes[0]
    refused = await connect(node_a.ws_url, subprotocols=[MODERN])  # type: ignore[list-item]
    await refused.send(json.dumps({"type": "connection_init", "payload": {}}))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(refused.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, "Forbidden: missing token")

    client = await initialised(node_a.ws_url, "graphql-transport-ws")
    await client.send(
        json.dumps({"id": "v", "type": "subscribe", "payload": {"query": "{ nosuchfield }"}})
    )
    answer = await receive(client)
    assert answer["id"] == "v" and answer["type"] == "error"
    assert "nosuchfield" in answer["payload"][0]["message"]
    await client.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": "{"}}))
    answer = await receive(client)
    assert answer["type"] == "error" and "Syntax Error" in answer["payload"][0]["message"]
    legacy = await initialised(node_a.ws_url, "graphql-ws")
    bad_room = {"query": HISTORY, "variables": {"room": "x" * 101}}
    await legacy.send(json.dumps({"id": "r", "type": "start", "payload": bad_room}))
    answer = await receive(legacy)
    assert answer["id"] == "r" and answer["type"] == "data"
    assert answer["payload"]["errors"][0]["message"]
    assert await receive(legacy) == {"id": "r", "type": "complete"}


async def test_dead_graphql_origin_fails_operations_not_the_node(cluster: Cluster) -> None:
    node_a = cluster.nodes[0]
    client = await initialised(node_a.ws_url, "graphql-transport-ws")
    cluster.origin.fail_with = 503
    history = {"query": HISTORY, "variables": {"room": "lobby"}}
    await client.send(json.dumps({"id": "1", "type": "subscribe", "payload": history}))
    assert await receive(client) == {
        "id": "1",
        "type": "error",
        "payload": [{"message": "origin unavailable"}],
    }
    late = await connect(node_a.ws_url, subprotocols=[MODERN])  # type: ignore[list-item]
    await late.send(json.dumps({"type": "connection_init", "payload": {"token": "t"}}))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(late.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    cluster.origin.fail_with = None
    await client.send(json.dumps({"id": "2", "type": "subscribe", "payload": history}))
    assert (await receive(client))["payload"] == {"data": {"messages": []}}
    assert (await node_a.stats())["graphqlOriginFailures"] == 2
