"""The peer datagram on the wire: layout, HMAC, and the four kinds, as pure functions.

Wire format (big-endian; every datagram):

    magic b"WG" | version 2 (1) | kind (1) | wall clock, ms since the epoch (8)
    | sender address (19) | recipient address (19) | sender session (8)
    | recipient session (8) | body
    | HMAC-SHA256 of everything before it, keyed by the shared secret (32)

An address is family (1: 4 or 6) | IP (16; IPv4 left-aligned, zero-padded) | port (2). A session
names one run of a node (1 or more); the recipient session is the recipient's run as the sender
knows it, 0 while it knows none. Bodies:

    DATA 1  base (8) | seq (8) | frag_index (4) | frag_count (4) | payload chunk
    ACK  2  start (8) | cumulative (8) | SACK bitmap (8) | latest (8)
    PING 3  nonce (8)
    PONG 4  nonce (8)

Replays are stopped by the MAC (forgery), the recipient field (replaying to another node), the
timestamp (older than the replay window), the sender session (an earlier run of the sender), the
recipient session (an earlier run of the recipient: a node restarted at the same address, as ECS
tasks do, starts with no state and would take a replay as new) and, between two runs, the
sequence numbers (DATA) or nonces (PING, PONG). The secret is shared, so any node holding it is
trusted: the sender field guards against replays, not against a rogue node.

All nodes must share max_datagram (the receiver drops longer datagrams), window, secret and
wire version: to a node of another version, every datagram is "garbage".

Encoders take the header's fixed middle, `route` (our address, the peer's address, our session),
precomputed once per peer, so a datagram costs one pack and one HMAC.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct

from runtime.wire.connection_id import NodeAddress

MAGIC = b"WG"
VERSION = 2
DATA, ACK, PING, PONG = 1, 2, 3, 4

ADDRESS_SIZE = 19
HEADER_SIZE = 2 + 1 + 1 + 8 + ADDRESS_SIZE + ADDRESS_SIZE + 8 + 8  # 66
MAC_SIZE = 32
MIN_DATAGRAM = HEADER_SIZE + MAC_SIZE
DATA_OVERHEAD = HEADER_SIZE + 24 + MAC_SIZE
ACK_SIZE = HEADER_SIZE + 32 + MAC_SIZE
PING_SIZE = PONG_SIZE = HEADER_SIZE + 8 + MAC_SIZE
MAX_DATAGRAM_RANGE = (512, 8900)
SACK_BITS = 64
MAX_SESSION = (1 << 64) - 1

_PREFIX = {kind: MAGIC + bytes((VERSION, kind)) for kind in (DATA, ACK, PING, PONG)}
_DATA_PREFIX, _ACK_PREFIX = _PREFIX[DATA], _PREFIX[ACK]
_MAGIC_VERSION = MAGIC + bytes((VERSION,))
# From offset 4: wall ms, sender, recipient, sender session, recipient session.
_HEADER = struct.Struct(">Q19s19sQQ")
# Prefix, wall ms, route, recipient session, then the body.
_DATA_OUT = struct.Struct(">4sQ46sQQQII")  # base, seq, index, count
_DATA_IN = struct.Struct(">QQII")
_ACK_OUT = struct.Struct(">4sQ46sQQQQQ")  # start, cumulative, SACK bitmap, latest
_ACK_IN = struct.Struct(">QQQQ")
_NONCE_OUT = struct.Struct(">4sQ46sQQ")  # PING and PONG: nonce
_U64 = struct.Struct(">Q")
_CHUNK_AT = DATA_OVERHEAD - MAC_SIZE
_ZERO12 = bytes(12)


def encode_address(address: NodeAddress) -> bytes:
    """The 19-byte wire form of an address: family, IP (16, IPv4 left-aligned), port."""
    ip = ipaddress.ip_address(address.host)
    return bytes((ip.version,)) + ip.packed.ljust(16, b"\0") + address.port.to_bytes(2, "big")


def decode_address(encoded: bytes) -> NodeAddress | None:
    """The address in its canonical spelling, or None if `encoded` is not a canonical encoding."""
    if len(encoded) != ADDRESS_SIZE:
        return None
    family, port = encoded[0], int.from_bytes(encoded[17:19], "big")
    if port == 0:
        return None
    if family == 4 and encoded[5:17] == _ZERO12:
        return NodeAddress(str(ipaddress.IPv4Address(encoded[1:5])), port)
    if family == 6:
        return NodeAddress(str(ipaddress.IPv6Address(encoded[1:17])), port)
    return None


def canonical(address: NodeAddress) -> NodeAddress:
    """One spelling per address (e.g. IPv6 compressed), so lookups by address agree."""
    return NodeAddress(str(ipaddress.ip_address(address.host)), address.port)


def encode_session(session: int) -> bytes:
    return _U64.pack(session)


def rejection(data: bytes, key: bytes, max_datagram: int) -> str | None:
    """Why `data` is not an authentic datagram of our version (a drop reason), or None if it is.

    Checked cheapest first, so garbage and floods cost no HMAC.
    """
    size = len(data)
    if size < MIN_DATAGRAM:
        return "truncated"
    if size > max_datagram:
        return "oversized"
    if data[:3] != _MAGIC_VERSION:
        return "garbage"
    signed = memoryview(data)[:-MAC_SIZE]
    if not hmac.compare_digest(hmac.digest(key, signed, "sha256"), data[size - MAC_SIZE :]):
        return "bad_mac"
    return None


def read_header(data: bytes) -> tuple[int, bytes, bytes, int, int]:
    """Wall ms, sender address, recipient address, sender session, recipient session."""
    stamp, sender, recipient, session, bound_to = _HEADER.unpack_from(data, 4)
    return stamp, sender, recipient, session, bound_to


def well_sized(kind: int, size: int) -> bool:
    """Whether a datagram of `size` bytes can be of `kind`: the bodies but DATA's are fixed."""
    return (
        (kind == DATA and size >= DATA_OVERHEAD)
        or (kind == ACK and size == ACK_SIZE)
        or (kind == PING and size == PING_SIZE)
        or (kind == PONG and size == PONG_SIZE)
    )


