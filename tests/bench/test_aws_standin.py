"""The AWS stand-in driven by boto3, the real client, so its wire formats cannot drift unnoticed.

botocore does not check SQS's MD5 digests, so these tests do, against moto's implementation of
AWS's algorithm (written independently of the stand-in's).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.sqs.models import Message as MotoMessage

from bench.aws_standin import AwsStandIn
from bench.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
KIB = 1024
T = TypeVar("T")
_names = itertools.count(1)


@dataclass
class Running:
    """The stand-in on its own event loop thread, so that blocking boto3 calls can reach it."""

    standin: AwsStandIn
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def on_loop() -> T:
            return function(*args, **kwargs)

        return self.run(on_loop())


@dataclass
class Clients:
    sqs: Any
    sns: Any
    sts: Any


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    standin = AwsStandIn()
    state = Running(standin, loop)
    state.run(standin.start())
    try:
        yield state
    finally:
        state.run(standin.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture(scope="module")
def clients(running: Running) -> Clients:
    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=running.standin.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}, read_timeout=15),
        )

    return Clients(client("sqs"), client("sns"), client("sts"))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def reference_attributes_md5(attributes: dict[str, Any]) -> str:
    """moto's MD5OfMessageAttributes; BinaryValue as bytes, as boto3 hands it over."""
    message = MotoMessage("reference", "body")
    message.message_attributes = attributes
    return str(message.attribute_md5)


def error_code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


def test_round_trip_with_attributes_and_digests(running: Running, clients: Clients) -> None:
    sqs = clients.sqs
    url = sqs.create_queue(QueueName=unique("round-trip"))["QueueUrl"]
    attributes = {
        "eventType": {"DataType": "String", "StringValue": "MESSAGE"},
        "routeKey": {"DataType": "String", "StringValue": "$défault"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
        "trace.id": {"DataType": "String.custom", "StringValue": "t-1"},
    }
    body = '{"hello": "wörld"}'
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == md5(body)
    assert sent["MD5OfMessageAttributes"] == reference_attributes_md5(attributes)

    received = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
    )["Messages"]
    assert len(received) == 1
    message = received[0]
    assert message["MessageId"] == sent["MessageId"]
    assert (message["Body"], message["MD5OfBody"]) == (body, md5(body))
    assert message["MessageAttributes"] == attributes
    assert message["MD5OfMessageAttributes"] == reference_attributes_md5(attributes)
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert abs(int(message["Attributes"]["SentTimestamp"]) - time.time() * 1000) < 60_000
    assert running.call(running.standin.depth, url) == 1

    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    again = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["trace.*", "count"])
    selected = again["Messages"][0]
    chosen = {name: attributes[name] for name in ("count", "trace.id")}
    assert selected["MessageAttributes"] == chosen
    assert selected["MD5OfMessageAttributes"] == reference_attributes_md5(chosen)

    sqs.delete_message(QueueUrl=url, ReceiptHandle=selected["ReceiptHandle"])
    assert running.call(running.standin.depth, url) == 0
    sqs.delete_message(QueueUrl=url, ReceiptHandle=selected["ReceiptHandle"])  # stale: no-op
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-receipt")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as missing:
        sqs.send_message(QueueUrl=url + "-missing", MessageBody="x")
    assert error_code(missing) == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="never-made")


