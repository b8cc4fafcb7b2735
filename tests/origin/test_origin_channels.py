"""GatewayClient's channel helpers on moto: subscribe and unsubscribe go to each connection's
region, a channel publish to every region of the environment, and bad input fails at the call."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from runtime.origin.channels import MAX_CHANNELS_PER_COMMAND, ChannelRules
from runtime.origin.client import GatewayClient, InvalidConnectionId
from runtime.origin.packing import (
    ENVELOPE_BYTES,
    MessageTooLarge,
    channel_publish_command,
    pack_messages,
    payload_json,
    send_commands,
    subscribe_commands,
    unsubscribe_commands,
)
from tests.aws import MotoEndpoint
from tests.origin.harness import (
    client,
    client_factory,
    commands_on,
    issuer,
    provision_region,
)

ACCOUNT = "123456789012"  # moto's
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
HOME, AWAY, FAR = REGIONS


def gateway(endpoint: MotoEndpoint, environment: str, **options: Any) -> GatewayClient:
    return GatewayClient(
        environment=environment,
        account=ACCOUNT,
        region=HOME,
        client_factory=client_factory(endpoint),
        **options,
    )


def channel_commands_on(endpoint: MotoEndpoint, region: str, queue_url: str) -> list[Any]:
    """The commands on a region's commands queue, each body checked as the node checks it, in
    the order the client buffered them (few enough for one message per region, so queue order
    is buffer order)."""
    bodies, commands = commands_on(client(endpoint, "sqs", region), queue_url)
    assert len(bodies) <= 1, "more than one message: their order on the queue is not kept"
    return commands


def test_subscribe_and_unsubscribe_go_to_each_connection_region(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    home = provision_region(moto_endpoint, environment_name, HOME)
    away = provision_region(moto_endpoint, environment_name, AWAY)
    far = provision_region(moto_endpoint, environment_name, FAR)
    here = [issuer(HOME).issue() for _ in range(2)]
    there = issuer(AWAY, "10.1.0.7").issue()

    with gateway(moto_endpoint, environment_name) as sdk:
        sdk.subscribe([here[0], there, here[1], here[0]], ["room:1", "user:7", "room:1"])
        sdk.subscribe(there, "room:2", user_info={"name": "Zoë", "n": [1, None]})
        sdk.subscribe(here[0], "room:3", presence_events=True, user_info="ada")
        sdk.unsubscribe([there, here[1]], ["room:1"])

    assert channel_commands_on(moto_endpoint, HOME, home.commands_queue_url) == [
        {"action": "subscribe", "connectionIds": here, "channels": ["room:1", "user:7"]},
        {
            "action": "subscribe",
            "connectionIds": [here[0]],
            "channels": ["room:3"],
            "userInfo": "ada",
            "presenceEvents": True,
        },
        {"action": "unsubscribe", "connectionIds": [here[1]], "channels": ["room:1"]},
    ]
    assert channel_commands_on(moto_endpoint, AWAY, away.commands_queue_url) == [
        {"action": "subscribe", "connectionIds": [there], "channels": ["room:1", "user:7"]},
        {
            "action": "subscribe",
            "connectionIds": [there],
            "channels": ["room:2"],
            "userInfo": {"name": "Zoë", "n": [1, None]},
        },
        {"action": "unsubscribe", "connectionIds": [there], "channels": ["room:1"]},
    ]
    assert channel_commands_on(moto_endpoint, FAR, far.commands_queue_url) == []


def test_a_channel_publish_reaches_every_region_of_the_environment(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    queues = {
        region: provision_region(moto_endpoint, environment_name, region).commands_queue_url
        for region in REGIONS
    }
    sender = issuer(AWAY, "10.1.0.7").issue()
    muted = issuer(HOME).issue()

    with gateway(moto_endpoint, environment_name, regions=REGIONS) as sdk:
        sdk.publish_to_channel("room:1", "hi", except_ids=[sender, muted, sender])
        sdk.publish_to_channel("room:1", b"\x00\xff")

    def publish(data: str, binary: bool, *except_ids: str) -> dict[str, Any]:
        command: dict[str, Any] = {
            "action": "publish",
            "channel": "room:1",
            "data": data,
            "isBase64Encoded": binary,
        }
        if except_ids:
            command["exceptConnectionIds"] = list(except_ids)
        return command

    binary = publish(base64.b64encode(b"\x00\xff").decode(), True)
    # Each region is told only of its own connections to leave out.
    assert channel_commands_on(moto_endpoint, HOME, queues[HOME]) == [
        publish("hi", False, muted),
        binary,
    ]
    assert channel_commands_on(moto_endpoint, AWAY, queues[AWAY]) == [
        publish("hi", False, sender),
        binary,
    ]
    assert channel_commands_on(moto_endpoint, FAR, queues[FAR]) == [publish("hi", False), binary]


def test_regions_come_from_the_environment_variable_or_the_call(
    aws_chain: MotoEndpoint, environment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in Lambda: boto3's chain, the account from STS, the regions from WSGW_REGIONS."""
    queues = {
        region: provision_region(aws_chain, environment_name, region).commands_queue_url
        for region in REGIONS
    }
    monkeypatch.setenv("WSGW_REGIONS", f" {HOME}, {FAR},,{HOME} ")
    sdk = GatewayClient(environment=environment_name)
    assert sdk.regions == (HOME, FAR)

    sdk.publish_to_channel("a", "to the environment")
    sdk.publish_to_channel("b", "to one region", regions=AWAY)
    sdk.publish_to_channel("c", "to two", regions=[AWAY, FAR, AWAY])
    sdk.flush()

    sent = {
        region: [(c["channel"], c["data"]) for c in channel_commands_on(aws_chain, region, url)]
        for region, url in queues.items()
    }
    assert sent == {
        HOME: [("a", "to the environment")],
        AWAY: [("b", "to one region"), ("c", "to two")],
        FAR: [("a", "to the environment"), ("c", "to two")],
    }
    # An argument wins over the variable.
    assert GatewayClient(environment=environment_name, regions=[AWAY]).regions == (AWAY,)


