"""A node on AWS messaging when things go wrong: the endpoint vanishes mid-stream and comes back,
and a client message too big for one SQS message once encoded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

from moto.server import ThreadedMotoServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from runtime.names import ResourceNames
from runtime.provision import provision
from runtime.transports.sqs_origin import SqsOrigin
from tests.aws import MotoEndpoint
from tests.conftest import StartNode
from tests.transports.test_sqs_origin import areceive


async def test_no_message_lost_while_aws_is_away(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
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
            received = await areceive(sqs, resources.events_queue_url, 101)
    finally:
        await asyncio.to_thread(server.stop)
    events = [json.loads(message["Body"]) for message in received]
    assert [event.get("body") for event in events] == [None] + [f"m{i}" for i in range(100)]
    assert [e["requestContext"]["sequenceNumber"] for e in events] == list(range(101))


async def test_message_too_big_for_sqs_once_encoded_closes_1009(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url, attempts=1)
    node = await start_node(origin=origin)
    async with connect(node.ws_url, max_size=None) as client:
        await client.send("fine")
        # 200 KB of control characters: within the message limit, but six times that once
        # JSON-escaped, more than one SQS message holds.
        await client.send("\x01" * 200_000)
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
        assert client.close_code == 1009
    received = await areceive(sqs, resources.events_queue_url, 3)
    events = [json.loads(message["Body"]) for message in received]
    kinds = [event["requestContext"]["eventType"] for event in events]
    assert kinds == ["CONNECT", "MESSAGE", "DISCONNECT"]
    assert [e["requestContext"]["sequenceNumber"] for e in events] == [0, 1, 2]
    assert events[2]["disconnectStatusCode"] == 1009
    assert node.node.counters["messagesTooLargeForOrigin"] == 1


async def test_client_limit_lowered_to_fit_a_small_queue(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    sqs.set_queue_attributes(
        QueueUrl=resources.events_queue_url, Attributes={"MaximumMessageSize": "262144"}
    )
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url, attempts=1)
    node = await start_node(origin=origin, max_message_bytes=256 * 1024)
    async with connect(node.ws_url, max_size=None) as client:
        await client.send(bytes(180 * 1024))  # fits once base64-encoded
        await client.send(bytes(200 * 1024))  # would not: refused by the lowered limit
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
        assert client.close_code == 1009
    received = await areceive(sqs, resources.events_queue_url, 3)
    kinds = [json.loads(m["Body"])["requestContext"]["eventType"] for m in received]
    assert kinds == ["CONNECT", "MESSAGE", "DISCONNECT"]
