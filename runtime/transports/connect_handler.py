"""The synchronous $connect handler: the user's code, asked during the handshake, decides.

Two transports send it the $connect event and read its answer:

- `LambdaConnectHandler` invokes a function (RequestResponse) and reads its result as API
  Gateway's $connect integration does (runtime/wire/connect_answer.py): no statusCode accepts,
  a statusCode decides, its headers go into the handshake response.
- `HttpConnectHandler` POSTs the event to a URL. The HTTP answer decides:
  - a non-2xx status refuses the handshake with that status; the first KiB of the body, made
    printable, is the refusal's text, and no header of that answer is passed on;
  - a 2xx whose body is a JSON object with a statusCode is read as a Lambda result, so the same
    handler code can sit behind a function or behind HTTP (its headers pass as a function's do);
  - any other 2xx accepts, passing on only Sec-WebSocket-Protocol (the subprotocol chosen,
    which the node checks against the client's offer) and Set-Cookie. Every other header of an
    ordinary HTTP answer (Content-Type, caching, a framework's own) is about that answer, not
    the handshake. Repeated Set-Cookie headers arrive joined with ", ", which browsers misread;
    set several cookies through a Lambda-style body's multiValueHeaders instead.
  A 2xx body that claims to be JSON (by its Content-Type, or by starting with "{") and is not
  is malformed: a handler that meant to refuse must never be read as accepting.

Both fail closed: no answer within `timeout` (the wait for a free place included), an invoke or
connection that fails, a malformed answer (a status below 200 among them: a 1xx cannot refuse
a handshake) or unsafe headers all give `error_status`, and one log line per kind of failure
every 10 s, on logger "runtime.connect". The client reads only a fixed text, never the detail.

At most `concurrency` calls are at the handler at once. A call whose caller stopped waiting
(timeout, or the handshake went away) keeps its place until the handler is done with it, for
up to `late_answer` seconds past its deadline: a slow handler must not be sent ever more
requests at once, just when it can least take them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from runtime.config import Settings
from runtime.logs import LogThrottle
from runtime.transports.base import ConnectHandler
from runtime.transports.http1_client import ClientResponse
from runtime.transports.http_origin import json_client
from runtime.transports.lambda_invoke import LambdaInvoker
from runtime.wire.connect_answer import (
    ConnectAnswer,
    UnsafeHeader,
    parse_lambda_answer,
    printable_text,
    read_lambda_answer,
    safe_headers,
)

log = logging.getLogger("runtime.connect")
T = TypeVar("T")

LOG_SECONDS = 10.0
LATE_ANSWER_SECONDS = 30.0
# A handler's HTTP answer: headers, a refusal's text or a Lambda-style body; anything larger is
# not an answer to a handshake.
MAX_HTTP_ANSWER_BYTES = 1 << 20
# The headers of a plain 2xx HTTP answer that belong to the handshake, as they are sent on.
PASSED_HTTP_HEADERS = (
    ("sec-websocket-protocol", "Sec-WebSocket-Protocol"),
    ("set-cookie", "Set-Cookie"),
)
STATS = ("calls", "accepted", "refused", "errors", "timeouts")
FAILED_TEXT = "$connect handler failed"
TIMED_OUT_TEXT = "$connect handler did not answer in time"


class _BadAnswer(Exception):
    """The handler answered, but not with anything that may decide a handshake."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "malformed" or "unsafe"


def _read(parse: Callable[[], T]) -> T:
    """`parse()`, its ValueError as a _BadAnswer (not mistaken for the transport's failure)."""
    try:
        return parse()
    except UnsafeHeader as exc:
        raise _BadAnswer("unsafe", str(exc)) from exc
    except ValueError as exc:
        raise _BadAnswer("malformed", str(exc)) from exc


Exchange = Callable[[], Awaitable[ConnectAnswer]]


