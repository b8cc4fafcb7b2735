"""The synchronous $connect handler against real handlers: an aiohttp server on 127.0.0.1 for
HTTP, moto's Lambda (in server mode, reached by boto3 in a thread) for functions.

moto's simple Lambda backend runs no code: an invoke answers the next result queued through
/moto-api/static/lambda-simple/response (tests/aws.py), and a result over 6 MB comes back as a
real FunctionError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from runtime.transports.base import ConnectAnswer
from runtime.transports.connect_handler import (
    FAILED_TEXT,
    TIMED_OUT_TEXT,
    HttpConnectHandler,
    LambdaConnectHandler,
)
from tests.aws import MotoEndpoint, queue_lambda_results

pytestmark = pytest.mark.timeout(30)

EVENT = json.dumps(
    {
        "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "AQx"},
        "headers": {"Host": "example.com"},
        "isBase64Encoded": False,
    }
).encode()
ERROR = 503  # not a status any handler here answers with: only failures give it


def error_answer(text: str = FAILED_TEXT) -> ConnectAnswer:
    return ConnectAnswer(ERROR, (), text)


# --- HTTP -------------------------------------------------------------------------------------

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HandlerServer:
    """An aiohttp $connect handler: answers with `answer(request)`, records what it saw."""

    def __init__(self) -> None:
        self.answer: Answer = _ok
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()  # set at teardown: slow answers end
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.answer(request)
        finally:
            self.in_flight -= 1

    async def hold(self, seconds: float) -> None:
        """Answer late: after `seconds`, or at teardown."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), seconds)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/connect", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/connect"

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


@pytest.fixture
async def server() -> AsyncIterator[HandlerServer]:
    handler_server = HandlerServer()
    await handler_server.start()
    try:
        yield handler_server
    finally:
        await handler_server.stop()


@pytest.fixture
async def handlers() -> AsyncIterator[Callable[..., HttpConnectHandler]]:
    """Makes HTTP handlers and closes them after the test."""
    made: list[HttpConnectHandler] = []

    def make(url: str, **options: Any) -> HttpConnectHandler:
        settings: dict[str, Any] = {"timeout": 5.0, "error_status": ERROR, "concurrency": 4}
        handler = HttpConnectHandler(url, **(settings | options))
        made.append(handler)
        return handler

    yield make
    for handler in made:
        await handler.close()


def answering(status: int = 200, body: str = "", headers: dict[str, str] | None = None) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=body, headers=headers)

    return answer


def answering_json(document: object, status: int = 200) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(document, status=status)

    return answer


async def test_http_2xx_accepts_and_receives_the_event(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    handler = handlers(server.url, token="sekret")
    assert await handler.call(EVENT) == ConnectAnswer(200)
    assert server.bodies == [EVENT]
    assert server.headers[0]["Authorization"] == "Bearer sekret"
    assert server.headers[0]["Content-Type"] == "application/json"
    assert handler.stats() == {"calls": 1, "accepted": 1, "refused": 0, "errors": 0, "timeouts": 0}


async def test_http_no_token_sends_no_authorization(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    await handlers(server.url).call(EVENT)
    assert "Authorization" not in server.headers[0]


@pytest.mark.parametrize("status", [401, 403, 429, 500])
async def test_http_non_2xx_refuses_with_that_status(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler], status: int
) -> None:
    server.answer = answering(status, "go away\r\nnow", {"WWW-Authenticate": "Bearer"})
    handler = handlers(server.url)
    # The text made printable; no header of a refusal is passed on.
    assert await handler.call(EVENT) == ConnectAnswer(status, (), "go away  now")
    assert handler.stats()["refused"] == 1
    assert handler.stats()["errors"] == 0


async def test_http_refusal_text_is_cut_to_one_kib(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    server.answer = answering(403, "n" * 10_000)
    answer = await handlers(server.url).call(EVENT)
    assert answer.status == 403
    assert answer.body == "n" * 1024


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"statusCode": 401}, ConnectAnswer(401)),
        ({"statusCode": 401, "body": "no"}, ConnectAnswer(401, (), "no")),
        ({"statusCode": "403", "body": "no"}, ConnectAnswer(403, (), "no")),
        (
            {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "chat", "X-Trace": "1"}},
            ConnectAnswer(200, (("Sec-WebSocket-Protocol", "chat"), ("X-Trace", "1"))),
        ),
        ({"accepted": True}, ConnectAnswer(200)),  # no statusCode: an ordinary 2xx
        ([1, 2], ConnectAnswer(200)),
        (None, ConnectAnswer(200)),
    ],
)
async def test_http_2xx_json_with_status_code_reads_as_a_lambda_result(
    server: HandlerServer,
    handlers: Callable[..., HttpConnectHandler],
    document: object,
    expected: ConnectAnswer,
) -> None:
    server.answer = answering_json(document)
    assert await handlers(server.url).call(EVENT) == expected


