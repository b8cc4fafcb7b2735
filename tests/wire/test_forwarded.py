"""The peer link's command format: every command kind round-trips; foreign bytes are refused."""

from __future__ import annotations

import struct

import pytest

from runtime.wire.commands import (
    Broadcast,
    ChannelPublish,
    Close,
    Command,
    Interest,
    PeerCommand,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from runtime.wire.forwarded import (
    CHANNEL_PUBLISH,
    INTEREST,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ForwardedFormatError,
    decode_forwarded,
    encode_forwarded,
)

ISSUER = ConnectionIdIssuer("eu-west-1", NodeAddress("10.0.0.7", 9100))


def test_every_kind_round_trips() -> None:
    ids = tuple(ISSUER.issue() for _ in range(3))
    commands: list[Command] = [
        Send(ids, "héllo ✓".encode(), False),
        Send(ids[:1], bytes(range(256)), True),
        Send(ids[1:2], b"", False),
        Close(ids[2:], 4000, "fermé"),
        Close(ids, 1000, ""),
        Broadcast(b"all", False),
        Broadcast(b"\x00\xff", True),
        Publish(("room:a", "ü"), b'{"text":"hi"}'),
        Publish(("line\nbreak", "k"), b"null"),
    ]
    assert decode_forwarded(encode_forwarded(commands)) == commands
    assert decode_forwarded(encode_forwarded([])) == []


def test_binary_payloads_travel_without_base64() -> None:
    payload = bytes(1 << 20)
    encoded = encode_forwarded([Send((ISSUER.issue(),), payload, True)])
    assert len(encoded) < len(payload) + 200


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "unreadable"),
        (struct.pack(">BI", 2, 0), "unknown version 2"),
        (struct.pack(">BI", 1, 1) + b"\x0d", "unknown kind 13"),
        (struct.pack(">BI", 1, 1) + b"\xff", "unknown kind 255"),
        (struct.pack(">BI", 1, 1) + struct.pack(">BBI", 1, 0, 50) + b"short", "unreadable"),
        (encode_forwarded([Broadcast(b"x", False)]) + b"extra", "5 bytes after"),
        (struct.pack(">BI", 1, 1) + struct.pack(">BHH", 2, 1000, 2) + b"\xff\xfe", "unreadable"),
    ],
)
def test_foreign_bytes_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ForwardedFormatError, match=error):
        decode_forwarded(data)


@pytest.mark.parametrize("keys", [b"5", b"null", b'{"a": 1}', b"[1, 2]", b"[not json"])
def test_publish_keys_that_are_not_a_list_of_strings_are_refused(keys: bytes) -> None:
    data = struct.pack(">BI", 1, 1) + struct.pack(">BBI", 4, 1, len(keys)) + keys
    data += struct.pack(">I", 4) + b"null"
    with pytest.raises(ForwardedFormatError):
        decode_forwarded(data)


# The channel kinds (7 to 10) -----------------------------------------------------------------

HEAD = struct.pack(">BI", 1, 1)  # version 1, one command
NODE = NodeAddress("10.0.0.9", 9100)


