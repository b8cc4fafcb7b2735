"""The built-in JWT authorizer: API Gateway HTTP APIs' JWT authorizer, asked at the handshake.

A token (from a header or the query string) is admitted when its signature checks against a
key of the issuer's JSON Web Key Set, with an algorithm of the allowed list, and its claims say
it is for us and for now: `iss` is the issuer, `aud` (or, on Cognito access tokens, which have
none, `client_id`) names one of the audiences, `exp` is present and not past, `nbf` and `iat`
are not in the future (each within `leeway` seconds). PyJWT (its key parsing and the signature
check of each algorithm, over cryptography) does the crypto; reading the token and checking its
claims is `runtime.wire.jws`, choosing the key is `runtime.wire.jwks`, both without I/O. This
module fetches and caches, and turns what they decide into a verdict.

Only asymmetric algorithms are ever accepted: with a public key set, an HMAC algorithm would
take the public key as its secret (the key confusion attack), and `none` checks nothing.

The key set is fetched at start, every hour, and when a token names a kid the set lacks, but
never more often than once per `refresh_seconds` however many tokens ask (so a flood of random
kids costs at most one fetch a period), with concurrent refreshes merged into one. Without any
keys (the first fetch failed) handshakes get 503, and the set is fetched again every
`refresh_seconds` (in the background, or sooner by a handshake if that much time has passed)
until it arrives: never more often, so a down key server is not hammered, and never less
often, so the door opens within one period of the server coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runtime.logs import LogThrottle
from runtime.transports.base import Allow, Refuse, Verdict
from runtime.transports.http1_client import HttpClient, HttpClientError
from runtime.wire.events import HandshakeDetails
from runtime.wire.jwks import ALGORITHM_KEYS, KeySet, KeySetError, parse_key_set
from runtime.wire.jws import TokenRefused, check_claims, read_token

if TYPE_CHECKING:
    from runtime.config import Settings

log = logging.getLogger("runtime.authorizer")

MAX_KEY_SET_BYTES = 1 << 20  # Cognito's set is about 1 KiB; the bound only stops a runaway body
KEY_SET_REFRESH_SECONDS = 3600.0  # issuers announce a new key in the set before signing with it
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 4096

UNAUTHORIZED = "Unauthorized"
_MISSING = Refuse(401, UNAUTHORIZED, (("WWW-Authenticate", "Bearer"),))
_INVALID = Refuse(401, UNAUTHORIZED, (("WWW-Authenticate", 'Bearer error="invalid_token"'),))


class _NoKeys(Exception):
    """No key set has been fetched yet."""


# --- where the token is, and what the origin sees of it -----------------------------------------


def token_from(details: HandshakeDetails, source: str) -> str | None:
    """The token at `source` ("header:<Name>", any case, a Bearer prefix dropped; or
    "query:<name>"), or None when it is absent or empty. The first occurrence counts."""
    kind, _, name = source.partition(":")
    value: str | None = None
    if kind == "header":
        wanted = name.lower()
        value = next((v for n, v in details.headers if n.lower() == wanted), None)
        if value is not None:
            value = value.strip()
            if value[:6].lower() == "bearer" and value[6:7] in ("", " ", "\t"):
                value = value[6:].strip()
    elif kind == "query":
        value = next((v for n, v in details.query if n == name), None)
    else:
        raise ValueError(f"token source must be header:<name> or query:<name> (got {source!r})")
    return value or None


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    """OAuth scopes from `scope` (space-separated, Cognito's) or else `scp` (string or list)."""
    value = claims.get("scope", claims.get("scp"))
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def authorizer_context(claims: Mapping[str, Any]) -> dict[str, object]:
    """`requestContext.authorizer` as API Gateway HTTP APIs' JWT authorizer shapes it, with
    the principal (`sub`) on top as Lambda authorizers put it (null without a `sub`)."""
    sub = claims.get("sub")
    return {
        "principalId": sub if isinstance(sub, str) else None,
        "jwt": {"claims": dict(claims), "scopes": scopes_of(claims)},
    }


# --- the authorizer -----------------------------------------------------------------------------


class VerifiedTokens:
    """Tokens verified lately, so a client reconnecting in a loop costs one signature check.

    Safe because the key is the exact token string: a hit means these very bytes passed every
    check before, and nothing they were checked against changes in the meantime except time and
    the key set. Time is covered by the deadline, min(exp, verified + 60 s); `nbf` and `iat`
    passed once and only recede into the past. The key set is covered by clearing the cache at
    each successful fetch, so a key withdrawn from the set admits nothing more after the next
    one. Only tokens that passed are held, at most `max_entries` (the oldest go first)."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, seconds: float = CACHE_SECONDS) -> None:
        self.max_entries = max_entries
        self.seconds = seconds
        self._entries: OrderedDict[str, tuple[float, dict[str, object]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> dict[str, object] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[token]
            return None
        return entry[1]

    def put(self, token: str, exp: float, context: dict[str, object], now: float) -> None:
        if self.max_entries <= 0:
            return
        self._entries[token] = (min(exp, now + self.seconds), context)
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class JwtAuthorizer:
    """Checks a bearer JWT at each handshake against the issuer's key set (see the module)."""

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        jwks_url: str,
        *,
        algorithms: Sequence[str] = ("RS256",),
        token_source: str = "header:Authorization",
        leeway: float = 0.0,
        refresh_seconds: float = 60.0,
        fetch_timeout: float = 5.0,
        cache_entries: int = CACHE_ENTRIES,
        error_status: int = 500,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must not be empty")
        if not audiences:
            raise ValueError("audiences must name at least one audience")
        if not algorithms:
            raise ValueError("algorithms must name at least one algorithm")
        for name in algorithms:
            if name not in ALGORITHM_KEYS:
                raise ValueError(
                    f"algorithm {name!r} is not accepted: one of {', '.join(ALGORITHM_KEYS)} "
                    "(none and HMAC algorithms cannot be checked with a public key set)"
                )
        token_from(HandshakeDetails("/", [], [], "", None), token_source)  # validates it
        if refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be positive (got {refresh_seconds})")
        self.issuer = issuer
        self.audiences = tuple(audiences)
        self.jwks_url = jwks_url
        self.algorithms = tuple(algorithms)
        self.token_source = token_source
        self.leeway = leeway
        self.refresh_seconds = refresh_seconds
        self.fetch_timeout = fetch_timeout
        self.error_status = error_status
        self._client = HttpClient(
            jwks_url,
            max_connections=1,
            timeout=fetch_timeout,
            max_response_bytes=MAX_KEY_SET_BYTES,
            headers={"Accept": "application/json"},
        )
        self._keys: KeySet | None = None
        self._cache = VerifiedTokens(cache_entries)
        self._fetching: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._last_attempt = -math.inf  # loop time of the last fetch's start
        self._last_ok = False
        self._throttle = LogThrottle(10.0)
        self.verified = 0
        self.cache_hits = 0
        self.refused = 0
        self.key_fetches = 0
        self.key_fetch_failures = 0

    # HandshakeAuthorizer

    async def start(self) -> None:
        """Fetch the key set (a failure is logged: handshakes get 503 until it arrives)."""
        await self._refresh()
        self._keeper = asyncio.create_task(self._keep_fresh(), name="jwks-refresh")

    async def close(self) -> None:
        for task in (self._keeper, self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keeper = self._fetching = None
        await self._client.close()

    async def authorize(
        self, details: HandshakeDetails, request_context: Mapping[str, object]
    ) -> Verdict:
        token = token_from(details, self.token_source)
        if token is None:
            return self._refuse("missing token", details, _MISSING)
        try:
            context = self._cache.get(token, time.time())
            if context is not None:
                self.cache_hits += 1
                return Allow(context)
            return Allow(await self._verify(token))
        except TokenRefused as refused:
            return self._refuse(refused.kind, details, _INVALID)
        except _NoKeys:
            wait = max(1, math.ceil(self._next_attempt() - self._now()))
            unavailable = Refuse(503, "Service Unavailable", (("Retry-After", str(wait)),))
            return self._refuse("no key set yet", details, unavailable)
        except Exception:
            log.exception("JWT authorizer failed", extra={"sourceIp": details.source_ip})
            self.refused += 1
            return Refuse(self.error_status, "Internal Server Error")

    def stats(self) -> dict[str, int]:
        return {
            "verified": self.verified,
            "cacheHits": self.cache_hits,
            "refused": self.refused,
            "keyFetches": self.key_fetches,
            "keyFetchFailures": self.key_fetch_failures,
        }

    # Checking a token

    async def _verify(self, token: str) -> dict[str, object]:
        parts = read_token(token)
        algorithm, kid = parts.algorithm, parts.kid
        if algorithm not in self.algorithms:
            raise TokenRefused("algorithm not allowed")
        if self._keys is None or (kid is not None and not self._keys.has_kid(kid)):
            await self._refresh()
        if self._keys is None:
            raise _NoKeys()
        if kid is not None and not self._keys.has_kid(kid):
            raise TokenRefused("unknown kid")
        key = self._keys.find(kid, algorithm)
        if not key.Algorithm.verify(parts.signing_input, key.key, parts.signature):
            raise TokenRefused("bad signature")
        claims = parts.claims()
        now = time.time()
        check_claims(claims, self.issuer, self.audiences, now, self.leeway)
        context = authorizer_context(claims)
        self.verified += 1
        self._cache.put(token, float(claims["exp"]), context, now)
        return context

    def _refuse(self, kind: str, details: HandshakeDetails, refusal: Refuse) -> Refuse:
        self.refused += 1
        held = self._throttle.allow(kind, time.monotonic())
        if held is not None:
            log.info(
                f"handshake refused by the JWT authorizer: {kind}",
                extra={"reason": kind, "sourceIp": details.source_ip, "heldBack": held},
            )
        return refusal

    # The key set

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _next_attempt(self) -> float:
        return self._last_attempt + self.refresh_seconds

    async def _refresh(self) -> None:
        """Fetch the key set unless one was fetched less than `refresh_seconds` ago; callers
        arriving while a fetch is under way wait for that one."""
        if self._fetching is None:
            if self._now() < self._next_attempt():
                return
            self._last_attempt = self._now()
            self._fetching = asyncio.create_task(self._fetch(), name="jwks-fetch")
        # Shielded: a handshake given up on must not cancel the fetch others wait for.
        await asyncio.shield(self._fetching)

    async def _fetch(self) -> None:
        self.key_fetches += 1
        try:
            response = await self._client.request("GET")
            if response.status != 200:
                raise KeySetError(f"HTTP {response.status}")
            keys, skipped = parse_key_set(response.body, self.algorithms)
        except (HttpClientError, KeySetError) as exc:
            self._failed(str(exc))
            return
        except Exception as exc:  # never let a bad answer stop the refreshing
            self._failed(repr(exc), unexpected=True)
            return
        finally:
            self._fetching = None
        for kid, why in skipped:
            log.warning("JWKS key left out", extra={"url": self.jwks_url, "kid": kid, "why": why})
        self._keys = keys
        self._last_ok = True
        self._cache.clear()

    def _failed(self, error: str, *, unexpected: bool = False) -> None:
        self.key_fetch_failures += 1
        self._last_ok = False
        log.warning(
            "JWKS fetch failed",
            extra={"url": self.jwks_url, "error": error, "keysKept": self._keys is not None},
            exc_info=unexpected,
        )

    async def _keep_fresh(self) -> None:
        """Every hour (or `refresh_seconds`, if longer); after a failed fetch, every
        `refresh_seconds` until one succeeds (the keys held meanwhile stay in use)."""
        while True:
            period = self.refresh_seconds
            if self._last_ok:
                period = max(period, KEY_SET_REFRESH_SECONDS)
            delay = self._last_attempt + period - self._now()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # a handshake may have fetched meanwhile
            await self._refresh()


def jwt_authorizer_from_settings(settings: Settings) -> JwtAuthorizer | None:
    """The JWT authorizer the settings ask for, or None without `jwt_issuer`."""
    if not settings.jwt_issuer:
        return None
    jwks_url = settings.jwt_jwks_url or settings.jwt_issuer.rstrip("/") + "/.well-known/jwks.json"
    return JwtAuthorizer(
        settings.jwt_issuer,
        settings.jwt_audiences,
        jwks_url,
        algorithms=settings.jwt_algorithms,
        token_source=settings.jwt_token_source,
        leeway=settings.jwt_leeway,
        refresh_seconds=settings.jwt_jwks_refresh_seconds,
    )
