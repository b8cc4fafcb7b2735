"""HTTP/1.1 on asyncio protocols, parsed by httptools: the node's path to its origin and from
the senders of commands.

Why not aiohttp: at light load a message crosses four HTTP exchanges on its way client -> node ->
origin -> node -> client, and aiohttp spends 100-170 µs of CPU on each, which alone made the round
trip five times that of a bare echo server. httptools (llhttp, the parser Node.js uses) does the
parsing here; this module only keeps connections: Content-Length and chunked bodies, keep-alive,
pipelined requests answered in order, bounded headers and bodies, timeouts, TLS. Nothing the node
does not need (no redirects, cookies, compression or proxies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

log = logging.getLogger("runtime.http")

MAX_HEADER_BYTES = 64 * 1024
# Requests a client may queue on one connection before the server stops reading from it.
MAX_PIPELINED = 16


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    keep_alive: bool = True


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_response(
    document: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        status,
        _dumps(document).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


Handler = Callable[[Request], Awaitable[Response]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _encode_response(response: Response, *, head_only: bool, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}"]
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    lines.append(f"Content-Length: {len(response.body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class _HeaderCollector:
    """Shared by both directions: headers into a dict, bounded in size."""

    headers: dict[str, str]
    header_bytes: int

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"


# --- server -------------------------------------------------------------------------------------


class HttpServer:
    """Serves one handler on one address. Each connection's requests are answered in order."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        idle_timeout: float = 75.0,
        name: str = "http",
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.name = name
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._all_closed = asyncio.Event()
        self._stopping = False

    async def start(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), host, port, reuse_address=True, ssl=ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, let requests being handled finish (up to `timeout`), close the rest."""
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        for connection in list(self._connections):
            connection.close_when_idle()
        if self._connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout)
        for connection in list(self._connections):
            connection.abort()
        self._server = None

    @property
    def stopping(self) -> bool:
        return self._stopping


class _ServerConnection(asyncio.Protocol, _HeaderCollector):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request, bool] | Response] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.reading = True
        self.writable = asyncio.Event()
        self.writable.set()
        self.last_active = self.loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.too_large = False
        self.problem = ""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        self.server._connections.add(self)
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if not self.server._connections:
            self.server._all_closed.set()
        self.closing = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.worker is not None:
            self.worker.cancel()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # already answered by on_message_complete, which saw the Upgrade header
        except httptools.HttpParserError as exc:
            # httptools wraps errors raised in callbacks; those left their reason in `problem`.
            self._fail(400, self.problem or f"malformed HTTP request: {exc}")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEADER_BYTES:
            self.problem = "request target too long"
            raise httptools.HttpParserError(self.problem)

    def on_header(self, name: bytes, value: bytes) -> None:
        _HeaderCollector.on_header(self, name, value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self.problem = "request headers too large"
            raise httptools.HttpParserError(self.problem)

    def on_headers_complete(self) -> None:
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.server.max_body_bytes:
            self.too_large = True

    def on_body(self, chunk: bytes) -> None:
        if self.too_large:
            return
        self.body_bytes += len(chunk)
        if self.body_bytes > self.server.max_body_bytes:
            self.too_large = True
            self.body.clear()
        else:
            self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade():
            self._fail(400, "protocol upgrade is not served on this port")
            return
        if self.too_large:
            limit = self.server.max_body_bytes
            self._fail(413, f"request body larger than {limit} bytes")
            return
        parsed = httptools.parse_url(self.url)
        request = Request(
            method=self.parser.get_method().decode("ascii"),
            path=(parsed.path or b"/").decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self.headers,
            body=b"".join(self.body),
        )
        self._enqueue((request, self.parser.should_keep_alive()))

    # answering, in order

    def _fail(self, status: int, error: str) -> None:
        """Answer after whatever is queued, then close: the stream cannot be trusted past here."""
        response = json_response({"error": error}, status)
        response.keep_alive = False
        self._enqueue(response)
        self.closing = True

    def _enqueue(self, item: tuple[Request, bool] | Response) -> None:
        self.queue.append(item)
        if len(self.queue) >= MAX_PIPELINED and self.reading and self.transport is not None:
            self.transport.pause_reading()
            self.reading = False
        if self.worker is None:
            self.worker = self.loop.create_task(self._answer_queued())

    async def _answer_queued(self) -> None:
        try:
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, Response):
                    self._write(item, head_only=False, keep_alive=False)
                    return
                request, keep_alive = item
                response = await self._handle(request)
                if not self.writable.is_set():
                    await self.writable.wait()
                keep_alive = keep_alive and response.keep_alive and not self.server.stopping
                self._write(response, head_only=request.method == "HEAD", keep_alive=keep_alive)
                if not keep_alive:
                    return
                if not self.reading and len(self.queue) < MAX_PIPELINED // 2:
                    assert self.transport is not None
                    self.transport.resume_reading()
                    self.reading = True
        finally:
            self.worker = None
            self.last_active = self.loop.time()

    async def _handle(self, request: Request) -> Response:
        try:
            return await self.server.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "request handler failed", extra={"server": self.server.name, "path": request.path}
            )
            return json_response({"error": "internal error"}, 500)

    def _write(self, response: Response, *, head_only: bool, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(_encode_response(response, head_only=head_only, close=not keep_alive))
        if not keep_alive:
            self.closing = True
            self.transport.close()

    # lifecycle

    def close_when_idle(self) -> None:
        self.closing = True
        if self.worker is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_idle_timer(self) -> None:
        self.idle_timer = self.loop.call_at(
            self.last_active + self.server.idle_timeout, self._idle_check
        )

    def _idle_check(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        idle_since = self.last_active + self.server.idle_timeout
        if self.worker is None and self.loop.time() >= idle_since:
            self.transport.close()
        else:
            self._arm_idle_timer()


# --- client -------------------------------------------------------------------------------------


class HttpClientError(Exception):
    """The exchange failed: no connection, a timeout, or a broken or malformed response."""


class _StaleConnection(HttpClientError):
    """A kept-alive connection the server had closed before answering; safe to retry once."""


@dataclass(slots=True)
class ClientResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """Keep-alive connections to one server, at most `max_connections` open at once."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        idle_timeout: float = 30.0,
        max_response_bytes: int = 16 << 20,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL must be http:// or https:// with a host (got {url!r})")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.max_connections = max_connections
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        if parts.scheme == "https":
            self._ssl: ssl.SSLContext | None = ssl_context or ssl.create_default_context()
        else:
            self._ssl = None
        host_header = parts.netloc.rpartition("@")[2]
        fixed = {"Host": host_header, **(headers or {})}
        self._fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._idle: list[_ClientConnection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_ClientConnection | None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(
        self,
        method: str,
        body: bytes = b"",
        *,
        target: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ClientResponse:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"{method} {target or self.target} HTTP/1.1\r\n{self._fixed_headers}{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        data = head + body
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(data)
        except TimeoutError:
            raise HttpClientError(f"no answer from {self.url} within {self.timeout}s") from None

    async def post(self, body: bytes, *, content_type: str = "application/json") -> ClientResponse:
        return await self.request("POST", body, headers={"Content-Type": content_type})

    async def _exchange(self, data: bytes) -> ClientResponse:
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            try:
                response = await connection.exchange(data)
            except _StaleConnection:
                self._release(connection, reusable=False)
                if reused and attempt == 1:
                    continue
                raise HttpClientError(
                    f"{self.url} closed the connection without answering"
                ) from None
            except BaseException:
                self._release(connection, reusable=False)
                raise
            self._release(connection, reusable=response.keep_alive)
            return response
        raise AssertionError("unreachable")

    async def _acquire(self) -> tuple[_ClientConnection, bool]:
        if self._closed:
            raise HttpClientError("client is closed")
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now):
                return connection, True
            connection.close()
            self._open -= 1
        if self._open >= self.max_connections:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result(), reusable=True)
                elif waiter.done() and not waiter.cancelled():
                    self._open -= 1  # the slot we were handed goes back
                    self._wake_one()
                raise
            if handed is not None:
                return handed, True
        else:
            self._open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _ClientConnection(self), self.host, self.port, ssl=self._ssl
            )
        except (OSError, ssl.SSLError) as exc:
            raise HttpClientError(f"cannot connect to {self.url}: {exc}") from exc
        return connection

    def _release(self, connection: _ClientConnection, *, reusable: bool) -> None:
        if reusable and not connection.closed and not self._closed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(connection)
                    return
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
            return
        connection.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """A slot is free: let one waiter open a fresh connection."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._open -= len(self._idle)
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(HttpClientError("client is closed"))
        self._waiters.clear()


class _ClientConnection(asyncio.Protocol, _HeaderCollector):
    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[ClientResponse] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.headers = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.status = 0
        self.received = False
        self.headers_done = False
        self.problem = ""

    def usable(self, now: float) -> bool:
        return not self.closed and now - self.idle_since < self.client.idle_timeout

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes) -> ClientResponse:
        assert self.transport is not None and self.waiter is None
        if self.closed:
            raise _StaleConnection()
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            return await self.waiter
        finally:
            self.waiter = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if not self.received:
            waiter.set_exception(_StaleConnection())
        elif self.headers_done and self._body_until_close():
            self._complete(keep_alive=False)
        else:
            waiter.set_exception(HttpClientError(f"{self.client.url} broke off its answer"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # nobody asked: the stream is out of step
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.waiter.done():
                reason = self.problem or str(exc)
                self.waiter.set_exception(
                    HttpClientError(f"malformed answer from {self.client.url}: {reason}")
                )
            self.close()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        _HeaderCollector.on_header(self, name, value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self.problem = "response headers too large"
            raise httptools.HttpParserError(self.problem)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.client.max_response_bytes:
            self.problem = f"answer larger than {self.client.max_response_bytes} bytes"
            raise httptools.HttpParserError(self.problem)
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self._complete(keep_alive=self.parser.should_keep_alive())

    def _body_until_close(self) -> bool:
        return "content-length" not in self.headers and "transfer-encoding" not in self.headers

    def _complete(self, *, keep_alive: bool) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(
                ClientResponse(self.status, self.headers, b"".join(self.body), keep_alive)
            )