async def test_http_lambda_style_body_without_json_content_type_still_decides(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    """A handler that meant to refuse is never read as accepting for want of a Content-Type."""
    server.answer = answering(200, ' {"statusCode": 401, "body": "no"}')
    assert await handlers(server.url).call(EVENT) == ConnectAnswer(401, (), "no")


async def test_http_2xx_passes_only_subprotocol_and_cookie(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    server.answer = answering(
        200,
        "welcome",
        {"Sec-WebSocket-Protocol": "chat", "Set-Cookie": "s=1; Path=/", "X-Other": "no"},
    )
    handler = handlers(server.url)
    assert await handler.call(EVENT) == ConnectAnswer(
        200, (("Sec-WebSocket-Protocol", "chat"), ("Set-Cookie", "s=1; Path=/"))
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ("", "application/json"),
        ("[1,", "application/problem+json; charset=utf-8"),
        ('{"statusCode": 401', "text/plain"),  # looks like an object, is not one
        ('{"statusCode": "abc"}', "application/json"),
        ('{"statusCode": 101}', "application/json"),  # a 1xx cannot refuse a handshake
        ('{"statusCode": 401, "body": 7}', "application/json"),
        ('{"statusCode": 200, "headers": {"X-A": 1}}', "application/json"),
    ],
)
async def test_http_malformed_answer_is_the_error_status(
    server: HandlerServer,
    handlers: Callable[..., HttpConnectHandler],
    body: str,
    content_type: str,
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, body=body.encode(), headers={"Content-Type": content_type})

    server.answer = answer
    handler = handlers(server.url)
    assert await handler.call(EVENT) == error_answer()
    assert handler.stats() == {"calls": 1, "accepted": 0, "refused": 0, "errors": 1, "timeouts": 0}


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-WebSocket-Protocol": "chat\r\nSet-Cookie: session=stolen"},
        {"X-Note": "a\nb"},
        {"X-Note": "nul\u0000"},
        {"Bad Name": "x"},
        {"X-Snow": "☃"},
        {f"X-H{i}": "v" for i in range(33)},
    ],
)
async def test_http_unsafe_headers_are_the_error_status(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler], headers: dict[str, str]
) -> None:
    server.answer = answering_json({"statusCode": 200, "headers": headers})
    assert await handlers(server.url).call(EVENT) == error_answer()


async def test_http_header_injection_in_a_plain_answer_is_the_error_status() -> None:
    """A raw server: aiohttp itself would not send a header value holding a line break."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
            b"Sec-WebSocket-Protocol: chat\rX-Injected: 1\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    handler = HttpConnectHandler(
        f"http://127.0.0.1:{port}/", timeout=5, error_status=ERROR, concurrency=1
    )
    try:
        assert (await handler.call(EVENT)).status == ERROR
    finally:
        await handler.close()
        raw.close()
        await raw.wait_closed()


async def test_http_slow_handler_is_the_error_status_after_the_timeout(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await server.hold(10)
        return web.Response(status=200)

    server.answer = slow
    handler = handlers(server.url, timeout=0.3)
    started = time.monotonic()
    answer = await handler.call(EVENT)
    took = time.monotonic() - started
    assert answer == error_answer(TIMED_OUT_TEXT)
    assert 0.3 <= took < 0.6
    assert handler.stats() == {"calls": 1, "accepted": 0, "refused": 0, "errors": 0, "timeouts": 1}


async def test_http_handler_down_is_the_error_status(
    handlers: Callable[..., HttpConnectHandler],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    handler = handlers(f"http://127.0.0.1:{port}/connect")
    started = time.monotonic()
    assert await handler.call(EVENT) == error_answer()
    assert time.monotonic() - started < 2
    assert handler.stats()["errors"] == 1


async def test_http_answer_too_large_is_the_error_status(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    server.answer = answering(403, "x" * (2 << 20))
    assert await handlers(server.url).call(EVENT) == error_answer()


async def test_http_calls_in_flight_never_exceed_concurrency(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    async def busy(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.Response(status=204)

    server.answer = busy
    handler = handlers(server.url, concurrency=4)
    answers = await asyncio.gather(*(handler.call(EVENT) for _ in range(20)))
    assert [answer.status for answer in answers] == [204] * 20
    assert len(server.bodies) == 20
    assert server.most_in_flight == 4  # at most 4, and the 4 were used
    assert handler.stats()["accepted"] == 20


async def test_http_wait_for_a_place_counts_against_the_timeout(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    async def busy(request: web.Request) -> web.StreamResponse:
        await server.hold(0.4)
        return web.Response(status=200)

    server.answer = busy
    handler = handlers(server.url, concurrency=1, timeout=0.6)

    async def timed() -> tuple[ConnectAnswer, float]:
        started = time.monotonic()
        answer = await handler.call(EVENT)
        return answer, time.monotonic() - started

    (first, _), (second, took) = await asyncio.gather(timed(), timed())
    assert first.status == 200
    assert second == error_answer(TIMED_OUT_TEXT)  # 0.4 s waiting + 0.4 s answering > 0.6 s
    assert 0.6 <= took < 0.9


async def test_http_call_past_its_timeout_keeps_its_place(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    """A slow handler is not sent a second request while it still works on the first."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await server.hold(0.8)
        return web.Response(status=200)

    server.answer = slow
    handler = handlers(server.url, concurrency=1, timeout=0.2)
    assert await handler.call(EVENT) == error_answer(TIMED_OUT_TEXT)
    assert await handler.call(EVENT) == error_answer(TIMED_OUT_TEXT)  # never sent
    assert len(server.bodies) == 1
    await asyncio.sleep(0.7)  # the first answer came: the place is free again
    server.answer = _ok
    assert (await handler.call(EVENT)).status == 200
    assert server.most_in_flight == 1


