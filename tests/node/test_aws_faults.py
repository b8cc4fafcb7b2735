"""A node on AWS messaging when things go wrong: the endpoint vanishes mid-stream and comes back,
a client message too big for one SQS message once encoded (each with events one per message and
packed); calls and entries that fail, and answers that are lost after the work was done, injected
by the AWS stand-in, on the events path and the commands path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.aws_standin import AwsStandIn
from runtime.core import sqs_batches
from runtime.local.provision import provision
from runtime.names import ResourceNames
from runtime.transports.base import OriginUnavailable
from runtime.transports.sqs_commands import SqsCommandPoller
from runtime.transports.sqs_origin import SqsOrigin
from tests.aws import CREDENTIALS, REGION, MotoEndpoint
from tests.conftest import StartNode, connect_id, send
from tests.processes import start_process
from tests.transports.test_sqs_origin import (
    ISSUER,
    areceive_events,
    message_events,
    packed_origin,
    unpack,
    wait_until,
)

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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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


# ---- faults injected by the AWS stand-in --------------------------------------------------------


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AwsStandIn]:
    for key, value in {**CREDENTIALS, "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    server = AwsStandIn(region=REGION)
    await server.start()
    try:
        yield server
    finally:
        server.inject()
        await server.stop()


def standin_sqs(standin: AwsStandIn) -> Any:
    return boto3.client("sqs", region_name=REGION, endpoint_url=standin.url)


async def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message left in the queue, read and deleted, until a 1 s long poll finds none."""

    def take() -> list[dict[str, Any]]:
        found = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = found.get("Messages", [])
        if messages:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        return list(messages)

    messages: list[dict[str, Any]] = []
    while more := await asyncio.to_thread(take):
        messages += more
    return messages


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
async def test_packed_events_survive_failed_calls_entries_and_lost_answers(
    start_node: StartNode, standin: AwsStandIn, fifo: bool
) -> None:
    """Every 7th SendMessageBatch fails whole, every 5th of the rest is stored and then answered
    500, every 3rd entry fails alone. The node sends again (its own retries: boto3 makes one
    attempt) and nothing is lost; on FIFO its deduplication IDs make a resent pack count once,
    so every connection's events arrive once and in order; a standard queue may hold a resent
    pack twice (at-least-once, docs/redelivery.md)."""
    queue_url = standin.create_queue("events.fifo" if fifo else "events")
    standin.inject(
        calls={"SendMessageBatch": 7},
        answers={"SendMessageBatch": 5},
        entries={"SendMessageBatch": 3},
    )
    origin = packed_origin(SqsOrigin, queue_url, standin.url, attempts=1, linger=0.01)
    node = await start_node(origin=origin, origin_unavailable_seconds=60)
    clients, count = 5, 80
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(node.ws_url)) for _ in range(clients)]
        for index in range(count):  # in bursts, so that the node makes many calls
            for client in sockets:
                await client.send(json.dumps({"n": index}))
            if index % 10 == 9:
                await asyncio.sleep(0.05)
    expected = clients * (count + 2)  # CONNECT, the messages, DISCONNECT
    # A failed call backs the pump off (up to 5 s): on a loaded machine this takes a while.
    await wait_until(lambda: origin.stats()["eventsSent"] >= expected, timeout=90)
    injected = dict(standin.faults.injected)
    assert {key.split(".")[0] for key in injected} == {"calls", "answers", "entries"}, injected
    standin.inject()
    events = [event for message in await drain(standin_sqs(standin), queue_url)
              for event in unpack(message)]  # fmt: skip
    by_connection: dict[str, list[int]] = {}
    for event in events:
        context = event["requestContext"]
        by_connection.setdefault(context["connectionId"], []).append(context["sequenceNumber"])
    assert len(by_connection) == clients
    for sequence in by_connection.values():
        if fifo:  # once each, in order
            assert sequence == list(range(count + 2))
        else:  # every one, some perhaps twice
            assert sorted(set(sequence)) == list(range(count + 2))
    if fifo:
        assert len(events) == expected
    assert origin.stats()["eventsSent"] == expected
    assert node.node.counters["messagesTooLargeForOrigin"] == 0