def sized(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_the_channel_kinds_round_trip_among_the_others() -> None:
    ids = tuple(ISSUER.issue() for _ in range(3))
    commands: list[PeerCommand] = [
        Subscribe(ids, ("room:1", "AZaz09_-.:@/=+!~")),
        Subscribe(ids[:1], ("x",), '{"name":"Zoë"}'.encode(), True),
        Send(ids[:1], b"between", False),
        Unsubscribe(ids[1:], ("room:1",)),
        ChannelPublish("room:1", "héllo".encode(), False),
        ChannelPublish("room:2", bytes(range(256)), True, ids[:2]),
        ChannelPublish("r", b"", False, ()),
        Interest(NODE, ("room:1", "x"), (), True),
        Interest(NODE, (), ("room:1",), False),
        Interest(NodeAddress("fd00::1", 65535), ("ü",), ("a", "b"), False),
        Interest(NODE, (), (), True),  # a node that holds nothing says so
        Interest(NODE, ("room:1",), (), True, True),  # just up to the receiver: answer me
        Broadcast(b"all", True),
    ]
    assert decode_forwarded(encode_forwarded(commands)) == commands


def test_a_large_interest_and_publish_travel_compactly() -> None:
    names = tuple(f"room:{n}" for n in range(10_000))
    encoded = encode_forwarded([Interest(NODE, names, (), True)])
    assert len(encoded) < sum(len(name) + 1 for name in names) + 40
    assert decode_forwarded(encoded) == [Interest(NODE, names, (), True)]
    payload = bytes(1 << 20)
    encoded = encode_forwarded([ChannelPublish("c", payload, True)])
    assert len(encoded) < len(payload) + 40


def test_the_channel_kinds_are_laid_out_as_documented() -> None:
    subscribe = (
        HEAD
        + struct.pack(">BB", SUBSCRIBE, 1)
        + sized(b"id1\nid2")
        + sized(b"a\nb:c")
        + sized(b'{"n":1}')
    )
    assert decode_forwarded(subscribe) == [
        Subscribe(("id1", "id2"), ("a", "b:c"), b'{"n":1}', True)
    ]
    unsubscribe = HEAD + bytes([UNSUBSCRIBE]) + sized(b"id1") + sized(b"a")
    assert decode_forwarded(unsubscribe) == [Unsubscribe(("id1",), ("a",))]
    publish = (
        HEAD + struct.pack(">BBH", CHANNEL_PUBLISH, 0, 4) + b"room" + sized(b"") + sized(b"hi")
    )
    assert decode_forwarded(publish) == [ChannelPublish("room", b"hi", False, ())]
    interest = (
        HEAD
        + struct.pack(">BBB", INTEREST, 0, 8)
        + b"10.0.0.9"
        + struct.pack(">H", 9100)
        + sized(b"a\nb")
        + sized(b"c")
    )
    assert decode_forwarded(interest) == [Interest(NODE, ("a", "b"), ("c",), False)]
    assert encode_forwarded(decode_forwarded(interest)) == interest
    assert encode_forwarded(decode_forwarded(subscribe)) == subscribe


def test_every_truncation_of_the_channel_kinds_is_refused() -> None:
    whole = encode_forwarded(
        [
            Subscribe(("abc",), ("a", "b"), b"{}", True),
            Unsubscribe(("abc",), ("a",)),
            ChannelPublish("a", b"payload", False, ("abc",)),
            Interest(NODE, ("a",), ("b",), False),
        ]
    )
    for end in range(len(whole)):
        with pytest.raises(ForwardedFormatError):
            decode_forwarded(whole[:end])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (HEAD + bytes([SUBSCRIBE]), "unreadable"),
        (HEAD + struct.pack(">BB", SUBSCRIBE, 0) + struct.pack(">I", 99) + b"abc", "past the end"),
        (HEAD + bytes([UNSUBSCRIBE]) + sized(b"a") + sized(b"\xff\xfe"), "unreadable"),
        (HEAD + bytes([UNSUBSCRIBE]) + sized(b"\xc3\xa9") + sized(b"a"), "unreadable"),
        (
            HEAD + struct.pack(">BBH", CHANNEL_PUBLISH, 0, 9) + b"a" + sized(b"") + sized(b""),
            "unreadable|past the end|after",
        ),
        (
            HEAD
            + struct.pack(">BBB", INTEREST, 1, 6)
            + b"node-b"
            + struct.pack(">H", 9100)
            + sized(b"")
            + sized(b""),
            "unreadable",  # a node is an IP address
        ),
        (
            HEAD
            + struct.pack(">BBB", INTEREST, 1, 8)
            + b"10.0.0.9"
            + struct.pack(">H", 0)
            + sized(b"")
            + sized(b""),
            "unreadable",
        ),
        (
            encode_forwarded([Interest(NODE, ("a",), (), True)]) + b"x",
            "1 bytes after",
        ),
    ],
)
def test_foreign_channel_bytes_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ForwardedFormatError, match=error):
        decode_forwarded(data)


@pytest.mark.parametrize(
    "command",
    [
        Subscribe(("abc",), ("a\nb",)),
        Unsubscribe(("abc",), ("ok", "")),
        Interest(NODE, ("",), (), True),
        Interest(NODE, (), ("x\n",), False),
    ],
)
def test_names_that_cannot_travel_newline_joined_are_never_sent(command: PeerCommand) -> None:
    with pytest.raises(ValueError, match="empty or holds a newline"):
        encode_forwarded([command])
