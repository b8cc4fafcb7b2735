"""A node on AWS messaging when things go wrong: the endpoint vanishes mid-stream and comes back,
and a client message too big for one SQS message once encoded. Each with events one per message
and packed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections import Counter
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from runtime.names import ResourceNames
from runtime.provision import provision
from runtime.transports.sqs_origin import SqsOrigin
from tests.aws import MotoEndpoint
from tests.conftest import StartNode
from tests.processes import start_process
from tests.transports.test_sqs_origin import areceive_events

# One event per message (the old shape), and packed as nodes send them by default.
PACKING = pytest.mark.parametrize(
    "packing",
    [{}, {"events_per_message": 1000, "linger": 0.01, "group_prefix": "n-b"}],
    ids=["one-per-message", "packed"],
)


@PACKING
async def test_no_message_lost_while_aws_is_away(
    start_node: StartNode,
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    packing: dict[str, Any],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A second moto server of our own, on the same in-process state, that we can stop.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    await asyncio.to_thread(server.start)
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    origin = SqsOrigin(
        resources.events_queue_url,
        endpoint_url=f"http://127.0.0.1:{port}",
        attempts=1,
        timeout=2,
        **packing,
    )
    node = await start_node(origin=origin, origin_unavailable_seconds=60)
    try:
        async with connect(node.ws_url) as client:
            for index in range(40):
                await client.send(f"m{index}")
            await asyncio.to_thread(server.stop)  # mid-stream
            for index in range(40, 100):
                await client.send(f"m{index}")
            await asyncio.sleep(1.0)
            assert node.node.pump.failures >= 1  # the node noticed, and kept everything
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            await asyncio.to_thread(server.start)
            _, events = await areceive_events(sqs, resources.events_queue_url, 101)
    finally:
        await asyncio.to_thread(server.stop)
    assert [event.get("body") for event in events] == [None] + [f"m{i}" for i in range(100)]
    assert [e["requestContext"]["sequenceNumber"] for e in events] == list(range(101))


@PACKING
async def test_message_too_big_for_sqs_once_encoded_closes_1009(
    start_node: StartNode,
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    packing: dict[str, Any],
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    origin = SqsOrigin(
        resources.events_queue_url, endpoint_url=moto_endpoint.url, attempts=1, **packing
    )
    node = await start_node(origin=origin)
    async with connect(node.ws_url, max_size=None) as client:
        await client.send("fine")
        # 200 KB of control characters: within the message limit, but six times that once
        # JSON-escaped, more than one SQS message holds.
        await client.send("\x01" * 200_000)
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
        assert client.close_code == 1009
    _, events = await areceive_events(sqs, resources.events_queue_url, 3)
    kinds = [event["requestContext"]["eventType"] for event in events]
    assert kinds == ["CONNECT", "MESSAGE", "DISCONNECT"]
    assert [e["requestContext"]["sequenceNumber"] for e in events] == [0, 1, 2]
    assert events[2]["disconnectStatusCode"] == 1009
    assert node.node.counters["messagesTooLargeForOrigin"] == 1


@PACKING
async def test_client_limit_lowered_to_fit_a_small_queue(
    start_node: StartNode,
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    packing: dict[str, Any],
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    sqs.set_queue_attributes(
        QueueUrl=resources.events_queue_url, Attributes={"MaximumMessageSize": "262144"}
    )
    origin = SqsOrigin(
        resources.events_queue_url, endpoint_url=moto_endpoint.url, attempts=1, **packing
    )
    node = await start_node(origin=origin, max_message_bytes=256 * 1024)
    async with connect(node.ws_url, max_size=None) as client:
        await client.send(bytes(180 * 1024))  # fits once base64-encoded
        await client.send(bytes(200 * 1024))  # would not: refused by the lowered limit
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
        assert client.close_code == 1009
    _, events = await areceive_events(sqs, resources.events_queue_url, 3)
    kinds = [event["requestContext"]["eventType"] for event in events]
    assert kinds == ["CONNECT", "MESSAGE", "DISCONNECT"]


async def test_sigterm_drains_packed_events_to_a_fifo_queue(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """A node process with its default packing: SIGTERM closes every client with 1001 and every
    DISCONNECT reaches the queue, packed, before the process exits."""
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    process, addresses = await start_process(
        "--listen", "127.0.0.1:0",
        "--command-listen", "",
        "--origin-transport", "sqs",
        "--events-queue-url", resources.events_queue_url,
        "--events-linger-ms", "50",
        "--events-fifo-groups", "4",
        "--drain-seconds", "5",
        expect=("websocketAddress",),
        env=moto_endpoint.environment(),
    )  # fmt: skip
    try:
        url = f"ws://{addresses['websocketAddress']}"
        clients = list(await asyncio.gather(*(connect(url) for _ in range(30))))
        for client in clients:
            await client.send("before the drain")
        process.send_signal(signal.SIGTERM)
        for client in clients:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 5)
            assert client.close_code == 1001
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    messages, events = await areceive_events(sqs, resources.events_queue_url, 90)
    assert len(messages) < 45  # packed (about 3 event types x 4 groups, if nothing straggles)
    kinds = Counter(event["requestContext"]["eventType"] for event in events)
    assert kinds == {"CONNECT": 30, "MESSAGE": 30, "DISCONNECT": 30}
    assert {e["disconnectStatusCode"] for e in events if "disconnectStatusCode" in e} == {1001}
