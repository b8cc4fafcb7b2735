"""Membership news: the members a node knows, as it tells a peer that comes up."""

from __future__ import annotations

import pytest

from runtime.wire.connection_id import NodeAddress
from runtime.wire.forwarded import encode_forwarded
from runtime.wire.membership import (
    MAX_MEMBERS,
    MembershipFormatError,
    decode_members,
    encode_members,
    is_membership,
)


def test_membership_news_round_trips_and_refuses_garbage() -> None:
    members = [NodeAddress("10.0.0.1", 9100), NodeAddress("2001:db8::3", 9200)]
    payload = encode_members(members)
    assert is_membership(payload)
    assert decode_members(payload) == members
    assert decode_members(encode_members([])) == []
    assert not is_membership(encode_forwarded([]))  # told apart by the first byte
    for bad in (b"\x00nonsense", b"\x0010.0.0.1:0", b"\x00\xff:1", b"\x01"):
        with pytest.raises(MembershipFormatError):
            decode_members(bad)


def test_a_list_beyond_any_cluster_is_refused() -> None:
    many = [NodeAddress("10.0.0.1", port) for port in range(1, MAX_MEMBERS + 2)]
    with pytest.raises(MembershipFormatError, match="more than"):
        decode_members(encode_members(many))
