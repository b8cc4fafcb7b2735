"""API Gateway's Lambda REQUEST authorizer at the node's door (runtime/wire/request_authorizer.py
has the formats).

The function is the expensive part and anyone can knock, so a call is the last resort:
- a handshake missing an identity source gets 401 at once, as API Gateway's;
- answers (Allow, Deny, Unauthorized) are cached per identity values for `ttl` seconds, in a
  bounded table (the least recently used go first);
- handshakes with the same identity while its call runs share that call, even with `ttl` 0;
- other calls beyond a token bucket (`rate` a second, `burst` at once) get 429 and Retry-After,
  so a flood of made-up tokens costs at most the bucket's calls.
A failure of the function (no answer in time, an error, an answer that is not a policy) refuses
with `error_status` and is never cached; it is logged at most once per kind every 10 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.config import Settings, default_api_id
from runtime.core.rate_limit import TokenBuckets
from runtime.logs import LogThrottle
from runtime.names import partition
from runtime.transports.base import Allow, Refuse, Verdict
from runtime.transports.lambda_invoke import LambdaFailed, LambdaFunctionError, LambdaInvoker
from runtime.wire.events import HandshakeDetails
from runtime.wire.request_authorizer import (
    DEFAULT_ACCOUNT,
    UNAUTHORIZED_VERDICT,
    AuthorizerAnswerInvalid,
    IdentitySource,
    authorizer_event,
    identity_values,
    method_arn,
    parse_answer,
    verdict_for_error,
)

log = logging.getLogger("runtime.authorizer")

LOG_SECONDS = 10.0
# Threads (and connections) for calls at once; the token bucket bounds how many are ever asked.
MAX_CONCURRENCY = 64
STATS = (
    "calls",
    "cacheHits",
    "joined",
    "refusedMissingIdentity",
    "refusedRate",
    "denied",
    "errors",
)
FAILED_TEXT = "Internal Server Error"
RATE_TEXT = "Too many handshakes to authorize; retry later."

# ASCII-escaped: a header may hold any character the HTTP parser let through.
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A verdict and what it counts as: "allowed", "denied" or "error"."""

    verdict: Verdict
    kind: str