class _HandlerCalls:
    """What both transports share: places, the deadline, counting, and failing closed."""

    def __init__(
        self,
        source: str,
        *,
        timeout: float,
        error_status: int,
        concurrency: int,
        late_answer: float,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
        if timeout <= 0:
            raise ValueError(f"timeout must be more than 0 seconds (got {timeout})")
        if not 400 <= error_status <= 599:
            raise ValueError(f"error_status must be between 400 and 599 (got {error_status})")
        if late_answer < 0:
            raise ValueError(f"late_answer must be at least 0 seconds (got {late_answer})")
        self.source = source
        self.timeout = timeout
        self.error_status = error_status
        self.late_answer = late_answer
        self._places = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[ConnectAnswer | Exception]] = set()
        self._counts: Counter[str] = Counter(dict.fromkeys(STATS, 0))
        self._throttle = LogThrottle(LOG_SECONDS)
        self._closed = False

    def stats(self) -> dict[str, int]:
        return {name: self._counts[name] for name in STATS}

    async def close(self) -> None:
        """End the calls still at the handler; their callers have their answers already or get
        the error status now."""
        self._closed = True
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def call(self, exchange: Exchange) -> ConnectAnswer:
        self._counts["calls"] += 1
        if self._closed:
            return self._failed("failed", "the $connect handler is closed")
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await self._send(exchange, deadline)
        except TimeoutError:
            self._counts["timeouts"] += 1
            self._log("timeout", TIMED_OUT_TEXT, f"no answer within {self.timeout:g} s")
            return ConnectAnswer(self.error_status, (), TIMED_OUT_TEXT)
        if isinstance(outcome, _BadAnswer):
            return self._failed(outcome.kind, str(outcome))
        if isinstance(outcome, Exception):
            return self._failed("failed", str(outcome) or type(outcome).__name__)
        if not 200 <= outcome.status <= 599:
            return self._failed("malformed", f"status {outcome.status} cannot answer a handshake")
        self._counts["accepted" if outcome.status < 300 else "refused"] += 1
        return outcome

    async def _send(self, exchange: Exchange, deadline: float) -> ConnectAnswer | Exception:
        """The exchange's outcome, once a place is ours; the place is held until it ends."""
        loop = asyncio.get_running_loop()
        await self._places.acquire()
        if loop.time() >= deadline:  # handed a place at the very deadline: it goes back unused
            self._places.release()
            raise TimeoutError
        try:
            cutoff = deadline + self.late_answer
            task = asyncio.ensure_future(self._run(exchange, cutoff))
        except BaseException:
            self._places.release()
            raise
        self._running.add(task)
        task.add_done_callback(self._ended)
        return await asyncio.shield(task)

    @staticmethod
    async def _run(exchange: Exchange, cutoff: float) -> ConnectAnswer | Exception:
        """Never raises: a caller that stopped waiting never retrieves an exception. Only
        `close` cancels it (callers wait through `shield`); that ends the call as a failure."""
        try:
            async with asyncio.timeout_at(cutoff):
                return await exchange()
        except Exception as exc:
            return exc
        except asyncio.CancelledError:
            return ConnectionAbortedError("the $connect handler was closed")

    def _ended(self, task: asyncio.Task[ConnectAnswer | Exception]) -> None:
        self._running.discard(task)
        self._places.release()

    def _failed(self, kind: str, detail: str) -> ConnectAnswer:
        self._counts["errors"] += 1
        messages = {
            "failed": "$connect handler failed",
            "malformed": "$connect handler answered with something that is not an answer",
            "unsafe": "$connect handler answered with headers a response cannot carry",
        }
        self._log(kind, messages[kind], detail)
        return ConnectAnswer(self.error_status, (), FAILED_TEXT)

    def _log(self, kind: str, message: str, detail: str) -> None:
        """A handler failing fails every handshake: one line per kind every 10 s at most."""
        held = self._throttle.allow(kind, time.monotonic())
        if held is not None:
            log.warning(
                message,
                extra={
                    "handler": self.source,
                    "detail": detail[:300],
                    "status": self.error_status,
                    "heldBack": held,
                },
            )