def test_batch_send_fails_only_the_entry_too_large(clients: Clients) -> None:
    sqs = clients.sqs
    url = sqs.create_queue(
        QueueName=unique("small"), Attributes={"MaximumMessageSize": str(2 * KIB)}
    )["QueueUrl"]
    response = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "fits", "MessageBody": "x" * KIB},
            {"Id": "long", "MessageBody": "x" * (3 * KIB)},
        ],
    )
    assert [entry["Id"] for entry in response["Successful"]] == ["fits"]
    assert response["Successful"][0]["MD5OfMessageBody"] == md5("x" * KIB)
    [failed] = response["Failed"]
    assert (failed["Id"], failed["Code"], failed["SenderFault"]) == (
        "long",
        "InvalidParameterValue",
        True,
    )

    big = sqs.create_queue(QueueName=unique("big"))["QueueUrl"]
    cases = [
        (
            [{"Id": str(n), "MessageBody": "x" * (600 * KIB)} for n in range(2)],
            "BatchRequestTooLong",
        ),
        ([{"Id": str(n), "MessageBody": "x"} for n in range(11)], "TooManyEntriesInBatchRequest"),
        ([{"Id": "same", "MessageBody": "x"}] * 2, "BatchEntryIdsNotDistinct"),
        ([], "EmptyBatchRequest"),
    ]
    for entries, expected in cases:
        with pytest.raises(ClientError) as refused:
            sqs.send_message_batch(QueueUrl=big, Entries=entries)
        assert error_code(refused) == f"AWS.SimpleQueueService.{expected}"
        assert refused.value.response["Error"]["QueryErrorCode"] == expected
    with pytest.raises(sqs.exceptions.BatchRequestTooLong):
        sqs.send_message_batch(QueueUrl=big, Entries=cases[0][0])


def test_fifo_order_group_lock_and_deduplication(clients: Clients) -> None:
    sqs = clients.sqs
    url = sqs.create_queue(QueueName=unique("order") + ".fifo")["QueueUrl"]

    def send(body: str, group: str, deduplication: str) -> dict[str, Any]:
        return dict(
            sqs.send_message(
                QueueUrl=url,
                MessageBody=body,
                MessageGroupId=group,
                MessageDeduplicationId=deduplication,
            )
        )

    a1, a2, b1 = send("a1", "a", "d-a1"), send("a2", "a", "d-a2"), send("b1", "b", "d-b1")
    assert int(a1["SequenceNumber"]) < int(a2["SequenceNumber"]) < int(b1["SequenceNumber"])
    repeat = send("a1 again", "a", "d-a1")
    assert (repeat["MessageId"], repeat["SequenceNumber"]) == (
        a1["MessageId"],
        a1["SequenceNumber"],
    )

    def receive(limit: int) -> list[dict[str, Any]]:
        return list(
            sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=limit,
                MessageSystemAttributeNames=["MessageGroupId", "SequenceNumber"],
            ).get("Messages", [])
        )

    [first] = receive(1)
    assert (first["Body"], first["Attributes"]["MessageGroupId"]) == ("a1", "a")
    assert first["Attributes"]["SequenceNumber"] == a1["SequenceNumber"]
    send("a3", "a", "d-a3")  # group a has a message in flight: a3 waits, as a2 does
    assert [message["Body"] for message in receive(10)] == ["b1"]
    assert receive(10) == []
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    a2_a3 = receive(10)
    assert [message["Body"] for message in a2_a3] == ["a2", "a3"]
    for message in a2_a3:  # both back, one after the other: still in order
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    assert [message["Body"] for message in receive(10)] == ["a2", "a3"]

    with pytest.raises(ClientError) as no_group:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert error_code(no_group) == "MissingParameter"
    with pytest.raises(ClientError) as no_deduplication:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert error_code(no_deduplication) == "InvalidParameterValue"


