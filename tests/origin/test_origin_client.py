"""GatewayClient on moto: batching, splitting by bytes, regions, retries and clear errors."""

from __future__ import annotations

import base64
import json

import pytest

from runtime.origin.client import CommandPublishError, GatewayClient, InvalidConnectionId
from runtime.origin.packing import (
    ENVELOPE_BYTES,
    MessageTooLarge,
    close_commands,
    pack_batches,
    pack_messages,
    payload_json,
    publish_command,
    send_commands,
)
from runtime.wire.commands import Publish, Send, parse_body
from tests.aws import MotoEndpoint
from tests.origin.harness import (
    MAX_PAYLOAD,
    CallCounter,
    FlakyEntries,
    client,
    client_factory,
    commands_on,
    issuer,
    provision_region,
)

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
OTHER_REGION = "eu-west-1"


def gateway(
    endpoint: MotoEndpoint,
    environment: str,
    counter: CallCounter | None = None,
    flaky: FlakyEntries | None = None,
    **options: object,
) -> GatewayClient:
    return GatewayClient(
        environment=environment,
        account=ACCOUNT,
        region=REGION,
        client_factory=client_factory(endpoint, counter, flaky),
        **options,  # type: ignore[arg-type]
    )


def test_many_sends_leave_in_few_publish_batch_calls(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    counter = CallCounter()
    ids = [issuer(REGION).issue() for _ in range(25)]
    with gateway(moto_endpoint, environment_name, counter) as sdk:
        for index, connection_id in enumerate(ids):
            sdk.send(connection_id, f"message {index}")
        assert counter.calls == {}  # nothing before the flush

    bodies, commands = commands_on(
        client(moto_endpoint, "sqs", REGION), resources.commands_queue_url
    )
    assert counter.calls == {"PublishBatch": 1}
    assert len(bodies) <= 3 * 10
    assert [(c["connectionIds"], c["data"], c["isBase64Encoded"]) for c in commands] == [
        ([connection_id], f"message {index}", False) for index, connection_id in enumerate(ids)
    ]


def test_commands_are_split_across_messages_and_batches_by_bytes(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    counter = CallCounter()
    sdk = gateway(moto_endpoint, environment_name, counter, max_message_bytes=2048)
    ids = [issuer(REGION).issue() for _ in range(60)]
    for index, connection_id in enumerate(ids):
        sdk.send(connection_id, f"{index:03d}:" + "é" * 100)  # 200 bytes of UTF-8 data
    sdk.send(ids, "to all")  # 60 IDs do not fit one 2 KiB message: split by IDs
    sdk.close(ids[0], 4000, "bye")
    sdk.flush()

    bodies, commands = commands_on(
        client(moto_endpoint, "sqs", REGION), resources.commands_queue_url
    )
    assert all(len(body.encode()) <= 2048 for body in bodies)
    assert len(bodies) > 6
    assert counter.calls["PublishBatch"] == len(pack_batches(bodies, 2048))
    ordered = sorted(commands, key=lambda c: c.get("data", "")[:3])  # queue order is not kept
    sends = [c for c in ordered if c["action"] == "send" and c["data"] != "to all"]
    assert [c["data"] for c in sends] == [f"{i:03d}:" + "é" * 100 for i in range(60)]
    fan_out = [c for c in commands if c.get("data") == "to all"]
    assert len(fan_out) > 1
    assert sorted(i for c in fan_out for i in c["connectionIds"]) == sorted(ids)
    assert [c for c in commands if c["action"] == "close"] == [
        {"action": "close", "connectionIds": [ids[0]], "code": 4000, "reason": "bye"}
    ]


def test_data_too_large_for_any_message_is_refused_at_once(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sdk = gateway(moto_endpoint, environment_name, max_message_bytes=1024)
    with pytest.raises(MessageTooLarge, match="cannot fit in a message of at most 1024 bytes"):
        sdk.send(issuer(REGION).issue(), "x" * 1000)
    with pytest.raises(MessageTooLarge, match="broadcast"):
        sdk.broadcast(b"x" * 800)  # 1068 bytes once base64-encoded
    assert sdk.pending_commands == 0
    with pytest.raises(ValueError, match="max_message_bytes must be between 1024 and 1048576"):
        gateway(moto_endpoint, environment_name, max_message_bytes=2 << 20)


def test_each_region_gets_only_its_commands(aws_chain: MotoEndpoint, environment_name: str) -> None:
    """Through boto3's standard chain (AWS_ENDPOINT_URL) and STS for the account, as in Lambda."""
    home = provision_region(aws_chain, environment_name, REGION)
    away = provision_region(aws_chain, environment_name, OTHER_REGION)
    here = [issuer(REGION).issue() for _ in range(3)]
    there = [issuer(OTHER_REGION, "10.1.0.7").issue() for _ in range(2)]
    sdk = GatewayClient(environment=environment_name)

    sdk.send([here[0], there[0], here[1], there[1], here[2]], "hi")
    sdk.close(there[0])
    sdk.broadcast("all", regions=[REGION, OTHER_REGION])
    sdk.flush()

    assert sdk.topic_arn(OTHER_REGION) == away.commands_topic_arn  # account from STS
    _, home_commands = commands_on(client(aws_chain, "sqs", REGION), home.commands_queue_url)
    _, away_commands = commands_on(client(aws_chain, "sqs", OTHER_REGION), away.commands_queue_url)
    assert home_commands == [
        {"action": "send", "connectionIds": here, "data": "hi", "isBase64Encoded": False},
        {"action": "broadcast", "data": "all", "isBase64Encoded": False},
    ]
    assert away_commands == [
        {"action": "send", "connectionIds": there, "data": "hi", "isBase64Encoded": False},
        {"action": "close", "connectionIds": [there[0]], "code": 1000, "reason": ""},
        {"action": "broadcast", "data": "all", "isBase64Encoded": False},
    ]


@pytest.mark.parametrize(
    ("region", "partition"), [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")]
)
def test_commands_reach_a_china_or_govcloud_region(
    aws_chain: MotoEndpoint, environment_name: str, region: str, partition: str
) -> None:
    """Their topics' ARNs are not `arn:aws:`; moto keeps partitions apart as AWS does, so a
    topic named in the wrong partition is not found and nothing arrives."""
    resources = provision_region(aws_chain, environment_name, region)
    assert resources.commands_topic_arn.startswith(f"arn:{partition}:sns:{region}:")
    ids = [issuer(region).issue() for _ in range(2)]
    sdk = GatewayClient(environment=environment_name)  # the account from STS, as in Lambda
    sdk.send(ids, "hi")
    sdk.broadcast("all", regions=[region])
    sdk.flush()

    assert sdk.topic_arn(region) == resources.commands_topic_arn
    _, commands = commands_on(client(aws_chain, "sqs", region), resources.commands_queue_url)
    assert commands == [
        {"action": "send", "connectionIds": ids, "data": "hi", "isBase64Encoded": False},
        {"action": "broadcast", "data": "all", "isBase64Encoded": False},
    ]


def test_publish_reaches_each_region_as_one_command(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    home = provision_region(moto_endpoint, environment_name, REGION)
    away = provision_region(moto_endpoint, environment_name, OTHER_REGION)
    with gateway(moto_endpoint, environment_name) as sdk:
        sdk.publish(["room:lobby", "user:7", "room:lobby"], {"text": "hé", "n": [1, 2.5, None]})
        sdk.publish("room:lobby")  # one key; context defaults to null
        sdk.publish(iter(["room:kitchen"]), "just text", regions=[REGION, OTHER_REGION])

    bodies, home_commands = commands_on(
        client(moto_endpoint, "sqs", REGION), home.commands_queue_url
    )
    _, away_commands = commands_on(
        client(moto_endpoint, "sqs", OTHER_REGION), away.commands_queue_url
    )
    assert home_commands == [
        {
            "action": "publish",
            "keys": ["room:lobby", "user:7"],  # a repeated key counts once
            "context": {"text": "hé", "n": [1, 2.5, None]},
        },
        {"action": "publish", "keys": ["room:lobby"], "context": None},
        {"action": "publish", "keys": ["room:kitchen"], "context": "just text"},
    ]
    assert away_commands == [
        {"action": "publish", "keys": ["room:kitchen"], "context": "just text"}
    ]
    parsed, _ = parse_body(bodies[0], max_payload_bytes=MAX_PAYLOAD)
    assert parsed[1] == Publish(("room:lobby",), b"null")


def test_publish_defaults_to_the_client_region(
    aws_chain: MotoEndpoint, environment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = provision_region(aws_chain, environment_name, REGION)
    sdk = GatewayClient(environment=environment_name)
    sdk.publish(["k"], 1)
    sdk.flush()
    _, commands = commands_on(client(aws_chain, "sqs", REGION), resources.commands_queue_url)
    assert commands == [{"action": "publish", "keys": ["k"], "context": 1}]

    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ValueError, match="publish needs a region"):
        GatewayClient(environment=environment_name).publish("k")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([], '"keys" must be a non-empty list'),
        ([f"k{i}" for i in range(1001)], '"keys" may hold at most 1000 keys'),
        (["ok", "x" * 257], r'"keys"\[1\] must be a string of 1 to 256 characters'),
        (["ok", ""], r'"keys"\[1\] must be a string of 1 to 256'),
        ([7], r'"keys"\[0\] must be a string'),
    ],
)
def test_publish_keys_follow_the_node_rules(keys: list[object], expected: str) -> None:
    sdk = GatewayClient(environment="dev", region=REGION)
    with pytest.raises(ValueError, match=expected):
        sdk.publish(keys)  # type: ignore[arg-type]
    assert sdk.pending_commands == 0
    sdk.publish(["x" * 256] + [f"k{i}" for i in range(999)])  # the most there may be
    assert sdk.pending_commands == 1


def test_publish_context_must_be_json_and_fit_a_message() -> None:
    sdk = GatewayClient(environment="dev", region=REGION, max_message_bytes=1024)
    with pytest.raises(TypeError, match="context must be JSON-serialisable"):
        sdk.publish("k", {"when": object()})
    with pytest.raises(ValueError, match="context must be JSON-serialisable"):
        sdk.publish("k", float("nan"))
    with pytest.raises(ValueError, match="lone surrogates"):
        sdk.publish("k", "\ud800")
    fits = 1024 - ENVELOPE_BYTES - len('{"action":"publish","keys":["k"],"context":""}')
    with pytest.raises(MessageTooLarge, match=f"a publish of {1024 - ENVELOPE_BYTES + 1} bytes"):
        sdk.publish("k", "x" * (fits + 1))
    assert sdk.pending_commands == 0
    sdk.publish("k", "x" * fits)
    assert sdk.pending_commands == 1
    [body] = pack_messages([publish_command(["k"], "x" * fits, 1024)], 1024)
    assert len(body.encode()) == 1024
    assert parse_body(body, max_payload_bytes=MAX_PAYLOAD)[0] == [
        Publish(("k",), json.dumps("x" * fits).encode())
    ]


def test_bad_ids_raise_before_anything_is_published(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    good = issuer(REGION).issue()
    altered = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    sdk = gateway(moto_endpoint, environment_name)
    sdk.send(good, "kept")

    with pytest.raises(InvalidConnectionId, match=r"connection_ids\[1\]: connection ID 'nope'"):
        sdk.send([good, "nope"], "never")
    with pytest.raises(ValueError, match=r"connection_ids\[0\].*altered or truncated"):
        sdk.close(altered)
    with pytest.raises(ValueError, match="must be a string"):
        sdk.send([None], "never")  # type: ignore[list-item]
    assert sdk.pending_commands == 1
    sdk.flush()

    _, commands = commands_on(client(moto_endpoint, "sqs", REGION), resources.commands_queue_url)
    assert [c["data"] for c in commands] == ["kept"]


def test_binary_data_travels_base64(moto_endpoint: MotoEndpoint, environment_name: str) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    connection_id = issuer(REGION).issue()
    payload = bytes(range(256))
    with gateway(moto_endpoint, environment_name) as sdk:
        sdk.send(connection_id, payload)
        sdk.broadcast(b"\xff\x00")

    bodies, commands = commands_on(
        client(moto_endpoint, "sqs", REGION), resources.commands_queue_url
    )
    assert commands[0]["isBase64Encoded"] is True
    assert base64.b64decode(commands[0]["data"]) == payload
    parsed, _ = parse_body(bodies[0], max_payload_bytes=MAX_PAYLOAD)
    assert parsed[0] == Send((connection_id,), payload, True)
    assert base64.b64decode(commands[1]["data"]) == b"\xff\x00"


def test_api_gateway_calls_publish_at_once(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    connection_id = issuer(REGION).issue()
    sdk = gateway(moto_endpoint, environment_name)

    sdk.post_to_connection(ConnectionId=connection_id, Data=json.dumps({"n": 1}).encode())
    sdk.post_to_connection(ConnectionId=connection_id, Data="text")
    sdk.post_to_connection(ConnectionId=connection_id, Data=b"\xff\xfe")
    sdk.delete_connection(ConnectionId=connection_id)

    assert sdk.pending_commands == 0
    _, commands = commands_on(client(moto_endpoint, "sqs", REGION), resources.commands_queue_url)
    assert [(c["action"], c.get("data"), c.get("isBase64Encoded")) for c in commands] == [
        ("send", '{"n": 1}', False),  # UTF-8 bytes go as text, as API Gateway sends them
        ("send", "text", False),
        ("send", "//4=", True),
        ("close", None, None),
    ]
    assert issubclass(sdk.exceptions.GoneException, Exception)


def test_failed_entries_are_retried_alone(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    flaky = FlakyEntries(failing_calls=2, entry_ids=("0",))
    sdk = gateway(moto_endpoint, environment_name, flaky=flaky, max_message_bytes=1024)
    ids = [issuer(REGION).issue() for _ in range(4)]
    for connection_id in ids:
        sdk.send(connection_id, "x" * 700)  # a message, and so a PublishBatch call, each
    sdk.flush()

    _, commands = commands_on(client(moto_endpoint, "sqs", REGION), resources.commands_queue_url)
    assert sorted(c["connectionIds"][0] for c in commands) == sorted(ids)  # each exactly once
    assert flaky.calls == 4 + 2  # the first batch's entry failed twice, then went


def test_batches_hold_ten_messages_within_the_byte_bound() -> None:
    bodies = [f'{{"commands":[{i:085d}]}}' for i in range(25)]  # 100 bytes each
    assert [len(batch) for batch in pack_batches(bodies, 1024)] == [10, 10, 5]
    assert [len(batch) for batch in pack_batches(bodies, 450)] == [4] * 6 + [1]
    assert pack_batches([], 1024) == []


def test_entries_failing_every_attempt_are_reported(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    flaky = FlakyEntries(failing_calls=100, entry_ids=("0",))
    sdk = gateway(moto_endpoint, environment_name, flaky=flaky, publish_attempts=3)
    sdk.send(issuer(REGION).issue(), "lost")

    with pytest.raises(CommandPublishError, match=r"1 of 1 .*us-east-1: 1 x InternalError") as info:
        sdk.flush()

    assert flaky.calls == 3
    [failure] = info.value.failures
    assert (failure.region, failure.topic_arn) == (REGION, resources.commands_topic_arn)
    assert json.loads(failure.body)["commands"][0]["data"] == "lost"


def test_entries_the_service_refuses_are_not_retried(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """moto keeps SNS's 256 KiB limit; a client set to 1 MiB meets SNS's per-entry refusal."""
    provision_region(moto_endpoint, environment_name, REGION)
    counter = CallCounter()
    sdk = gateway(moto_endpoint, environment_name, counter, max_message_bytes=1 << 20)
    sdk.send(issuer(REGION).issue(), "x" * (300 << 10))

    with pytest.raises(CommandPublishError, match="InvalidParameter") as info:
        sdk.flush()

    assert counter.calls == {"PublishBatch": 1}
    assert len(info.value.failures) == 1


def test_a_missing_topic_fails_the_region_and_says_so(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    counter = CallCounter()
    sdk = gateway(moto_endpoint, environment_name, counter, max_message_bytes=1024)
    for _ in range(25):  # several batches; after the first fails, the rest are not tried
        sdk.send(issuer(REGION).issue(), "x" * 500)

    with pytest.raises(CommandPublishError, match=r"25 of 25 .*NotFound") as info:
        sdk.flush()

    assert counter.calls == {"PublishBatch": 1}
    assert len(info.value.failures) == 25


def test_topic_arns_given_explicitly_win(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    sdk = GatewayClient(
        topic_arns={REGION: resources.commands_topic_arn},
        client_factory=client_factory(moto_endpoint),
    )
    sdk.send(issuer(REGION).issue(), "by arn")
    sdk.flush()
    _, commands = commands_on(client(moto_endpoint, "sqs", REGION), resources.commands_queue_url)
    assert [c["data"] for c in commands] == ["by arn"]


def test_configuration_errors_are_clear(
    aws_chain: MotoEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_id = issuer(OTHER_REGION).issue()
    sdk = GatewayClient()
    sdk.send(connection_id, "x")
    with pytest.raises(ValueError, match="pass environment= to GatewayClient or set WSGW_"):
        sdk.flush()
    assert sdk.pending_commands == 1  # kept: nothing was published

    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ValueError, match="broadcast needs a region"):
        GatewayClient().broadcast("x")
    with pytest.raises(ValueError, match="environment must be 1 to 20"):
        GatewayClient(environment="Bad_Name")

    monkeypatch.setenv("WSGW_ENVIRONMENT", "prod")
    monkeypatch.setenv("WSGW_ACCOUNT_ID", "111122223333")
    assert GatewayClient().topic_arn("ap-south-1") == (
        "arn:aws:sns:ap-south-1:111122223333:wsgw-prod-commands"
    )


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1001, "", '"code" must be 1000 or between 3000 and 4999'),
        (4000, "x" * 124, '"reason" must be at most 123 bytes'),
        (True, "", '"code" must be'),
    ],
)
def test_close_arguments_follow_the_node_rules(code: int, reason: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        GatewayClient(environment="dev").close(issuer(REGION).issue(), code, reason)


def test_text_must_be_valid_utf8() -> None:
    with pytest.raises(ValueError, match="lone surrogates"):
        GatewayClient(environment="dev").send(issuer(REGION).issue(), "\ud800")
    with pytest.raises(TypeError, match="data must be str or bytes"):
        GatewayClient(environment="dev").send(issuer(REGION).issue(), 12)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_bytes", [1024, 1500, 4096])
def test_packed_messages_never_pass_the_bound_and_lose_nothing(max_bytes: int) -> None:
    ids = [issuer(REGION).issue() for _ in range(120)]
    commands = []
    for size in (0, 1, 37, 150, 300):  # up to 600 bytes of UTF-8
        data_json, binary = payload_json("ü" * size)
        commands += send_commands(ids[: size % 120 + 1], data_json, binary, max_bytes)
    commands += close_commands(ids, 4000, "ß" * 60, max_bytes)
    assert all(c.size == len(c.text.encode()) for c in commands)

    bodies = pack_messages(commands, max_bytes)

    assert all(len(body.encode()) <= max_bytes for body in bodies)
    parsed = [c for body in bodies for c in parse_body(body, max_payload_bytes=MAX_PAYLOAD)[0]]
    assert [json.loads(c.text) for c in commands] == [
        item for body in bodies for item in json.loads(body)["commands"]
    ]
    closed = [i for c in parsed if c.action == "close" for i in c.connection_ids]
    assert closed == ids