async def test_http_late_answer_is_cut_off(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    async def stuck(request: web.Request) -> web.StreamResponse:
        await server.hold(10)
        return web.Response(status=200)

    server.answer = stuck
    handler = handlers(server.url, concurrency=1, timeout=0.2, late_answer=0.3)
    assert (await handler.call(EVENT)).status == ERROR
    await asyncio.sleep(0.4)  # 0.2 s + 0.3 s after the call began, its place was given back
    server.answer = _ok
    assert (await handler.call(EVENT)).status == 200


async def test_http_cancelled_caller_leaves_the_place_taken_until_the_answer(
    server: HandlerServer, handlers: Callable[..., HttpConnectHandler]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await server.hold(0.5)
        return web.Response(status=200)

    server.answer = slow
    handler = handlers(server.url, concurrency=1, timeout=2)
    first = asyncio.ensure_future(handler.call(EVENT))
    await asyncio.sleep(0.2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    started = time.monotonic()
    server.answer = _ok
    assert (await handler.call(EVENT)).status == 200
    assert time.monotonic() - started >= 0.2  # waited for the first to end
    assert server.most_in_flight == 1


async def test_http_close_ends_calls_in_flight_with_the_error_status(
    server: HandlerServer,
) -> None:
    async def stuck(request: web.Request) -> web.StreamResponse:
        await server.hold(10)
        return web.Response(status=200)

    server.answer = stuck
    handler = HttpConnectHandler(server.url, timeout=5, error_status=ERROR, concurrency=2)
    call = asyncio.ensure_future(handler.call(EVENT))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await handler.close()
    assert await call == error_answer()
    assert time.monotonic() - started < 1
    assert await handler.call(EVENT) == error_answer()  # closed: refuses at once


async def test_failures_log_one_line_per_kind_per_ten_seconds(
    server: HandlerServer,
    handlers: Callable[..., HttpConnectHandler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = handlers("http://127.0.0.1:9/connect", token="sekret")  # nothing listens there
    malformed = handlers(server.url)
    server.answer = answering(200, "{oops")
    with caplog.at_level(logging.WARNING, logger="runtime.connect"):
        for _ in range(5):
            assert (await down.call(EVENT)).status == ERROR
            assert (await malformed.call(EVENT)).status == ERROR
        server.answer = answering_json({"statusCode": 200, "headers": {"X-A": "1\r\n"}})
        for _ in range(3):
            assert (await malformed.call(EVENT)).status == ERROR
    lines = [record for record in caplog.records if record.name == "runtime.connect"]
    assert [record.getMessage() for record in lines] == [
        "$connect handler failed",
        "$connect handler answered with something that is not an answer",
        "$connect handler answered with headers a response cannot carry",
    ]
    assert "sekret" not in caplog.text
    assert lines[0].handler == "http://127.0.0.1:9/connect"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"timeout": 0}, "timeout must be more than 0"),
        ({"error_status": 200}, "error_status must be between 400 and 599"),
        ({"error_status": 600}, "error_status must be between 400 and 599"),
        ({"late_answer": -1}, "late_answer must be at least 0"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], error: str) -> None:
    settings: dict[str, Any] = {"timeout": 1.0, "error_status": ERROR, "concurrency": 1}
    with pytest.raises(ValueError, match=error):
        HttpConnectHandler("http://127.0.0.1:9/", **(settings | options))
    with pytest.raises(ValueError, match=error):
        LambdaConnectHandler(_never, name="f", **(settings | options))


async def _never(event: bytes) -> bytes:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


# --- Lambda -----------------------------------------------------------------------------------


class FunctionFailed(Exception):
    """The invoke answered with a FunctionError."""


def moto_invoke(endpoint: MotoEndpoint, name: str) -> Callable[[bytes], Awaitable[bytes]]:
    """A RequestResponse invoke through boto3 in a thread; a FunctionError raises."""
    client = endpoint.client("lambda")

    def invoke_now(payload: bytes) -> bytes:
        response = client.invoke(
            FunctionName=name, InvocationType="RequestResponse", Payload=payload
        )
        result: bytes = response["Payload"].read()
        if response.get("FunctionError"):
            raise FunctionFailed(f"{response['FunctionError']}: {result[:100]!r}")
        return result

    async def invoke(payload: bytes) -> bytes:
        return await asyncio.to_thread(invoke_now, payload)

    return invoke


def lambda_handler(
    invoke: Callable[[bytes], Awaitable[bytes]], **options: Any
) -> LambdaConnectHandler:
    settings: dict[str, Any] = {"timeout": 10.0, "error_status": ERROR, "concurrency": 4}
    return LambdaConnectHandler(invoke, name="connect-fn", **(settings | options))


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ('{"statusCode": 200}', ConnectAnswer(200)),
        ('{"statusCode": 401, "body": "no"}', ConnectAnswer(401, (), "no")),
        ("null", ConnectAnswer(200)),
        (
            '{"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "chat"}}',
            ConnectAnswer(200, (("Sec-WebSocket-Protocol", "chat"),)),
        ),
        ("not json", error_answer()),
        ('"a string"', error_answer()),
        ('{"statusCode": 700}', error_answer()),
        ('{"statusCode": 200, "headers": {"X-A": "1\\r\\nX-B: 2"}}', error_answer()),
    ],
)
async def test_lambda_result_decides(
    moto_endpoint: MotoEndpoint, simple_function: str, result: str, expected: ConnectAnswer
) -> None:
    handler = lambda_handler(moto_invoke(moto_endpoint, simple_function))
    await queue_lambda_results(moto_endpoint, result)
    try:
        assert await handler.call(EVENT) == expected
    finally:
        await handler.close()
    accepted = expected.status < 300
    assert handler.stats() == {
        "calls": 1,
        "accepted": int(accepted),
        "refused": int(expected.status not in (ERROR, *range(200, 300))),
        "errors": int(expected.status == ERROR),
        "timeouts": 0,
    }