def test_a_message_not_deleted_comes_back_after_its_visibility_timeout(clients: Clients) -> None:
    sqs = clients.sqs
    url = sqs.create_queue(QueueName=unique("visibility"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
    started = time.monotonic()
    second = sqs.receive_message(
        QueueUrl=url, WaitTimeSeconds=5, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"][0]
    elapsed = time.monotonic() - started
    assert 0.7 < elapsed < 3.0  # woken when the timeout ends, not when the long poll does
    assert second["MessageId"] == first["MessageId"]
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    with pytest.raises(ClientError) as stale:
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=5
        )
    assert error_code(stale) == "AWS.SimpleQueueService.MessageNotInflight"


def test_long_poll_returns_when_a_message_arrives_or_empty_after_the_wait(
    running: Running, clients: Clients
) -> None:
    sqs = clients.sqs
    url = sqs.create_queue(QueueName=unique("poll"))["QueueUrl"]
    running.call(running.standin.reset_counts)
    started = time.monotonic()
    empty = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    elapsed = time.monotonic() - started
    assert "Messages" not in empty
    assert 0.9 < elapsed < 2.5
    assert running.call(running.standin.counts)["emptyReceives"] == 1

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        polling = pool.submit(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=10)
        time.sleep(0.3)
        assert not polling.done()
        clients.sqs.send_message(QueueUrl=url, MessageBody="arrived")
        messages = polling.result(timeout=5)["Messages"]
    elapsed = time.monotonic() - started
    assert [message["Body"] for message in messages] == ["arrived"]
    assert 0.25 < elapsed < 3.0


def test_change_visibility_batch(clients: Clients) -> None:
    sqs = clients.sqs
    url = sqs.create_queue(QueueName=unique("change"))["QueueUrl"]
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "one"}, {"Id": "2", "MessageBody": "two"}]
    )
    one, two = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    response = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "now", "ReceiptHandle": one["ReceiptHandle"], "VisibilityTimeout": 0},
            {"Id": "later", "ReceiptHandle": two["ReceiptHandle"], "VisibilityTimeout": 60},
            {"Id": "bad", "ReceiptHandle": "garbage", "VisibilityTimeout": 0},
        ],
    )
    assert [entry["Id"] for entry in response["Successful"]] == ["now", "later"]
    assert [(entry["Id"], entry["Code"]) for entry in response["Failed"]] == [
        ("bad", "ReceiptHandleIsInvalid")
    ]
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [message["Body"] for message in again] == [one["Body"]]
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "ReceiptHandle": again[0]["ReceiptHandle"]},
            {"Id": "b", "ReceiptHandle": two["ReceiptHandle"]},
            {"Id": "c", "ReceiptHandle": "garbage"},
        ],
    )
    assert [entry["Id"] for entry in deleted["Successful"]] == ["a", "b"]
    assert [entry["Id"] for entry in deleted["Failed"]] == ["c"]


def test_get_queue_attributes_and_url(clients: Clients) -> None:
    sqs = clients.sqs
    name = unique("attributes") + ".fifo"
    url = sqs.create_queue(
        QueueName=name, Attributes={"VisibilityTimeout": "45", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    for body in ("a", "b", "a"):  # content-based deduplication drops the second "a"
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=body)
    sqs.receive_message(QueueUrl=url)
    everything = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert everything["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    assert (everything["FifoQueue"], everything["VisibilityTimeout"]) == ("true", "45")
    assert everything["ApproximateNumberOfMessages"] == "1"
    assert everything["ApproximateNumberOfMessagesNotVisible"] == "1"
    chosen = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])
    assert chosen["Attributes"] == {"MaximumMessageSize": str(1024 * KIB)}