def test_a_publish_without_regions_names_both_ways_to_give_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WSGW_REGIONS", raising=False)
    sdk = GatewayClient(environment="dev", region=HOME)  # its own region is not the environment's
    assert sdk.regions is None
    with pytest.raises(
        ValueError,
        match=r"publish_to_channel goes to every region.*regions= to GatewayClient or set "
        r"WSGW_REGIONS",
    ):
        sdk.publish_to_channel("room:1", "hi")
    monkeypatch.setenv("WSGW_REGIONS", " , ")  # says nothing: as if unset
    assert GatewayClient(environment="dev").regions is None
    assert sdk.pending_commands == 0


@pytest.mark.parametrize(
    ("regions", "variable", "expected"),
    [
        ([], None, "regions must name at least one region"),
        (["us-east-1", ""], None, "regions: a region is 1 to 32 ASCII characters"),
        (["x" * 33], None, "regions: a region is 1 to 32"),
        ([7], None, r"regions: a region is .* \(got 7\)"),
        (None, "us-east-1,é", "WSGW_REGIONS: a region is 1 to 32 ASCII characters"),
    ],
)
def test_bad_regions_are_refused_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch, regions: list[Any] | None, variable: str | None, expected: str
) -> None:
    if variable is None:
        monkeypatch.delenv("WSGW_REGIONS", raising=False)
    else:
        monkeypatch.setenv("WSGW_REGIONS", variable)
    with pytest.raises(ValueError, match=expected):
        GatewayClient(environment="dev", regions=regions)


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ([], '"channels" must be a non-empty list'),
        (
            [f"c{i}" for i in range(MAX_CHANNELS_PER_COMMAND + 1)],
            '"channels" may hold at most 100 channels',
        ),
        (["ok", ""], r'"channels"\[1\] must be a channel name of 1 to 128 characters \(got 0\)'),
        (["x" * 129], r'"channels"\[0\] must be a channel name of 1 to 128 characters'),
        (
            ["room 1"],
            r""""channels"\[0\] holds ' ' \(U\+0020\): a channel name may hold only A-Z""",
        ),
        (["room\n1"], r'"channels"\[0\] holds .* \(U\+000A\)'),
        (["ok", "ok", "caf\u00e9"], r'"channels"\[2\] holds .* \(U\+00E9\)'),
        (["room#1"], r'"channels"\[0\] holds .#. \(U\+0023\)'),
        ([None], r'"channels"\[0\] must be a string \(got null\)'),
        ([3], r'"channels"\[0\] must be a string \(got int\)'),
    ],
)
def test_channel_names_and_counts_follow_the_node_rules(channels: list[Any], expected: str) -> None:
    sdk = GatewayClient(environment="dev", regions=[HOME])
    connection_id = issuer(HOME).issue()
    with pytest.raises(ValueError, match="subscribe: " + expected):
        sdk.subscribe(connection_id, channels)
    with pytest.raises(ValueError, match="unsubscribe: " + expected):
        sdk.unsubscribe(connection_id, channels)
    assert sdk.pending_commands == 0


