"""Events to SQS (and through SNS) on moto: batched within bounds, grouped and ordered per
connection, failed entries resent alone, an unreachable endpoint retried until it returns."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from websockets.asyncio.client import connect

from runtime.core.sqs_batches import ATTRIBUTE_RESERVE, SQS_MAX_CALL_BYTES
from runtime.local.provision import provision
from runtime.names import ResourceNames
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


def unpack(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one received message: a pack's, or the message's own event."""
    document = json.loads(message["Body"])
    return document.get("events", [document])


async def areceive_events(
    sqs: Any, queue_url: str, count: int, timeout: float = 20.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read messages until they hold `count` events: (messages, their events in order)."""
    received: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} events arrived"
        more = await areceive(sqs, queue_url, 1)
        received += more
        found += [event for message in more for event in unpack(message)]
    return received, found


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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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
    # A FIFO call holds at most one message of a group (were two side by side, the service could
    # fail the first and take the second): one connection's events go a call each.
    assert [len(call) for call in calls.calls] == [1] * 201
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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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
    # Two large ones fit 1 MiB per call; a FIFO call holds one message per connection at most,
    # so the small connection's 25 go a call each, its first 4 beside the large ones.
    assert [len(call) for call in calls.calls] == [3, 3, 3, 2] + [1] * 21
    for call in calls.calls:
        assert sum(len(e["MessageBody"].encode()) for e in call) <= SQS_MAX_CALL_BYTES
        assert len({e["MessageGroupId"] for e in call}) == len(call)
    received = await areceive(sqs, resources.events_queue_url, len(batch))
    for connection_id, count in ((first, 4), (second, 3), (third, 25)):
        sequence = [context(m)["sequenceNumber"] for m in of_group(received, connection_id)]
        assert sequence == list(range(count))


async def test_standard_queue_gets_no_group_fields(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    names = ResourceNames(environment_name, fifo=False)
    resources = provision(sqs, moto_endpoint.client("sns"), names)
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
    resources = provision(sqs, sns, ResourceNames(environment_name), events_topic=True)
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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    await origin.start()
    first, second = ISSUER.issue(), ISSUER.issue()
    batch = message_events(first, 4) + message_events(second, 3)
    bodies = [event.decode() for event in batch]
    f, s = bodies[:4], bodies[4:]
    # `first`'s first event and `second`'s second fail once. A FIFO call holds one message of a
    # connection at most: had `first`'s 2nd been beside its 1st, the service could have taken it
    # and the resent 1st would land behind it.
    calls.fail_once = {f[0], s[1]}
    try:
        await origin.deliver(batch)
    finally:
        await origin.close()
    assert [calls.bodies(i) for i in range(len(calls.calls))] == [
        [f[0], s[0]],
        [f[0]],  # resent alone, before `first` goes on
        [f[1], s[1]],
        [s[1]],
        [f[2], s[2]],
        [f[3]],
    ]
    assert origin.stats()["entriesResent"] == 2
    received = await areceive(sqs, resources.events_queue_url, 7)
    assert len(received) == 7
    for connection_id, count in ((first, 4), (second, 3)):
        sequence = [context(m)["sequenceNumber"] for m in of_group(received, connection_id)]
        assert sequence == list(range(count))


async def test_an_entry_the_service_refuses_for_good_is_named_and_not_retried(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """moto's SNS fails a message over 256 KiB alone (SenderFault) within a PublishBatch."""
    sqs, sns = moto_endpoint.client("sqs"), moto_endpoint.client("sns")
    resources = provision(sqs, sns, ResourceNames(environment_name), events_topic=True)
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
        # A FIFO call holds one message of a connection at most: [small, second's 1st], then
        # [large, second's 2nd]; the refused one is not retried within the deliver.
        assert [len(call) for call in calls.calls] == [2, 2]
        with pytest.raises(OriginUnavailable, match=large_id):
            await origin.deliver(batch)  # the node hands the batch again
        assert [len(call) for call in calls.calls] == [2, 2, 1]  # only what is missing
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
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
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


# --- packed events ------------------------------------------------------------------------------


def packed_origin(
    kind: type[SqsOrigin] | type[SnsOrigin], target: str, url: str, **extra: Any
) -> Any:
    settings: dict[str, Any] = {
        "endpoint_url": url,
        "events_per_message": 1000,
        "linger": 0.05,
        "fifo_groups": 4,
        "group_prefix": "n1-b",
    }
    return kind(target, **{**settings, **extra})


async def send_from_clients(ws_url: str, clients: int, count: int, routes: int = 1) -> None:
    """`clients` connections sending `count` messages each, interleaved, over `routes` routes
    (a connection changing routes starts a new message: its order must hold on FIFO)."""
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(ws_url)) for _ in range(clients)]
        for index in range(count):
            for client in sockets:
                await client.send(json.dumps({"action": f"r{index % routes}", "n": index}))


