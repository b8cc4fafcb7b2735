"""A JSON Web Key Set as the JWT authorizer uses it: which keys of a fetched set are usable
(asymmetric, allowed algorithm, for signing, long enough) and which key checks a given token.
Pure: fetching and refreshing the set is the authorizer's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt import PyJWK

from runtime.wire.jws import TokenRefused

# Each asymmetric algorithm with the key type (and curve) it verifies with. Nothing else is
# accepted, whatever the settings say.
ALGORITHM_KEYS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
MIN_RSA_BITS = 2048  # NIST SP 800-131A; shorter keys are left out of the set


class KeySetError(Exception):
    """A fetched key set cannot be used at all; the message says why."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one fetched set: each key once per algorithm it may verify."""

    keys: tuple[tuple[str | None, Mapping[str, PyJWK]], ...]  # (kid, algorithm -> key)
    by_kid: Mapping[str, Mapping[str, PyJWK]] = field(default_factory=dict)

    def has_kid(self, kid: str) -> bool:
        return kid in self.by_kid

    def find(self, kid: str | None, algorithm: str) -> PyJWK:
        """The key for a token's kid and algorithm. A token without a kid may use the set only
        when exactly one key there verifies its algorithm: otherwise which key was meant is a
        guess, and a guess is not a check."""
        if kid is not None:
            key = self.by_kid.get(kid, {}).get(algorithm)
            if key is None:
                raise TokenRefused("key does not match algorithm")
            return key
        matching = [by_alg[algorithm] for _, by_alg in self.keys if algorithm in by_alg]
        if len(matching) != 1:
            raise TokenRefused("no kid and no single key for its algorithm")
        return matching[0]


def parse_key_set(body: bytes, algorithms: Sequence[str]) -> tuple[KeySet, list[tuple[str, str]]]:
    """The usable keys of a JWKS document, and (kid, why) for each key left out: a type or
    algorithm not allowed, a key for encryption, a malformed or too short key, a repeated kid.
    Raises KeySetError when the document is not a key set or holds no usable key."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise KeySetError(f"key set is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError('key set must be a JSON object with a "keys" list')
    keys: list[tuple[str | None, Mapping[str, PyJWK]]] = []
    by_kid: dict[str, Mapping[str, PyJWK]] = {}
    skipped: list[tuple[str, str]] = []
    for index, data in enumerate(document["keys"]):
        kid = data.get("kid") if isinstance(data, dict) else None
        label = kid if isinstance(kid, str) else f"#{index}"
        try:
            if not isinstance(data, dict):
                raise KeySetError("not a JSON object")
            if kid is not None and not isinstance(kid, str):
                raise KeySetError("kid is not a string")
            if isinstance(kid, str) and kid in by_kid:
                raise KeySetError("kid repeated in the set")
            by_alg = _usable_key(data, algorithms)
        except KeySetError as exc:
            skipped.append((label, str(exc)))
            continue
        keys.append((kid, by_alg))
        if kid is not None:
            by_kid[kid] = by_alg
    if not keys:
        raise KeySetError(f"key set holds no key usable with {', '.join(algorithms)}")
    return KeySet(tuple(keys), by_kid), skipped


def _usable_key(data: dict[str, Any], algorithms: Sequence[str]) -> dict[str, PyJWK]:
    """One JWK as a key per allowed algorithm it fits; its own `alg`, if any, narrows that."""
    if data.get("use", "sig") != "sig":
        raise KeySetError(f"use is {data.get('use')!r}, not sig")
    kty, crv, alg = data.get("kty"), data.get("crv"), data.get("alg")
    if alg is not None and alg not in algorithms:
        raise KeySetError(f"alg {alg!r} is not allowed")
    fitting = [
        name
        for name in ((alg,) if alg is not None else algorithms)
        if ALGORITHM_KEYS.get(name, ("", None))[0] == kty and ALGORITHM_KEYS[name][1] in (None, crv)
    ]
    if not fitting:
        raise KeySetError(f"key type {kty!r} (curve {crv!r}) fits no allowed algorithm")
    by_alg: dict[str, PyJWK] = {}
    for name in fitting:
        try:
            key = PyJWK(data, algorithm=name)
        except Exception as exc:  # PyJWT wraps most, not all, of a junk key's failures
            raise KeySetError(f"malformed key: {exc}") from None
        public = key.key
        if isinstance(public, RSAPublicKey | RSAPrivateKey) and public.key_size < MIN_RSA_BITS:
            raise KeySetError(f"RSA key of {public.key_size} bits, under {MIN_RSA_BITS}")
        by_alg[name] = key
    return by_alg
