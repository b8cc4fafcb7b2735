"""Connection IDs: opaque to clients, but they name the region and the node that holds them.

Layout before encoding (URL-safe base64, no padding):

    version (1) | region length (1) | region (ASCII) | address family (1: 4 or 6)
    | address (4 or 16) | port (2) | random (16) | CRC-32 of all before (4)

The CRC catches truncated or altered IDs (a typo, a cut copy) before they are routed anywhere;
it is not a security boundary, the 128 random bits are.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import os
import struct
import zlib
from dataclasses import dataclass

VERSION = 1
RANDOM_BYTES = 16
MAX_REGION_LENGTH = 32
# Longest possible ID: version, length, region, family, IPv6, port, random, CRC.
MAX_ENCODED_LENGTH = len(
    base64.urlsafe_b64encode(bytes(1 + 1 + MAX_REGION_LENGTH + 1 + 16 + 2 + RANDOM_BYTES + 4))
)


class InvalidConnectionId(ValueError):
    """A string that is not a connection ID issued by this service."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """Where a node receives peer traffic; the part of an ID that routing needs."""

    host: str
    port: int

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(
                f"node address host must be an IP address (got {self.host!r})"
            ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"node address port must be between 1 and 65535 (got {self.port})")

    def __str__(self) -> str:
        ip = ipaddress.ip_address(self.host)
        return f"[{self.host}]:{self.port}" if ip.version == 6 else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConnectionId:
    region: str
    node: NodeAddress
    nonce: bytes

    def encode(self) -> str:
        region = self.region.encode("ascii")
        ip = ipaddress.ip_address(self.node.host)
        body = (
            struct.pack("!BB", VERSION, len(region))
            + region
            + struct.pack("!B", ip.version)
            + ip.packed
            + struct.pack("!H", self.node.port)
            + self.nonce
        )
        body += struct.pack("!I", zlib.crc32(body))
        return base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


class ConnectionIdIssuer:
    """Mints IDs for one node: the region and address are fixed, the prefix is computed once."""

    def __init__(self, region: str, node: NodeAddress) -> None:
        if not region or len(region) > MAX_REGION_LENGTH or not region.isascii():
            raise ValueError(
                f"region must be 1 to {MAX_REGION_LENGTH} ASCII characters (got {region!r})"
            )
        self.region = region
        self.node = node

        region_bytes = region.encode("ascii")
        ip = ipaddress.ip_address(node.host)
        self._prefix = (
            struct.pack("!BB", VERSION, len(region_bytes))
            + region_bytes
            + struct.pack("!B", ip.version)
            + ip.packed
            + struct.pack("!H", node.port)
        )

    def issue(self) -> str:
        body = self._prefix + os.urandom(RANDOM_BYTES)
        body += struct.pack("!I", zlib.crc32(body))
        return base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def parse_connection_id(text: object) -> ConnectionId:
    """Decode and check an ID; raise InvalidConnectionId saying what is wrong."""
    if type(text) is str:
        return _parse_cached(text)
    return _parse(text)


@functools.lru_cache(maxsize=16_384)
def _parse_cached(text: str) -> ConnectionId:
    """Commands name the same live connections again and again; a valid ID is parsed once."""
    return _parse(text)


def _parse(text: object) -> ConnectionId:
    if not isinstance(text, str):
        raise InvalidConnectionId(f"connection ID must be a string (got {type(text).__name__})")
    if not text or len(text) > MAX_ENCODED_LENGTH:
        raise InvalidConnectionId(
            f"connection ID must be 1 to {MAX_ENCODED_LENGTH} characters (got {len(text)})"
        )
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    # Only the canonical spelling is an ID: no padding, '+' or '/', nor unused low bits set.
    if not raw or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise InvalidConnectionId(f"connection ID {text!r} is not URL-safe base64")
    if len(raw) < 2 + 1 + 4 + 2 + RANDOM_BYTES + 4:
        raise InvalidConnectionId(f"connection ID {text!r} is truncated")
    body, (crc,) = raw[:-4], struct.unpack("!I", raw[-4:])
    if zlib.crc32(body) != crc:
        raise InvalidConnectionId(f"connection ID {text!r} is altered or truncated (checksum)")
    version, region_length = body[0], body[1]
    if version != VERSION:
        raise InvalidConnectionId(f"connection ID {text!r} has unknown version {version}")
    offset = 2 + region_length
    family = body[offset] if len(body) > offset else 0
    address_length = {4: 4, 6: 16}.get(family)
    if address_length is None or len(body) != offset + 1 + address_length + 2 + RANDOM_BYTES:
        raise InvalidConnectionId(f"connection ID {text!r} has a malformed node address")
    try:
        region = body[2:offset].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidConnectionId(f"connection ID {text!r} has a non-ASCII region") from None
    try:
        node = _node_address(body[offset + 1 : offset + 3 + address_length])
    except ValueError as exc:
        raise InvalidConnectionId(f"connection ID {text!r}: {exc}") from None
    return ConnectionId(region, node, body[-RANDOM_BYTES:])


@functools.lru_cache(maxsize=4096)
def _node_address(packed: bytes) -> NodeAddress:
    """Address and port bytes to a NodeAddress; a cluster has few nodes, so this is cached."""
    (port,) = struct.unpack("!H", packed[-2:])
    return NodeAddress(str(ipaddress.ip_address(packed[:-2])), port)