def test_the_largest_names_and_counts_pass() -> None:
    every_character = "AZaz09_-.:@/=+!~"
    sdk = GatewayClient(environment="dev", regions=[HOME])
    connection_id = issuer(HOME).issue()
    sdk.subscribe(connection_id, ["x" * 128, every_character, *[f"c{i}" for i in range(98)]])
    sdk.unsubscribe(connection_id, every_character)
    sdk.publish_to_channel("y" * 128, "hi")
    assert sdk.pending_commands == 3
    with pytest.raises(
        ValueError, match=r'publish_to_channel: "channel" must be a channel name of 1 to 128'
    ):
        sdk.publish_to_channel("y" * 129, "hi")
    with pytest.raises(ValueError, match=r'"channel" must be a string \(got list\)'):
        sdk.publish_to_channel(["room:1"], "hi")  # type: ignore[arg-type]

    wider = GatewayClient(
        environment="dev",
        regions=[HOME],
        channel_rules=ChannelRules(max_name_length=300, max_user_info_bytes=4096),
    )
    wider.subscribe(connection_id, "x" * 300, user_info="é" * 2000)  # 4002 bytes of JSON
    wider.publish_to_channel("x" * 300, "hi")
    assert wider.pending_commands == 2


@pytest.mark.parametrize(
    ("fields", "error", "expected"),
    [
        ({"max_name_length": 0}, ValueError, "max_name_length must be between 1 and 1024"),
        ({"max_name_length": 1025}, ValueError, "max_name_length must be between 1 and 1024"),
        ({"max_user_info_bytes": -1}, ValueError, "max_user_info_bytes must be between 0 and"),
        ({"max_user_info_bytes": True}, ValueError, "max_user_info_bytes must be between its"),
    ],
)
def test_channel_rules_stay_within_what_a_node_may_be_set_to(
    fields: dict[str, Any], error: type[Exception], expected: str
) -> None:
    with pytest.raises(error, match=expected):
        ChannelRules(**fields)


def test_subscribe_options_follow_the_node_rules() -> None:
    sdk = GatewayClient(environment="dev", regions=[HOME])
    connection_id = issuer(HOME).issue()
    fits = "x" * (1024 - 2)  # a JSON string of 1024 bytes, quotes included
    sdk.subscribe(connection_id, "room:1", user_info=fits)
    with pytest.raises(ValueError, match='"userInfo" is 1025 bytes of JSON; the most it may be'):
        sdk.subscribe(connection_id, "room:1", user_info=fits + "x")
    with pytest.raises(ValueError, match='"userInfo" is 1025 bytes'):  # 1023 characters
        sdk.subscribe(connection_id, "room:1", user_info=fits[:-1] + "é")
    with pytest.raises(TypeError, match='"userInfo" must be JSON-serialisable'):
        sdk.subscribe(connection_id, "room:1", user_info={"when": object()})
    with pytest.raises(ValueError, match='subscribe: "userInfo" must be JSON-serialisable'):
        sdk.subscribe(connection_id, "room:1", user_info=float("nan"))
    with pytest.raises(ValueError, match="lone surrogates"):
        sdk.subscribe(connection_id, "room:1", user_info="\ud800")
    with pytest.raises(ValueError, match="presence_events must be True or False"):
        sdk.subscribe(connection_id, "room:1", presence_events="yes")  # type: ignore[arg-type]
    assert sdk.pending_commands == 1


def test_bad_ids_and_data_raise_before_anything_is_buffered() -> None:
    sdk = GatewayClient(environment="dev", regions=[HOME])
    good = issuer(HOME).issue()
    with pytest.raises(InvalidConnectionId, match=r"connection_ids\[1\]: connection ID 'nope'"):
        sdk.subscribe([good, "nope"], "room:1")
    with pytest.raises(InvalidConnectionId, match=r"connection_ids\[0\]"):
        sdk.unsubscribe(["nope"], "room:1")
    with pytest.raises(InvalidConnectionId, match=r"except_ids\[1\]: connection ID 'nope'"):
        sdk.publish_to_channel("room:1", "hi", except_ids=[good, "nope"])
    with pytest.raises(ValueError, match="lone surrogates"):
        sdk.publish_to_channel("room:1", "\ud800")
    with pytest.raises(TypeError, match="data must be str or bytes"):
        sdk.publish_to_channel("room:1", 12)  # type: ignore[arg-type]
    assert sdk.pending_commands == 0
    sdk.publish_to_channel("room:1", "hi", except_ids=good)  # one ID as a plain string
    assert sdk.pending_commands == 1


