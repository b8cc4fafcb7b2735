"""GraphQL mode on a real node over 127.0.0.1, message by message as the client libraries send them.

The origin here is scripted in-process (as the reference's own test does), so each test states
exactly what the origin answers and checks what it was asked; tests/node/test_graphql_cluster.py
runs a graphql-core origin over HTTP behind real node processes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from runtime.transports.graphql_origin import (
    GraphqlOriginUnavailable,
    HttpGraphqlOrigin,
    LambdaGraphqlOrigin,
)
from tests.aws import MotoEndpoint, queue_lambda_results
from tests.conftest import RunningNode, StartNode
from tests.graphql_origin_server import start_graphql_origin

MODERN = "graphql-transport-ws"
LEGACY = "graphql-ws"
QUERY = "query Foo($foo: String!) { foo(foo: $foo) }"
SUBSCRIPTION = "subscription { foo }"

Handler = Callable[[dict[str, Any]], Any]


class ScriptedOrigin:
    """A GraphQL origin whose answers come from a function of the request; records every call."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(json.loads(json.dumps(request)))  # what would go over the wire
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["type"] == kind]

    def stats(self) -> dict[str, int]:
        return {}


def default_answers(request: dict[str, Any]) -> Any:
    kind = request["type"]
    if kind == "connection_init":
        payload = request["payload"] or {}
        if payload.get("token") == "bad":
            return {"accept": False, "message": "bad token"}
        return {"accept": True, "context": {"user": payload.get("token")}}
    if kind == "start":
        query = request["query"]
        if query.startswith("subscription"):
            variables = request["variables"] or {}
            return {
                "subscription": {
                    "inputDigest": f"foo:{variables.get('room', 'all')}",
                    "inputContext": {"room": variables.get("room")},
                    "keys": [f"room:{variables.get('room', 'all')}"],
                }
            }
        if "fail" in query:
            return {"result": {"data": None, "errors": [{"message": "resolver failed"}]}}
        if "invalid" in query:
            return {"errors": [{"message": "Cannot query field 'invalid' on type 'Query'."}]}
        return {"result": {"data": {"foo": request["variables"]["foo"]}}}
    if kind == "subscription_query":
        return {"result": {"data": {"foo": request["publishContext"]}}}
    return {}


@pytest.fixture
async def graphql_node(start_node: StartNode) -> tuple[RunningNode, ScriptedOrigin]:
    origin = ScriptedOrigin(default_answers)
    node = await start_node(graphql_origin=origin, graphql_init_timeout=2.0)
    return node, origin


async def open_client(node: RunningNode, protocol: str) -> ClientConnection:
    return await connect(node.ws_url, subprotocols=[protocol])  # type: ignore[list-item]


async def send(client: ClientConnection, message: dict[str, Any]) -> None:
    await client.send(json.dumps(message))


async def receive(client: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(client.recv(), timeout))  # type: ignore[no-any-return]


async def closed_with(client: ClientConnection, timeout: float = 5.0) -> tuple[int, str]:
    """Read until the close; every message before it must be absent."""
    with pytest.raises(ConnectionClosed) as closed:
        message = await asyncio.wait_for(client.recv(), timeout)
        raise AssertionError(f"expected a close, got {message!r}")
    received = closed.value.rcvd
    assert received is not None
    return received.code, received.reason


async def init_modern(node: RunningNode, token: str = "t") -> ClientConnection:
    client = await open_client(node, MODERN)
    await send(client, {"type": "connection_init", "payload": {"token": token}})
    assert await receive(client) == {"type": "connection_ack"}
    return client


async def init_legacy(node: RunningNode, token: str = "t") -> ClientConnection:
    client = await open_client(node, LEGACY)
    await send(client, {"type": "connection_init", "payload": {"token": token}})
    assert await receive(client) == {"type": "connection_ack"}
    assert await receive(client) == {"type": "ka"}
    return client


async def publish(node: RunningNode, keys: list[str], context: Any) -> None:
    status, answer = await node.post_commands(
        {"commands": [{"action": "publish", "keys": keys, "context": context}]}
    )
    assert status == 200 and answer["accepted"] == 1, answer


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# The modern protocol (graphql-transport-ws), as the graphql-ws client sends it