def test_sns_publish_batch_delivers_raw_and_as_notification(
    running: Running, clients: Clients
) -> None:
    sqs, sns = clients.sqs, clients.sns
    topic = sns.create_topic(Name=unique("events"))["TopicArn"]
    raw_url = sqs.create_queue(QueueName=unique("raw"))["QueueUrl"]
    wrapped_url = sqs.create_queue(QueueName=unique("wrapped"))["QueueUrl"]
    raw_arn = sqs.get_queue_attributes(QueueUrl=raw_url, AttributeNames=["QueueArn"])
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=raw_arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    running.call(running.standin.subscribe, topic, wrapped_url, raw=False)
    attributes = {"eventType": {"DataType": "String", "StringValue": "MESSAGE"}}
    response = sns.publish_batch(
        TopicArn=topic,
        PublishBatchRequestEntries=[
            {"Id": "0", "Message": '{"n": 0}', "MessageAttributes": attributes},
            {"Id": "1", "Message": '{"n": 1}', "Subject": "hi"},
        ],
    )
    assert [entry["Id"] for entry in response["Successful"]] == ["0", "1"]
    assert response["Failed"] == []
    message_ids = [entry["MessageId"] for entry in response["Successful"]]

    raw = sqs.receive_message(
        QueueUrl=raw_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    assert [message["Body"] for message in raw["Messages"]] == ['{"n": 0}', '{"n": 1}']
    assert raw["Messages"][0]["MessageAttributes"] == attributes
    assert raw["Messages"][0]["MD5OfMessageAttributes"] == reference_attributes_md5(attributes)

    wrapped = sqs.receive_message(QueueUrl=wrapped_url, MaxNumberOfMessages=10)["Messages"]
    notifications = [json.loads(message["Body"]) for message in wrapped]
    assert [note["Message"] for note in notifications] == ['{"n": 0}', '{"n": 1}']
    assert [note["MessageId"] for note in notifications] == message_ids
    first, second = notifications
    assert (first["Type"], first["TopicArn"]) == ("Notification", topic)
    for key in ("Timestamp", "SignatureVersion", "Signature", "SigningCertURL", "UnsubscribeURL"):
        assert first[key]
    assert first["MessageAttributes"] == {"eventType": {"Type": "String", "Value": "MESSAGE"}}
    assert second["Subject"] == "hi"
    assert "MessageAttributes" not in second

    single = sns.publish(TopicArn=topic, Message="one")
    assert "SequenceNumber" not in single
    attributes_of_topic = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert (attributes_of_topic["TopicArn"], attributes_of_topic["SubscriptionsConfirmed"]) == (
        topic,
        "2",
    )
    with pytest.raises(ClientError) as too_long:
        sns.publish_batch(
            TopicArn=topic,
            PublishBatchRequestEntries=[
                {"Id": str(n), "Message": "x" * (150 * KIB)} for n in range(2)
            ],
        )
    assert error_code(too_long) == "BatchRequestTooLong"
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.publish(TopicArn=topic + "-missing", Message="x")


def test_fifo_topic_to_fifo_queue_keeps_groups(running: Running, clients: Clients) -> None:
    sqs, sns = clients.sqs, clients.sns
    topic = sns.create_topic(Name=unique("events") + ".fifo", Attributes={"FifoTopic": "true"})
    url = sqs.create_queue(QueueName=unique("events") + ".fifo")["QueueUrl"]
    running.call(running.standin.subscribe, topic["TopicArn"], url, raw=True)
    entries = [
        {"Id": str(n), "Message": f"m{n}", "MessageGroupId": f"b-{n % 2}"}
        | {"MessageDeduplicationId": f"d{n}"}
        for n in range(4)
    ]
    published = sns.publish_batch(TopicArn=topic["TopicArn"], PublishBatchRequestEntries=entries)
    assert all(entry["SequenceNumber"] for entry in published["Successful"])
    again = sns.publish_batch(TopicArn=topic["TopicArn"], PublishBatchRequestEntries=entries[:1])
    assert again["Successful"][0]["MessageId"] == published["Successful"][0]["MessageId"]
    assert running.call(running.standin.depth, url) == 4  # the repeat was not delivered

    received = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]
    )["Messages"]
    by_group = {}
    for message in received:
        by_group.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])
    assert by_group == {"b-0": ["m0", "m2"], "b-1": ["m1", "m3"]}
    failed = sns.publish_batch(
        TopicArn=topic["TopicArn"], PublishBatchRequestEntries=[{"Id": "x", "Message": "no group"}]
    )
    assert [entry["Code"] for entry in failed["Failed"]] == ["InvalidParameter"]


