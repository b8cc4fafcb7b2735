"""The origin goes away: events wait within a bound, reading stops, then connections close 1011."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from runtime.wire.connection_id import ConnectionIdIssuer
from tests.conftest import StartNode
from tests.doubles.memory import MemoryOrigin


async def test_origin_down_then_up_loses_nothing_and_respects_the_bound(
    start_node: StartNode,
) -> None:
    origin = MemoryOrigin()
    origin.up = False
    node = await start_node(origin=origin, event_buffer_events=50, origin_unavailable_seconds=60)
    outbox = node.node.pump.outbox
    peak = 0
    async with connect(node.ws_url) as client:
        for index in range(300):
            await client.send(f"m{index}")
        for _ in range(20):  # let the node read what it will
            await asyncio.sleep(0.02)
            peak = max(peak, outbox.nevents)
        # The node stopped reading: at most one event past the bound per connection.
        assert peak <= 51
        assert node.node.counters["readsPaused"] >= 1
        origin.up = True
        events = await origin.wait_for(lambda e: len(e) >= 301, timeout=15)
    bodies = [e["body"] for e in events if e["requestContext"]["eventType"] == "MESSAGE"]
    assert bodies == [f"m{i}" for i in range(300)]
    sequences = [e["requestContext"]["sequenceNumber"] for e in events[:301]]
    assert sequences == list(range(301))


async def test_connections_close_1011_when_origin_stays_down(start_node: StartNode) -> None:
    origin = MemoryOrigin()
    origin.up = False
    node = await start_node(origin=origin, origin_unavailable_seconds=0.3)
    async with connect(node.ws_url) as client:
        await client.send("waiting")
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(client.recv(), 5)
        assert client.close_code == 1011
        assert client.close_reason == "origin unavailable"
    origin.up = True
    events = await origin.wait_for(lambda e: len(e) >= 3, timeout=10)
    # Nothing the node accepted is dropped: the message and the DISCONNECT still arrive.
    assert [e["requestContext"]["eventType"] for e in events] == [
        "CONNECT",
        "MESSAGE",
        "DISCONNECT",
    ]
    assert events[1]["body"] == "waiting"
    assert events[2]["disconnectStatusCode"] == 1011


async def test_gone_events_are_dropped_not_buffered_while_origin_is_backed_up(
    start_node: StartNode,
) -> None:
    origin = MemoryOrigin()
    origin.up = False
    node = await start_node(origin=origin, event_buffer_events=10, origin_unavailable_seconds=60)
    async with connect(node.ws_url) as client:
        for index in range(20):
            await client.send(str(index))
        await asyncio.sleep(0.2)
        buffered = node.node.pump.outbox.nevents
        assert not node.node.pump.has_room
        unknown = ConnectionIdIssuer("local", node.node.address).issue()
        for _ in range(5):
            status, _ = await node.post_commands(
                {"commands": [{"action": "send", "connectionIds": [unknown], "data": "x"}] * 100}
            )
            assert status == 200
        assert node.node.pump.outbox.nevents == buffered
        assert node.node.stats()["goneDropped"] == 500
        origin.up = True
        await origin.wait_for(lambda e: len(e) >= 21, timeout=15)
