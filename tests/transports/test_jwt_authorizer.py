"""The JWT authorizer against a real key set served over HTTP on 127.0.0.1, with keys made here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from runtime.config import Settings
from runtime.transports.base import Allow, Refuse, Verdict
from runtime.transports.jwt_authorizer import (
    MAX_KEY_SET_BYTES,
    JwtAuthorizer,
    jwt_authorizer_from_settings,
)
from runtime.wire.events import HandshakeDetails
from runtime.wire.jws import MAX_TOKEN_CHARS

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example"
AUDIENCE = "client-abc"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_SHORT = rsa.generate_private_key(public_exponent=65537, key_size=1024)
EC_KEY = ec.generate_private_key(ec.SECP256R1())

INVALID = Refuse(401, "Unauthorized", (("WWW-Authenticate", 'Bearer error="invalid_token"'),))
MISSING = Refuse(401, "Unauthorized", (("WWW-Authenticate", "Bearer"),))


def public_jwk(private: Any, kid: str | None, alg: str | None = None, **extra: Any) -> dict:
    if isinstance(private, rsa.RSAPrivateKey):
        data = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    if kid is not None:
        data["kid"] = kid
    if alg is not None:
        data["alg"] = alg
    data.update(extra)
    return data


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 600,
        "iat": now - 10,
        "email": "a@example.com",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(
    payload: dict[str, Any] | None = None,
    key: Any = RSA_KEY,
    alg: str = "RS256",
    kid: str | None = "rsa-1",
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload or claims(), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token put together by hand, as an attacker would: PyJWT will not sign these."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def parts(header: bytes, payload: bytes, signature: bytes) -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(signature)}"


def details(
    authorization: str | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    query: list[tuple[str, str]] | None = None,
) -> HandshakeDetails:
    raw = [("Host", "gw.example.com")] + (headers or [])
    if authorization is not None:
        raw.append(("Authorization", authorization))
    return HandshakeDetails("/", raw, query or [], "203.0.113.9", None)


class JwksServer:
    """Serves a key set over HTTP and counts the requests for it."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys
        self.body: bytes | None = None  # served instead of `keys` when set
        self.status = 200
        self.requests = 0
        self.asked = asyncio.Event()
        self.url = ""
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, port: int = 0) -> JwksServer:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/.well-known/jwks.json"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.asked.set()
        body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
        return web.Response(status=self.status, body=body, content_type="application/json")


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = await JwksServer(
        [public_jwk(RSA_KEY, "rsa-1", "RS256"), public_jwk(EC_KEY, "ec-1")]
    ).start()
    yield server
    await server.stop()


MakeAuthorizer = Callable[..., Awaitable[JwtAuthorizer]]