def read_data(data: bytes) -> tuple[int, int, int, int]:
    """A DATA body's base, seq, fragment index and fragment count."""
    base, seq, index, count = _DATA_IN.unpack_from(data, HEADER_SIZE)
    return base, seq, index, count


def data_chunk(data: bytes) -> bytes:
    """A DATA datagram's payload chunk."""
    return data[_CHUNK_AT : len(data) - MAC_SIZE]


def read_ack(data: bytes) -> tuple[int, int, int, int]:
    """An ACK body's start, cumulative ack, SACK bitmap and latest."""
    start, cumulative, bits, latest = _ACK_IN.unpack_from(data, HEADER_SIZE)
    return start, cumulative, bits, latest


def read_nonce(data: bytes) -> int:
    """A PING or PONG body's nonce."""
    nonce: int = _U64.unpack_from(data, HEADER_SIZE)[0]
    return nonce


def data_datagram(
    key: bytes,
    ms: int,
    route: bytes,
    bound_to: int,
    base: int,
    seq: int,
    index: int,
    count: int,
    chunk: memoryview,
) -> bytes:
    body = _DATA_OUT.pack(_DATA_PREFIX, ms, route, bound_to, base, seq, index, count) + chunk
    return body + hmac.digest(key, body, "sha256")


def ack_datagram(
    key: bytes,
    ms: int,
    route: bytes,
    bound_to: int,
    start: int,
    cumulative: int,
    bits: int,
    latest: int,
) -> bytes:
    body = _ACK_OUT.pack(_ACK_PREFIX, ms, route, bound_to, start, cumulative, bits, latest)
    return body + hmac.digest(key, body, "sha256")


def nonce_datagram(
    key: bytes, kind: int, ms: int, route: bytes, bound_to: int, nonce: int
) -> bytes:
    """A PING or PONG."""
    body = _NONCE_OUT.pack(_PREFIX[kind], ms, route, bound_to, nonce)
    return body + hmac.digest(key, body, "sha256")