async def test_modern_query_gets_next_then_complete(graphql_node: Any) -> None:
    node, origin = graphql_node
    client = await init_modern(node, token="alice")
    init = origin.of_type("connection_init")[0]
    assert init["payload"] == {"token": "alice"} and init["subprotocol"] == MODERN
    assert init["connect"]["requestContext"]["eventType"] == "CONNECT"
    assert init["connect"]["requestContext"]["connectionId"] == init["connectionId"]
    assert init["node"] == "127.0.0.1:9100"
    await send(
        client,
        {
            "id": "q1",
            "type": "subscribe",
            "payload": {"query": QUERY, "variables": {"foo": "bar"}, "operationName": "Foo"},
        },
    )
    assert await receive(client) == {
        "id": "q1",
        "type": "next",
        "payload": {"data": {"foo": "bar"}},
    }
    assert await receive(client) == {"id": "q1", "type": "complete"}
    start = origin.of_type("start")[0]
    assert start["operationName"] == "Foo" and start["variables"] == {"foo": "bar"}
    assert start["context"] == {"user": "alice"}  # the context the origin gave at init
    assert start["operationId"] == "q1" and start["connectionId"] == init["connectionId"]
    # The ID is free again once the operation completed.
    await send(client, {"id": "q1", "type": "subscribe", "payload": {"query": "{ fail }"}})
    assert await receive(client) == {
        "id": "q1",
        "type": "next",
        "payload": {"data": None, "errors": [{"message": "resolver failed"}]},
    }
    assert await receive(client) == {"id": "q1", "type": "complete"}
    await send(client, {"id": "q2", "type": "subscribe", "payload": {"query": "{ invalid }"}})
    assert await receive(client) == {
        "id": "q2",
        "type": "error",
        "payload": [{"message": "Cannot query field 'invalid' on type 'Query'."}],
    }
    await send(client, {"type": "ping"})
    assert await receive(client) == {"type": "pong"}
    await send(client, {"type": "pong"})  # unanswered
    await send(client, {"type": "ping", "payload": {"at": 1}})
    assert await receive(client) == {"type": "pong", "payload": {"at": 1}}  # echoed
    await client.close()
    assert node.origin.events == []  # the event origin never hears of GraphQL connections


async def test_modern_rejection_at_init_closes_4403(graphql_node: Any) -> None:
    node, _ = graphql_node
    client = await open_client(node, MODERN)
    await send(client, {"type": "connection_init", "payload": {"token": "bad"}})
    assert await closed_with(client) == (4403, "Forbidden: bad token")
    await wait_until(lambda: node.node.stats()["graphqlConnections"] == 0)
    assert node.node.stats()["graphqlInitsRefused"] == 1


@pytest.mark.parametrize(
    ("messages", "code", "reason"),
    [
        ([{"id": "1", "type": "subscribe", "payload": {"query": QUERY}}], 4401, "Unauthorized"),
        ([{"type": "connection_init"}, {"type": "connection_init"}], 4429, "Too many"),
        (["{not json"], 4400, "message is not valid JSON"),
        ([b"\x01\x02"], 4400, "binary messages are not part of the protocol"),
        ([{"type": "start", "id": "1", "payload": {"query": "{a}"}}], 4400, "unknown message type"),
        ([{"type": "connection_terminate"}], 4400, "unknown message type"),
        ([{"type": "connection_init"}, {"type": "subscribe", "id": "1"}], 4400, '"payload"'),
        ([{"type": "connection_init"}, {"type": "next", "id": "1"}], 4400, "unknown message"),
        ([{"id": "x", "payload": {}}], 4400, '"type" must be a string'),
    ],
)
async def test_modern_protocol_violations_close_with_its_codes(
    graphql_node: Any, messages: list[Any], code: int, reason: str
) -> None:
    node, _ = graphql_node
    client = await open_client(node, MODERN)
    for message in messages:
        if isinstance(message, dict):
            await send(client, message)
            if message.get("type") == "connection_init" and message is messages[0]:
                assert (await receive(client))["type"] == "connection_ack"
        else:
            await client.send(message)
    got_code, got_reason = await closed_with(client)
    assert got_code == code and reason in got_reason, (got_code, got_reason)


async def test_modern_duplicate_operation_id_closes_4409(graphql_node: Any) -> None:
    node, _ = graphql_node
    client = await init_modern(node)
    subscribe = {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}
    await send(client, subscribe)
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 1)
    await send(client, subscribe)
    assert await closed_with(client) == (4409, "Subscriber for s already exists")
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 0)