async def test_commands_survive_failed_receives_and_deletes(
    start_node: StartNode, standin: AwsStandIn
) -> None:
    """Every 3rd ReceiveMessage fails, every 2nd DeleteMessageBatch entry fails (its message
    comes back after the visibility timeout and runs again) and every 4th DeleteMessageBatch is
    done but answered 500. Every command reaches its client; a repeat only for a failed delete."""
    queue_url = standin.create_queue("commands")
    node = await start_node()
    async with connect(node.ws_url) as client:
        await wait_until(lambda: bool(node.origin.of_type("CONNECT")))
        connection = connect_id(node.origin)
        standin.inject(
            calls={"ReceiveMessage": 3},
            answers={"DeleteMessageBatch": 4},
            entries={"DeleteMessageBatch": 2},
        )
        poller = SqsCommandPoller(
            queue_url,
            node.node,
            max_payload_bytes=node.node.settings.send_buffer_bytes,
            visibility_timeout=2,
            wait_seconds=1,
            endpoint_url=standin.url,
            attempts=1,
        )
        await poller.start()
        try:
            total = 60
            fed = standin.feed(
                queue_url,
                lambda index: json.dumps(send([connection], f"c{index}")),
                rate=200,
                count=total,
            )
            assert await fed == total
            got: list[str] = []

            async def until_all() -> None:
                while len(set(got)) < total:
                    got.append(str(await client.recv()))

            await asyncio.wait_for(until_all(), 30)
            await wait_until(lambda: standin.depth(queue_url) == 0, timeout=15)
        finally:
            await poller.stop()
        injected = dict(standin.faults.injected)
    assert set(got) == {f"c{index}" for index in range(total)}
    assert injected.get("calls.ReceiveMessage", 0) >= 1
    assert injected.get("answers.DeleteMessageBatch", 0) >= 1
    failed_deletes = injected.get("entries.DeleteMessageBatch", 0)
    assert failed_deletes >= 1
    assert len(got) - total <= failed_deletes  # a repeat only where a delete failed
    assert poller.stats()["errors"] >= 1


async def test_a_fifo_pack_whose_answer_was_lost_goes_again_as_it_was(
    standin: AwsStandIn,
) -> None:
    """The call that carried a pack failed, perhaps after SQS stored it. Handed again with newer
    events of the same connection, the pack goes again unchanged (same deduplication ID, so SQS
    drops it if it did arrive), and the newer events in a pack of their own after it."""
    queue_url = standin.create_queue("events.fifo")
    origin = packed_origin(SqsOrigin, queue_url, standin.url, attempts=1, linger=0.0)
    await origin.start()
    connection = ISSUER.issue()
    batch = message_events(connection, 10)
    try:
        standin.inject(answers={"SendMessageBatch": 1})  # stored, then answered 500
        with pytest.raises(OriginUnavailable):
            await origin.deliver(batch[:4])
        standin.inject()
        await origin.deliver(batch)  # the pump hands the batch again, grown
    finally:
        await origin.close()
    messages = await drain(standin_sqs(standin), queue_url)
    packs = [[e["requestContext"]["sequenceNumber"] for e in unpack(m)] for m in messages]
    assert packs == [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]  # the first once, though sent twice
    # The lost one; then the pack again and, one pack of a group a call, the newer one.
    assert standin.counts()["requests"]["sqs.SendMessageBatch"] == 3


async def test_route_keys_a_client_invents_are_cached_within_bounds(
    start_node: StartNode, standin: AwsStandIn
) -> None:
    """A client sends 3,000 messages, each routed by a route key of its own (128 characters,
    the most a route key may have). The caches of attribute values stay at their bounds, and an
    honest client's events all reach the queue, in order."""
    queue_url = standin.create_queue("events.fifo")
    origin = packed_origin(SqsOrigin, queue_url, standin.url, linger=0.005)
    node = await start_node(origin=origin, route_selection_expression="$request.body.action")
    hostile_count, honest_count = 3000, 50
    async with connect(node.ws_url) as hostile, connect(node.ws_url) as honest:
        for index in range(hostile_count):
            await hostile.send(json.dumps({"action": f"{index:0128d}"}))
            if index % 60 == 0:
                await honest.send(json.dumps({"action": "chat", "n": index // 60}))
    expected = hostile_count + honest_count + 4  # and two CONNECTs, two DISCONNECTs
    await wait_until(lambda: origin.stats()["eventsSent"] >= expected, timeout=30)
    for cached in (sqs_batches.attributes_size, sqs_batches._attribute_text):
        info = cached.cache_info()
        assert info.maxsize is not None and info.currsize <= info.maxsize
    events = [e for m in await drain(standin_sqs(standin), queue_url) for e in unpack(m)]
    routes = Counter(event["requestContext"]["routeKey"] for event in events)
    assert len(routes) == hostile_count + 3  # each invented key, chat, $connect, $disconnect
    chats = [
        json.loads(event["body"])["n"]
        for event in events
        if event["requestContext"]["routeKey"] == "chat"
    ]
    assert chats == list(range(honest_count))
    assert len(events) == expected
