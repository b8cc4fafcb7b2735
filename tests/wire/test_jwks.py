"""Reading a JWK set, with no sockets: which keys are usable for which algorithm, why the others
are left out, and which key a token's kid and algorithm select."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from runtime.wire.jwks import KeySetError, parse_key_set
from runtime.wire.jws import TokenRefused

ALGORITHMS = ("RS256", "ES256")


@cache
def rsa_jwk(bits: int = 2048) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return dict(json.loads(RSAAlgorithm.to_jwk(key)))


@cache
def ec_jwk() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return dict(json.loads(ECAlgorithm.to_jwk(key)))


def key_set(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def test_usable_keys_are_indexed_by_kid_and_algorithm() -> None:
    keys, skipped = parse_key_set(
        key_set({**rsa_jwk(), "kid": "r"}, {**ec_jwk(), "kid": "e"}), ALGORITHMS
    )
    assert skipped == []
    assert keys.has_kid("r") and keys.has_kid("e") and not keys.has_kid("x")
    assert keys.find("r", "RS256") is not None
    assert keys.find("e", "ES256") is not None
    with pytest.raises(TokenRefused, match="key does not match algorithm"):
        keys.find("r", "ES256")  # an RSA key never verifies an EC signature


def test_a_token_without_kid_uses_the_only_key_for_its_algorithm_and_no_guess() -> None:
    keys, _ = parse_key_set(key_set(rsa_jwk(), ec_jwk()), ALGORITHMS)
    assert keys.find(None, "RS256") is not None
    two, _ = parse_key_set(
        key_set({**rsa_jwk(), "kid": "a"}, {**rsa_jwk(4096), "kid": "b"}), ALGORITHMS
    )
    with pytest.raises(TokenRefused, match="no single key"):
        two.find(None, "RS256")


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ({**rsa_jwk(), "kid": "x", "use": "enc"}, "not sig"),
        ({**rsa_jwk(), "kid": "x", "alg": "RS512"}, "not allowed"),
        ({**rsa_jwk(1024), "kid": "x"}, "1024 bits, under 2048"),
        ({"kty": "oct", "k": "c2VjcmV0", "kid": "x"}, "fits no allowed algorithm"),  # HMAC
        ({**rsa_jwk(), "kid": "x", "n": "AA"}, "malformed key"),
        ({**rsa_jwk(), "kid": 7}, "kid is not a string"),
    ],
)
def test_a_key_that_cannot_be_used_is_left_out_with_its_reason(
    key: dict[str, Any], why: str
) -> None:
    keys, skipped = parse_key_set(key_set({**ec_jwk(), "kid": "good"}, key), ALGORITHMS)
    assert keys.has_kid("good")
    assert len(skipped) == 1 and why in skipped[0][1], skipped


def test_a_repeated_kid_keeps_the_first_key() -> None:
    keys, skipped = parse_key_set(
        key_set({**rsa_jwk(), "kid": "k"}, {**ec_jwk(), "kid": "k"}), ALGORITHMS
    )
    assert keys.find("k", "RS256") is not None
    assert skipped == [("k", "kid repeated in the set")]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>", "not JSON"),
        (b'{"kids": []}', '"keys" list'),
        (key_set({**rsa_jwk(), "use": "enc"}), "no key usable with RS256, ES256"),
    ],
)
def test_a_document_with_no_usable_key_is_an_error(body: bytes, why: str) -> None:
    with pytest.raises(KeySetError, match=why):
        parse_key_set(body, ALGORITHMS)
