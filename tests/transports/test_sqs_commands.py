"""Commands from the SQS commands queue on moto, carried out by a real node, deleted only after."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from moto.server import ThreadedMotoServer
from websockets.asyncio.client import ClientConnection, connect

from runtime.local.provision import Resources, provision
from runtime.names import ResourceNames
from runtime.node.server import Node
from runtime.transports.sqs_commands import SqsCommandPoller, unwrap_notification
from runtime.wire.commands import Command
from tests.aws import MotoEndpoint
from tests.conftest import RunningNode, StartNode, connect_id, send
from tests.doubles.memory import MemoryOrigin

VISIBILITY = 2  # seconds: short, so what comes back comes back within a test


class SlowExecutor:
    """A node that takes `delay` seconds before carrying commands out."""

    def __init__(self, node: Node, delay: float) -> None:
        self.node = node
        self.delay = delay
        self.calls = 0

    async def execute(self, commands: Sequence[Command], *, from_peer: bool = False) -> object:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return await self.node.execute(commands, from_peer=from_peer)


class Setup:
    """An environment on moto, a node with one connected client, and pollers to stop at the end."""

    def __init__(self, moto: MotoEndpoint, resources: Resources, node: RunningNode) -> None:
        self.moto = moto
        self.sqs = moto.client("sqs")
        self.sns = moto.client("sns")
        self.resources = resources
        self.queue_url = resources.commands_queue_url
        self.node = node
        self.pollers: list[SqsCommandPoller] = []

    async def poller(self, executor: Any = None, **options: Any) -> SqsCommandPoller:
        options = {"endpoint_url": self.moto.url, "wait_seconds": 1, **options}
        poller = SqsCommandPoller(
            self.queue_url,
            executor or self.node.node,
            max_payload_bytes=self.node.node.settings.send_buffer_bytes,
            visibility_timeout=VISIBILITY,
            **options,
        )
        await poller.start()
        self.pollers.append(poller)
        return poller

    async def put(self, *bodies: str) -> None:
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        await asyncio.to_thread(
            self.sqs.send_message_batch, QueueUrl=self.queue_url, Entries=entries
        )

    def counts(self) -> tuple[int, int]:
        """(visible, in flight) messages on the commands queue."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )


@pytest.fixture
async def setup(
    start_node: StartNode, moto_endpoint: MotoEndpoint, environment_name: str
) -> AsyncIterator[Setup]:
    sqs, sns = moto_endpoint.client("sqs"), moto_endpoint.client("sns")
    resources = provision(sqs, sns, ResourceNames(environment_name))
    state = Setup(moto_endpoint, resources, await start_node())
    yield state
    for poller in state.pollers:
        await poller.stop()


async def client_of(setup: Setup) -> tuple[ClientConnection, str]:
    client = await connect(setup.node.ws_url)
    origin = setup.node.origin
    assert isinstance(origin, MemoryOrigin)
    await origin.wait_for(lambda events: len(events) >= 1)
    return client, connect_id(origin)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def nothing_more(client: ClientConnection, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.recv(), seconds)


async def test_commands_from_the_topic_reach_the_client_then_are_deleted(setup: Setup) -> None:
    client, connection_id = await client_of(setup)
    poller = await setup.poller()
    await asyncio.to_thread(
        setup.sns.publish,
        TopicArn=setup.resources.commands_topic_arn,
        Message=json.dumps(send([connection_id], "via the topic")),
    )
    assert await asyncio.wait_for(client.recv(), 5) == "via the topic"
    # A subscription without raw delivery wraps the body in an SNS envelope; it is unwrapped.
    envelope = {
        "Type": "Notification",
        "MessageId": "0f6e0f4e",
        "TopicArn": setup.resources.commands_topic_arn,
        "Message": json.dumps(send([connection_id], "in an envelope")),
    }
    await setup.put(json.dumps(envelope))
    assert await asyncio.wait_for(client.recv(), 5) == "in an envelope"
    await wait_until(lambda: poller.stats()["deleted"] == 2)
    assert await asyncio.to_thread(setup.counts) == (0, 0)
    stats = poller.stats()
    assert (stats["received"], stats["executed"], stats["malformed"], stats["errors"]) == (
        2,
        2,
        0,
        0,
    )
    await client.close()