class LambdaConnectHandler:
    """The $connect event to a function through `invoke`, which returns the function's result
    and raises on any failure (a FunctionError included)."""

    def __init__(
        self,
        invoke: Callable[[bytes], Awaitable[bytes]],
        *,
        name: str,
        timeout: float,
        error_status: int,
        concurrency: int,
        late_answer: float = LATE_ANSWER_SECONDS,
        invoker: LambdaInvoker | None = None,
    ) -> None:
        self._invoke = invoke
        self._invoker = invoker  # started and closed with this handler, when given
        self._calls = _HandlerCalls(
            f"function {name}",
            timeout=timeout,
            error_status=error_status,
            concurrency=concurrency,
            late_answer=late_answer,
        )

    async def start(self) -> None:
        if self._invoker is not None:
            await self._invoker.start()

    async def close(self) -> None:
        await self._calls.close()
        if self._invoker is not None:
            await self._invoker.close()

    def stats(self) -> dict[str, int]:
        return self._calls.stats()

    async def call(self, event: bytes) -> ConnectAnswer:
        return await self._calls.call(lambda: self._exchange(event))

    async def _exchange(self, event: bytes) -> ConnectAnswer:
        payload = await self._invoke(event)
        return _read(lambda: parse_lambda_answer(payload))


class HttpConnectHandler:
    """The $connect event POSTed to `url`, on at most `concurrency` kept-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        timeout: float,
        error_status: int,
        concurrency: int,
        late_answer: float = LATE_ANSWER_SECONDS,
    ) -> None:
        self.url = url
        self._calls = _HandlerCalls(
            url,
            timeout=timeout,
            error_status=error_status,
            concurrency=concurrency,
            late_answer=late_answer,
        )
        # A connection per place: a call never waits for one, and the client's own timeout only
        # ends an exchange the handler never answers.
        self._client = json_client(url, token, concurrency, timeout + late_answer)
        self._client.max_response_bytes = MAX_HTTP_ANSWER_BYTES

    async def start(self) -> None:
        """Connections open on first use."""

    async def close(self) -> None:
        await self._calls.close()
        await self._client.close()

    def stats(self) -> dict[str, int]:
        return self._calls.stats()

    async def call(self, event: bytes) -> ConnectAnswer:
        return await self._calls.call(lambda: self._exchange(event))

    async def _exchange(self, event: bytes) -> ConnectAnswer:
        return _read_http_answer(await self._client.request("POST", event))


def _read_http_answer(response: ClientResponse) -> ConnectAnswer:
    """What an HTTP handler's answer decides (the module docstring says how)."""
    if not 200 <= response.status < 300:
        return ConnectAnswer(response.status, (), printable_text(response.body))
    if _claims_json(response):
        try:
            document = json.loads(response.body)
        except (ValueError, RecursionError):
            preview = response.body[:100].decode("utf-8", "replace")
            raise _BadAnswer(
                "malformed", f"2xx answer is not the JSON it claims: {preview}"
            ) from None
        if isinstance(document, dict) and "statusCode" in document:
            return _read(lambda: read_lambda_answer(document))
    passed = [
        (name, response.headers[key])
        for key, name in PASSED_HTTP_HEADERS
        if key in response.headers
    ]
    return ConnectAnswer(response.status, _read(lambda: safe_headers(passed)))


def _claims_json(response: ClientResponse) -> bool:
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type.endswith(("/json", "+json")) or response.body.lstrip()[:1] == b"{"


def connect_handler_from_settings(settings: Settings) -> ConnectHandler | None:
    """The $connect handler --connect-handler-url or --connect-handler-function names, or None."""
    timeout = settings.connect_handler_timeout
    error_status = settings.connect_handler_error_status
    concurrency = settings.connect_handler_concurrency
    if settings.connect_handler_url:
        return HttpConnectHandler(
            settings.connect_handler_url,
            token=settings.connect_handler_token,
            timeout=timeout,
            error_status=error_status,
            concurrency=concurrency,
        )
    if settings.connect_handler_function:
        invoker = LambdaInvoker(
            settings.connect_handler_function,
            timeout=settings.connect_handler_timeout,
            concurrency=min(LAMBDA_THREADS, settings.connect_handler_concurrency),
            region=settings.aws_region or None,
            name="connect-lambda",
        )
        return LambdaConnectHandler(
            lambda event: invoker.invoke(event, bounded=False),
            name=settings.connect_handler_function,
            invoker=invoker,
            timeout=timeout,
            error_status=error_status,
            concurrency=concurrency,
        )
    return None


# Threads blocked on Lambda calls at once; the handler's own bound queues the rest.
LAMBDA_THREADS = 64