def test_a_channel_publish_too_large_for_a_message_is_refused_at_once() -> None:
    sdk = GatewayClient(environment="dev", regions=[HOME, AWAY], max_message_bytes=1024)
    head = len('{"action":"publish","channel":"c","data":"","isBase64Encoded":false}')
    fits = 1024 - ENVELOPE_BYTES - head
    sdk.publish_to_channel("c", "x" * fits)
    assert sdk.pending_commands == 2  # one per region
    too_large = f"a publish to a channel of {1024 - ENVELOPE_BYTES + 1} bytes"
    with pytest.raises(MessageTooLarge, match=too_large):
        sdk.publish_to_channel("c", "x" * (fits + 1))
    many = [issuer(HOME).issue() for _ in range(30)]  # never split: too many to leave out
    with pytest.raises(MessageTooLarge, match="leave out fewer connections"):
        sdk.publish_to_channel("c", "hi", except_ids=many)
    with pytest.raises(MessageTooLarge, match="name fewer channels, give a smaller userInfo"):
        sdk.subscribe(many[0], "c", user_info="x" * 1000)
    assert sdk.pending_commands == 2
    largest = channel_publish_command("c", '"' + "x" * fits + '"', False, [], 1024)
    [body] = pack_messages([largest], 1024)
    assert len(body.encode()) == 1024


@pytest.mark.parametrize("max_bytes", [1024, 1500, 4096])
def test_channel_commands_pack_within_the_bound_and_lose_nothing(max_bytes: int) -> None:
    """Subscribes and unsubscribes split over their IDs as sends do; every message fits."""
    ids = [issuer(HOME).issue() for _ in range(150)]
    commands = subscribe_commands(ids, ["room:1", "a" * 60], '{"n":"é"}', True, max_bytes)
    commands += unsubscribe_commands(ids[:77], ["room:1"], max_bytes)
    data_json, binary = payload_json("ü" * 100)
    commands += send_commands(ids[:3], data_json, binary, max_bytes)
    commands += [channel_publish_command("room:1", data_json, binary, ids[:5], max_bytes)]
    assert all(c.size == len(c.text.encode()) for c in commands)

    bodies = pack_messages(commands, max_bytes)

    assert all(len(body.encode()) <= max_bytes for body in bodies)
    unpacked = [item for body in bodies for item in json.loads(body)["commands"]]
    assert unpacked == [json.loads(c.text) for c in commands]
    subscribed = [i for c in unpacked if c["action"] == "subscribe" for i in c["connectionIds"]]
    assert subscribed == ids
    assert all(c["userInfo"] == {"n": "é"} for c in unpacked if c["action"] == "subscribe")
    left = [i for c in unpacked if c["action"] == "unsubscribe" for i in c["connectionIds"]]
    assert left == ids[:77]


def test_channel_events_read_typed() -> None:
    from runtime.origin import ChannelEvent, EventFormatError, channel_event

    join = {
        "requestContext": {"eventType": "JOIN", "channel": "room:1", "connectionId": "c1"},
        "userInfo": {"name": "Ada"},
    }
    assert channel_event(join) == ChannelEvent("JOIN", "room:1", "c1", {"name": "Ada"})
    leave = {
        "requestContext": {
            "eventType": "LEAVE",
            "channel": "room:1",
            "connectionId": "c1",
            "reason": "disconnected",
        }
    }
    assert channel_event(leave).reason == "disconnected"
    assert channel_event(leave).user_info is None
    occupancy = {"requestContext": {"eventType": "OCCUPANCY", "channel": "r"}, "count": 42}
    assert channel_event(occupancy) == ChannelEvent("OCCUPANCY", "r", count=42)
    partial = {**occupancy, "partial": True}
    assert channel_event(partial).partial
    for bad in (
        {"requestContext": {"eventType": "MESSAGE"}},
        {"requestContext": {"eventType": "JOIN", "connectionId": "c1"}},
        {"requestContext": {"eventType": "OCCUPANCY", "channel": "r"}, "count": "42"},
        {"requestContext": {"eventType": "LEAVE", "channel": "r"}},
        {"nothing": 1},
    ):
        with pytest.raises(EventFormatError):
            channel_event(bad)