@pytest.fixture
async def make_authorizer(jwks: JwksServer) -> AsyncIterator[MakeAuthorizer]:
    started: list[JwtAuthorizer] = []

    async def make(url: str | None = None, **options: Any) -> JwtAuthorizer:
        options.setdefault("refresh_seconds", 30.0)
        authorizer = JwtAuthorizer(ISSUER, [AUDIENCE, "other-client"], url or jwks.url, **options)
        started.append(authorizer)
        await authorizer.start()
        return authorizer

    yield make
    for authorizer in started:
        await authorizer.close()


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reason of each refusal logged."""
    return [record.reason for record in caplog.records if hasattr(record, "reason")]


async def ask(authorizer: JwtAuthorizer, handshake: HandshakeDetails) -> Verdict:
    return await authorizer.authorize(handshake, {"connectionId": "abc"})


# --- admitted -----------------------------------------------------------------------------------


async def test_valid_bearer_token_puts_claims_and_scopes_in_the_context(
    make_authorizer: MakeAuthorizer,
) -> None:
    authorizer = await make_authorizer()
    payload = claims(scope="chat.read chat.write", aud=["elsewhere", AUDIENCE])
    verdict = await ask(authorizer, details(f"Bearer {token(payload)}"))
    assert verdict == Allow(
        {"principalId": "user-1", "jwt": {"claims": payload, "scopes": ["chat.read", "chat.write"]}}
    )
    assert authorizer.stats() == {
        "verified": 1,
        "cacheHits": 0,
        "refused": 0,
        "keyFetches": 1,
        "keyFetchFailures": 0,
    }


async def test_header_name_and_bearer_prefix_in_any_case(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer(token_source="header:X-Token")
    verdict = await ask(authorizer, details(headers=[("x-TOKEN", f"  bEaReR  {token()} ")]))
    assert isinstance(verdict, Allow)
    assert await ask(authorizer, details(headers=[("X-Token", token())])) == verdict  # no prefix


async def test_token_from_the_query_string(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer(token_source="query:access_token")
    verdict = await ask(authorizer, details(query=[("room", "a"), ("access_token", token())]))
    assert isinstance(verdict, Allow)
    assert verdict.context["principalId"] == "user-1"
    # The header is not looked at when the source is the query string.
    assert await ask(authorizer, details(f"Bearer {token()}")) == MISSING


async def test_cognito_access_token_with_client_id_and_no_aud(
    make_authorizer: MakeAuthorizer,
) -> None:
    authorizer = await make_authorizer()
    payload = claims(aud=None, client_id=AUDIENCE, token_use="access", scope="openid profile")
    verdict = await ask(authorizer, details(token(payload)))
    assert verdict == Allow(
        {"principalId": "user-1", "jwt": {"claims": payload, "scopes": ["openid", "profile"]}}
    )


async def test_scp_list_and_no_sub(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer()
    payload = claims(sub=None, scp=["read", 7, "write"])
    verdict = await ask(authorizer, details(token(payload)))
    assert verdict == Allow(
        {"principalId": None, "jwt": {"claims": payload, "scopes": ["read", "write"]}}
    )


async def test_allowed_ec_key_without_alg_verifies_es256(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer(algorithms=["RS256", "ES256"])
    assert isinstance(
        await ask(authorizer, details(token(key=EC_KEY, alg="ES256", kid="ec-1"))), Allow
    )


async def test_leeway_admits_a_token_just_expired(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer(leeway=30)
    payload = claims(exp=int(time.time()) - 10, nbf=int(time.time()) + 10)
    assert isinstance(await ask(authorizer, details(token(payload))), Allow)


async def test_a_token_without_kid_uses_the_only_key_of_its_type(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    authorizer = await make_authorizer()
    assert isinstance(await ask(authorizer, details(token(kid=None))), Allow)


# --- the cache ----------------------------------------------------------------------------------


async def test_a_repeated_token_is_verified_once(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer()
    value = token()
    first = await ask(authorizer, details(value))
    second = await ask(authorizer, details(value))
    assert first == second and isinstance(second, Allow)
    assert authorizer.stats()["verified"] == 1
    assert authorizer.stats()["cacheHits"] == 1


async def test_a_cached_token_expires_with_its_exp(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer()
    exp = int(time.time()) + 1
    value = token(claims(exp=exp))
    assert isinstance(await ask(authorizer, details(value)), Allow)
    await asyncio.sleep(exp - time.time() + 0.05)
    assert await ask(authorizer, details(value)) == INVALID
    assert authorizer.stats()["cacheHits"] == 0


async def test_the_cache_is_bounded(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer(cache_entries=3)
    tokens = [token(claims(jti=str(index))) for index in range(5)]
    for value in tokens:
        assert isinstance(await ask(authorizer, details(value)), Allow)
    assert len(authorizer._cache) == 3
    await ask(authorizer, details(tokens[0]))  # evicted: verified again
    assert authorizer.stats()["verified"] == 6


# --- refused: claims ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"exp": int(time.time()) - 5}, "expired"),
        ({"exp": None}, "missing exp"),
        ({"exp": str(int(time.time()) + 600)}, "exp is not a number"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
        ({"iat": int(time.time()) + 600}, "not yet valid"),
        ({"iss": ISSUER + "/"}, "wrong issuer"),
        ({"iss": "https://evil.example.com"}, "wrong issuer"),
        ({"iss": None}, "missing iss"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["someone-else", "x"]}, "wrong audience"),
        ({"aud": [["client-abc"]]}, "wrong audience"),
        ({"aud": None}, "wrong audience"),  # neither aud nor client_id
        ({"aud": None, "client_id": "someone-else"}, "wrong audience"),
        ({"aud": "someone-else", "client_id": AUDIENCE}, "wrong audience"),  # aud decides
        ({"sub": 12}, "invalid claims"),
        ({"jti": ["a"]}, "invalid claims"),
        ({"exp": True}, "exp is not a number"),
    ],
)
async def test_claims_that_do_not_hold_are_refused(
    make_authorizer: MakeAuthorizer,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    kind: str,
) -> None:
    authorizer = await make_authorizer()
    with caplog.at_level(logging.INFO, logger="runtime.authorizer"):
        assert await ask(authorizer, details(token(claims(**overrides)))) == INVALID
    assert reasons(caplog) == [kind]  # type: ignore[attr-defined]
    assert authorizer.stats()["refused"] == 1
    assert authorizer.stats()["verified"] == 0


async def test_missing_token_asks_for_a_bearer_token(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer()
    assert await ask(authorizer, details()) == MISSING
    assert await ask(authorizer, details("")) == MISSING
    assert await ask(authorizer, details("Bearer   ")) == MISSING
    assert await ask(authorizer, details(query=[("Authorization", token())])) == MISSING
    assert authorizer.stats()["refused"] == 4


async def test_refusals_are_logged_once_per_kind_per_period(
    make_authorizer: MakeAuthorizer, caplog: pytest.LogCaptureFixture
) -> None:
    authorizer = await make_authorizer()
    expired = token(claims(exp=int(time.time()) - 5))
    with caplog.at_level(logging.INFO, logger="runtime.authorizer"):
        for _ in range(5):
            assert await ask(authorizer, details(expired)) == INVALID
        for _ in range(3):
            assert await ask(authorizer, details()) == MISSING
    assert reasons(caplog) == ["expired", "missing token"]  # type: ignore[attr-defined]
    assert authorizer.stats()["refused"] == 8


# --- refused: signatures and algorithms ---------------------------------------------------------


async def test_alg_none_is_refused(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer()
    for alg in ("none", "None", "NONE", ""):
        unsigned = forged({"alg": alg, "kid": "rsa-1"}, claims(), lambda _: b"")
        assert await ask(authorizer, details(unsigned)) == INVALID
    assert (
        await ask(authorizer, details(forged({"kid": "rsa-1"}, claims(), lambda _: b""))) == INVALID
    )


async def test_hs256_signed_with_the_public_key_is_refused(make_authorizer: MakeAuthorizer) -> None:
    """The key confusion attack: an HMAC over the token keyed with the published key."""
    authorizer = await make_authorizer(algorithms=["RS256", "ES256"])
    public = RSA_KEY.public_key()
    secrets_tried = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        json.dumps(public_jwk(RSA_KEY, "rsa-1", "RS256")).encode(),
        RSAAlgorithm.to_jwk(public).encode(),
    ]
    for secret in secrets_tried:
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            confused = forged(
                {"alg": alg, "kid": "rsa-1", "typ": "JWT"},
                claims(),
                lambda data, s=secret, d=digest: hmac.new(s, data, d).digest(),
            )
            assert await ask(authorizer, details(confused)) == INVALID
    assert authorizer.stats()["verified"] == 0


async def test_a_valid_token_of_a_disallowed_algorithm_is_refused(
    make_authorizer: MakeAuthorizer, caplog: pytest.LogCaptureFixture
) -> None:
    authorizer = await make_authorizer()  # RS256 only, though the set holds an EC key
    with caplog.at_level(logging.INFO, logger="runtime.authorizer"):
        assert await ask(authorizer, details(token(key=EC_KEY, alg="ES256", kid="ec-1"))) == INVALID
        # PS256 with the very RSA key the set holds for RS256: still not on the list.
        assert await ask(authorizer, details(token(alg="PS256"))) == INVALID
    assert set(reasons(caplog)) == {"algorithm not allowed"}  # type: ignore[attr-defined]


async def test_a_key_is_used_only_for_its_own_algorithm(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer(algorithms=["RS256", "ES256"])
    # An RS256 token naming the EC key, and an ES256 token naming the RSA key.
    assert await ask(authorizer, details(token(kid="ec-1"))) == INVALID
    assert await ask(authorizer, details(token(key=EC_KEY, alg="ES256", kid="rsa-1"))) == INVALID


async def test_a_tampered_payload_is_refused(make_authorizer: MakeAuthorizer) -> None:
    authorizer = await make_authorizer()
    header, _, signature = token().split(".")
    raised = b64(json.dumps(claims(sub="admin")).encode())
    assert await ask(authorizer, details(f"{header}.{raised}.{signature}")) == INVALID
    # Signed by a key the set does not hold, under a kid it does.
    assert await ask(authorizer, details(token(key=RSA_NEXT))) == INVALID
    # A signature cut short.
    good = token()
    assert await ask(authorizer, details(good[:-10])) == INVALID
    assert authorizer.stats()["verified"] == 0


@pytest.mark.parametrize(
    "garbage",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "....",
        parts(b"not json", b"{}", b"sig"),
        parts(b"[1, 2]", b"{}", b"sig"),
        parts(b'{"alg": "RS256", "kid": 5}', b"{}", b"sig"),
        parts(b'{"alg": ["RS256"]}', b"{}", b"sig"),
        parts(b'{"alg": "RS256", "kid": "rsa-1"}', b"[]", b"sig"),
        parts(b'{"alg": "RS256", "kid": "rsa-1"}', b"{}", b"sig").replace(".e30.", ".%%%."),
        parts(b'{"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}', b"{}", b"sig"),
        "\u00e9\u00e9.\u00e9.\u00e9",
        "x" * (MAX_TOKEN_CHARS + 1),
    ],
)
async def test_garbage_tokens_are_refused(make_authorizer: MakeAuthorizer, garbage: str) -> None:
    authorizer = await make_authorizer()
    assert await ask(authorizer, details(f"Bearer {garbage}")) == INVALID
    assert authorizer.stats()["refused"] == 1


def rs256_signed(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token signed with the set's RSA key, with any header an attacker cares to write."""
    return forged(
        header, payload, lambda data: RSAAlgorithm(RSAAlgorithm.SHA256).sign(data, RSA_KEY)
    )