async def test_lambda_function_error_is_the_error_status(
    moto_endpoint: MotoEndpoint, simple_function: str
) -> None:
    handler = lambda_handler(moto_invoke(moto_endpoint, simple_function))
    await queue_lambda_results(moto_endpoint, "x" * 6_000_001)  # Function.ResponseSizeTooLarge
    try:
        assert await handler.call(EVENT) == error_answer()
    finally:
        await handler.close()


async def test_lambda_invoke_that_raises_is_the_error_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(event: bytes) -> bytes:
        raise ConnectionResetError("connection reset by peer")

    handler = lambda_handler(broken)
    with caplog.at_level(logging.WARNING, logger="runtime.connect"):
        assert await handler.call(EVENT) == error_answer()
    assert handler.stats()["errors"] == 1
    (line,) = [r for r in caplog.records if r.name == "runtime.connect"]
    assert line.detail == "connection reset by peer"  # type: ignore[attr-defined]
    assert line.handler == "function connect-fn"  # type: ignore[attr-defined]


async def test_lambda_invoke_that_never_answers_is_the_error_status_after_the_timeout() -> None:
    handler = lambda_handler(_never, timeout=0.2)
    started = time.monotonic()
    assert await handler.call(EVENT) == error_answer(TIMED_OUT_TEXT)
    assert 0.2 <= time.monotonic() - started < 0.5
    await handler.close()  # ends the invoke still waiting
    assert handler.stats()["timeouts"] == 1


async def test_lambda_calls_in_flight_never_exceed_concurrency() -> None:
    in_flight = 0
    most = 0
    seen: list[bytes] = []

    async def invoke(event: bytes) -> bytes:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        seen.append(event)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return b'{"statusCode": 200}'

    handler = lambda_handler(invoke, concurrency=3)
    answers = await asyncio.gather(*(handler.call(EVENT) for _ in range(12)))
    assert all(answer.status == 200 for answer in answers)
    assert most == 3
    assert seen == [EVENT] * 12
