"""Membership news between nodes: the members a node knows, told to a peer that comes up.

Only members are sent commands (a forged connection ID must not turn a node into a sender of
datagrams to any address), so every node must come to know every other quickly. Cloud Map's DNS
names at most 8 nodes per answer; a node that joins learns the rest from the first member that
sees it, and they learn it from its pings. The news travels over the authenticated peer link, in
the same messages as forwarded commands, told apart by the first byte: forwarded commands start
with their format version (1 or more), membership news with 0.

Layout: 0 (1) | the addresses as text, `host:port` or `[v6]:port`, newline-separated (ASCII).
"""

from __future__ import annotations

from collections.abc import Iterable

from runtime.wire.connection_id import NodeAddress

TAG = 0
MAX_MEMBERS = 4096  # far beyond any cluster (the stack allows 100 tasks); a bound on decoding


class MembershipFormatError(ValueError):
    """Bytes that are not membership news of this format."""


def is_membership(payload: bytes) -> bool:
    return payload[:1] == bytes((TAG,))


def encode_members(members: Iterable[NodeAddress]) -> bytes:
    return bytes((TAG,)) + "\n".join(str(member) for member in members).encode("ascii")


def decode_members(payload: bytes) -> list[NodeAddress]:
    if not is_membership(payload):
        raise MembershipFormatError("not membership news (first byte is not 0)")
    if len(payload) == 1:
        return []
    try:
        lines = payload[1:].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MembershipFormatError("membership news is not ASCII") from None
    if len(lines) > MAX_MEMBERS:
        raise MembershipFormatError(f"more than {MAX_MEMBERS} members ({len(lines)})")
    return [_address(line) for line in lines]


def _address(text: str) -> NodeAddress:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise MembershipFormatError(f"member {text!r} is not host:port")
    try:
        return NodeAddress(host.removeprefix("[").removesuffix("]"), int(port))
    except ValueError as exc:
        raise MembershipFormatError(f"member {text!r}: {exc}") from None
