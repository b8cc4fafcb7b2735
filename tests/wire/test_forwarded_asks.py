"""The @connections asks and answers on the peer link: they round-trip beside the origin's
commands, version 1 batches of the older kinds are unchanged, and foreign bytes are refused."""

from __future__ import annotations

import struct

import pytest

from runtime.wire.commands import Answer, Ask, Broadcast, Close, PeerCommand, Publish, Send
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from runtime.wire.forwarded import (
    ANSWER,
    ASK,
    ForwardedFormatError,
    decode_forwarded,
    encode_forwarded,
)

ISSUER = ConnectionIdIssuer("eu-west-1", NodeAddress("10.0.0.7", 9100))
ASKER = NodeAddress("10.0.0.8", 9100)
HEAD = struct.pack(">BI", 1, 1)  # version 1, one command


def ask_bytes(
    *,
    action: int = 1,
    host: bytes = b"10.0.0.8",
    port: int = 9100,
    connection_id: bytes = b"abc",
    payload: bytes = b"",
) -> bytes:
    """One ask, written field by field as the layout says (not by encode_forwarded)."""
    return (
        HEAD
        + struct.pack(">BQBBB", ASK, 7, action, 0, len(host))
        + host
        + struct.pack(">H", port)
        + struct.pack(">H", len(connection_id))
        + connection_id
        + struct.pack(">I", len(payload))
        + payload
    )


def test_asks_and_answers_round_trip_among_commands() -> None:
    cid = ISSUER.issue()
    commands: list[PeerCommand] = [
        Ask(1, ASKER, cid, "get"),
        Ask(2**64 - 1, ASKER, cid, "post", "héllo".encode(), False),
        Ask(3, NodeAddress("fd00::1", 65535), cid, "post", bytes(range(256)), True),
        Ask(4, ASKER, cid, "delete"),
        Send((cid,), b"between", False),
        Answer(1, 200, b'{"connectedAt":"2026-01-01T00:00:00.000Z"}'),
        Answer(2, 410),
        Answer(3, 204, b""),
        Broadcast(b"all", True),
    ]
    assert decode_forwarded(encode_forwarded(commands)) == commands


def test_large_post_payload_travels_as_is() -> None:
    payload = bytes(1 << 20)
    encoded = encode_forwarded([Ask(9, ASKER, ISSUER.issue(), "post", payload, True)])
    assert len(encoded) < len(payload) + 100
    (ask,) = decode_forwarded(encoded)
    assert isinstance(ask, Ask) and ask.payload == payload and ask.binary


def test_the_layout_is_as_documented() -> None:
    assert decode_forwarded(ask_bytes(action=2, payload=b"hi")) == [
        Ask(7, ASKER, "abc", "post", b"hi", False)
    ]
    answer = HEAD + struct.pack(">BQHI", ANSWER, 5, 413, 2) + b"{}"
    assert decode_forwarded(answer) == [Answer(5, 413, b"{}")]


def test_older_kinds_encode_exactly_as_before() -> None:
    """Version 1 stays what older nodes read: the new kinds changed no byte of the others."""
    cid = "abc"
    assert encode_forwarded([Send((cid,), b"x", False), Close((cid,), 1000, "")]) == (
        struct.pack(">BI", 1, 2)
        + struct.pack(">BBI", 1, 0, 3)
        + b"abc"
        + struct.pack(">I", 1)
        + b"x"
        + struct.pack(">BHH", 2, 1000, 0)
        + struct.pack(">I", 3)
        + b"abc"
    )
    assert decode_forwarded(encode_forwarded([Publish(("k",), b"null")])) == [
        Publish(("k",), b"null")
    ]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (ask_bytes(action=0), "unknown action 0"),
        (ask_bytes(action=4), "unknown action 4"),
        (ask_bytes(host=b"node-b.internal"), "unreadable"),  # an address is an IP
        (ask_bytes(host=b"10.0.0.\xff"), "unreadable"),
        (ask_bytes(port=0), "unreadable"),
        (ask_bytes(connection_id=b"\xc3\xa9"), "unreadable"),  # IDs are ASCII
        (ask_bytes() + b"x", "1 bytes after"),
        (HEAD + bytes([13]), "unknown kind 13"),
        (HEAD + struct.pack(">BQHI", ANSWER, 1, 200, 10) + b"short", "unreadable|after"),
    ],
)
def test_foreign_asks_and_answers_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ForwardedFormatError, match=error):
        decode_forwarded(data)


def test_every_truncation_of_an_ask_and_an_answer_is_refused() -> None:
    whole = encode_forwarded(
        [Ask(1, ASKER, ISSUER.issue(), "post", b"payload", False), Answer(1, 200, b"{}")]
    )
    for end in range(len(whole)):
        with pytest.raises(ForwardedFormatError):
            decode_forwarded(whole[:end])
