"""Events to SQS (and through SNS) on moto: batched within bounds, grouped and ordered per
connection, failed entries resent alone, an unreachable endpoint retried until it returns."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from websockets.asyncio.client import connect

from runtime.core.sqs_batches import ATTRIBUTE_RESERVE, SQS_MAX_CALL_BYTES
from runtime.names import ResourceNames
from runtime.provision import provision
from runtime.transports.base import OriginRefused, OriginUnavailable
from runtime.transports.sqs_origin import SnsOrigin, SqsOrigin
from runtime.wire import events
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from tests.aws import MotoEndpoint
from tests.conftest import StartNode

NODE = events.NodeContext(stage="test", region="us-east-1")
DETAILS = events.HandshakeDetails("/", [], [], "203.0.113.9", None)
ISSUER = ConnectionIdIssuer("us-east-1", NodeAddress("10.0.0.1", 9100))


def message_events(connection_id: str, count: int, size: int = 8) -> list[bytes]:
    fragment = events.connection_fragment(NODE, connection_id, 1, DETAILS)
    return [
        events.message_event(fragment, index, 2, "$default", f"{index}".ljust(size, "."))
        for index in range(count)
    ]


class BatchCalls:
    """Records each batch call a transport makes; can fail chosen entries once (a fault hook)."""

    def __init__(self, client: Any, method: str, entries_key: str) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail_once: set[str] = set()  # message bodies to fail the first time they are sent
        self._real = getattr(client, method)
        self._entries_key = entries_key
        setattr(client, method, self._call)

    def _call(self, **kwargs: Any) -> dict[str, Any]:
        entries = kwargs[self._entries_key]
        self.calls.append(entries)
        failing = [e for e in entries if _body(e) in self.fail_once]
        self.fail_once -= {_body(e) for e in failing}
        passing = [e for e in entries if e not in failing]
        response = self._real(**{**kwargs, self._entries_key: passing}) if passing else {}
        failed = [
            {"Id": e["Id"], "Code": "InternalError", "Message": "injected", "SenderFault": False}
            for e in failing
        ]
        return {**response, "Failed": [*response.get("Failed", []), *failed]}

    def bodies(self, call: int) -> list[str]:
        return [_body(entry) for entry in self.calls[call]]


def _body(entry: dict[str, Any]) -> str:
    return entry.get("MessageBody") or entry["Message"]


def receive(sqs: Any, queue_url: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Read and delete `count` messages (blocking; tests run it in a thread)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["MessageGroupId"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            got.extend(messages)
    assert len(got) >= count, f"{len(got)} of {count} messages arrived in {timeout}s"
    return got


async def areceive(sqs: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    return await asyncio.to_thread(receive, sqs, queue_url, count)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def context(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["Body"])["requestContext"]


def attributes(message: dict[str, Any]) -> tuple[str, str]:
    values = message["MessageAttributes"]
    return values["eventType"]["StringValue"], values["routeKey"]["StringValue"]


def of_group(messages: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["Attributes"].get("MessageGroupId") == group]


async def send_routed(ws_url: str, count: int, read: Callable[[], Any]) -> list[dict[str, Any]]:
    async with connect(ws_url) as client:
        for index in range(count):
            await client.send(json.dumps({"action": "chat" if index % 2 else "ping", "n": index}))
        return await read()


async def test_node_events_reach_the_fifo_queue_in_order_per_connection(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    node = await start_node(origin=origin, route_selection_expression="$request.body.action")
    assert origin.max_batch_events == 10
    assert origin.max_batch_bytes == SQS_MAX_CALL_BYTES - 10 * ATTRIBUTE_RESERVE

    received = await send_routed(
        node.ws_url, 200, lambda: areceive(sqs, resources.events_queue_url, 201)
    )
    connection_id = context(received[0])["connectionId"]
    mine = of_group(received, connection_id)
    assert len(mine) == 201  # every event in the connection's message group
    assert [context(m)["sequenceNumber"] for m in mine] == list(range(201))
    assert [json.loads(json.loads(m["Body"])["body"])["n"] for m in mine[1:]] == list(range(200))
    assert attributes(mine[0]) == ("CONNECT", "$connect")
    assert [attributes(m) for m in mine[1:5]] == [("MESSAGE", "ping"), ("MESSAGE", "chat")] * 2
    assert max(len(call) for call in calls.calls) <= 10
    assert len(calls.calls) < 100  # batched
    for call in calls.calls:
        assert all(e["MessageGroupId"] == connection_id for e in call)
        assert all(
            e["MessageDeduplicationId"]
            == json.loads(e["MessageBody"])["requestContext"]["messageId"]
            for e in call
        )


async def test_large_events_split_by_bytes_and_chained_per_connection(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url, concurrency=3)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    await origin.start()
    first, second, third = ISSUER.issue(), ISSUER.issue(), ISSUER.issue()
    batch = [
        *message_events(first, 4, size=300_000),
        *message_events(second, 3, size=300_000),
        *message_events(third, 25),
    ]
    try:
        await origin.deliver(batch)
    finally:
        await origin.close()
    # 3 + (1 + 2) + 1 large ones fit 1 MiB per call; the small connection needs 3 calls.
    assert [len(call) for call in calls.calls[:3]] == [3, 3, 10]
    for call in calls.calls:
        assert sum(len(e["MessageBody"].encode()) for e in call) <= SQS_MAX_CALL_BYTES
        assert len(call) <= 10
    received = await areceive(sqs, resources.events_queue_url, len(batch))
    for connection_id, count in ((first, 4), (second, 3), (third, 25)):
        sequence = [context(m)["sequenceNumber"] for m in of_group(received, connection_id)]
        assert sequence == list(range(count))


async def test_standard_queue_gets_no_group_fields(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    names = ResourceNames(environment_name, fifo=False)
    resources = provision(sqs, moto_endpoint.client("sns"), None, names)
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    node = await start_node(origin=origin)
    received = await send_routed(
        node.ws_url, 20, lambda: areceive(sqs, resources.events_queue_url, 21)
    )
    assert sorted(context(m)["sequenceNumber"] for m in received) == list(range(21))
    assert all("MessageGroupId" not in m["Attributes"] for m in received)
    assert all(set(e) == {"Id", "MessageBody", "MessageAttributes"} for c in calls.calls for e in c)
    assert {attributes(m) for m in received} == {
        ("CONNECT", "$connect"),
        ("MESSAGE", "$default"),
    }


async def test_events_through_the_sns_topic_keep_group_and_attributes(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs, sns = moto_endpoint.client("sqs"), moto_endpoint.client("sns")
    resources = provision(sqs, sns, None, ResourceNames(environment_name), events_topic=True)
    assert resources.events_topic_arn is not None
    origin = SnsOrigin(resources.events_topic_arn, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "publish_batch", "PublishBatchRequestEntries")
    node = await start_node(origin=origin, route_selection_expression="$request.body.action")
    received = await send_routed(
        node.ws_url, 30, lambda: areceive(sqs, resources.events_queue_url, 31)
    )
    connection_id = context(received[0])["connectionId"]
    mine = of_group(received, connection_id)
    assert [context(m)["sequenceNumber"] for m in mine] == list(range(31))
    assert [attributes(m) for m in mine[:3]] == [
        ("CONNECT", "$connect"),
        ("MESSAGE", "ping"),
        ("MESSAGE", "chat"),
    ]
    assert origin.max_batch_bytes == (256 << 10) - 10 * ATTRIBUTE_RESERVE  # the topic's default
    assert max(len(call) for call in calls.calls) <= 10


async def test_failed_entries_alone_are_resent_before_the_connection_goes_on(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    await origin.start()
    first, second = ISSUER.issue(), ISSUER.issue()
    batch = message_events(first, 15) + message_events(second, 10)
    bodies = [event.decode() for event in batch]
    # The last entry of `first` in call 1 and of `second` in call 2 fail once.
    calls.fail_once = {bodies[9], bodies[19]}
    try:
        await origin.deliver(batch)
    finally:
        await origin.close()
    assert (
        [calls.bodies(i) for i in range(len(calls.calls))]
        == [
            bodies[0:10],
            [bodies[9]],  # resent alone, before `first` continues in the next call
            bodies[10:20],
            [bodies[19]],
            bodies[20:25],
        ]
    )
    assert origin.stats()["entriesResent"] == 2
    received = await areceive(sqs, resources.events_queue_url, 25)
    assert len(received) == 25
    for connection_id, count in ((first, 15), (second, 10)):
        sequence = [context(m)["sequenceNumber"] for m in of_group(received, connection_id)]
        assert sequence == list(range(count))


async def test_an_entry_the_service_refuses_for_good_is_named_and_not_retried(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """moto's SNS fails a message over 256 KiB alone (SenderFault) within a PublishBatch."""
    sqs, sns = moto_endpoint.client("sqs"), moto_endpoint.client("sns")
    resources = provision(sqs, sns, None, ResourceNames(environment_name), events_topic=True)
    assert resources.events_topic_arn is not None
    # Configured as if the topic took 1 MiB; this one does not (the service has the last word).
    origin = SnsOrigin(
        resources.events_topic_arn, endpoint_url=moto_endpoint.url, max_message_bytes=1 << 20
    )
    calls = BatchCalls(origin.client, "publish_batch", "PublishBatchRequestEntries")
    await origin.start()
    first, second = ISSUER.issue(), ISSUER.issue()
    small, large = message_events(first, 1)[0], message_events(first, 1, size=300_000)[0]
    batch = [small, large, *message_events(second, 2)]
    large_id = json.loads(large)["requestContext"]["messageId"]
    try:
        with pytest.raises(OriginRefused, match=large_id) as caught:
            await origin.deliver(batch)
        assert caught.value.refused == (1,)
        assert len(calls.calls) == 1  # not retried within the deliver
        with pytest.raises(OriginUnavailable, match=large_id):
            await origin.deliver(batch)  # the node hands the batch again
        assert [len(call) for call in calls.calls] == [4, 1]  # only what is missing
    finally:
        await origin.close()
    received = await areceive(sqs, resources.events_queue_url, 3)
    assert len(received) == 3
    assert large_id not in {context(m)["messageId"] for m in received}