async def test_only_the_strict_compact_form_is_read(make_authorizer: MakeAuthorizer) -> None:
    """Segments are unpadded base64url and nothing else; a header asking for an extension we
    do not implement (`crit`, or `b64` for an unencoded payload) is refused, even signed."""
    authorizer = await make_authorizer()
    good = token()
    assert isinstance(await ask(authorizer, details(good)), Allow)
    header, payload, signature = good.split(".")
    variants = [
        f"{header}.{payload}.{signature}=",
        f"{header}=.{payload}.{signature}",
        f"{header}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
        f"{header} .{payload}.{signature}",
        f"{header}..{signature}",
        f"{header}.{payload}.",
        f"{header}.{payload}.{signature}.",
        rs256_signed({"alg": "RS256", "kid": "rsa-1", "crit": ["x"], "x": 1}, claims()),
        rs256_signed({"alg": "RS256", "kid": "rsa-1", "b64": True}, claims()),
    ]
    for variant in variants:
        if variant != good:
            assert await ask(authorizer, details(variant)) == INVALID, variant
    assert authorizer.stats()["verified"] == 1
    # The hand-signed form itself is right: the same header without extensions passes.
    plain = rs256_signed({"alg": "RS256", "kid": "rsa-1"}, claims(sub="hand"))
    assert isinstance(await ask(authorizer, details(plain)), Allow)


