"""The compact JWS reader and the claims checks, with no sockets: what the JWT authorizer refuses
before and after the signature check (tests/transports/test_jwt_authorizer.py drives the whole
authorizer over HTTP)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from runtime.wire.jws import MAX_TOKEN_CHARS, TokenRefused, check_claims, read_token

ISSUER = "https://issuer.example.com/"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(header: Any = None, payload: Any = None, signature: bytes = b"sig") -> str:
    header = {"alg": "RS256", "kid": "k1"} if header is None else header
    payload = {"iss": ISSUER, "exp": NOW + 60} if payload is None else payload
    return ".".join(
        (b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature))
    )


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(TokenRefused) as caught:
        call(*args)
    return caught.value.kind


def test_a_well_formed_token_is_read_into_its_parts() -> None:
    text = token()
    read = read_token(text)
    assert read.algorithm == "RS256"
    assert read.kid == "k1"
    assert read.signature == b"sig"
    assert read.signing_input == text.rsplit(".", 1)[0].encode()
    assert read.claims() == {"iss": ISSUER, "exp": NOW + 60}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("a.b", "malformed token"),  # two segments
        ("a.b.c.d", "malformed token"),  # four
        (token().replace(".", "=.", 1), "malformed token"),  # padding is not base64url in JWS
        (token()[:-1] + "+", "malformed token"),  # the other base64 alphabet
        (b64(b"[1]") + ".e30.c2ln", "malformed token"),  # a header that is not an object
        (token(header={"kid": "k1"}), "malformed token"),  # no alg
        (token(header={"alg": 256}), "malformed token"),  # alg not a string
        (token(header={"alg": "RS256", "kid": 7}), "malformed token"),
        (token(header={"alg": "RS256", "crit": ["exp"]}), "unsupported header"),
        (token(header={"alg": "RS256", "b64": False}), "unsupported header"),
        (token().split(".")[0] + "..c2ln", "malformed token"),  # an empty payload
        ("x" * (MAX_TOKEN_CHARS + 1), "token too large"),
    ],
)
def test_a_malformed_token_is_refused_before_any_key_is_looked_up(text: str, kind: str) -> None:
    assert refusal(read_token, text) == kind


def test_a_payload_that_is_not_a_json_object_is_refused_when_read() -> None:
    text = ".".join((b64(b'{"alg":"RS256"}'), b64(b"not json"), b64(b"s")))
    assert refusal(read_token(text).claims) == "malformed token"


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "exp": NOW + 60, "aud": "app"}
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


@pytest.mark.parametrize(
    ("given", "kind"),
    [
        (claims(exp=None), "missing exp"),
        (claims(iss=None), "missing iss"),
        (claims(exp="soon"), "exp is not a number"),
        (claims(exp=True), "exp is not a number"),  # JSON true is not a date
        (claims(nbf=float("inf")), "nbf is not a number"),
        (claims(exp=NOW - 1), "expired"),
        (claims(nbf=NOW + 10), "not yet valid"),
        (claims(iat=NOW + 10), "not yet valid"),
        (claims(iss=ISSUER.rstrip("/")), "wrong issuer"),  # exactly, not a prefix
        (claims(sub=12), "invalid claims"),
        (claims(aud="other"), "wrong audience"),
        (claims(aud=["other", 1]), "wrong audience"),
        (claims(aud=None, client_id="other"), "wrong audience"),
        (claims(aud=None), "wrong audience"),
    ],
)
def test_claims_are_refused_with_a_bounded_reason(given: dict[str, Any], kind: str) -> None:
    assert refusal(check_claims, given, ISSUER, ["app"], NOW) == kind


def test_claims_that_hold_pass_and_leeway_covers_clock_skew() -> None:
    check_claims(claims(), ISSUER, ["app"], NOW)
    check_claims(claims(aud=["other", "app"]), ISSUER, ["app"], NOW)
    check_claims(claims(aud=None, client_id="app"), ISSUER, ["app"], NOW)  # Cognito access token
    skewed = claims(exp=NOW - 5, nbf=NOW + 5, iat=NOW + 5)
    assert refusal(check_claims, skewed, ISSUER, ["app"], NOW) == "expired"
    check_claims(skewed, ISSUER, ["app"], NOW, leeway=10)