async def test_modern_duplicate_of_an_operation_still_running_closes_4409(
    start_node: StartNode,
) -> None:
    release = asyncio.Event()

    async def slow_starts(request: dict[str, Any]) -> Any:
        if request["type"] == "start":
            await release.wait()
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(slow_starts))
    client = await init_modern(node)
    query = {"id": "q", "type": "subscribe", "payload": {"query": QUERY, "variables": {"foo": 1}}}
    await send(client, query)
    await send(client, query)
    assert await closed_with(client) == (4409, "Subscriber for q already exists")
    release.set()


async def test_init_timeout_closes_4408_in_both_protocols(start_node: StartNode) -> None:
    node = await start_node(
        graphql_origin=ScriptedOrigin(default_answers), graphql_init_timeout=0.3
    )
    modern = await open_client(node, MODERN)
    legacy = await open_client(node, LEGACY)
    assert await closed_with(modern) == (4408, "Connection initialisation timeout")
    assert await receive(legacy) == {
        "type": "connection_error",
        "payload": {"message": "connection initialisation timeout"},
    }
    assert await closed_with(legacy) == (4408, "Connection initialisation timeout")
    assert node.node.stats()["graphqlInitTimeouts"] == 2


async def test_modern_complete_ends_a_subscription(graphql_node: Any) -> None:
    node, origin = graphql_node
    client = await init_modern(node)
    await send(client, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 1)
    await publish(node, ["room:all"], "first")
    assert await receive(client) == {
        "id": "s",
        "type": "next",
        "payload": {"data": {"foo": "first"}},
    }
    await send(client, {"id": "s", "type": "complete"})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 0)
    await publish(node, ["room:all"], "second")
    await send(client, {"type": "ping"})
    assert await receive(client) == {"type": "pong"}  # and no next before it
    assert len(origin.of_type("subscription_query")) == 1


async def test_complete_for_an_operation_in_flight_cancels_it(start_node: StartNode) -> None:
    release = asyncio.Event()

    async def slow_subscribe(request: dict[str, Any]) -> Any:
        if request["type"] == "start":
            await release.wait()
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(slow_subscribe))
    client = await init_modern(node)
    await send(client, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await send(client, {"id": "s", "type": "complete"})
    await send(client, {"type": "ping"})
    assert await receive(client) == {"type": "pong"}
    release.set()
    await asyncio.sleep(0.05)
    assert node.node.stats()["graphqlSubscriptions"] == 0


# Publish: one execution per distinct input


async def test_publish_executes_each_distinct_input_once(graphql_node: Any) -> None:
    node, origin = graphql_node
    lobby_modern = await init_modern(node)
    lobby_legacy = await init_legacy(node)
    other = await init_modern(node)
    lobby = {"query": "subscription R($room: String!) { foo }", "variables": {"room": "lobby"}}
    await send(lobby_modern, {"id": "a", "type": "subscribe", "payload": lobby})
    await send(lobby_legacy, {"id": "b", "type": "start", "payload": lobby})
    await send(
        other,
        {"id": "c", "type": "subscribe", "payload": {**lobby, "variables": {"room": "other"}}},
    )
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 3)
    assert node.node.stats()["graphqlDistinctInputs"] == 2
    await publish(node, ["room:lobby"], {"text": "hi"})
    expected = {"data": {"foo": {"text": "hi"}}}
    assert await receive(lobby_modern) == {"id": "a", "type": "next", "payload": expected}
    assert await receive(lobby_legacy) == {"id": "b", "type": "data", "payload": expected}
    queries = origin.of_type("subscription_query")
    assert len(queries) == 1  # two subscribers, one execution
    assert queries[0] == {
        "type": "subscription_query",
        "node": "127.0.0.1:9100",
        "inputDigest": "foo:lobby",
        "query": lobby["query"],
        "variables": {"room": "lobby"},
        "operationName": None,
        "inputContext": {"room": "lobby"},
        "publishContext": {"text": "hi"},
    }
    await publish(node, ["room:lobby", "room:other", "room:nobody"], "both")
    assert (await receive(other))["payload"] == {"data": {"foo": "both"}}
    assert (await receive(lobby_modern))["payload"] == {"data": {"foo": "both"}}
    assert (await receive(lobby_legacy))["payload"] == {"data": {"foo": "both"}}
    assert len(origin.of_type("subscription_query")) == 3


async def test_publishes_to_one_input_arrive_in_order(start_node: StartNode) -> None:
    async def jittery(request: dict[str, Any]) -> Any:
        if request["type"] == "subscription_query":
            await asyncio.sleep(0.02 if request["publishContext"] % 3 == 0 else 0)
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(jittery))
    client = await init_modern(node)
    await send(client, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 1)
    commands = [{"action": "publish", "keys": ["room:all"], "context": n} for n in range(30)]
    status, answer = await node.post_commands({"commands": commands})
    assert status == 200 and answer["accepted"] == 30
    received = [(await receive(client))["payload"]["data"]["foo"] for _ in range(30)]
    assert received == list(range(30))