def test_sts_get_caller_identity(running: Running, clients: Clients) -> None:
    running.call(running.standin.reset_counts)
    identity = clients.sts.get_caller_identity()
    assert identity["Account"] == "000000000000"
    assert identity["Arn"].startswith("arn:aws:iam::000000000000:")
    counts = running.call(running.standin.counts)
    assert counts["requests"] == {"sts.GetCallerIdentity": 1}
    assert counts["controlPlane"] == 1
    assert counts["billed"] == {"sqs": 0, "sns": 0, "snsDeliveries": 0}


def test_arns_name_the_partition_of_the_standins_region() -> None:
    standin = AwsStandIn(region="cn-north-1")
    standin.create_queue("commands")
    queue_arn = standin.queues["commands"].attributes["QueueArn"]
    assert queue_arn == "arn:aws-cn:sqs:cn-north-1:000000000000:commands"
    assert standin.create_topic("commands") == "arn:aws-cn:sns:cn-north-1:000000000000:commands"


def test_billed_requests_count_each_64_kib(running: Running, clients: Clients) -> None:
    sqs, sns = clients.sqs, clients.sns
    url = sqs.create_queue(QueueName=unique("billed"))["QueueUrl"]
    topic = sns.create_topic(Name=unique("billed"))["TopicArn"]
    wrapped = sqs.create_queue(QueueName=unique("billed-wrapped"))["QueueUrl"]
    running.call(running.standin.subscribe, topic, url, raw=True)
    running.call(running.standin.subscribe, topic, wrapped, raw=False)
    running.call(running.standin.reset_counts)

    entries = [{"Id": str(n), "MessageBody": "x" * (40 * KIB)} for n in range(3)]
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 3
    counts = running.call(running.standin.counts)
    assert counts["billed"] == {"sqs": 4, "sns": 0, "snsDeliveries": 0}
    assert counts["requests"] == {"sqs.SendMessageBatch": 1, "sqs.ReceiveMessage": 1}
    assert (counts["messagesSent"], counts["messagesDelivered"]) == (3, 3)
    assert counts["bytesIn"] > 120 * KIB
    assert counts["bytesOut"] > 120 * KIB

    running.call(running.standin.reset_counts)
    sns.publish(TopicArn=topic, Message="y" * (100 * KIB))
    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    counts = running.call(running.standin.counts)
    # Two queues, each delivery of 100 KiB (the wrapped one a little more) billed as 2.
    assert counts["billed"] == {"sqs": 1, "sns": 2, "snsDeliveries": 4}
    assert counts["controlPlane"] == 1


def test_feed_at_a_rate(running: Running, clients: Clients) -> None:
    url = clients.sqs.create_queue(QueueName=unique("feed"))["QueueUrl"]
    running.call(running.standin.reset_counts)

    async def feed() -> tuple[int, float]:
        started = time.monotonic()
        task = running.standin.feed(url, lambda index: f"command {index}", rate=500, count=50)
        fed = await task
        return fed, time.monotonic() - started

    fed, elapsed = running.run(feed())
    assert fed == 50
    assert 0.09 <= elapsed < 2.0
    assert running.call(running.standin.depth, url) == 50
    bodies = []
    for _ in range(10):
        batch = clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        bodies += [message["Body"] for message in batch.get("Messages", [])]
        if len(bodies) == 50:
            break
    assert sorted(bodies) == sorted(f"command {index}" for index in range(50))
    counts = running.call(running.standin.counts)
    assert counts["messagesFed"] == 50
    assert counts["messagesSent"] == 0
    assert set(counts["requests"]) == {"sqs.ReceiveMessage"}


