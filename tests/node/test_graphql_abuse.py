"""GraphQL mode under abuse (issue 12): a client that floods the origin, an origin too slow to
answer in time, and messages built to break the parser, each against a real node over 127.0.0.1
and a real HTTP origin (tests/graphql_origin_server.py) whose handlers run to their end even when
the node gives up on them, as real servers do.

Each test checks the bound, the node's health afterwards, and that well-behaved clients beside
the attacker lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from runtime.transports.graphql_origin import HttpGraphqlOrigin
from tests.conftest import RunningNode, StartNode
from tests.graphql_origin_server import RunningGraphqlOrigin, start_graphql_origin
from tests.node.test_graphql import (
    LEGACY,
    MODERN,
    QUERY,
    SUBSCRIPTION,
    default_answers,
    init_legacy,
    init_modern,
    open_client,
    publish,
    receive,
    send,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

SLOW = "subscription Slow { slow }"  # the origin holds these starts until the test lets go
HOLD_LIMIT = 8.0  # no start is held longer than this, whatever the test does


class HeldOrigin:
    """An origin whose `SLOW` starts wait for `release`; everything else is answered at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.server: RunningGraphqlOrigin | None = None

    async def answer(self, request: dict[str, Any]) -> Any:
        if request["type"] == "start" and request["query"] == SLOW:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), HOLD_LIMIT)
        return default_answers(request)

    @property
    def running(self) -> RunningGraphqlOrigin:
        assert self.server is not None
        return self.server

    def starts_for(self, connection_id: str) -> list[str]:
        return [
            request["operationId"]
            for request in self.running.of_type("start")
            if request["connectionId"] == connection_id
        ]


@pytest.fixture
async def held() -> AsyncIterator[HeldOrigin]:
    origin = HeldOrigin()
    origin.server = await start_graphql_origin(origin.answer)
    yield origin
    origin.release.set()
    await origin.server.stop()


async def graphql_node(
    start_node: StartNode,
    origin: RunningGraphqlOrigin,
    *,
    concurrency: int,
    timeout: float,
    **settings: Any,
) -> RunningNode:
    """A node in GraphQL mode on the real HTTP origin client, as `serve` builds it."""
    client = HttpGraphqlOrigin(origin.url, concurrency=concurrency, timeout=timeout)
    return await start_node(graphql_origin=client, origin_transport="none", **settings)


def stat(node: RunningNode, name: str) -> int:
    value = node.node.stats().get(name, 0)
    assert isinstance(value, int), (name, value)
    return value


async def answer_or_close(client: ClientConnection, timeout: float = 5.0) -> Any:
    """The next message, or the close code and reason if the node closed instead."""
    try:
        return await receive(client, timeout)
    except ConnectionClosed as closed:
        received = closed.rcvd
        return (received.code, received.reason) if received is not None else "no close frame"


async def ping(client: ClientConnection) -> None:
    """A barrier: the node answers in order, so every earlier message has been acted on."""
    await send(client, {"type": "ping"})
    assert await receive(client) == {"type": "pong"}


def slow_subscribe(operation_id: str) -> dict[str, Any]:
    return {"id": operation_id, "type": "subscribe", "payload": {"query": SLOW}}


def query(operation_id: str, value: Any) -> dict[str, Any]:
    payload = {"query": QUERY, "variables": {"foo": value}}
    return {"id": operation_id, "type": "subscribe", "payload": payload}


def last_connection_id(origin: RunningGraphqlOrigin) -> str:
    return str(origin.of_type("connection_init")[-1]["connectionId"])


# Item 6: a client that subscribes and completes in a loop


CONCURRENCY = 8
MAX_OPERATIONS = 6
ATTACK_OPERATIONS = 150