async def test_origin_can_filter_end_or_fail_a_subscription_on_publish(
    start_node: StartNode,
) -> None:
    def answers(request: dict[str, Any]) -> Any:
        if request["type"] == "subscription_query":
            action = request["publishContext"]
            if action == "skip":
                return {"result": None}
            if action == "end":
                return {"result": {"data": {"foo": "last"}}, "complete": True}
            if action == "fail":
                return {"errors": [{"message": "no longer allowed"}]}
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(answers))
    modern = await init_modern(node)
    legacy = await init_legacy(node)
    variables = {"room": "a"}
    payload = {"query": "subscription { foo }", "variables": variables}
    await send(modern, {"id": "1", "type": "subscribe", "payload": payload})
    await send(legacy, {"id": "1", "type": "start", "payload": payload})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 2)
    await publish(node, ["room:a"], "skip")
    await publish(node, ["room:a"], "end")
    assert await receive(modern) == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"foo": "last"}},
    }
    assert await receive(modern) == {"id": "1", "type": "complete"}
    assert (await receive(legacy))["type"] == "data"
    assert await receive(legacy) == {"id": "1", "type": "complete"}
    assert node.node.stats()["graphqlSubscriptions"] == 0
    await send(modern, {"id": "1", "type": "subscribe", "payload": payload})  # ID free again
    await send(legacy, {"id": "1", "type": "start", "payload": payload})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 2)
    await publish(node, ["room:a"], "fail")
    assert await receive(modern) == {
        "id": "1",
        "type": "error",
        "payload": [{"message": "no longer allowed"}],
    }
    assert await receive(legacy) == {
        "id": "1",
        "type": "error",
        "payload": {"message": "no longer allowed"},
    }
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 0)


async def test_disconnect_removes_subscriptions(graphql_node: Any) -> None:
    node, origin = graphql_node
    clients = [await init_modern(node) for _ in range(3)]
    for number, client in enumerate(clients):
        for operation in range(2):
            await send(
                client,
                {
                    "id": str(operation),
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIPTION, "variables": {"room": str(number)}},
                },
            )
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 6)
    await clients[0].close()
    clients[1].transport.abort()  # no close frame at all
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 2)
    assert node.node.stats()["graphqlDistinctInputs"] == 1
    await publish(node, ["room:0", "room:1", "room:2"], "x")
    assert (await receive(clients[2]))["payload"] == {"data": {"foo": "x"}}
    assert (await receive(clients[2]))["payload"] == {"data": {"foo": "x"}}
    assert len(origin.of_type("subscription_query")) == 1


async def test_subscription_keepalive_lists_live_keys(start_node: StartNode) -> None:
    origin = ScriptedOrigin(default_answers)
    node = await start_node(graphql_origin=origin, keepalive_interval=0.2)
    client = await init_modern(node)
    for room in ("a", "b"):
        await send(
            client,
            {
                "id": room,
                "type": "subscribe",
                "payload": {"query": SUBSCRIPTION, "variables": {"room": room}},
            },
        )
    await wait_until(lambda: bool(origin.of_type("subscription_keepalive")))
    keepalive = origin.of_type("subscription_keepalive")[-1]
    assert keepalive["node"] == "127.0.0.1:9100"
    assert sorted(keepalive["keys"]) == ["room:a", "room:b"]
    await send(client, {"id": "a", "type": "complete"})
    count = len(origin.of_type("subscription_keepalive"))
    await wait_until(lambda: len(origin.of_type("subscription_keepalive")) > count + 1)
    assert origin.of_type("subscription_keepalive")[-1]["keys"] == ["room:b"]
    assert node.node.stats()["connections"] == 1
    assert node.origin.events == []  # no KEEPALIVE event lists the GraphQL connection


# A dead or misbehaving origin


async def test_origin_down_at_init(start_node: StartNode) -> None:
    node = await start_node(
        graphql_origin=ScriptedOrigin(lambda request: GraphqlOriginUnavailable("refused"))
    )
    modern = await open_client(node, MODERN)
    await send(modern, {"type": "connection_init"})
    assert await closed_with(modern) == (1013, "origin unavailable")  # a retry may succeed
    legacy = await open_client(node, LEGACY)
    await send(legacy, {"type": "connection_init"})
    assert await receive(legacy) == {
        "type": "connection_error",
        "payload": {"message": "origin unavailable"},
    }
    assert await closed_with(legacy) == (1011, "origin unavailable")
    assert node.node.stats()["graphqlOriginFailures"] == 2


