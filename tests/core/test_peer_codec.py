"""The peer protocol's datagrams (runtime/core/peer/codec.py), with no sockets: each kind encodes
and reads back, addresses have one spelling, and a datagram is rejected for the cheapest reason
first. The protocol's behaviour is tested through its facade in test_peer_protocol.py."""

from __future__ import annotations

import pytest

from runtime.core.peer import codec
from runtime.wire.connection_id import NodeAddress

KEY = b"k" * 32
A, B = NodeAddress("10.0.0.1", 9100), NodeAddress("2001:db8::7", 9100)
ROUTE = codec.encode_address(A) + codec.encode_address(B) + codec.encode_session(41)


def test_a_data_datagram_reads_back_what_was_sent() -> None:
    datagram = codec.data_datagram(KEY, 1234, ROUTE, 42, 5, 7, 1, 3, memoryview(b"chunk"))
    assert codec.rejection(datagram, KEY, 1500) is None
    assert datagram[3] == codec.DATA and codec.well_sized(codec.DATA, len(datagram))
    stamp, sender, recipient, session, bound_to = codec.read_header(datagram)
    assert (stamp, session, bound_to) == (1234, 41, 42)
    assert (codec.decode_address(sender), codec.decode_address(recipient)) == (A, B)
    assert codec.read_data(datagram) == (5, 7, 1, 3)
    assert codec.data_chunk(datagram) == b"chunk"


def test_ack_ping_and_pong_have_fixed_sizes_and_read_back() -> None:
    ack = codec.ack_datagram(KEY, 1, ROUTE, 42, 3, 9, 0b101, 11)
    assert len(ack) == codec.ACK_SIZE and codec.well_sized(codec.ACK, len(ack))
    assert codec.read_ack(ack) == (3, 9, 0b101, 11)
    for kind in (codec.PING, codec.PONG):
        datagram = codec.nonce_datagram(KEY, kind, 1, ROUTE, 0, 99)
        assert len(datagram) == codec.PING_SIZE and datagram[3] == kind
        assert codec.read_nonce(datagram) == 99
    assert not codec.well_sized(codec.ACK, codec.ACK_SIZE + 1)


def test_rejections_come_cheapest_first() -> None:
    good = codec.nonce_datagram(KEY, codec.PING, 1, ROUTE, 0, 1)
    assert codec.rejection(good[:10], KEY, 1500) == "truncated"
    assert codec.rejection(good + b"x" * 2000, KEY, 1500) == "oversized"
    assert codec.rejection(b"XX" + good[2:], KEY, 1500) == "garbage"
    assert codec.rejection(bytes((good[0], good[1], 1)) + good[3:], KEY, 1500) == "garbage"
    assert codec.rejection(good, b"another secret", 1500) == "bad_mac"
    flipped = good[:20] + bytes((good[20] ^ 1,)) + good[21:]
    assert codec.rejection(flipped, KEY, 1500) == "bad_mac"


@pytest.mark.parametrize(
    ("spelled", "canonical"),
    [
        (NodeAddress("2001:0db8:0000::0007", 9100), NodeAddress("2001:db8::7", 9100)),
        (NodeAddress("10.0.0.1", 1), NodeAddress("10.0.0.1", 1)),
    ],
)
def test_an_address_has_one_spelling_on_the_wire(
    spelled: NodeAddress, canonical: NodeAddress
) -> None:
    assert codec.canonical(spelled) == canonical
    assert codec.decode_address(codec.encode_address(spelled)) == canonical


def test_a_non_canonical_address_encoding_is_refused() -> None:
    encoded = codec.encode_address(A)
    assert codec.decode_address(encoded[:-1]) is None  # short
    assert codec.decode_address(encoded[:-2] + b"\0\0") is None  # port 0
    assert codec.decode_address(encoded[:5] + b"\1" + encoded[6:]) is None  # IPv4 tail not zero
    assert codec.decode_address(b"\x05" + encoded[1:]) is None  # no such family
