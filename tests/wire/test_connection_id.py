"""Connection IDs: round trips, randomness, and rejection of anything not issued by the service."""

from __future__ import annotations

import base64
import re
import struct
import zlib

import pytest

from runtime.wire.connection_id import (
    MAX_ENCODED_LENGTH,
    RANDOM_BYTES,
    ConnectionId,
    ConnectionIdIssuer,
    InvalidConnectionId,
    NodeAddress,
    parse_connection_id,
)

URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
V4 = NodeAddress("10.0.0.1", 9100)
V6 = NodeAddress("2001:db8::1", 65535)


def encode_raw(body: bytes) -> str:
    """URL-safe unpadded base64 of `body` plus its CRC, as a forged ID would be built."""
    raw = body + struct.pack("!I", zlib.crc32(body))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def raw_body(
    *,
    version: int = 1,
    region: bytes = b"us-east-1",
    family: int = 4,
    address: bytes = bytes([10, 0, 0, 1]),
    port: int = 9100,
    nonce: bytes = bytes(range(RANDOM_BYTES)),
    region_length: int | None = None,
) -> bytes:
    return (
        struct.pack("!BB", version, len(region) if region_length is None else region_length)
        + region
        + struct.pack("!B", family)
        + address
        + struct.pack("!H", port)
        + nonce
    )


@pytest.fixture
def valid_id() -> str:
    return ConnectionIdIssuer("us-east-1", V4).issue()


# Round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "node"),
    [
        ("us-east-1", V4),
        ("eu-west-1", V6),
        ("ap-southeast-2", NodeAddress("::1", 1)),
        ("x", NodeAddress("255.255.255.255", 65535)),
        ("r" * 32, NodeAddress("fe80::abcd:1234", 443)),
    ],
)
def test_issued_id_round_trips(region: str, node: NodeAddress) -> None:
    text = ConnectionIdIssuer(region, node).issue()
    parsed = parse_connection_id(text)
    assert parsed.region == region
    assert parsed.node == node
    assert len(parsed.nonce) == RANDOM_BYTES
    assert parsed.encode() == text


def test_explicit_connection_id_round_trips_with_its_nonce() -> None:
    nonce = bytes(range(100, 100 + RANDOM_BYTES))
    original = ConnectionId("eu-central-1", V6, nonce)
    assert parse_connection_id(original.encode()) == original


def test_ids_are_url_safe_base64_without_padding() -> None:
    issuer_v4 = ConnectionIdIssuer("us-east-1", V4)
    issuer_v6 = ConnectionIdIssuer("eu-west-1", V6)
    for _ in range(300):
        for text in (issuer_v4.issue(), issuer_v6.issue()):
            assert re.fullmatch(r"[A-Za-z0-9_-]+", text), text
            assert "=" not in text
            assert len(text) <= MAX_ENCODED_LENGTH


def test_ids_carry_128_random_bits() -> None:
    issuer = ConnectionIdIssuer("us-east-1", V4)
    first, second = issuer.issue(), issuer.issue()
    assert first != second
    ids = [issuer.issue() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    nonces = [parse_connection_id(text).nonce for text in ids]
    assert all(len(nonce) * 8 >= 128 for nonce in nonces)
    assert len(set(nonces)) == len(nonces)


def test_node_address_str_brackets_ipv6() -> None:
    assert str(V4) == "10.0.0.1:9100"
    assert str(V6) == "[2001:db8::1]:65535"


# Rejections ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"), [(None, "NoneType"), (b"AQl1cy1l", "bytes"), (123, "int"), ([], "list")]
)
def test_rejects_non_strings(value: object, kind: str) -> None:
    with pytest.raises(InvalidConnectionId, match=f"must be a string \\(got {kind}\\)"):
        parse_connection_id(value)


def test_rejects_empty() -> None:
    with pytest.raises(InvalidConnectionId, match=r"1 to \d+ characters \(got 0\)"):
        parse_connection_id("")


def test_rejects_too_long(valid_id: str) -> None:
    text = (valid_id * 5)[: MAX_ENCODED_LENGTH + 1]
    with pytest.raises(
        InvalidConnectionId, match=rf"1 to {MAX_ENCODED_LENGTH} characters \(got {len(text)}\)"
    ):
        parse_connection_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "abc$def",
        "A",  # one base64 character cannot encode a byte
        "AQl1c!y1lYXN0LTEECgAAASOMsgQpMNXHms0va8FPf3YV3IUXGyw",
        "AQl1c y1lYXN0LTEECgAAASOMsgQpMNXHms0va8FPf3YV3IUXGyw",
        "AQl1cy1lYXN0LTEECgAAASOMsgQpMNXHms0va8FPf3YV3IUXGy\n",
        "ÄQl1cy1lYXN0LTEECgAAASOMsgQpMNXHms0va8FPf3YV3IUXGyw",
    ],
)
def test_rejects_non_base64(text: str) -> None:
    with pytest.raises(InvalidConnectionId, match="not URL-safe base64"):
        parse_connection_id(text)


@pytest.mark.parametrize("text", ["not an id!", "\x00" * 20])
def test_non_base64_is_reported_as_such(text: str) -> None:
    with pytest.raises(InvalidConnectionId, match="not URL-safe base64"):
        parse_connection_id(text)


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-12", "ab"])
def test_rejects_every_truncation(region: str) -> None:
    for node in (V4, V6):
        text = ConnectionIdIssuer(region, node).issue()
        for length in range(1, len(text)):
            with pytest.raises(InvalidConnectionId) as info:
                parse_connection_id(text[:length])
            message = str(info.value)
            assert "connection ID" in message
            assert any(
                word in message for word in ("truncated", "base64", "checksum", "malformed")
            ), message