async def test_origin_down_or_wrong_at_start_fails_only_that_operation(
    start_node: StartNode,
) -> None:
    def answers(request: dict[str, Any]) -> Any:
        if request["type"] == "start" and "down" in request["query"]:
            return GraphqlOriginUnavailable("origin answered 502")
        if request["type"] == "start" and "wrong" in request["query"]:
            return {"subscription": {"inputDigest": "", "keys": []}}
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(answers))
    modern = await init_modern(node)
    legacy = await init_legacy(node)
    for query in ("{ down }", "{ wrong }"):
        await send(modern, {"id": "1", "type": "subscribe", "payload": {"query": query}})
        assert await receive(modern) == {
            "id": "1",
            "type": "error",
            "payload": [{"message": "origin unavailable"}],
        }
        await send(legacy, {"id": "1", "type": "start", "payload": {"query": query}})
        assert await receive(legacy) == {
            "id": "1",
            "type": "error",
            "payload": {"message": "origin unavailable"},
        }
    # Both connections still work.
    query = {"query": QUERY, "variables": {"foo": "ok"}}
    await send(modern, {"id": "1", "type": "subscribe", "payload": query})
    assert (await receive(modern))["payload"] == {"data": {"foo": "ok"}}
    await send(legacy, {"id": "1", "type": "start", "payload": query})
    assert (await receive(legacy))["payload"] == {"data": {"foo": "ok"}}


async def test_origin_failure_on_publish_is_counted_and_subscribers_stay(
    start_node: StartNode,
) -> None:
    failing = {"on": True}

    def answers(request: dict[str, Any]) -> Any:
        if request["type"] == "subscription_query" and failing["on"]:
            return GraphqlOriginUnavailable("timeout")
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(answers))
    client = await init_modern(node)
    await send(client, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 1)
    await publish(node, ["room:all"], "lost")
    await wait_until(lambda: node.node.stats().get("graphqlSubscriptionQueryFailures") == 1)
    failing["on"] = False
    await publish(node, ["room:all"], "delivered")
    assert (await receive(client))["payload"] == {"data": {"foo": "delivered"}}


