"""Reading gateway events out of SQS-triggered Lambda batches, and reporting failures per record."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from runtime.origin.client import GatewayClient
from runtime.origin.events import (
    Event,
    EventFormatError,
    event_type,
    gateway_handler,
    lazy_handler,
    message_data,
    parse_event_body,
    parse_events,
    read_events,
    read_records,
)
from runtime.wire.events import (
    HandshakeDetails,
    NodeContext,
    connect_event,
    connection_fragment,
    keepalive_events,
    message_event,
)
from tests.aws import MotoEndpoint
from tests.origin.harness import (
    CallCounter,
    client,
    client_factory,
    commands_on,
    issuer,
    provision_region,
)

NODE = NodeContext(stage="test", region="us-east-1")
DETAILS = HandshakeDetails("/", [("Host", "gw.example.com")], [("room", "a")], "203.0.113.9", None)
ISSUER = issuer("us-east-1")
FIFO_ARN = "arn:aws:sqs:us-east-1:123456789012:wsgw-test-events.fifo"
STANDARD_ARN = "arn:aws:sqs:us-east-1:123456789012:wsgw-test-events"


def message(connection_id: str, data: str | bytes, sequence: int = 1) -> str:
    fragment = connection_fragment(NODE, connection_id, 1_700_000_000_000, DETAILS)
    return message_event(fragment, sequence, 1_700_000_000_100, "$default", data).decode()


def record(body: str, message_id: str, group: str | None = None, arn: str = FIFO_ARN) -> dict:
    attributes = {"ApproximateReceiveCount": "1"}
    if group is not None:
        attributes["MessageGroupId"] = group
    return {
        "messageId": message_id,
        "receiptHandle": f"handle-{message_id}",
        "body": body,
        "attributes": attributes,
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


# Parsing -------------------------------------------------------------------------------------


def test_plain_bodies_parse_to_the_events_the_node_made() -> None:
    connection_id = ISSUER.issue()
    fragment = connection_fragment(NODE, connection_id, 1_700_000_000_000, DETAILS)
    bodies = [
        connect_event(fragment, 0, 1_700_000_000_000, DETAILS).decode(),
        message(connection_id, "hello"),
        message(connection_id, b"\x00\x01\xff", 2),
        keepalive_events(NODE, [connection_id], 1_700_000_000_200, 1000)[0].decode(),
    ]
    lambda_event = {
        "Records": [record(body, f"m{i}", connection_id) for i, body in enumerate(bodies)]
    }

    events = read_events(lambda_event)

    assert [event_type(event) for event in events] == ["CONNECT", "MESSAGE", "MESSAGE", "KEEPALIVE"]
    assert events[0]["queryStringParameters"] == {"room": "a"}
    assert message_data(events[1]) == "hello"
    assert message_data(events[2]) == b"\x00\x01\xff"
    assert events[3]["connectionIds"] == [connection_id]
    records = read_records(lambda_event)
    assert (records[0].message_id, records[0].group_id, records[0].fifo) == (
        "m0",
        connection_id,
        True,
    )


def test_sns_notifications_are_unwrapped(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """A real SNS envelope: the events went through a topic to a queue without raw delivery."""
    sqs, sns = client(moto_endpoint, "sqs", "us-east-1"), client(moto_endpoint, "sns", "us-east-1")
    topic = sns.create_topic(Name=f"{environment_name}-events")["TopicArn"]
    url = sqs.create_queue(QueueName=f"{environment_name}-enveloped")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)  # raw delivery off
    body = message(ISSUER.issue(), "wrapped ✓")
    sns.publish(TopicArn=topic, Message=body)

    received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"][0]["Body"]

    assert json.loads(received)["Type"] == "Notification"
    assert parse_event_body(received) == json.loads(body)
    assert message_data(parse_event_body(received)) == "wrapped ✓"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("not json", "record body is not valid JSON"),
        ("[1, 2]", "neither a gateway event"),
        ('{"requestContext": {}}', "neither a gateway event"),
        ('{"requestContext": {"eventType": ""}}', "neither a gateway event"),
        ('{"Type": "Notification"}', 'has no string "Message"'),
        ('{"Type": "Notification", "Message": "{\\"a\\": 1}"}', "Message is not a gateway event"),
        ('{"Type": "Notification", "Message": "nope"}', "Message is not valid JSON"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_bodies_are_named(body: str, expected: str) -> None:
    with pytest.raises(EventFormatError, match=expected):
        parse_event_body(body)


@pytest.mark.parametrize(
    ("lambda_event", "expected"),
    [
        ({}, 'with a "Records" list'),
        ([], 'with a "Records" list'),
        ({"Records": ["x"]}, r"Records\[0\] must be an object"),
        ({"Records": [{"Sns": {}}]}, r'Records\[0\] must have string "messageId" and "body"'),
    ],
)
def test_events_that_are_not_sqs_batches_are_refused(lambda_event: Any, expected: str) -> None:
    with pytest.raises(EventFormatError, match=expected):
        read_records(lambda_event)


def test_message_data_refuses_bad_base64() -> None:
    event = json.loads(message(ISSUER.issue(), b"\x01"))
    event["body"] = "***"
    with pytest.raises(EventFormatError, match="not valid base64"):
        message_data(event)


# Partial batch responses ---------------------------------------------------------------------


class Recorder:
    """An event handler that records what it handled and fails on bodies starting with 'fail'."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    def __call__(self, event: Event) -> None:
        data = message_data(event)
        assert isinstance(data, str)
        if data.startswith("fail"):
            raise RuntimeError(f"cannot handle {data}")
        self.handled.append(data)