@pytest.mark.parametrize("alternate", [False, True], ids=["one-route", "routes-alternating"])
async def test_packed_events_reach_a_fifo_queue_in_order_per_connection_in_few_messages(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str, alternate: bool
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
    origin = packed_origin(SqsOrigin, resources.events_queue_url, moto_endpoint.url)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    node = await start_node(origin=origin, route_selection_expression="$request.body.action")
    clients, count = 6, 60
    await send_from_clients(node.ws_url, clients, count, routes=2 if alternate else 1)
    expected = clients * (count + 2)  # CONNECT, the messages, DISCONNECT
    received, _ = await areceive_events(sqs, resources.events_queue_url, expected)
    if not alternate:
        assert len(received) < expected / 5  # packed
    by_connection: dict[str, list[int]] = {}
    for message in received:
        group = message["Attributes"]["MessageGroupId"]
        assert group in {f"n1-b{n}" for n in range(4)}
        kinds = {
            (e["requestContext"]["eventType"], e["requestContext"]["routeKey"])
            for e in unpack(message)
        }
        assert kinds == {
            attributes(message)
        }  # one type and route per message, as its attributes say
        assert len(message["Body"].encode()) <= 64 << 10
        for event in unpack(message):
            connection = event["requestContext"]["connectionId"]
            by_connection.setdefault(connection, []).append(
                event["requestContext"]["sequenceNumber"]
            )
    assert len(by_connection) == clients
    for sequence in by_connection.values():  # FIFO hands a group's messages in order
        assert sequence == list(range(count + 2))
    for call in calls.calls:
        for entry in call:
            members = json.loads(entry["MessageBody"])["events"]
            ids = ",".join(e["requestContext"]["messageId"] for e in members)
            assert entry["MessageDeduplicationId"] == hashlib.sha256(ids.encode()).hexdigest()
    assert origin.stats()["eventsSent"] == expected


async def test_packed_events_through_sns_to_a_standard_queue(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs, sns = moto_endpoint.client("sqs"), moto_endpoint.client("sns")
    names = ResourceNames(environment_name, fifo=False)
    resources = provision(sqs, sns, names, events_topic=True)
    assert resources.events_topic_arn is not None
    origin = packed_origin(SnsOrigin, resources.events_topic_arn, moto_endpoint.url)
    calls = BatchCalls(origin.client, "publish_batch", "PublishBatchRequestEntries")
    node = await start_node(origin=origin)
    await send_from_clients(node.ws_url, 3, 40)
    expected = 3 * 42
    received, _ = await areceive_events(sqs, resources.events_queue_url, expected)
    assert all("MessageGroupId" not in e for call in calls.calls for e in call)
    assert len(received) < expected / 5
    for message in received:
        events_ = unpack(message)
        assert {e["requestContext"]["eventType"] for e in events_} == {attributes(message)[0]}
    ids = [e["requestContext"]["messageId"] for m in received for e in unpack(m)]
    assert len(ids) == len(set(ids)) == expected


async def test_lingering_gathers_a_trickle_into_one_message(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    names = ResourceNames(environment_name, fifo=False)
    resources = provision(sqs, moto_endpoint.client("sns"), names)
    origin = packed_origin(SqsOrigin, resources.events_queue_url, moto_endpoint.url, linger=0.5)
    calls = BatchCalls(origin.client, "send_message_batch", "Entries")
    node = await start_node(origin=origin)
    async with connect(node.ws_url) as client:
        await wait_until(lambda: len(calls.calls) == 1)  # the CONNECT, after the linger
        started = time.monotonic()
        for index in range(10):
            await client.send(f"trickle {index}")
            await asyncio.sleep(0.02)
        await wait_until(lambda: len(calls.calls) == 2)
        assert time.monotonic() - started >= 0.45  # held for the linger, not sent at once
        [[entry]] = calls.calls[1:]
        assert [e["body"] for e in json.loads(entry["MessageBody"])["events"]] == [
            f"trickle {index}" for index in range(10)
        ]


async def test_a_pack_the_service_refuses_is_narrowed_to_the_event_it_refuses(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
    origin = packed_origin(SqsOrigin, resources.events_queue_url, moto_endpoint.url)
    real = origin.client.send_message_batch

    def refuse_poison(**kwargs: Any) -> dict[str, Any]:
        poisoned = [e for e in kwargs["Entries"] if "poison" in e["MessageBody"]]
        passing = [e for e in kwargs["Entries"] if e not in poisoned]
        response = real(**{**kwargs, "Entries": passing}) if passing else {}
        failed = [
            {"Id": e["Id"], "Code": "InvalidMessageContents", "Message": "no", "SenderFault": True}
            for e in poisoned
        ]
        return {**response, "Failed": [*response.get("Failed", []), *failed]}

    origin.client.send_message_batch = refuse_poison
    await origin.start()
    first, second = ISSUER.issue(), ISSUER.issue()
    batch = [
        *message_events(first, 2),
        message_events(first, 1, size=20)[0].replace(b"0...", b"poison"),
        *message_events(first, 1),
        *message_events(second, 3),
    ]
    poison_id = json.loads(batch[2])["requestContext"]["messageId"]
    try:
        with pytest.raises(OriginRefused, match=poison_id) as caught:
            await origin.deliver(batch)
        assert caught.value.refused == (2,)
        survivors = [event for index, event in enumerate(batch) if index != 2]
        await origin.deliver(survivors)  # the node hands back what is left: only the rest goes
    finally:
        await origin.close()
    _, found = await areceive_events(sqs, resources.events_queue_url, 6)
    got = [event["requestContext"]["messageId"] for event in found]
    assert sorted(got) == sorted(json.loads(e)["requestContext"]["messageId"] for e in survivors)


async def test_packs_the_service_fails_are_resent_and_arrive_once_in_order(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
    origin = packed_origin(SqsOrigin, resources.events_queue_url, moto_endpoint.url)
    real = origin.client.send_message_batch
    failed_once: list[str] = []

    def fail_every_other_first(**kwargs: Any) -> dict[str, Any]:
        """The service fails every other entry of the first call (not the sender's fault)."""
        entries = kwargs["Entries"]
        failing = entries[::2] if not failed_once else []
        failed_once.extend(e["Id"] for e in failing)
        passing = [e for e in entries if e not in failing]
        response = real(**{**kwargs, "Entries": passing}) if passing else {}
        failed = [
            {"Id": e["Id"], "Code": "InternalError", "Message": "x", "SenderFault": False}
            for e in failing
        ]
        return {**response, "Failed": [*response.get("Failed", []), *failed]}

    origin.client.send_message_batch = fail_every_other_first
    await origin.start()
    connections = [ISSUER.issue() for _ in range(12)]
    batch = [event for c in connections for event in message_events(c, 5)]
    try:
        await origin.deliver(batch)
    finally:
        await origin.close()
    assert failed_once  # some packs failed and went again
    assert origin.stats()["entriesResent"] == len(failed_once)
    _, found = await areceive_events(sqs, resources.events_queue_url, len(batch))
    ids = [event["requestContext"]["messageId"] for event in found]
    assert sorted(ids) == sorted(json.loads(e)["requestContext"]["messageId"] for e in batch)
    for connection in connections:
        mine = [e for e in found if e["requestContext"]["connectionId"] == connection]
        assert [e["body"] for e in mine] == [f"{i}".ljust(8, ".") for i in range(5)]