async def test_operations_per_connection_are_limited(start_node: StartNode) -> None:
    node = await start_node(
        graphql_origin=ScriptedOrigin(default_answers), graphql_max_operations=3
    )
    client = await init_modern(node)
    for number in range(3):
        payload = {"query": SUBSCRIPTION, "variables": {"room": str(number)}}
        await send(client, {"id": str(number), "type": "subscribe", "payload": payload})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 3)
    await send(client, {"id": "3", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    answer = await receive(client)
    assert answer["id"] == "3" and answer["type"] == "error"
    assert "too many operations" in answer["payload"][0]["message"]
    await send(client, {"id": "0", "type": "complete"})
    await send(client, {"id": "3", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 3)


# The legacy protocol (graphql-ws), as subscriptions-transport-ws and the reference test send it


async def test_legacy_reference_scenario(graphql_node: Any) -> None:
    """The Go reference's own test, ported: init, a query, a subscription fed by a publish."""
    node, origin = graphql_node
    client = await open_client(node, LEGACY)
    await send(client, {"id": "init", "type": "connection_init"})
    assert (await receive(client))["type"] == "connection_ack"
    assert (await receive(client))["type"] == "ka"
    await send(
        client,
        {
            "id": "query",
            "type": "start",
            "payload": {"query": QUERY, "operationName": "Foo", "variables": {"foo": "bar"}},
        },
    )
    data = await receive(client)
    assert data == {"id": "query", "type": "data", "payload": {"data": {"foo": "bar"}}}
    assert await receive(client) == {"id": "query", "type": "complete"}
    await send(client, {"id": "sub", "type": "start", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 1)
    await publish(node, ["room:all"], "foo")
    assert await receive(client) == {
        "id": "sub",
        "type": "data",
        "payload": {"data": {"foo": "foo"}},
    }
    assert origin.of_type("subscription_query")[0]["publishContext"] == "foo"


async def test_legacy_bad_messages_are_answered_and_the_connection_stays(
    graphql_node: Any,
) -> None:
    node, _ = graphql_node
    client = await open_client(node, LEGACY)
    await send(client, {"id": "1", "type": "start", "payload": {"query": QUERY}})
    assert await receive(client) == {
        "id": "1",
        "type": "error",
        "payload": {"message": "send connection_init first"},
    }
    await client.send("{not json")
    answer = await receive(client)
    assert answer["type"] == "connection_error"
    assert "not valid JSON" in answer["payload"]["message"]
    await send(client, {"id": "1", "type": "subscribe", "payload": {"query": QUERY}})
    answer = await receive(client)
    assert answer["type"] == "error" and "unknown message type" in answer["payload"]["message"]
    await client.send(b"\x00")
    assert "binary" in (await receive(client))["payload"]["message"]
    await send(client, {"type": "connection_init"})
    assert (await receive(client))["type"] == "connection_ack"
    assert (await receive(client))["type"] == "ka"
    await send(client, {"type": "connection_init"})
    assert await receive(client) == {
        "type": "connection_error",
        "payload": {"message": "connection already initialised"},
    }
    await send(client, {"id": "1", "type": "start", "payload": {"variables": {}}})
    answer = await receive(client)
    assert answer["type"] == "error" and "payload.query" in answer["payload"]["message"]
    query = {"query": QUERY, "variables": {"foo": "still here"}}
    await send(client, {"id": "1", "type": "start", "payload": query})
    assert (await receive(client))["payload"] == {"data": {"foo": "still here"}}
    assert node.node.stats()["graphqlInvalidMessages"] == 4


async def test_legacy_rejection_sends_connection_error_then_closes(graphql_node: Any) -> None:
    node, _ = graphql_node
    client = await open_client(node, LEGACY)
    await send(client, {"type": "connection_init", "payload": {"token": "bad"}})
    assert await receive(client) == {
        "type": "connection_error",
        "payload": {"message": "bad token"},
    }
    assert await closed_with(client) == (1011, "Forbidden: bad token")


async def test_legacy_stop_duplicate_and_terminate(graphql_node: Any) -> None:
    node, origin = graphql_node
    client = await init_legacy(node)
    room_a = {"query": SUBSCRIPTION, "variables": {"room": "a"}}
    room_b = {"query": SUBSCRIPTION, "variables": {"room": "b"}}
    await send(client, {"id": "s", "type": "start", "payload": room_a})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 1)
    await send(client, {"id": "s", "type": "start", "payload": room_b})  # replaces the first
    assert node.node.graphql is not None
    await wait_until(lambda: node.node.graphql.index.keys() == ["room:b"])
    await publish(node, ["room:a", "room:b"], "x")
    assert await receive(client) == {"id": "s", "type": "data", "payload": {"data": {"foo": "x"}}}
    await send(client, {"id": "s", "type": "stop"})
    assert await receive(client) == {"id": "s", "type": "complete"}
    assert node.node.stats()["graphqlSubscriptions"] == 0
    await send(client, {"type": "connection_terminate"})
    assert await closed_with(client) == (1000, "connection_terminate")
    assert len(origin.of_type("subscription_query")) == 1


async def test_legacy_clients_get_ka_every_interval(start_node: StartNode) -> None:
    node = await start_node(graphql_origin=ScriptedOrigin(default_answers), graphql_ka_interval=0.1)
    legacy = await init_legacy(node)
    modern = await init_modern(node)
    for _ in range(3):
        assert await receive(legacy, timeout=2) == {"type": "ka"}
    await send(modern, {"type": "ping"})
    assert await receive(modern) == {"type": "pong"}  # modern clients get no ka


# Alongside the event origin


async def test_other_subprotocols_keep_the_event_path(start_node: StartNode) -> None:
    node = await start_node(
        graphql_origin=ScriptedOrigin(default_answers),
        subprotocols=("graphql-transport-ws", "chat"),
    )
    chat = await connect(node.ws_url, subprotocols=["chat"])  # type: ignore[list-item]
    await chat.send("hello")
    await node.origin.wait_for(lambda events: len(events) >= 2)
    assert [e["requestContext"]["eventType"] for e in node.origin.events] == [
        "CONNECT",
        "MESSAGE",
    ]
    legacy_refused = connect(node.ws_url, subprotocols=["graphql-ws"])  # type: ignore[list-item]
    with pytest.raises(Exception, match="400"):
        await legacy_refused
    await init_modern(node)


async def test_graphql_only_node_refuses_other_connections_with_4406(
    start_node: StartNode,
) -> None:
    node = await start_node(graphql_origin=ScriptedOrigin(default_answers), origin_transport="none")
    plain = await connect(node.ws_url)
    code, reason = await closed_with(plain)
    assert code == 4406 and "graphql-transport-ws" in reason
    await init_modern(node)


async def test_publish_without_graphql_mode_is_rejected(start_node: StartNode) -> None:
    node = await start_node()
    status, answer = await node.post_commands(
        {"commands": [{"action": "publish", "keys": ["k"], "context": None}]}
    )
    assert status == 400 and answer["accepted"] == 0
    assert "publish needs GraphQL mode" in answer["rejected"][0]["error"]


# The Lambda GraphQL origin, through moto's Lambda API


async def test_lambda_origin_answers_init_and_a_query(
    start_node: StartNode, moto_endpoint: MotoEndpoint, simple_function: str
) -> None:
    origin = LambdaGraphqlOrigin(
        simple_function, region=moto_endpoint.region, endpoint_url=moto_endpoint.url
    )
    node = await start_node(graphql_origin=origin, origin_transport="none")
    await queue_lambda_results(
        moto_endpoint,
        '{"accept": true, "payload": {"via": "lambda"}}',
        '{"result": {"data": {"hello": "from lambda"}}}',
    )
    client = await open_client(node, MODERN)
    await send(client, {"type": "connection_init", "payload": {"token": "t"}})
    assert await receive(client) == {"type": "connection_ack", "payload": {"via": "lambda"}}
    await send(client, {"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert await receive(client) == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"hello": "from lambda"}},
    }
    assert await receive(client) == {"id": "1", "type": "complete"}
    # With nothing queued, moto echoes the request back: not an answer the contract allows.
    await send(client, {"id": "2", "type": "subscribe", "payload": {"query": "{ hello }"}})
    assert await receive(client) == {
        "id": "2",
        "type": "error",
        "payload": [{"message": "origin unavailable"}],
    }


# Found in review: text that cannot be UTF-8, frames a GraphQL client cannot read, failures that
# must stay contained


async def test_lone_surrogates_from_clients_are_refused_as_invalid(graphql_node: Any) -> None:
    node, origin = graphql_node
    legacy = await init_legacy(node)
    await legacy.send('{"type":"start","id":"1","payload":{"query":"{ a(t: \\"\\ud83d\\") }"}}')
    answer = await receive(legacy)
    assert answer["type"] == "error" and "lone surrogates" in answer["payload"]["message"]
    await legacy.send('{"type":"stop","id":"\\udc00"}')
    assert "lone surrogates" in (await receive(legacy))["payload"]["message"]
    await send(
        legacy, {"id": "2", "type": "start", "payload": {"query": QUERY, "variables": {"foo": 1}}}
    )
    assert (await receive(legacy))["payload"] == {"data": {"foo": 1}}  # still serving
    modern = await open_client(node, MODERN)
    await modern.send('{"type":"connection_init","payload":{"token":"\\ud800"}}')
    code, reason = await closed_with(modern)
    assert code == 4400 and "lone surrogates" in reason
    assert not origin.of_type("start")[:-1]  # only the valid query reached the origin
    assert node.node.stats().get("graphqlOriginFailures", 0) == 0


async def test_an_origin_result_with_a_lone_surrogate_reaches_everyone(
    start_node: StartNode,
) -> None:
    def answers(request: dict[str, Any]) -> Any:
        if request["type"] == "subscription_query":
            return {"result": {"data": {"foo": request["publishContext"] + " \ud83d"}}}
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(answers))
    modern = await init_modern(node)
    legacy = await init_legacy(node)
    payload = {"query": SUBSCRIPTION}
    await send(modern, {"id": "1", "type": "subscribe", "payload": payload})
    await send(legacy, {"id": "1", "type": "start", "payload": payload})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 2)
    await publish(node, ["room:all"], "cut")
    await publish(node, ["room:all"], "next")
    for client in (modern, legacy):
        first, second = await receive(client), await receive(client)
        assert first["payload"] == {"data": {"foo": "cut \ud83d"}}  # as JSON.parse reads it
        assert second["payload"] == {"data": {"foo": "next \ud83d"}}


async def test_broadcasts_skip_graphql_connections(start_node: StartNode) -> None:
    node = await start_node(
        graphql_origin=ScriptedOrigin(default_answers),
        subprotocols=("graphql-transport-ws", "chat"),
    )
    graphql = await init_modern(node)
    plain = await connect(node.ws_url, subprotocols=["chat"])  # type: ignore[list-item]
    status, _ = await node.post_commands(
        {"commands": [{"action": "broadcast", "data": "to plain clients"}]}
    )
    assert status == 200
    assert await asyncio.wait_for(plain.recv(), 5) == "to plain clients"
    await send(graphql, {"type": "ping"})
    assert await receive(graphql) == {"type": "pong"}  # and no bare broadcast before it


async def test_an_ack_payload_that_is_not_an_object_is_an_origin_fault(
    start_node: StartNode,
) -> None:
    node = await start_node(
        graphql_origin=ScriptedOrigin(lambda request: {"accept": True, "payload": "welcome"})
    )
    client = await open_client(node, MODERN)
    await send(client, {"type": "connection_init"})
    assert await closed_with(client) == (1013, "origin unavailable")


async def test_no_ka_at_all_when_the_interval_is_zero(start_node: StartNode) -> None:
    node = await start_node(graphql_origin=ScriptedOrigin(default_answers), graphql_ka_interval=0)
    client = await open_client(node, LEGACY)
    await send(client, {"type": "connection_init"})
    assert await receive(client) == {"type": "connection_ack"}
    await send(
        client, {"id": "q", "type": "start", "payload": {"query": QUERY, "variables": {"foo": 2}}}
    )
    assert (await receive(client))["type"] == "data"  # no ka in between


async def test_ending_an_operation_lets_its_origin_call_finish(start_node: StartNode) -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def slow_starts(request: dict[str, Any]) -> Any:
        if request["type"] == "start":
            await asyncio.wait_for(release.wait(), 5)
            finished.append(request["operationId"])
        return default_answers(request)

    origin = await start_graphql_origin(slow_starts)
    try:
        node = await start_node(graphql_origin=HttpGraphqlOrigin(origin.url))
        client = await init_modern(node)
        await send(client, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
        await origin.wait_for(lambda requests: len(requests) == 2)  # the call is under way
        await send(client, {"id": "s", "type": "complete"})
        await send(client, {"type": "ping"})
        assert await receive(client) == {"type": "pong"}
        # The request runs on at the origin, and counts for the connection until it is done.
        assert node.node.stats()["graphqlOperationsEnding"] == 1
        assert node.node.stats()["graphqlOriginInFlight"] == 1
        release.set()
        await wait_until(lambda: node.node.stats()["graphqlOperationsEnding"] == 0)
        assert finished == ["s"]
        assert node.node.stats()["graphqlSubscriptions"] == 0
        await send(client, {"type": "ping"})
        assert await receive(client) == {"type": "pong"}  # and nothing for "s" before it
    finally:
        await origin.stop()


async def test_the_origin_keepalive_survives_any_failure(start_node: StartNode) -> None:
    calls: list[int] = []

    def answers(request: dict[str, Any]) -> Any:
        if request["type"] == "subscription_keepalive":
            calls.append(len(request["keys"]))
            if len(calls) == 1:
                return RuntimeError("a bug in a transport")
        return default_answers(request)

    node = await start_node(graphql_origin=ScriptedOrigin(answers), keepalive_interval=0.1)
    client = await init_modern(node)
    await send(client, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: len(calls) >= 3)
    assert node.node.stats()["graphqlOriginFailures"] >= 1


async def test_keepalive_keys_go_in_bounded_requests(start_node: StartNode) -> None:
    origin = ScriptedOrigin(default_answers)
    node = await start_node(
        graphql_origin=origin, keepalive_interval=0.2, graphql_max_operations=2500
    )
    client = await init_modern(node)
    for number in range(2500):
        payload = {"query": SUBSCRIPTION, "variables": {"room": str(number)}}
        await send(client, {"id": str(number), "type": "subscribe", "payload": payload})
    await wait_until(lambda: node.node.stats()["graphqlSubscriptions"] == 2500, timeout=20)
    await wait_until(lambda: len(origin.of_type("subscription_keepalive")) >= 3)
    requests = origin.of_type("subscription_keepalive")
    sizes = [len(request["keys"]) for request in requests[-3:]]
    assert max(len(request["keys"]) for request in requests) <= 1000
    assert sorted(sizes) == [500, 1000, 1000]


async def test_legacy_validation_errors_come_as_data_then_complete(graphql_node: Any) -> None:
    node, _ = graphql_node
    client = await init_legacy(node)
    await send(client, {"id": "v", "type": "start", "payload": {"query": "{ invalid }"}})
    assert await receive(client) == {
        "id": "v",
        "type": "data",
        "payload": {"errors": [{"message": "Cannot query field 'invalid' on type 'Query'."}]},
    }
    assert await receive(client) == {"id": "v", "type": "complete"}