def test_one_bad_record_is_reported_and_the_others_are_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    handler = gateway_handler(recorder)
    ids = [ISSUER.issue() for _ in range(3)]
    lambda_event = {
        "Records": [
            record(message(ids[0], "one"), "m1", arn=STANDARD_ARN),
            record("{broken", "m2", arn=STANDARD_ARN),
            record(message(ids[1], "fail-3"), "m3", arn=STANDARD_ARN),
            record(message(ids[2], "four"), "m4", arn=STANDARD_ARN),
        ]
    }

    response = handler(lambda_event, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]}
    assert recorder.handled == ["one", "four"]
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [getattr(r, "messageId", None) for r in failures] == ["m2", "m3"]
    assert getattr(failures[1], "connectionId", None) == ids[1]
    assert failures[1].exc_info is not None


def test_fifo_group_stops_at_its_first_failure_and_other_groups_go_on() -> None:
    recorder = Recorder()
    handler = gateway_handler(recorder)
    first, second = ISSUER.issue(), ISSUER.issue()
    lambda_event = {
        "Records": [
            record(message(first, "a1"), "m1", first),
            record(message(first, "fail-a2"), "m2", first),
            record(message(second, "b1"), "m3", second),
            record(message(first, "a3"), "m4", first),
            record(message(second, "b2"), "m5", second),
            record(message(first, "a4"), "m6", first),
        ]
    }

    response = handler(lambda_event, None)

    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == ["m2", "m4", "m6"]
    assert recorder.handled == ["a1", "b1", "b2"]  # a3 and a4 were never handled