async def test_a_subscribe_complete_loop_cannot_flood_the_origin(
    start_node: StartNode, held: HeldOrigin
) -> None:
    origin = held.running
    node = await graphql_node(
        start_node,
        origin,
        concurrency=CONCURRENCY,
        timeout=2.0,
        graphql_max_operations=MAX_OPERATIONS,
        keepalive_interval=0.2,
    )
    subscriber = await init_modern(node)  # an honest client, subscribed before the attack
    await send(subscriber, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    await wait_until(lambda: stat(node, "graphqlSubscriptions") == 1)
    attacker = await init_modern(node)
    attacker_id = last_connection_id(origin)
    sent_by_barrier: list[int] = []
    under_way = asyncio.Event()

    async def attack() -> None:
        for number in range(ATTACK_OPERATIONS):
            if number == ATTACK_OPERATIONS // 4:
                under_way.set()
            await send(attacker, slow_subscribe(str(number)))
            await ping(attacker)  # the node has started it: its call holds or waits for a place
            await send(attacker, {"id": str(number), "type": "complete"})
        await ping(attacker)  # every operation has ended, at the node
        # Whatever left the node before that has arrived once the origin runs as many requests
        # as the node has in flight.
        await wait_until(lambda: origin.running >= stat(node, "graphqlOriginInFlight"))
        sent_by_barrier.append(len(held.starts_for(attacker_id)))

    attacking = asyncio.create_task(attack())
    await asyncio.wait_for(under_way.wait(), 10)
    keepalives_before = origin.count("subscription_keepalive")

    # Meanwhile an honest client connects, asks a query, and a publish reaches the subscriber.
    honest = await open_client(node, MODERN)
    await send(honest, {"type": "connection_init", "payload": {"token": "honest"}})
    outcomes: dict[str, Any] = {"honest connection_init": await answer_or_close(honest)}
    if outcomes["honest connection_init"] == {"type": "connection_ack"}:
        await send(honest, query("q", "meanwhile"))
        outcomes["honest query"] = await answer_or_close(honest)
    await publish(node, ["room:all"], "meanwhile")
    outcomes["publish"] = await answer_or_close(subscriber)
    await origin.wait_for(
        lambda _: origin.count("subscription_keepalive") > keepalives_before, timeout=5
    )
    await attacking
    held.release.set()
    await wait_until(lambda: origin.running == 0 and stat(node, "graphqlOriginInFlight") == 0)

    assert outcomes == {
        "honest connection_init": {"type": "connection_ack"},
        "honest query": {"id": "q", "type": "next", "payload": {"data": {"foo": "meanwhile"}}},
        "publish": {"id": "s", "type": "next", "payload": {"data": {"foo": "meanwhile"}}},
    }
    bounds = {
        "most origin handlers at once": origin.most_running,
        "most at once for the attacker": origin.most_running_for(attacker_id),
        "attacker starts after all its operations ended": len(held.starts_for(attacker_id))
        - sent_by_barrier[0],
    }
    assert bounds["most origin handlers at once"] <= CONCURRENCY, bounds
    assert bounds["most at once for the attacker"] <= MAX_OPERATIONS, bounds
    assert bounds["attacker starts after all its operations ended"] == 0, bounds
    # The node is healthy: the attacker's own connection and a new client still work.
    await send(attacker, query("after", 1))
    assert (await receive(attacker))["payload"] == {"data": {"foo": 1}}
    newcomer = await init_legacy(node)
    await send(newcomer, {**query("n", 2), "type": "start"})
    assert (await receive(newcomer))["payload"] == {"data": {"foo": 2}}
    assert stat(node, "graphqlOriginCallsWithdrawn") > 0


async def test_ended_operations_count_until_their_origin_call_returns(
    start_node: StartNode, held: HeldOrigin
) -> None:
    origin = held.running
    node = await graphql_node(
        start_node, origin, concurrency=4, timeout=5.0, graphql_max_operations=2
    )
    client = await init_modern(node)
    client_id = last_connection_id(origin)
    for operation_id in ("a", "b"):
        await send(client, slow_subscribe(operation_id))
    await origin.wait_for(lambda _: len(held.starts_for(client_id)) == 2)
    for operation_id in ("a", "b"):
        await send(client, {"id": operation_id, "type": "complete"})
    await ping(client)
    await send(client, query("c", "too many"))  # a and b are still running at the origin
    refused = await receive(client)
    assert refused["id"] == "c" and refused["type"] == "error", refused
    assert "too many operations" in refused["payload"][0]["message"]
    assert stat(node, "graphqlOperationsRefused") == 1
    held.release.set()
    await wait_until(lambda: stat(node, "graphqlOperationsEnding") == 0)
    await send(client, query("d", "room again"))
    assert await receive(client) == {
        "id": "d",
        "type": "next",
        "payload": {"data": {"foo": "room again"}},
    }
    assert await receive(client) == {"id": "d", "type": "complete"}  # and nothing for a or b


async def test_an_operation_ended_before_its_request_left_is_never_sent(
    start_node: StartNode, held: HeldOrigin
) -> None:
    origin = held.running
    node = await graphql_node(start_node, origin, concurrency=2, timeout=5.0)
    client = await init_modern(node)
    client_id = last_connection_id(origin)
    await send(client, slow_subscribe("first"))
    await origin.wait_for(lambda _: held.starts_for(client_id) == ["first"])
    await send(client, slow_subscribe("waiting"))  # this connection's share is taken: it waits
    await wait_until(lambda: stat(node, "graphqlOriginWaiting") == 1)
    await send(client, {"id": "waiting", "type": "complete"})
    await ping(client)
    assert stat(node, "graphqlOriginWaiting") == 0
    held.release.set()
    await wait_until(lambda: stat(node, "graphqlSubscriptions") == 1)  # "first" subscribed
    await send(client, query("q", "after"))
    assert (await receive(client))["payload"] == {"data": {"foo": "after"}}
    assert held.starts_for(client_id) == ["first", "q"]
    assert stat(node, "graphqlOriginCallsWithdrawn") == 1


# Item 6: requests the node gave up on


async def test_requests_that_time_out_do_not_multiply_origin_handlers(
    start_node: StartNode,
) -> None:
    async def answer(request: dict[str, Any]) -> Any:
        if request["type"] == "start" and request["query"] == SLOW:
            await asyncio.sleep(1.0)  # well past the node's timeout of 0.3 s
        return default_answers(request)

    origin = await start_graphql_origin(answer)
    try:
        node = await graphql_node(start_node, origin, concurrency=2, timeout=0.3)
        clients = [await init_modern(node) for _ in range(2)]
        for wave in range(8):  # a new request every 0.1 s, as each earlier one times out
            for client in clients:
                await send(client, slow_subscribe(f"w{wave}"))
            await asyncio.sleep(0.1)
        for client in clients:
            failures = [await receive(client) for _ in range(8)]
            assert {failure["type"] for failure in failures} == {"error"}, failures
            assert all(
                failure["payload"] == [{"message": "origin unavailable"}] for failure in failures
            )
        await wait_until(lambda: origin.running == 0 and stat(node, "graphqlOriginInFlight") == 0)
        assert origin.most_running <= 2, origin.most_running
        for number, client in enumerate(clients):  # both connections, and the origin, still work
            await send(client, query("fast", number))
            assert (await receive(client))["payload"] == {"data": {"foo": number}}
        assert stat(node, "graphqlOriginCallsAbandoned") >= 1
        assert stat(node, "graphqlOriginQueueTimeouts") >= 1
    finally:
        await origin.stop()


# Item 8: JSON nested deeper than the parser goes, with a lone surrogate


# Around the depth where Python's parser gives up (about 1,000 minus the stack in use), and far
# beyond it. Near the limit, a document parsed but could not be walked again.
DEPTHS = [100_000, *range(850, 1000)]


def deep_message(depth: int) -> str:
    nested = "[" * depth + "]" * depth
    return '{"type":"connection_init","payload":{"token":"\\ud800","nested":' + nested + "}}"


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.exc_info is not None or record.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize("initialised", [False, True], ids=["before-init", "after-init"])
async def test_deep_json_with_a_lone_surrogate_is_a_protocol_error_modern(
    start_node: StartNode, caplog: pytest.LogCaptureFixture, initialised: bool
) -> None:
    origin = await start_graphql_origin(default_answers)
    try:
        node = await graphql_node(start_node, origin, concurrency=4, timeout=5.0)
        bystander = await init_modern(node)
        closes: dict[int, Any] = {}
        for depth in DEPTHS:
            client = await (init_modern(node) if initialised else open_client(node, MODERN))
            await client.send(deep_message(depth))
            closes[depth] = await answer_or_close(client)
        wrong = {
            depth: close
            for depth, close in closes.items()
            if not (isinstance(close, tuple) and close[0] == 4400 and "nested deeper" in close[1])
        }
        assert not wrong, wrong
        assert no_tracebacks(caplog) == []
        await send(bystander, query("q", "unaffected"))
        assert (await receive(bystander))["payload"] == {"data": {"foo": "unaffected"}}
        assert stat(node, "graphqlInvalidMessages") == len(DEPTHS)
    finally:
        await origin.stop()


@pytest.mark.parametrize("initialised", [False, True], ids=["before-init", "after-init"])
async def test_deep_json_with_a_lone_surrogate_is_a_protocol_error_legacy(
    start_node: StartNode, caplog: pytest.LogCaptureFixture, initialised: bool
) -> None:
    origin = await start_graphql_origin(default_answers)
    try:
        node = await graphql_node(start_node, origin, concurrency=4, timeout=5.0)
        bystander = await init_modern(node)
        client = await (init_legacy(node) if initialised else open_client(node, LEGACY))
        answers: dict[int, Any] = {}
        for depth in DEPTHS:
            await client.send(deep_message(depth))
            answers[depth] = await answer_or_close(client)
        wrong = {
            depth: answer
            for depth, answer in answers.items()
            if not isinstance(answer, dict)
            or answer["type"] != "connection_error"
            or "nested deeper" not in answer["payload"]["message"]
        }
        assert not wrong, wrong
        assert no_tracebacks(caplog) == []
        # The connection stays, as the legacy protocol has it, and so do the others.
        if not initialised:
            await send(client, {"type": "connection_init"})
            assert (await receive(client))["type"] == "connection_ack"
            assert (await receive(client))["type"] == "ka"
        await send(client, {**query("q", "still here"), "type": "start"})
        assert (await receive(client))["payload"] == {"data": {"foo": "still here"}}
        await send(bystander, query("q", "unaffected"))
        assert (await receive(bystander))["payload"] == {"data": {"foo": "unaffected"}}
        assert stat(node, "graphqlInvalidMessages") == len(DEPTHS)
    finally:
        await origin.stop()


async def test_deep_json_without_surrogates_never_reaches_the_origin(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    origin = await start_graphql_origin(default_answers)
    try:
        node = await graphql_node(start_node, origin, concurrency=4, timeout=5.0)
        for depth in (101, 500, *range(900, 1000, 7)):
            lists = depth - 2  # the message and its payload are two levels more
            nested = "[" * lists + '"deep"' + "]" * lists
            client = await open_client(node, MODERN)
            await client.send('{"type":"connection_init","payload":{"n":' + nested + "}}")
            outcome = await answer_or_close(client)
            assert isinstance(outcome, tuple), (depth, outcome)
            assert outcome[0] == 4400 and "nested deeper than 100 levels" in outcome[1], outcome
        assert origin.count("connection_init") == 0
        assert no_tracebacks(caplog) == []
        shallow: Any = "ok"
        for _ in range(98):
            shallow = [shallow]
        client = await open_client(node, MODERN)
        await send(client, {"type": "connection_init", "payload": {"n": shallow}})
        assert await receive(client) == {"type": "connection_ack"}
    finally:
        await origin.stop()


async def test_publishes_behind_a_slow_origin_wait_within_their_bound(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of publishes while the origin holds an execution: at most the bound waits (the
    bound lowered to 40 here, 10,000 in production), the rest are dropped and counted, and those
    kept reach the subscriber in publish order once the origin answers."""
    from runtime.node import graphql_fanout as fanout

    monkeypatch.setattr(fanout, "MAX_PENDING_EXECUTIONS", 40)
    release = asyncio.Event()

    async def answer(request: dict[str, Any]) -> Any:
        if request["type"] == "subscription_query":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), HOLD_LIMIT)
        return default_answers(request)

    origin = await start_graphql_origin(answer)
    try:
        node = await graphql_node(start_node, origin, concurrency=4, timeout=10)
        subscriber = await init_modern(node)
        await send(subscriber, {"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
        await wait_until(lambda: stat(node, "graphqlSubscriptions") == 1)
        status, answer = await node.post_commands(
            {
                "commands": [
                    {"action": "publish", "keys": ["room:all"], "context": n} for n in range(200)
                ]
            }
        )
        assert (status, answer) == (200, {"accepted": 200})
        assert stat(node, "graphqlPendingExecutions") <= 40
        dropped = stat(node, "graphqlExecutionsDropped")
        assert dropped >= 200 - 41  # one may already be at the origin
        bystander = await init_modern(node)  # the node stays responsive meanwhile
        await ping(bystander)
        release.set()
        got = [(await receive(subscriber))["payload"]["data"]["foo"] for _ in range(200 - dropped)]
        assert got == sorted(got) and got[0] == 0
        assert stat(node, "graphqlPendingExecutions") == 0
    finally:
        await origin.stop()
