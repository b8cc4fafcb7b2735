"""The channel commands from the origin: subscribe, unsubscribe and publish to a channel, their
rules (names, sizes, limits), every bad input answered by a per-command error, and the JSON back."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from runtime.wire.channels import (
    DEFAULT_RULES,
    MAX_CHANNELS_PER_COMMAND,
    ChannelRules,
)
from runtime.wire.commands import (
    MAX_IDS_PER_COMMAND,
    ChannelPublish,
    CommandError,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_commands,
    parse_body,
    parse_command,
)
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress

LIMIT = 1024
ISSUER = ConnectionIdIssuer("eu-west-1", NodeAddress("10.0.0.7", 9100))
EVERY_CHARACTER = "AZaz09_-.:@/=+!~"


def parse(*commands: Any, rules: ChannelRules = DEFAULT_RULES) -> tuple[list[Any], list[Any]]:
    return parse_body(
        json.dumps({"commands": list(commands)}), max_payload_bytes=LIMIT, rules=rules
    )


def error_of(command: Any, rules: ChannelRules = DEFAULT_RULES) -> str:
    commands, rejections = parse(command, rules=rules)
    assert commands == []
    assert len(rejections) == 1
    assert rejections[0].error.startswith("commands[0]: ")
    return rejections[0].error


def subscribe(**fields: Any) -> dict[str, Any]:
    return {"action": "subscribe", "connectionIds": ["a"], "channels": ["room:1"], **fields}


def publish(**fields: Any) -> dict[str, Any]:
    return {"action": "publish", "channel": "room:1", "data": "hi", **fields}


# Valid commands ------------------------------------------------------------------------------


def test_subscribe_defaults_to_no_user_info_and_no_presence_events() -> None:
    assert parse(subscribe()) == ([Subscribe(("a",), ("room:1",), b"", False)], [])
    (command,) = parse(subscribe())[0]
    assert command.action == "subscribe"


def test_subscribe_keeps_user_info_as_compact_json_text() -> None:
    commands, rejections = parse(
        subscribe(userInfo={"name": "Zoë", "tags": [1, 2.5, None]}, presenceEvents=True),
        subscribe(userInfo="just text"),
        subscribe(userInfo=0),
        subscribe(userInfo=False),
        subscribe(userInfo=None),
    )
    assert rejections == []
    assert [command.user_info for command in commands] == [
        '{"name":"Zoë","tags":[1,2.5,null]}'.encode(),
        b'"just text"',
        b"0",
        b"false",
        b"",  # null is no userInfo, as absent is
    ]
    assert commands[0].presence_events is True
    assert not any(command.presence_events for command in commands[1:])


def test_channels_and_ids_collapse_keeping_first_order() -> None:
    commands, _ = parse(
        subscribe(connectionIds=["b", "a", "b"], channels=["y", "x", "y", "x", "z"]),
        {"action": "unsubscribe", "connectionIds": ["c", "c"], "channels": ["q", "q"]},
    )
    assert commands == [
        Subscribe(("b", "a"), ("y", "x", "z")),
        Unsubscribe(("c",), ("q",)),
    ]
    assert commands[1].action == "unsubscribe"


def test_every_allowed_character_and_the_longest_name() -> None:
    longest = "n" * DEFAULT_RULES.max_name_length
    commands, rejections = parse(
        subscribe(channels=[EVERY_CHARACTER, longest, "a"]),
        publish(channel=EVERY_CHARACTER),
    )
    assert rejections == []
    assert commands[0].channels == (EVERY_CHARACTER, longest, "a")
    assert commands[1].channel == EVERY_CHARACTER


def test_as_many_channels_as_a_command_may_hold() -> None:
    names = [f"c{n}" for n in range(MAX_CHANNELS_PER_COMMAND)]
    (command,), rejections = parse(subscribe(channels=names))
    assert rejections == []
    assert command.channels == tuple(names)


def test_publish_to_a_channel() -> None:
    ids = [ISSUER.issue(), ISSUER.issue()]
    raw = bytes(range(256))
    commands, rejections = parse(
        publish(),
        publish(data=base64.b64encode(raw).decode(), isBase64Encoded=True),
        publish(exceptConnectionIds=[ids[0], ids[1], ids[0]]),
        publish(exceptConnectionIds=[]),
        publish(data="x" * LIMIT),
    )
    assert rejections == []
    assert commands == [
        ChannelPublish("room:1", b"hi", False, ()),
        ChannelPublish("room:1", raw, True, ()),
        ChannelPublish("room:1", b"hi", False, tuple(ids)),
        ChannelPublish("room:1", b"hi", False, ()),
        ChannelPublish("room:1", b"x" * LIMIT, False, ()),
    ]
    assert commands[0].action == "publish"


def test_a_graphql_publish_is_still_one() -> None:
    commands, rejections = parse({"action": "publish", "keys": ["k"], "context": {"a": 1}})
    assert rejections == []
    assert commands == [Publish(("k",), b'{"a":1}')]


def test_the_nodes_rules_decide() -> None:
    tight = ChannelRules(max_name_length=5, max_user_info_bytes=0)
    assert parse(subscribe(channels=["abcde"]), rules=tight)[1] == []
    assert "1 to 5 characters (got 6)" in error_of(subscribe(channels=["abcdef"]), tight)
    assert '"userInfo" is 1 bytes' in error_of(subscribe(channels=["r"], userInfo=1), tight)
    assert "1 to 5 characters" in error_of(publish(channel="abcdef"), tight)
    assert parse(subscribe(channels=["r"], userInfo=None), rules=tight)[1] == []
    wide = ChannelRules(max_name_length=1024, max_user_info_bytes=65536)
    assert parse(subscribe(channels=["n" * 1024], userInfo="x" * 65534), rules=wide)[1] == []
    with pytest.raises(CommandError, match="1 to 5 characters"):
        parse_command(publish(channel="abcdef"), max_payload_bytes=LIMIT, rules=tight)


def test_user_info_at_the_limit_counts_utf8_bytes() -> None:
    # A JSON string of 1022 characters: 1024 bytes with its quotes.
    assert parse(subscribe(userInfo="u" * 1022))[1] == []
    assert '"userInfo" is 1025 bytes of JSON; the most it may be is 1024' in error_of(
        subscribe(userInfo="u" * 1023)
    )
    # 511 two-byte characters and the quotes: 1024 bytes, then 1026.
    assert parse(subscribe(userInfo="é" * 511))[1] == []
    assert '"userInfo" is 1026 bytes' in error_of(subscribe(userInfo="é" * 512))


@pytest.mark.parametrize(("low", "high"), [(0, 1024), (1025, 1024), (128, -1), (128, 65537)])
def test_rules_out_of_range_are_refused(low: int, high: int) -> None:
    with pytest.raises(ValueError, match="must be between"):
        ChannelRules(low, high)


# Bad input, each named -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "error"),
    [
        # the channel list
        (subscribe(channels=None), '"channels" must be a non-empty list (got null)'),
        ({"action": "subscribe", "connectionIds": ["a"]}, '"channels" must be a non-empty list'),
        (subscribe(channels=[]), '"channels" must be a non-empty list (got list)'),
        (subscribe(channels="room:1"), '"channels" must be a non-empty list (got str)'),
        (subscribe(channels={"room": 1}), '"channels" must be a non-empty list (got dict)'),
        (
            subscribe(channels=[f"c{n}" for n in range(MAX_CHANNELS_PER_COMMAND + 1)]),
            '"channels" may hold at most 100 channels (got 101)',
        ),
        # the names in it
        (subscribe(channels=["a", "b", 3]), '"channels"[2] must be a string (got int)'),
        (subscribe(channels=["a", None]), '"channels"[1] must be a string (got null)'),
        (subscribe(channels=[["a"]]), '"channels"[0] must be a string (got list)'),
        (subscribe(channels=[""]), '"channels"[0] must be a channel name of 1 to 128 characters'),
        (
            subscribe(channels=["ok", "n" * 129]),
            '"channels"[1] must be a channel name of 1 to 128 characters (got 129)',
        ),
        (subscribe(channels=["room 1"]), "\"channels\"[0] holds ' ' (U+0020)"),
        (subscribe(channels=["room\n1"]), "\"channels\"[0] holds '\\n' (U+000A)"),
        (subscribe(channels=["room\t1"]), "(U+0009)"),
        (subscribe(channels=["\x00"]), "(U+0000)"),
        (subscribe(channels=["café"]), "\"channels\"[0] holds 'é' (U+00E9)"),
        (subscribe(channels=["a#b"]), "holds '#' (U+0023): a channel name may hold only A-Z"),
        (subscribe(channels=["a,b"]), "holds ','"),
        (subscribe(channels=["a*"]), "holds '*'"),
        (subscribe(channels=["a\u2028"]), "(U+2028)"),
        (subscribe(channels=["a\ud800"]), "(U+D800)"),
        (
            {"action": "unsubscribe", "connectionIds": ["a"], "channels": ["bad name"]},
            "\"channels\"[0] holds ' '",
        ),
        ({"action": "unsubscribe", "connectionIds": ["a"]}, '"channels" must be a non-empty'),
        # the connections
        (subscribe(connectionIds=[]), '"connectionIds" must be a non-empty list'),
        (subscribe(connectionIds="a"), '"connectionIds" must be a non-empty list (got str)'),
        (subscribe(connectionIds=["a", 1]), '"connectionIds"[1] must be a string (got int)'),
        (
            {"action": "unsubscribe", "channels": ["c"]},
            '"connectionIds" must be a non-empty list (got null)',
        ),
        # userInfo and presenceEvents
        (subscribe(userInfo="u" * 1023), '"userInfo" is 1025 bytes of JSON'),
        (subscribe(userInfo={"k": ["v" * 600, "w" * 600]}), '"userInfo" is 1213 bytes'),
        (subscribe(userInfo="\ud800"), '"userInfo" holds lone surrogates'),
        (subscribe(userInfo=float("nan")), '"userInfo" holds NaN or Infinity'),
        (subscribe(userInfo=[float("inf")]), '"userInfo" holds NaN or Infinity'),
        (subscribe(presenceEvents="true"), '"presenceEvents" must be true or false (got str)'),
        (subscribe(presenceEvents=1), '"presenceEvents" must be true or false (got int)'),
        (subscribe(presenceEvents=None), '"presenceEvents" must be true or false (got null)'),
        # publish: which one, and its channel
        (
            publish(keys=["k"]),
            'a publish holds "channel" (to its subscribers) or "keys" (to GraphQL '
            "subscriptions), not both",
        ),
        (
            {"action": "publish", "data": "x"},
            'a publish needs "channel" (to its subscribers) or "keys"',
        ),
        (publish(channel=None), '"channel" must be a string (got null)'),
        (publish(channel=["room:1"]), '"channel" must be a string (got list)'),
        (publish(channel=""), '"channel" must be a channel name of 1 to 128 characters (got 0)'),
        (publish(channel="r" * 129), '"channel" must be a channel name of 1 to 128'),
        (publish(channel="room 1"), "\"channel\" holds ' ' (U+0020)"),
        # exceptConnectionIds
        (publish(exceptConnectionIds="a"), '"exceptConnectionIds" must be a list (got str)'),
        (publish(exceptConnectionIds=None), '"exceptConnectionIds" must be a list (got null)'),
        (publish(exceptConnectionIds={"a": 1}), '"exceptConnectionIds" must be a list (got dict)'),
        (
            publish(exceptConnectionIds=["abc", 5]),
            '"exceptConnectionIds"[1] must be a string (got int)',
        ),
        (
            publish(exceptConnectionIds=["abc", "no such id"]),
            "\"exceptConnectionIds\"[1] is not a connection ID (got 'no such id')",
        ),
        (publish(exceptConnectionIds=["a\nb"]), '"exceptConnectionIds"[0] is not a connection'),
        (publish(exceptConnectionIds=["ok", "é"]), '"exceptConnectionIds"[1] is not a connection'),
        (publish(exceptConnectionIds=[""]), '"exceptConnectionIds"[0] is not a connection ID'),
        (publish(exceptConnectionIds=["a" * 200]), '"exceptConnectionIds"[0] is not a connection'),
        (
            publish(exceptConnectionIds=["a"] * (MAX_IDS_PER_COMMAND + 1)),
            '"exceptConnectionIds" may hold at most 100000 IDs (got 100001)',
        ),
        # data
        (publish(data="x" * (LIMIT + 1)), '"data" is 1025 bytes; the most a message may be is'),
        (
            publish(data=base64.b64encode(bytes(LIMIT + 1)).decode(), isBase64Encoded=True),
            '"data" is 1025 bytes',
        ),
        (publish(data=None), '"data" must be a string (got null)'),
        ({"action": "publish", "channel": "c"}, '"data" must be a string (got null)'),
        (publish(data=5), '"data" must be a string (got int)'),
        (publish(data="not base64!", isBase64Encoded=True), '"data" is not valid base64'),
        (publish(data="QUJ", isBase64Encoded=True), '"data" is not valid base64'),
        (publish(data="héllo", isBase64Encoded=True), '"data" is not valid base64'),
        (publish(isBase64Encoded="yes"), '"isBase64Encoded" must be true or false (got str)'),
        (publish(data="\ud800"), '"data" holds lone surrogates'),
        # the action itself
        (
            {"action": "join", "connectionIds": ["a"], "channels": ["c"]},
            '"action" must be one of send, close, broadcast, publish, subscribe, unsubscribe '
            "(got 'join')",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(command: Any, error: str) -> None:
    assert error in error_of(command)


def test_a_bad_channel_command_sinks_none_of_its_neighbours() -> None:
    commands, rejections = parse(
        subscribe(),
        subscribe(channels=["bad name"]),
        publish(),
        publish(keys=["k"]),
        {"action": "unsubscribe", "connectionIds": ["a"], "channels": ["room:1"]},
    )
    assert commands == [
        Subscribe(("a",), ("room:1",)),
        ChannelPublish("room:1", b"hi", False),
        Unsubscribe(("a",), ("room:1",)),
    ]
    assert [rejection.index for rejection in rejections] == [1, 3]


# JSON back -----------------------------------------------------------------------------------


def test_encode_commands_round_trips_the_channel_commands() -> None:
    commands: list[Any] = [
        Subscribe(("a", "b"), ("room:1", EVERY_CHARACTER)),
        Subscribe(("c",), ("x",), '{"name":"Zoë","n":[1,null]}'.encode(), True),
        Subscribe(("c",), ("x",), b'"text"', False),
        Unsubscribe(("a",), ("room:1", "x")),
        ChannelPublish("room:1", 'héllo "q" \n'.encode(), False),
        ChannelPublish("room:2", b"\x00\xff", True, (ISSUER.issue(), ISSUER.issue())),
        Publish(("k",), b"null"),
    ]
    encoded = encode_commands(commands)
    assert parse_body(encoded, max_payload_bytes=LIMIT) == (commands, [])
    document = json.loads(encoded)["commands"]
    assert "userInfo" not in document[0]
    assert document[1]["userInfo"] == {"name": "Zoë", "n": [1, None]}
    assert "exceptConnectionIds" not in document[4]
    assert document[5]["isBase64Encoded"] is True
    assert base64.b64decode(document[5]["data"]) == b"\x00\xff"
    assert "channel" not in document[6] and "keys" not in document[5]
