"""Events over HTTP to a real origin: batched, on kept-alive connections, retried in order."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from runtime.transports.http_origin import HttpOrigin
from tests.conftest import StartNode
from tests.origin_server import RecordingOrigin


async def test_events_batched_on_pooled_connections_with_token(
    start_node: StartNode, origin: RecordingOrigin
) -> None:
    transport = HttpOrigin(origin.url, token="origin-secret", concurrency=2)
    node = await start_node(origin=transport)
    async with connect(node.ws_url) as first, connect(node.ws_url) as second:
        for index in range(500):
            await first.send(f"a{index}")
            await second.send(f"b{index}")
        await origin.wait_for(lambda e: len(e) >= 1002)
    assert origin.authorization == "Bearer origin-secret"
    assert origin.requests < 1002 / 2  # batched
    assert len(origin.peers) <= 2  # kept alive, never more than the concurrency
    for prefix in ("a", "b"):
        bodies = [e["body"] for e in origin.of_type("MESSAGE") if e["body"].startswith(prefix)]
        assert bodies == [f"{prefix}{i}" for i in range(500)]


async def test_failed_requests_are_retried_in_order_without_loss(
    start_node: StartNode, origin: RecordingOrigin
) -> None:
    origin.fail_next = 3
    node = await start_node(origin=HttpOrigin(origin.url, concurrency=4))
    async with connect(node.ws_url) as client:
        for index in range(200):
            await client.send(str(index))
            if index % 50 == 0:
                await asyncio.sleep(0.01)
        events = await origin.wait_for(lambda e: len(e) >= 201)
    assert origin.fail_next == 0
    assert [e["body"] for e in events[1:201]] == [str(i) for i in range(200)]
    assert [e["requestContext"]["sequenceNumber"] for e in events[:201]] == list(range(201))
    assert node.node.pump.failures == 3


async def test_unreachable_origin_is_retried_until_it_appears(start_node: StartNode) -> None:
    late = RecordingOrigin()
    await late.start()
    url = late.url
    await late.stop()  # nothing listens there now
    node = await start_node(origin=HttpOrigin(url, timeout=1))
    async with connect(node.ws_url) as client:
        await client.send("early")
        await asyncio.sleep(0.3)
        assert node.node.pump.failures >= 1
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        revived = await RecordingOrigin().start(port)
        try:
            events = await revived.wait_for(lambda e: len(e) >= 2, timeout=15)
        finally:
            await revived.stop()
    assert events[1]["body"] == "early"