# --- the key set --------------------------------------------------------------------------------


async def test_an_unknown_kid_fetches_the_set_again_and_a_rotated_key_works(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    authorizer = await make_authorizer(refresh_seconds=0.5)
    assert jwks.requests == 1
    await asyncio.sleep(0.5)
    rotated = token(key=RSA_NEXT, kid="rsa-2")
    assert await ask(authorizer, details(rotated)) == INVALID  # not published yet
    assert jwks.requests == 2
    jwks.keys = [public_jwk(RSA_NEXT, "rsa-2", "RS256")]
    assert await ask(authorizer, details(rotated)) == INVALID  # within the period: no fetch
    assert jwks.requests == 2
    await asyncio.sleep(0.5)
    assert isinstance(await ask(authorizer, details(rotated)), Allow)
    assert jwks.requests == 3
    assert authorizer.stats()["keyFetches"] == 3


async def test_a_withdrawn_key_stops_admitting_its_cached_tokens(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    authorizer = await make_authorizer(refresh_seconds=0.2)
    old = token()
    assert isinstance(await ask(authorizer, details(old)), Allow)
    jwks.keys = [public_jwk(RSA_NEXT, "rsa-2", "RS256")]
    await asyncio.sleep(0.2)
    assert isinstance(await ask(authorizer, details(token(key=RSA_NEXT, kid="rsa-2"))), Allow)
    assert await ask(authorizer, details(old)) == INVALID


async def test_a_flood_of_random_kids_costs_one_fetch_per_period(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    authorizer = await make_authorizer(refresh_seconds=0.5)
    await asyncio.sleep(0.5)
    flood = [token(kid=secrets.token_hex(8)) for _ in range(200)]
    verdicts = await asyncio.gather(*(ask(authorizer, details(value)) for value in flood))
    assert verdicts == [INVALID] * 200
    assert jwks.requests == 2  # the one at start, and one merged for the whole flood
    verdicts = await asyncio.gather(*(ask(authorizer, details(value)) for value in flood))
    assert verdicts == [INVALID] * 200
    assert jwks.requests == 2  # within the period: none at all
    assert isinstance(await ask(authorizer, details(token())), Allow)  # known keys still work


async def test_key_set_down_at_start_gives_503_then_recovers(
    make_authorizer: MakeAuthorizer,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    authorizer = await make_authorizer(url, refresh_seconds=0.3, fetch_timeout=1.0)
    verdict = await ask(authorizer, details(token()))
    assert isinstance(verdict, Refuse) and verdict.status == 503
    assert dict(verdict.headers)["Retry-After"] == "1"
    assert authorizer.stats()["keyFetchFailures"] == 1
    server = await JwksServer([public_jwk(RSA_KEY, "rsa-1", "RS256")]).start(port)
    try:
        await asyncio.wait_for(server.asked.wait(), 5)  # the background retry, unasked
        assert server.requests == 1
        assert isinstance(await ask(authorizer, details(token())), Allow)
        assert server.requests == 1
    finally:
        await server.stop()


async def test_a_failed_fetch_is_retried_once_a_period_has_passed(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    jwks.status = 500
    authorizer = await make_authorizer(refresh_seconds=0.3)
    assert (await ask(authorizer, details(token()))).status == 503  # type: ignore[union-attr]
    assert jwks.requests == 1
    jwks.status = 200
    await asyncio.sleep(0.3)
    assert isinstance(await ask(authorizer, details(token())), Allow)
    assert jwks.requests == 2


async def test_an_oversized_key_set_is_not_read(
    make_authorizer: MakeAuthorizer, jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    padding = b" " * MAX_KEY_SET_BYTES
    jwks.body = b'{"keys": [' + json.dumps(public_jwk(RSA_KEY, "rsa-1")).encode() + padding + b"]}"
    with caplog.at_level(logging.WARNING, logger="runtime.authorizer"):
        authorizer = await make_authorizer()
    verdict = await ask(authorizer, details(token()))
    assert isinstance(verdict, Refuse) and verdict.status == 503
    assert authorizer.stats()["keyFetchFailures"] == 1
    assert "larger than" in caplog.records[0].error  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"no": "keys"}',
        b'{"keys": [1, "a"]}',
    ],
)
async def test_a_key_set_that_is_not_one_gives_503(
    make_authorizer: MakeAuthorizer, jwks: JwksServer, body: bytes
) -> None:
    jwks.body = body
    authorizer = await make_authorizer()
    verdict = await ask(authorizer, details(token()))
    assert isinstance(verdict, Refuse) and verdict.status == 503
    assert authorizer.stats()["keyFetchFailures"] == 1


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # signing with it
async def test_junk_keys_are_left_out_and_logged(
    make_authorizer: MakeAuthorizer, jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = public_jwk(RSA_KEY, "rsa-1", "RS256")
    jwks.keys = [
        "not an object",
        {"kty": "oct", "kid": "hmac", "k": b64(b"0123456789abcdef0123456789abcdef")},
        {"kty": "RSA", "kid": "no-modulus", "e": "AQAB"},
        {"kty": "RSA", "kid": "bad-numbers", "n": 12, "e": ["AQAB"]},
        {**public_jwk(RSA_KEY, "enc-1"), "use": "enc"},
        public_jwk(RSA_SHORT, "short", "RS256"),
        public_jwk(RSA_KEY, "hs", "HS256"),
        public_jwk(EC_KEY, "ec-1"),  # EC, with only RS256 allowed
        {"kty": "EC", "kid": "bad-curve", "crv": "P-999", "x": "AA", "y": "AA"},
        {**public_jwk(RSA_KEY, None), "kid": 7},
        {"kid": "no-type"},
        good,
        public_jwk(RSA_NEXT, "rsa-1", "RS256"),  # a second rsa-1: the first stays
    ]
    with caplog.at_level(logging.WARNING, logger="runtime.authorizer"):
        authorizer = await make_authorizer()
    left_out = {record.kid for record in caplog.records}  # type: ignore[attr-defined]
    assert left_out == {
        "#0", "hmac", "no-modulus", "bad-numbers", "enc-1", "short", "hs", "ec-1", "bad-curve",
        "#9", "no-type", "rsa-1",
    }  # fmt: skip
    assert isinstance(await ask(authorizer, details(token())), Allow)
    assert await ask(authorizer, details(token(key=RSA_SHORT, kid="short"))) == INVALID
    hmac_token = jwt.encode(claims(), b"0123456789abcdef0123456789abcdef", "HS256", {"kid": "hmac"})
    assert await ask(authorizer, details(hmac_token)) == INVALID
    assert await ask(authorizer, details(token(key=RSA_NEXT))) == INVALID
    assert authorizer.stats()["keyFetchFailures"] == 0


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_only_junk_keys_is_no_key_set(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    jwks.keys = [public_jwk(RSA_SHORT, "short"), {"kty": "oct", "k": "AAAA"}]
    authorizer = await make_authorizer()
    assert (await ask(authorizer, details(token(key=RSA_SHORT, kid="short")))).status == 503  # type: ignore[union-attr]


async def test_no_kid_with_several_keys_of_its_type_is_refused(
    make_authorizer: MakeAuthorizer, jwks: JwksServer
) -> None:
    jwks.keys.append(public_jwk(RSA_NEXT, "rsa-2", "RS256"))
    authorizer = await make_authorizer()
    assert await ask(authorizer, details(token(kid=None))) == INVALID
    assert isinstance(await ask(authorizer, details(token(kid="rsa-1"))), Allow)


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithms": ["HS256"]}, "'HS256' is not accepted"),
        ({"algorithms": ["none"]}, "'none' is not accepted"),
        ({"algorithms": []}, "at least one algorithm"),
        ({"token_source": "cookie:token"}, "header:<name> or query:<name>"),
        ({"refresh_seconds": 0}, "refresh_seconds must be positive"),
    ],
)
def test_unsafe_or_malformed_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JwtAuthorizer(ISSUER, [AUDIENCE], "http://127.0.0.1:9/jwks.json", **options)


async def test_built_from_settings() -> None:
    assert jwt_authorizer_from_settings(Settings()) is None
    settings = Settings(
        jwt_issuer=ISSUER + "/",
        jwt_audiences=(AUDIENCE,),
        jwt_algorithms=("RS256", "ES256"),
        jwt_token_source="query:token",
        jwt_leeway=5.0,
        jwt_jwks_refresh_seconds=120.0,
    )
    authorizer = jwt_authorizer_from_settings(settings)
    assert authorizer is not None
    assert authorizer.jwks_url == ISSUER + "/.well-known/jwks.json"
    assert authorizer.issuer == ISSUER + "/"
    assert authorizer.audiences == (AUDIENCE,)
    assert authorizer.algorithms == ("RS256", "ES256")
    assert authorizer.token_source == "query:token"
    assert (authorizer.leeway, authorizer.refresh_seconds) == (5.0, 120.0)
    explicit = Settings(
        jwt_issuer=ISSUER, jwt_audiences=("a",), jwt_jwks_url="http://127.0.0.1:9/k"
    )
    assert jwt_authorizer_from_settings(explicit).jwks_url == "http://127.0.0.1:9/k"  # type: ignore[union-attr]