def test_standard_queues_keep_handling_a_group_after_a_failure() -> None:
    recorder = Recorder()
    handler = gateway_handler(recorder)
    connection_id = ISSUER.issue()
    lambda_event = {
        "Records": [
            record(message(connection_id, "fail-1"), "m1", arn=STANDARD_ARN),
            record(message(connection_id, "two"), "m2", arn=STANDARD_ARN),
        ]
    }

    assert handler(lambda_event, None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert recorder.handled == ["two"]


def test_decorator_form_and_an_empty_batch() -> None:
    seen: list[str] = []

    @gateway_handler
    def on_event(event: Event) -> None:
        seen.append(event_type(event))

    assert on_event({"Records": []}, None) == {"batchItemFailures": []}
    on_event({"Records": [record(message(ISSUER.issue(), "x"), "m1")]}, None)
    assert seen == ["MESSAGE"]
    assert on_event.__name__ == "on_event"


def test_commands_of_a_failed_record_are_dropped_and_the_rest_published_once(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, "us-east-1")
    gateway = GatewayClient(
        environment=environment_name,
        account="123456789012",
        region="us-east-1",
        client_factory=client_factory(moto_endpoint),
    )

    @gateway_handler(gateway=gateway)
    def echo_then_maybe_fail(event: Event) -> None:
        connection_id = event["requestContext"]["connectionId"]
        data = message_data(event)
        gateway.send(connection_id, data)
        if isinstance(data, str) and data.startswith("fail"):
            raise RuntimeError("failed after sending")

    ids = [ISSUER.issue() for _ in range(3)]
    lambda_event = {
        "Records": [
            record(message(ids[0], "one"), "m1", ids[0]),
            record(message(ids[1], "fail-two"), "m2", ids[1]),
            record(message(ids[2], "three"), "m3", ids[2]),
        ]
    }

    response = echo_then_maybe_fail(lambda_event, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    sqs = client(moto_endpoint, "sqs", "us-east-1")
    bodies, commands = commands_on(sqs, resources.commands_queue_url)
    assert len(bodies) == 1  # one publish for the whole batch
    assert [(c["connectionIds"], c["data"]) for c in commands] == [
        ([ids[0]], "one"),
        ([ids[2]], "three"),
    ]
    assert gateway.pending_commands == 0


def test_when_publishing_fails_every_handled_record_is_reported(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    gateway = GatewayClient(  # the environment was never provisioned: no topic
        environment=environment_name,
        account="123456789012",
        region="us-east-1",
        client_factory=client_factory(moto_endpoint),
    )
    handler = gateway_handler(
        lambda event: gateway.send(event["requestContext"]["connectionId"], "x"),
        gateway=gateway,
    )
    ids = [ISSUER.issue() for _ in range(2)]
    lambda_event = {"Records": [record(message(i, "x"), f"m{n}", i) for n, i in enumerate(ids)]}

    response = handler(lambda_event, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}
    assert gateway.pending_commands == 0


def test_a_misconfigured_gateway_fails_the_batch_and_keeps_nothing(
    aws_chain: MotoEndpoint,
) -> None:
    gateway = GatewayClient()  # no WSGW_ENVIRONMENT: no topic to address
    handler = gateway_handler(
        lambda event: gateway.send(event["requestContext"]["connectionId"], "x"),
        gateway=gateway,
    )
    connection_id = ISSUER.issue()

    response = handler({"Records": [record(message(connection_id, "x"), "m0")]}, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert gateway.pending_commands == 0  # a warm Lambda must not publish them later


def test_rollback_after_a_flush_inside_the_handler(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """post_to_connection publishes at once; what the event buffered after it is still dropped."""
    resources = provision_region(moto_endpoint, environment_name, "us-east-1")
    gateway = GatewayClient(
        environment=environment_name,
        account="123456789012",
        client_factory=client_factory(moto_endpoint),
    )

    @gateway_handler(gateway=gateway)
    def on_event(event: Event) -> None:
        connection_id = event["requestContext"]["connectionId"]
        gateway.send(connection_id, "buffered before")
        gateway.post_to_connection(ConnectionId=connection_id, Data="at once")
        gateway.send(connection_id, "buffered after")
        raise RuntimeError("fails after all")

    connection_id = ISSUER.issue()
    response = on_event({"Records": [record(message(connection_id, "x"), "m0")]}, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    _, commands = commands_on(
        client(moto_endpoint, "sqs", "us-east-1"), resources.commands_queue_url
    )
    assert [c["data"] for c in commands] == ["buffered before", "at once"]
    assert gateway.pending_commands == 0


def test_lazy_handler_builds_once_at_the_first_call() -> None:
    built: list[int] = []

    def factory() -> Any:
        built.append(1)
        return gateway_handler(lambda event: None)

    handler = lazy_handler(factory)
    assert built == []
    for _ in range(3):
        assert handler({"Records": []}, None) == {"batchItemFailures": []}
    assert built == [1]


# Packed records: many events to one SQS message ---------------------------------------------


def packed(*events: str) -> str:
    """A body as the node packs events: compact `{"events":[...]}` around each event's JSON."""
    return '{"events":[' + ",".join(events) + "]}"


def message_id_of(event_json: str) -> str:
    return str(json.loads(event_json)["requestContext"]["messageId"])


@pytest.fixture
def sns_envelope(moto_endpoint: MotoEndpoint, environment_name: str) -> Callable[[str], str]:
    """A body as an SQS queue gets it from SNS without raw delivery: a real notification."""
    sqs, sns = client(moto_endpoint, "sqs", "us-east-1"), client(moto_endpoint, "sns", "us-east-1")
    topic = sns.create_topic(Name=f"{environment_name}-packed-events")["TopicArn"]
    url = sqs.create_queue(QueueName=f"{environment_name}-packed-enveloped")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)  # raw delivery off

    def wrap(body: str) -> str:
        sns.publish(TopicArn=topic, Message=body)  # moto delivers before Publish returns
        [received] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=received["ReceiptHandle"])
        assert json.loads(received["Body"])["Type"] == "Notification"
        return str(received["Body"])

    return wrap


@pytest.fixture(params=["raw", "sns"])
def delivered(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Each body as SQS hands it to Lambda: as the node sent it, or inside an SNS notification."""
    if request.param == "raw":
        return lambda body: body
    wrap: Callable[[str], str] = request.getfixturevalue("sns_envelope")
    return wrap


def test_a_packed_body_parses_to_its_events_in_order(delivered: Callable[[str], str]) -> None:
    connection_id = ISSUER.issue()
    members = [message(connection_id, text, n) for n, text in enumerate(["one", "two", "three"])]
    single = message(connection_id, "four", 4)
    lambda_event = {
        "Records": [
            record(delivered(packed(*members)), "m1", "b-3"),
            record(delivered(single), "m2", "b-3"),
            record(delivered(packed(message(connection_id, "five", 5))), "m3", "b-3"),
        ]
    }
    records = read_records(lambda_event)

    assert records[0].events() == [json.loads(member) for member in members]
    assert [message_data(event) for event in read_events(lambda_event)] == [
        "one",
        "two",
        "three",
        "four",
        "five",
    ]
    assert message_data(records[1].event()) == "four"
    assert message_data(records[2].event()) == "five"  # packed alone: still one event
    with pytest.raises(EventFormatError, match=r"record m1 holds 3 packed events.*events\(\)"):
        records[0].event()
    with pytest.raises(EventFormatError, match="holds 3 packed events, not one"):
        parse_event_body(records[0].body)


def test_an_event_with_an_events_member_is_still_one_event() -> None:
    """Only an object without requestContext is packed: an event may carry any other member."""
    event = json.loads(message(ISSUER.issue(), "x"))
    event["events"] = []
    assert parse_events(json.dumps(event)) == [event]


MALFORMED_PACKS = [
    ('{"events":[]}', 'empty "events" list'),
    ('{"events":{"a":1}}', 'has "events" but it is not a list'),
    ('{"events":"[]"}', 'has "events" but it is not a list'),
    ('{"events":[1]}', r"events\[0\] of 1 is not a gateway event"),
    ('{"events":[{"body":"x"}]}', r"events\[0\] of 1 is not a gateway event"),
    ('{"events":[{"requestContext":{"eventType":""}}]}', r"events\[0\] of 1 is not a gateway"),
    ("GOOD_THEN_BAD", r"events\[1\] of 2 is not a gateway event"),
]


def malformed_body(body: str) -> str:
    if body == "GOOD_THEN_BAD":  # the good event must not run: the record is checked first
        return packed(message(ISSUER.issue(), "never handled"), '{"requestContext":[]}')
    return body


@pytest.mark.parametrize(("body", "expected"), MALFORMED_PACKS)
def test_malformed_packed_bodies_are_named(body: str, expected: str) -> None:
    with pytest.raises(EventFormatError, match=expected):
        parse_events(malformed_body(body))


@pytest.mark.parametrize(("body", "expected"), MALFORMED_PACKS)
def test_a_malformed_packed_record_fails_alone_with_a_clear_log(
    body: str,
    expected: str,
    delivered: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    handler = gateway_handler(recorder)
    first, second = ISSUER.issue(), ISSUER.issue()
    lambda_event = {
        "Records": [
            record(delivered(packed(message(first, "before"))), "m1", "b-1"),
            record(delivered(malformed_body(body)), "m2", "b-2"),
            record(delivered(packed(message(second, "after"))), "m3", "b-3"),
        ]
    }

    response = handler(lambda_event, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert recorder.handled == ["before", "after"]
    [failure] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "holds no gateway events" in failure.getMessage()
    assert (getattr(failure, "messageId", None), getattr(failure, "messageGroupId", None)) == (
        "m2",
        "b-2",
    )
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], EventFormatError)
    assert re.search(expected, str(failure.exc_info[1]))


class Attempts:
    """An event handler that counts the attempts at each message and fails on 'fail...'."""

    def __init__(self, gateway: GatewayClient | None = None) -> None:
        self.gateway = gateway
        self.attempts: list[str] = []

    def __call__(self, event: Event) -> None:
        data = message_data(event)
        assert isinstance(data, str)
        self.attempts.append(data)
        if self.gateway is not None:
            self.gateway.send(event["requestContext"]["connectionId"], data)
        if data.startswith("fail"):
            raise RuntimeError(f"cannot handle {data}")


def test_packed_and_single_records_are_handled_event_by_event_in_order(
    delivered: Callable[[str], str],
) -> None:
    attempts = Attempts()
    handler = gateway_handler(attempts)
    ids = [ISSUER.issue() for _ in range(3)]
    lambda_event = {
        "Records": [
            record(delivered(packed(*(message(ids[n % 3], f"p{n}", n) for n in range(3)))), "m1"),
            record(delivered(message(ids[0], "s1", 3)), "m2"),
            record(delivered(packed(message(ids[1], "p3", 4), message(ids[1], "p4", 5))), "m3"),
            record(delivered(message(ids[2], "s2", 6)), "m4"),
        ]
    }

    assert handler(lambda_event, None) == {"batchItemFailures": []}
    assert attempts.attempts == ["p0", "p1", "p2", "s1", "p3", "p4", "s2"]


def test_a_failing_event_fails_its_packed_record_and_drops_all_its_commands(
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    delivered: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    resources = provision_region(moto_endpoint, environment_name, "us-east-1")
    counter = CallCounter()
    gateway = GatewayClient(
        environment=environment_name,
        account="123456789012",
        region="us-east-1",
        client_factory=client_factory(moto_endpoint, counter),
    )
    attempts = Attempts(gateway)
    handler = gateway_handler(attempts, gateway=gateway)
    ann, bob, cy = ISSUER.issue(), ISSUER.issue(), ISSUER.issue()
    failing = [message(ann, "one", 1), message(bob, "fail-two", 1), message(ann, "three", 2)]
    lambda_event = {
        "Records": [
            record(delivered(message(cy, "before", 1)), "m0", "b-4"),
            record(delivered(packed(*failing)), "m1", "b-3"),
            record(delivered(packed(message(cy, "four", 2), message(cy, "five", 3))), "m2", "b-4"),
        ]
    }

    response = handler(lambda_event, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    # "one" ran once, "fail-two" failed, "three" waits for the retry of m1.
    assert attempts.attempts == ["before", "one", "fail-two", "four", "five"]
    bodies, commands = commands_on(
        client(moto_endpoint, "sqs", "us-east-1"), resources.commands_queue_url
    )
    assert [(c["connectionIds"], c["data"]) for c in commands] == [
        ([cy], "before"),
        ([cy], "four"),
        ([cy], "five"),
    ]  # nothing of m1: its events run again, so their commands would be sent twice
    assert len(bodies) == 1
    assert counter.calls.get("PublishBatch") == 1  # one flush for the invocation
    assert gateway.pending_commands == 0
    [failure] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert {
        name: getattr(failure, name, None)
        for name in (
            "messageId",
            "messageGroupId",
            "eventMessageId",
            "eventType",
            "connectionId",
            "eventIndex",
            "eventCount",
        )
    } == {
        "messageId": "m1",
        "messageGroupId": "b-3",
        "eventMessageId": message_id_of(failing[1]),
        "eventType": "MESSAGE",
        "connectionId": bob,
        "eventIndex": 1,
        "eventCount": 3,
    }
    assert "events[1] of 3" in failure.getMessage()
    assert failure.exc_info is not None


def test_a_fifo_group_stops_at_its_failed_packed_record_and_other_groups_go_on(
    delivered: Callable[[str], str],
) -> None:
    attempts = Attempts()
    handler = gateway_handler(attempts)
    a, b, c = ISSUER.issue(), ISSUER.issue(), ISSUER.issue()  # a and c share bucket b-3
    lambda_event = {
        "Records": [
            record(
                delivered(packed(message(a, "a1"), message(c, "fail-c1"), message(a, "a2", 2))),
                "m1",
                "b-3",
            ),
            record(delivered(packed(message(b, "b1"), message(b, "b2", 2))), "m2", "b-4"),
            record(delivered(packed(message(c, "c2", 2), message(a, "a3", 3))), "m3", "b-3"),
            record(delivered(message(b, "b3", 3)), "m4", "b-4"),
            record(delivered(message(a, "a4", 4)), "m5", "b-3"),
        ]
    }

    response = handler(lambda_event, None)

    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == [
        "m1",
        "m3",
        "m5",
    ]
    assert attempts.attempts == ["a1", "fail-c1", "b1", "b2", "b3"]


def test_a_standard_queue_goes_on_after_a_failed_packed_record() -> None:
    attempts = Attempts()
    handler = gateway_handler(attempts)
    a = ISSUER.issue()
    lambda_event = {
        "Records": [
            record(packed(message(a, "fail-1"), message(a, "2", 2)), "m1", arn=STANDARD_ARN),
            record(packed(message(a, "3", 3)), "m2", arn=STANDARD_ARN),
        ]
    }

    assert handler(lambda_event, None) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert attempts.attempts == ["fail-1", "3"]
