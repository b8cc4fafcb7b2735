"""Presence on the wire: the peer-only ask and answer round-trip beside the other kinds and are
laid out as documented; member lists are JSON any reader can parse; the query paths carry any
channel name, "/" included."""

from __future__ import annotations

import json
import struct

import pytest

from runtime.wire.commands import Interest, PeerCommand, Send
from runtime.wire.connection_id import MAX_ENCODED_LENGTH, ConnectionIdIssuer, NodeAddress
from runtime.wire.forwarded import (
    PRESENCE_ANSWER,
    PRESENCE_ASK,
    ForwardedFormatError,
    decode_forwarded,
    encode_forwarded,
)
from runtime.wire.presence import (
    PresenceAnswer,
    PresenceAsk,
    channel_path,
    entry_size,
    is_cursor,
    members_json,
    parse_members,
    presence_target,
)

ISSUER = ConnectionIdIssuer("eu-west-1", NodeAddress("10.0.0.7", 9100))
ASKER = NodeAddress("10.0.0.8", 9100)
HEAD = struct.pack(">BI", 1, 1)  # version 1, one command


def test_asks_and_answers_round_trip_among_the_other_kinds() -> None:
    cid = ISSUER.issue()
    members = members_json([(cid, b'{"name":"Zo\xc3\xab"}')])
    commands: list[PeerCommand] = [
        PresenceAsk(1, ASKER, "room:1", "", 0),
        PresenceAsk(2**64 - 1, NodeAddress("fd00::1", 65535), "AZaz09_-.:@/=+!~ü", cid, 1000),
        Send((cid,), b"between", False),
        PresenceAnswer(1, 0),
        PresenceAnswer(2, 2**64 - 1, members, True),
        Interest(ASKER, ("room:1",), (), True),
    ]
    assert decode_forwarded(encode_forwarded(commands)) == commands


def test_asks_and_answers_are_laid_out_as_documented() -> None:
    ask = (
        HEAD
        + struct.pack(">BQI", PRESENCE_ASK, 7, 100)
        + bytes([8])
        + b"10.0.0.8"
        + struct.pack(">H", 9100)
        + struct.pack(">H", 4)
        + b"room"
        + bytes([3])
        + b"abc"
    )
    assert decode_forwarded(ask) == [PresenceAsk(7, ASKER, "room", "abc", 100)]
    assert encode_forwarded(decode_forwarded(ask)) == ask
    answer = HEAD + struct.pack(">BQBQ", PRESENCE_ANSWER, 7, 1, 12) + struct.pack(">I", 2) + b"[]"
    assert decode_forwarded(answer) == [PresenceAnswer(7, 12, b"[]", True)]
    assert encode_forwarded(decode_forwarded(answer)) == answer


def test_every_truncation_is_refused() -> None:
    whole = encode_forwarded(
        [PresenceAsk(1, ASKER, "room", "abc", 5), PresenceAnswer(1, 3, b'[{"connectionId":"a"}]')]
    )
    for end in range(len(whole)):
        with pytest.raises(ForwardedFormatError):
            decode_forwarded(whole[:end])


@pytest.mark.parametrize(
    "data",
    [
        HEAD + struct.pack(">BQI", PRESENCE_ASK, 1, 0) + bytes([6]) + b"node-b" + bytes(5),
        HEAD + struct.pack(">BQI", PRESENCE_ASK, 1, 0) + bytes([1]) + b"x",
        HEAD
        + struct.pack(">BQI", PRESENCE_ASK, 1, 0)
        + bytes([8])
        + b"10.0.0.8"
        + struct.pack(">HH", 9100, 2)
        + b"\xff\xfe"
        + bytes(1),
        HEAD + struct.pack(">BQBQ", PRESENCE_ANSWER, 1, 0, 0) + struct.pack(">I", 9) + b"[]",
    ],
)
def test_foreign_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ForwardedFormatError):
        decode_forwarded(data)


def test_member_lists_are_json_and_parse_back() -> None:
    ids = [ISSUER.issue() for _ in range(3)]
    entries = [(ids[0], b""), (ids[1], '{"name":"Zoë","tags":[1,2]}'.encode()), (ids[2], b"null")]
    text = members_json(entries)
    assert json.loads(text) == [
        {"connectionId": ids[0]},
        {"connectionId": ids[1], "userInfo": {"name": "Zoë", "tags": [1, 2]}},
        {"connectionId": ids[2], "userInfo": None},
    ]
    assert parse_members(text) == ((ids[0], b""), entries[1], (ids[2], b""))  # null is none
    assert members_json([]) == b"[]"
    assert parse_members(b"[]") == ()
    assert len(text) <= 2 + sum(entry_size(entry) for entry in entries)  # and the brackets


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"[1]",
        b'[{"userInfo":1}]',
        b'[{"connectionId":"a b"}]',
        b"[",
        b'[{"connectionId":"a","userInfo":NaN}]',
    ],
)
def test_member_lists_that_no_node_writes_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="a member"):
        parse_members(data)


def test_cursors_are_connection_id_shaped() -> None:
    assert is_cursor(ISSUER.issue())
    assert is_cursor("a" * MAX_ENCODED_LENGTH)
    for bad in ("", "a" * (MAX_ENCODED_LENGTH + 1), "a b", "a=", "ü", "a\n"):
        assert not is_cursor(bad), bad


@pytest.mark.parametrize("channel", ["room:1", "user/7", "a%2Fb", "AZaz09_-.:@/=+!~", "members"])
def test_paths_carry_any_channel_name(channel: str) -> None:
    assert presence_target(channel_path(channel)) == (channel, False)
    assert presence_target(channel_path(channel, members=True)) == (channel, True)


@pytest.mark.parametrize(
    "path",
    [
        "/channels",
        "/channels/a/b",
        "/channels/a/members/x",
        "/channel/a",
        "/commands",
        "channels/a",
    ],
)
def test_other_paths_are_no_presence_query(path: str) -> None:
    assert presence_target(path) is None


def test_an_empty_channel_is_left_to_the_channel_rules() -> None:
    assert presence_target("/channels/") == ("", False)  # answered 400 by the rules