def _alterations(text: str):
    for position, char in enumerate(text):
        for other in URLSAFE_ALPHABET:
            if other != char:
                yield position, text[:position] + other + text[position + 1 :]


@pytest.mark.parametrize(("region", "node"), [("us-east-1", V4), ("eu-west-1", V6), ("ab", V4)])
def test_alterations_never_raise_anything_but_invalid_connection_id(
    region: str, node: NodeAddress
) -> None:
    text = ConnectionIdIssuer(region, node).issue()
    accepted = []
    for position, altered in _alterations(text):
        try:
            parse_connection_id(altered)
        except InvalidConnectionId:
            continue
        except Exception as exc:  # pragma: no cover - the failure this test exists to catch
            pytest.fail(f"{altered!r} raised {type(exc).__name__}: {exc}")
        accepted.append(position)
    # Every character but the last carries 6 significant bits: altering it must always be caught.
    assert all(position == len(text) - 1 for position in accepted), accepted


@pytest.mark.parametrize(("region", "node"), [("us-east-1", V4), ("eu-west-1", V6)])
def test_alterations_of_the_last_character_are_rejected(region: str, node: NodeAddress) -> None:
    text = ConnectionIdIssuer(region, node).issue()
    accepted = []
    for position, altered in _alterations(text):
        if position != len(text) - 1:
            continue
        try:
            parse_connection_id(altered)
        except InvalidConnectionId:
            continue
        accepted.append(altered)
    assert accepted == []


def _id_with(char: str) -> str:
    """A deterministic valid ID containing `char` somewhere before its last character."""
    for value in range(256):
        text = ConnectionId("us-east-1", V4, bytes([value]) * RANDOM_BYTES).encode()
        if char in text[:-1]:
            return text
    raise AssertionError(f"no ID with {char!r}")  # pragma: no cover


@pytest.mark.parametrize(
    ("char", "replacement"), [("-", "+"), ("_", "/"), ("", "=")], ids=["plus", "slash", "padding"]
)
def test_non_url_safe_spellings_are_rejected(char: str, replacement: str) -> None:
    if char:
        text = _id_with(char)
        variant = text.replace(char, replacement)
    else:
        text = ConnectionIdIssuer("us-east-1", V4).issue()
        variant = text + "=" * (-len(text) % 4)
    assert variant != text
    with pytest.raises(InvalidConnectionId):
        parse_connection_id(variant)


def test_non_url_safe_spelling_helper_finds_ids() -> None:
    assert "-" in _id_with("-")[:-1]
    assert "_" in _id_with("_")[:-1]
    # us-east-1 over IPv4 is 38 bytes: its ID needs padding, so the padding variant differs.
    assert len(ConnectionIdIssuer("us-east-1", V4).issue()) % 4 != 0


def test_rejects_wrong_version() -> None:
    text = encode_raw(raw_body(version=2))
    with pytest.raises(InvalidConnectionId, match="unknown version 2"):
        parse_connection_id(text)
    # The same body with the right version parses, so the version alone was the problem.
    assert parse_connection_id(encode_raw(raw_body(version=1))).region == "us-east-1"


def test_rejects_bad_checksum() -> None:
    good = raw_body() + struct.pack("!I", zlib.crc32(raw_body()))
    bad = good[:-1] + bytes([good[-1] ^ 1])
    text = base64.urlsafe_b64encode(bad).rstrip(b"=").decode()
    with pytest.raises(InvalidConnectionId, match="altered or truncated"):
        parse_connection_id(text)


def test_rejects_random_base64_of_plausible_length() -> None:
    text = base64.urlsafe_b64encode(bytes(range(40))).rstrip(b"=").decode()
    with pytest.raises(InvalidConnectionId, match="checksum"):
        parse_connection_id(text)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (raw_body(family=5), "malformed node address"),
        (raw_body(family=6), "malformed node address"),  # says IPv6 but holds 4 bytes
        (raw_body(address=bytes(5)), "malformed node address"),
        (raw_body(nonce=bytes(RANDOM_BYTES + 1)), "malformed node address"),
        (raw_body(region=b"us-\xe9ast"), "non-ASCII region"),
        (raw_body(port=0), "port must be between 1 and 65535"),
        (raw_body(region_length=20), "malformed node address"),
        (raw_body(region_length=3), "malformed node address"),
        (raw_body(region_length=255), "malformed node address"),
    ],
    ids=[
        "family-5",
        "family-6-short",
        "address-5-bytes",
        "nonce-17-bytes",
        "non-ascii-region",
        "port-0",
        "region-length-long",
        "region-length-short",
        "region-length-255",
    ],
)
def test_rejects_checksummed_ids_of_another_format(body: bytes, message: str) -> None:
    with pytest.raises(InvalidConnectionId, match=message):
        parse_connection_id(encode_raw(body))


def test_error_messages_name_the_id(valid_id: str) -> None:
    altered = valid_id[:5] + ("A" if valid_id[5] != "A" else "B") + valid_id[6:]
    with pytest.raises(InvalidConnectionId) as info:
        parse_connection_id(altered)
    assert repr(altered) in str(info.value)
    assert isinstance(info.value, ValueError)


# Issuer and address checks -------------------------------------------------------------------


@pytest.mark.parametrize("region", ["", "r" * 33, "région"])
def test_issuer_rejects_bad_regions(region: str) -> None:
    with pytest.raises(ValueError, match="region must be 1 to 32 ASCII characters"):
        ConnectionIdIssuer(region, V4)


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        ("localhost", 9100, "must be an IP address"),
        ("10.0.0.1", 0, "between 1 and 65535"),
        ("10.0.0.1", 65536, "between 1 and 65535"),
    ],
)
def test_node_address_rejects_bad_values(host: str, port: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodeAddress(host, port)