def _control(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_injected_faults_as_boto3_sees_them(running: Running) -> None:
    standin = running.standin
    sqs, sns = (
        boto3.client(
            service,
            endpoint_url=standin.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),  # each fault seen as it is
        )
        for service in ("sqs", "sns")
    )
    url = sqs.create_queue(QueueName=unique("faults"))["QueueUrl"]
    topic = sns.create_topic(Name=unique("faults"))["TopicArn"]
    running.call(standin.subscribe, topic, url)
    running.call(
        standin.inject,
        calls={"ReceiveMessage": 2},
        answers={"SendMessage": 2},
        entries={"SendMessageBatch": 3, "PublishBatch": 2},
    )
    try:
        # Every 3rd entry fails alone, as a fault of the service (worth sending again).
        entries = [{"Id": str(index), "MessageBody": f"b{index}"} for index in range(6)]
        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert [entry["Id"] for entry in answer["Successful"]] == ["0", "1", "3", "4"]
        assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
            ("2", "InternalError", False),
            ("5", "InternalError", False),
        ]
        published = sns.publish_batch(
            TopicArn=topic,
            PublishBatchRequestEntries=[{"Id": f"p{i}", "Message": f"p{i}"} for i in range(2)],
        )
        assert [entry["Id"] for entry in published["Successful"]] == ["p0"]
        assert [(f["Id"], f["SenderFault"]) for f in published["Failed"]] == [("p1", False)]
        # The 2nd SendMessage is carried out, then answered 500: the caller cannot tell.
        sqs.send_message(QueueUrl=url, MessageBody="once")
        with pytest.raises(ClientError) as lost:
            sqs.send_message(QueueUrl=url, MessageBody="twice")
        assert lost.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert error_code(lost) == "InternalError"
        # The 2nd ReceiveMessage fails before taking anything.
        first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        with pytest.raises(ClientError) as failed:
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        assert error_code(failed) == "InternalError"
    finally:
        running.call(standin.inject)
    # "twice" arrived although its sender saw a 500; the failed entries did not.
    bodies = sorted(message["Body"] for message in first)
    assert bodies == ["b0", "b1", "b3", "b4", "once", "p0", "twice"]
    assert running.call(lambda: standin.faults.describe()["injected"]) == {}  # inject() reset
    assert running.call(standin.counts)["faultsInjected"] == 5


def test_faults_refused_when_malformed(running: Running) -> None:
    with pytest.raises(ValueError, match="N >= 0"):
        running.call(running.standin.inject, calls={"ReceiveMessage": -1})


def test_out_of_process_control_endpoints() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.aws_standin", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the child prints it once listening, or dies
        base = f"http://127.0.0.1:{port}"
        assert line.strip() == f"ready {base}", line or process.stderr.read()
        url = _control(base, "/_standin/queues", {"name": "commands", "attributes": {}})["url"]
        topic = _control(base, "/_standin/topics", {"name": "commands"})["arn"]
        subscription = {"topicArn": topic, "queueUrl": url, "raw": True}
        assert _control(base, "/_standin/subscriptions", subscription)["arn"].startswith(topic)
        fed = _control(
            base,
            "/_standin/feed",
            {"queueUrl": url, "body": '{"n": {i}}', "rate": 1000, "count": 5},
        )
        assert fed == {"fed": 5}
        sqs = boto3.client(
            "sqs",
            endpoint_url=base,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        bodies = [
            message["Body"]
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        ]
        assert bodies == [f'{{"n": {index}}}' for index in range(5)]
        assert _control(base, f"/_standin/depth?queueUrl={url}") == {"depth": 5}
        counts = _control(base, "/_standin/counts")
        assert (counts["messagesFed"], counts["requests"]) == (5, {"sqs.ReceiveMessage": 1})
        faults = _control(base, "/_standin/faults", {"calls": {"ReceiveMessage": 1}})
        assert faults == {
            "calls": {"ReceiveMessage": 1},
            "answers": {},
            "entries": {},
            "injected": {},
        }
        with pytest.raises(ClientError) as failed:
            sqs.receive_message(QueueUrl=url)
        assert error_code(failed) == "InternalError"
        # boto3 tried again as for any 500; every attempt failed.
        assert _control(base, "/_standin/faults")["injected"]["calls.ReceiveMessage"] >= 1
        assert _control(base, "/_standin/faults", {})["calls"] == {}
        assert _control(base, "/_standin/reset", {}) == {}
        assert _control(base, "/_standin/counts")["messagesFed"] == 0
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