class LambdaAuthorizer:
    """A Lambda REQUEST authorizer as API Gateway runs one (see the module)."""

    def __init__(
        self,
        invoker: LambdaInvoker,
        identity_sources: Sequence[str],
        *,
        ttl: float,
        rate: float,
        burst: int,
        cache_entries: int,
        error_status: int,
        api_id: str = "",
        region: str = "",
        stage: str = "",
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        if not identity_sources:
            raise ValueError("at least one identity source is needed")
        if ttl < 0:
            raise ValueError(f"ttl must be at least 0 seconds (got {ttl})")
        if cache_entries < 1:
            raise ValueError(f"cache_entries must be at least 1 (got {cache_entries})")
        if not 400 <= error_status <= 599:
            raise ValueError(f"error_status must be between 400 and 599 (got {error_status})")
        self.invoker = invoker
        self.sources = tuple(IdentitySource.parse(source) for source in identity_sources)
        self.ttl = ttl
        self.cache_entries = cache_entries
        self.error_status = error_status
        self.api_id = api_id
        self.region = region
        self.stage = stage
        self.account = account
        self._bucket = TokenBuckets(rate, burst, max_keys=1)
        self._cache: OrderedDict[tuple[str, ...], tuple[float, _Outcome]] = OrderedDict()
        self._flights: dict[tuple[str, ...], asyncio.Task[_Outcome]] = {}
        self._counts: Counter[str] = Counter(dict.fromkeys(STATS, 0))
        self._throttle = LogThrottle(LOG_SECONDS)

    # HandshakeAuthorizer

    async def start(self) -> None:
        """Make the Lambda client: a missing region stops the node here, not at a handshake."""
        await self.invoker.start()

    async def close(self) -> None:
        """Calls still running end; the handshakes waiting on them get the error status."""
        for flight in list(self._flights.values()):
            flight.cancel()
        await self.invoker.close()

    async def authorize(
        self, details: HandshakeDetails, request_context: Mapping[str, object]
    ) -> Verdict:
        values = identity_values(self.sources, details)
        if values is None:
            self._counts["refusedMissingIdentity"] += 1
            return UNAUTHORIZED_VERDICT
        now = time.monotonic()
        cached = self._cached(values, now)
        if cached is not None:
            self._counts["cacheHits"] += 1
            return self._counted(cached)
        flight = self._flights.get(values)
        if flight is not None:
            self._counts["joined"] += 1
        else:
            if not self._bucket.allow("", now):
                return self._refuse_rate(now)
            flight = asyncio.create_task(self._ask(values, details, request_context))
            self._flights[values] = flight
            flight.add_done_callback(lambda done: self._landed(values, done))
        # Waiting does not tie the call to this handshake: if it goes away, the others still
        # get the answer (and the cache has it).
        await asyncio.wait([flight])
        if flight.cancelled():  # closed
            return self._counted(self._error())
        return self._counted(flight.result())

    def stats(self) -> dict[str, int]:
        return {name: self._counts[name] for name in STATS}

    # The call

    async def _ask(
        self,
        values: tuple[str, ...],
        details: HandshakeDetails,
        request_context: Mapping[str, object],
    ) -> _Outcome:
        """One call of the function; never raises (but for cancellation at close)."""
        self._counts["calls"] += 1
        try:
            arn = self._arn(request_context)
            payload = _encode(authorizer_event(details, request_context, arn)).encode()
            answer = await self.invoker.invoke(payload)
            verdict = parse_answer(answer, arn)
        except LambdaFunctionError as exc:
            unauthorized = verdict_for_error(exc.error_message)
            if unauthorized is None:
                return self._failed("authorizer function failed", exc, details)
            verdict = unauthorized
        except LambdaFailed as exc:
            return self._failed("authorizer call failed", exc, details)
        except AuthorizerAnswerInvalid as exc:
            return self._failed("authorizer answer invalid", exc, details)
        except Exception as exc:  # a bug here must refuse, never raise into the handshake
            return self._failed("authorizer failed", exc, details, exc_info=True)
        outcome = _Outcome(verdict, "allowed" if isinstance(verdict, Allow) else "denied")
        self._store(values, outcome)
        return outcome

    def _arn(self, request_context: Mapping[str, object]) -> str:
        """Settings first; else what the $connect event says; API Gateway's shape either way."""
        region = self.region or str(request_context.get("region") or "local")
        return method_arn(
            region=region,
            api_id=self.api_id or str(request_context.get("apiId") or ""),
            stage=self.stage or str(request_context.get("stage") or "local"),
            account=self.account,
            partition=partition(region),
        )

    def _landed(self, values: tuple[str, ...], flight: asyncio.Task[_Outcome]) -> None:
        if self._flights.get(values) is flight:
            del self._flights[values]

    # The cache

    def _cached(self, values: tuple[str, ...], now: float) -> _Outcome | None:
        entry = self._cache.get(values)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._cache[values]
            return None
        self._cache.move_to_end(values)
        return entry[1]

    def _store(self, values: tuple[str, ...], outcome: _Outcome) -> None:
        if self.ttl <= 0:
            return
        self._cache[values] = (time.monotonic() + self.ttl, outcome)
        self._cache.move_to_end(values)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)

    # Refusals

    def _counted(self, outcome: _Outcome) -> Verdict:
        if outcome.kind != "allowed":
            self._counts["denied" if outcome.kind == "denied" else "errors"] += 1
        return outcome.verdict

    def _error(self) -> _Outcome:
        return _Outcome(Refuse(self.error_status, FAILED_TEXT), "error")

    def _failed(
        self, kind: str, exc: Exception, details: HandshakeDetails, *, exc_info: bool = False
    ) -> _Outcome:
        self._warn(kind, exc_info=exc_info, error=str(exc), sourceIp=details.source_ip)
        return self._error()

    def _refuse_rate(self, now: float) -> Verdict:
        self._counts["refusedRate"] += 1
        wait = max(1, math.ceil(self._bucket.retry_after("", now)))
        self._warn(
            "authorizer calls at their rate limit: handshakes refused",
            rate=self._bucket.rate,
            burst=self._bucket.burst,
        )
        return Refuse(429, RATE_TEXT, (("Retry-After", str(wait)),))

    def _warn(self, message: str, *, exc_info: bool = False, **fields: object) -> None:
        """Anyone can cause these at will: one line per kind every 10 s at most."""
        held = self._throttle.allow(message, time.monotonic())
        if held is not None:
            log.warning(message, exc_info=exc_info, extra={**fields, "heldBack": held})


def lambda_authorizer_from_settings(settings: Settings) -> LambdaAuthorizer | None:
    """The authorizer --authorizer-function names, or None without one."""
    if not settings.authorizer_function:
        return None
    invoker = LambdaInvoker(
        settings.authorizer_function,
        timeout=settings.authorizer_timeout,
        concurrency=min(MAX_CONCURRENCY, settings.authorizer_burst),
        region=settings.aws_region or None,
        name="authorizer-lambda",
    )
    return LambdaAuthorizer(
        invoker,
        settings.authorizer_identity_sources,
        ttl=settings.authorizer_ttl,
        rate=settings.authorizer_rate,
        burst=settings.authorizer_burst,
        cache_entries=settings.authorizer_cache_entries,
        error_status=settings.authorizer_error_status,
        api_id=settings.api_id or default_api_id(settings.stage, settings.region),
        region=settings.region,
        stage=settings.stage,
    )