async def test_a_malformed_body_is_left_for_the_dlq_and_holds_nothing_up(setup: Setup) -> None:
    client, connection_id = await client_of(setup)
    poller = await setup.poller(workers=1)
    partly_bad = send([connection_id], "two")
    partly_bad["commands"].insert(0, {"action": "explode"})
    await setup.put(
        json.dumps(send([connection_id], "one")), "not json at all", json.dumps(partly_bad)
    )
    got = {await asyncio.wait_for(client.recv(), 5) for _ in range(2)}
    assert got == {"one", "two"}
    await wait_until(lambda: poller.stats()["deleted"] == 2)
    stats = poller.stats()
    assert (stats["malformed"], stats["rejected"], stats["executed"]) == (1, 1, 2)
    await poller.stop()
    # Not deleted: it comes back after its visibility timeout (and, in time, goes to the DLQ).
    back = await asyncio.to_thread(
        setup.sqs.receive_message,
        QueueUrl=setup.queue_url,
        WaitTimeSeconds=VISIBILITY + 2,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    (message,) = back["Messages"]
    assert message["Body"] == "not json at all"
    assert int(message["Attributes"]["ApproximateReceiveCount"]) >= 2
    assert await asyncio.to_thread(setup.counts) == (0, 1)
    await client.close()


async def test_slow_work_keeps_its_message_hidden_until_done(setup: Setup) -> None:
    client, connection_id = await client_of(setup)
    slow = SlowExecutor(setup.node.node, delay=VISIBILITY * 1.75)
    poller = await setup.poller(slow, workers=2)
    await setup.put(json.dumps(send([connection_id], "slowly")))
    assert await asyncio.wait_for(client.recv(), 10) == "slowly"
    await wait_until(lambda: poller.stats()["deleted"] == 1)
    stats = poller.stats()
    assert stats["extended"] >= 2
    assert stats["received"] == 1 and slow.calls == 1  # never received twice
    await nothing_more(client)
    assert await asyncio.to_thread(setup.counts) == (0, 0)
    await client.close()


async def test_work_cut_short_at_stop_goes_straight_back_to_the_queue(setup: Setup) -> None:
    client, connection_id = await client_of(setup)
    stuck = SlowExecutor(setup.node.node, delay=60)
    first = await setup.poller(stuck, stop_timeout=0.2)
    await setup.put(json.dumps(send([connection_id], "again")))
    await wait_until(lambda: stuck.calls == 1)
    started = time.monotonic()
    await first.stop()
    assert time.monotonic() - started < 2
    assert (first.stats()["deleted"], first.stats()["released"]) == (0, 1)
    second = await setup.poller()
    assert await asyncio.wait_for(client.recv(), 1.5) == "again"  # before the visibility timeout
    await wait_until(lambda: second.stats()["deleted"] == 1)
    await client.close()


async def test_a_node_that_dies_mid_command_leaves_it_to_come_back(setup: Setup) -> None:
    client, connection_id = await client_of(setup)
    stuck = SlowExecutor(setup.node.node, delay=60)
    dying = await setup.poller(stuck, stop_timeout=0)

    def unreachable(**_: Any) -> None:  # a dead node extends and releases nothing
        raise EndpointConnectionError(endpoint_url="http://dead")

    dying.client.change_message_visibility_batch = unreachable
    await setup.put(json.dumps(send([connection_id], "at least once")))
    await wait_until(lambda: stuck.calls == 1)
    received_at = time.monotonic()
    await dying.stop()
    survivor = await setup.poller()
    assert await asyncio.wait_for(client.recv(), VISIBILITY + 3) == "at least once"
    assert time.monotonic() - received_at >= VISIBILITY - 0.5  # only after the timeout
    await wait_until(lambda: survivor.stats()["deleted"] == 1)
    assert dying.stats()["deleted"] == 0
    await client.close()


async def test_an_unreachable_queue_is_retried_until_it_answers(setup: Setup) -> None:
    client, connection_id = await client_of(setup)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    poller = await setup.poller(endpoint_url=f"http://127.0.0.1:{port}", attempts=1)
    await setup.put(json.dumps(send([connection_id], "eventually")))
    await wait_until(lambda: poller.stats()["errors"] >= 1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    await asyncio.to_thread(server.start)
    try:
        assert await asyncio.wait_for(client.recv(), 15) == "eventually"
        await wait_until(lambda: poller.stats()["deleted"] == 1)
        await poller.stop()
    finally:
        await asyncio.to_thread(server.stop)
    await client.close()


def test_sns_envelopes_are_unwrapped_and_other_bodies_left_alone() -> None:
    body = json.dumps({"commands": []})
    envelope = json.dumps(
        {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": body}
    )
    assert unwrap_notification(envelope) == body
    assert unwrap_notification(body) == body
    assert unwrap_notification('{"Type": "Notification", "TopicArn": "x", "Message": 1}') != body
    assert unwrap_notification('"Notification" "TopicArn" {') == '"Notification" "TopicArn" {'


def test_settings_out_of_range_are_refused(moto_endpoint: MotoEndpoint) -> None:
    node: Any = object()
    with pytest.raises(ValueError, match="workers must be between 1 and 64"):
        SqsCommandPoller("q", node, max_payload_bytes=1, workers=0)
    with pytest.raises(ValueError, match="wait_seconds must be between 1 and 20"):
        SqsCommandPoller("q", node, max_payload_bytes=1, wait_seconds=0)
    with pytest.raises(ValueError, match="visibility_timeout must be between 2 and 43200"):
        SqsCommandPoller("q", node, max_payload_bytes=1, visibility_timeout=1)


async def test_deletes_of_messages_done_one_by_one_share_calls(setup: Setup) -> None:
    """Messages arriving one at a time are received one at a time, but their deletes wait up to
    the linger to go ten to a DeleteMessageBatch; and a stop sends what still waits."""
    client, connection_id = await client_of(setup)
    poller = await setup.poller(workers=1, delete_linger=1.0)
    calls: list[int] = []
    delete = poller.client.delete_message_batch

    def counted(**request: Any) -> Any:
        calls.append(len(request["Entries"]))
        return delete(**request)

    poller.client.delete_message_batch = counted
    for index in range(12):  # one at a time: each its own receive
        await setup.put(json.dumps(send([connection_id], f"m{index}")))
        assert await asyncio.wait_for(client.recv(), 5) == f"m{index}"
    await wait_until(lambda: poller.stats()["deleted"] >= 10)
    assert calls[0] == 10  # ten waited, then went together
    assert poller.stats()["received"] == 12
    # The last two wait their linger; a stop does not leave them to come back.
    await poller.stop()
    setup.pollers.remove(poller)
    assert sum(calls) == 12 and len(calls) == 2
    assert poller.stats()["deleted"] == 12
    assert await asyncio.to_thread(setup.counts) == (0, 0)
    await client.close()


def test_delete_linger_out_of_range_is_refused() -> None:
    node: Any = object()
    with pytest.raises(ValueError, match="delete_linger must be between 0 and 1 second"):
        SqsCommandPoller("q", node, max_payload_bytes=1, delete_linger=2)
