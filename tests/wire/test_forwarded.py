"""The peer link's command format: every command kind round-trips; foreign bytes are refused."""

from __future__ import annotations

import struct

import pytest

from runtime.wire.commands import Broadcast, Close, Command, Publish, Send
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from runtime.wire.forwarded import ForwardedFormatError, decode_forwarded, encode_forwarded

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
        (struct.pack(">BI", 1, 1) + b"\x09", "unknown kind 9"),
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
