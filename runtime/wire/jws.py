"""A JSON Web Token in JWS compact form, read strictly and without I/O: the three base64url
segments, the header's checks, and the claims' checks with leeway.

Read here rather than by PyJWT because PyJWT's reading of the compact form (a Python loop over
every character of each segment) cost the node three times what the RSA signature check does.
The signature check itself is the caller's (PyJWT's, with a key from `runtime.wire.jwks`): this
module only says what is signed (`signing_input`) and what the signature is.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TOKEN_CHARS = 16 * 1024  # Cognito ID tokens with many groups stay well under


class TokenRefused(Exception):
    """A token is refused; `kind` is the bounded reason logged (never sent to the client)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")  # base64url without padding, as JWS writes it


def _segment(text: str) -> bytes:
    """One base64url segment of a compact JWS, strictly: no padding, no other alphabet."""
    if len(text) % 4 == 1 or _SEGMENT.fullmatch(text) is None:
        raise TokenRefused("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise TokenRefused("malformed token") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise TokenRefused("malformed token") from None
    if not isinstance(value, dict):
        raise TokenRefused("malformed token")
    return value


@dataclass(frozen=True, slots=True)
class CompactToken:
    """A JWS in compact form, read but not yet trusted: its header is parsed, its payload is
    decoded only once the signature over `signing_input` has been checked."""

    header: dict[str, Any]
    signing_input: bytes
    payload_segment: str
    signature: bytes

    @property
    def algorithm(self) -> str:
        algorithm: str = self.header["alg"]  # checked to be a string when read
        return algorithm

    @property
    def kid(self) -> str | None:
        return self.header.get("kid")

    def claims(self) -> dict[str, Any]:
        return _json_object(_segment(self.payload_segment))


def read_token(token: str) -> CompactToken:
    """The parts of a compact JWS. Refuses what is not three base64url segments, a header that
    is not a JSON object with a string `alg` (and a string `kid`, if any), and any `crit` or
    `b64` header: extensions we do not implement must not be ignored (RFC 7515, 4.1.11)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRefused("token too large")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenRefused("malformed token")
    header_segment, payload_segment, signature_segment = segments
    header = _json_object(_segment(header_segment))
    if not isinstance(header.get("alg"), str):
        raise TokenRefused("malformed token")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenRefused("malformed token")
    if "crit" in header or "b64" in header:
        raise TokenRefused("unsupported header")
    if not payload_segment:
        raise TokenRefused("malformed token")
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    return CompactToken(header, signing_input, payload_segment, _segment(signature_segment))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_claims(
    claims: Mapping[str, Any],
    issuer: str,
    audiences: Sequence[str],
    now: float,
    leeway: float = 0.0,
) -> None:
    """The claims of a token whose signature holds: `exp` and `iss` present, dates JSON numbers
    with `exp` not past and `nbf` and `iat` not ahead (each within `leeway`), `iss` exactly the
    issuer, `sub` and `jti` strings if present, and the audience `aud` (a string or a list) or,
    only when there is no `aud`, `client_id`, as API Gateway reads Cognito access tokens."""
    for name in ("exp", "iss"):
        if claims.get(name) is None:
            raise TokenRefused(f"missing {name}")
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_number(claims[name]):
            raise TokenRefused(f"{name} is not a number")
    if claims["exp"] <= now - leeway:
        raise TokenRefused("expired")
    if claims.get("nbf", -math.inf) > now + leeway or claims.get("iat", -math.inf) > now + leeway:
        raise TokenRefused("not yet valid")
    if claims["iss"] != issuer:
        raise TokenRefused("wrong issuer")
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenRefused("invalid claims")
    if "aud" in claims:
        aud = claims["aud"]
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(value, str) and value in audiences for value in named):
            raise TokenRefused("wrong audience")
    else:
        client_id = claims.get("client_id")
        if not isinstance(client_id, str) or client_id not in audiences:
            raise TokenRefused("wrong audience")