async def test_an_event_larger_than_the_queue_takes_is_refused_before_sending(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    queue_url = sqs.create_queue(
        QueueName=f"{environment_name}-small", Attributes={"MaximumMessageSize": "2048"}
    )["QueueUrl"]
    origin = SqsOrigin(queue_url, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    await origin.start()
    first, second = ISSUER.issue(), ISSUER.issue()
    before, _, after = message_events(first, 3)
    large = message_events(first, 2, size=4000)[1]
    batch = [before, large, after, *message_events(second, 1)]
    assert origin.max_event_bytes == 2048 - ATTRIBUTE_RESERVE
    try:
        with pytest.raises(OriginRefused, match="the most a message may be is 2048") as caught:
            await origin.deliver(batch)
    finally:
        await origin.close()
    assert caught.value.refused == (1,)
    # `after` waits behind the refused event of its connection; the rest is sent.
    assert calls.bodies(0) == [before.decode(), batch[3].decode()]
    assert origin.stats()["entriesRefused"] == 1


async def test_a_call_refused_whole_for_one_message_is_narrowed_to_that_message(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """The queue's limit shrank after the transport read it: the service refuses the whole
    call. Its entries go again one call each; only the one that no longer fits is refused,
    those behind it in its connection wait, and the rest is delivered."""
    sqs = moto_endpoint.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{environment_name}-shrinking")["QueueUrl"]
    origin = SqsOrigin(queue_url, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    await origin.start()
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"MaximumMessageSize": "2048"})
    first, second = ISSUER.issue(), ISSUER.issue()
    before, _, after = message_events(first, 3)
    large = message_events(first, 2, size=4000)[1]
    batch = [before, large, after, *message_events(second, 2)]
    try:
        with pytest.raises(OriginRefused, match="InvalidParameterValue") as caught:
            await origin.deliver(batch)
        assert caught.value.refused == (1,)
        # One whole call refused, then one call per entry up to and past the culprit; the entry
        # behind it in its connection is held, not sent.
        assert [len(call) for call in calls.calls] == [5, 1, 1, 1, 1]
        await origin.deliver([batch[0], batch[2], batch[3], batch[4]])  # handed again, less it
    finally:
        await origin.close()
    received = await areceive(sqs, queue_url, 4)
    bodies = sorted(m["Body"] for m in received)
    assert bodies == sorted(event.decode() for event in (before, after, *batch[3:]))
    assert origin.stats()["entriesRefused"] == 1


async def test_unreachable_endpoint_then_recovery_through_a_node(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), None, ResourceNames(environment_name))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    origin = SqsOrigin(
        resources.events_queue_url, endpoint_url=f"http://127.0.0.1:{port}", attempts=1
    )
    node = await start_node(origin=origin)  # starts: the limits are read once reachable
    assert origin.limits is None
    with pytest.raises(OriginUnavailable, match="Could not connect"):
        await origin.deliver(message_events(ISSUER.issue(), 1))
    async with connect(node.ws_url) as client:
        for index in range(5):
            await client.send(f"m{index}")
        await wait_until(lambda: node.node.pump.failures >= 1)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        await asyncio.to_thread(server.start)  # the same moto state, at the dead address
        try:
            received = await areceive(sqs, resources.events_queue_url, 6)
        finally:
            await asyncio.to_thread(server.stop)
    bodies = [json.loads(m["Body"]).get("body") for m in received]
    assert bodies == [None, "m0", "m1", "m2", "m3", "m4"]
    assert origin.limits is not None
