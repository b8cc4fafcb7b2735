"""HTTP/1.1 on asyncio protocols, parsed by httptools: the node's path to its origin and from
the senders of commands.

Why not aiohttp: at light load a message crosses four HTTP exchanges on its way client -> node ->
origin -> node -> client, and aiohttp spends 100-170 µs of CPU on each, which alone made the round
trip five times that of a bare echo server. httptools (llhttp, the parser Node.js uses) does the
parsing here; this module only keeps connections: Content-Length and chunked bodies, keep-alive,
pipelined requests answered in order, bounded headers and bodies, timeouts, TLS. Nothing the node
does not need (no redirects, cookies, compression or proxies).

The server side faces whoever reaches its port, token or not, so every resource a request can
hold is bounded before it is spent: head bytes and lines as they arrive, the time a head and a
body may take, the body size (from Content-Length before reading, or as a chunked body crosses
it), the number of connections, and an early check (path, method, token) before any body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
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
# Header lines in one head. Real clients send about ten; the cap stops a head of thousands of
# tiny lines from costing a callback and a dict update each.
MAX_HEADER_LINES = 100
# Requests a client may queue on one connection before the server stops reading from it.
MAX_PIPELINED = 16
# After refusing a request whose body (or further requests) may still be arriving, the server
# reads and drops for at most this long before closing: closing a socket with unread data sends a
# reset, which can destroy the refusal before the client reads it.
LINGER_SECONDS = 2.0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes  # b"" when a head check sees the request: its body is not read yet


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


def error_response(status: int, error: str) -> Response:
    """A JSON error that ends the connection: the stream cannot be trusted past it."""
    response = json_response({"error": error}, status)
    response.keep_alive = False
    return response


Handler = Callable[[Request], Awaitable[Response]]
# Sees each request once its head is in, before its body is read; a response it returns is sent
# instead of reading the body and calling the handler, and the connection is closed.
HeadCheck = Callable[[Request], Response | None]


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


class _HeadTooLarge(Exception):
    """A message head crossed a bound; the message says which."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.status = status


class _HeadReader:
    """Shared by both directions: feeds httptools and collects headers, bounded as bytes arrive.

    While a head arrives, httptools gets whole lines only: it joins the pieces of a header split
    across reads with `+=`, so a header trickled in many small reads would cost quadratic time
    and be held whole before any check ran. The unfinished line waits here instead, counted
    against `max_header_bytes` with what the parser already reported. Repeated headers are kept
    in lists and joined once, when the head is complete.
    """

    parser: Any
    max_header_bytes: int
    in_body: bool  # between the end of a head and the end of its message
    pending: bytearray  # the unfinished line of a head
    headers: dict[str, str]
    repeated: dict[str, list[str]]
    header_bytes: int
    header_lines: int
    head_kind: str  # "request" or "response", for errors

    def _start_head(self) -> None:
        self.headers = {}
        self.repeated = {}
        self.header_bytes = 0
        self.header_lines = 0

    def _feed(self, data: bytes) -> None:
        if self.in_body:
            self.parser.feed_data(data)
            return
        end = data.rfind(b"\n") + 1
        if end == 0:
            self.pending += data
            self._check_pending()
            return
        if self.pending:
            self.pending += memoryview(data)[:end]
            lines, self.pending = self.pending, bytearray()
            self.parser.feed_data(lines)
        else:
            self.parser.feed_data(memoryview(data)[:end] if end < len(data) else data)
        if end == len(data):
            return
        rest = memoryview(data)[end:]
        if self.in_body:
            self.parser.feed_data(rest)  # a body, maybe followed by part of the next head's line
        else:
            self.pending += rest
            self._check_pending()

    def _check_pending(self) -> None:
        if self.header_bytes + len(self.pending) > self.max_header_bytes:
            raise self._too_large()

    def _too_large(self) -> _HeadTooLarge:
        return _HeadTooLarge(
            f"{self.head_kind} head larger than {self.max_header_bytes} bytes", 431
        )

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_lines += 1
        self.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.header_lines > MAX_HEADER_LINES:
            raise _HeadTooLarge(
                f"{self.head_kind} head has more than {MAX_HEADER_LINES} header lines", 431
            )
        if self.header_bytes > self.max_header_bytes:
            raise self._too_large()
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key not in self.headers:
            self.headers[key] = text
        elif key in self.repeated:
            self.repeated[key].append(text)
        else:
            self.repeated[key] = [self.headers[key], text]

    def _finish_head(self) -> None:
        for key, values in self.repeated.items():
            self.headers[key] = ", ".join(values)
        self.in_body = True


class _Refused(Exception):
    """Raised in a parser callback to stop reading a request that is answered with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _callback_error(exc: Exception) -> Exception:
    """httptools wraps an exception raised in a callback; the original is its context."""
    if isinstance(exc, httptools.HttpParserError) and isinstance(exc.__context__, Exception):
        return exc.__context__
    return exc


# --- server -------------------------------------------------------------------------------------


class HttpServer:
    """Serves one handler on one address. Each connection's requests are answered in order.

    Limits, each answered and then the connection closed: a head over `max_header_bytes` or
    MAX_HEADER_LINES gets 431 (414 when the request line alone crosses it) as soon as the bytes
    arrive; a head not in full within `header_timeout` (from the connection's start, or from the
    first byte of a later request), or a body not in full within `body_timeout` after its head,
    gets 408; a body over `max_body_bytes` gets 413 before it is read (Content-Length) or when it
    crosses the limit (chunked). `check_head` sees each head before its body is read. Beyond
    `max_connections`, a new connection gets 503 at once, unread, and is closed: refusing says
    why, where leaving it in the listen backlog would look like a hang. After any other refusal
    the server sends FIN and drops what still arrives for up to LINGER_SECONDS, so the answer
    reaches clients that send their whole body before reading. Kept-alive connections with no
    request in progress are closed after `idle_timeout`.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        idle_timeout: float = 75.0,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_connections: int = 1024,
        max_header_bytes: int = MAX_HEADER_BYTES,
        check_head: HeadCheck | None = None,
        name: str = "http",
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.check_head = check_head
        self.name = name
        self.port = 0
        self.turned_away = 0  # connections refused with 503 because `max_connections` were open
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._all_closed = asyncio.Event()
        self._stopping = False

    async def start(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self),
            host,
            port,
            reuse_address=True,
            ssl=ssl_context,
            ssl_handshake_timeout=self.header_timeout if ssl_context else None,
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

    @property
    def open_connections(self) -> int:
        return len(self._connections)


class _ServerConnection(asyncio.Protocol, _HeadReader):
    head_kind = "request"

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.max_header_bytes = server.max_header_bytes
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request, bool] | Response] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.lingering = False
        self.reading = True
        self.writable = asyncio.Event()
        self.writable.set()
        self.last_active = self.loop.time()
        # One timer per connection, armed at the earliest moment something may be due, so that a
        # request costs float stores rather than a timer of its own.
        self.deadline = math.inf  # when the request now arriving must be in (or lingering ends)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.in_body = False
        self.pending = bytearray()
        self.request: Request | None = None
        self._reset()

    def _reset(self) -> None:
        self._start_head()
        self.url: list[bytes] = []
        self.body: list[bytes] = []
        self.body_bytes = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        if len(self.server._connections) >= self.server.max_connections:
            self._turn_away()
            return
        self.server._connections.add(self)
        self._set_deadline(self.last_active + self.server.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if not self.server._connections:
            self.server._all_closed.set()
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
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
            return  # refused, or lingering: dropped unread
        if not self.in_body and self.deadline == math.inf:
            self._set_deadline(self.last_active + self.server.header_timeout)
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            pass  # already answered by on_message_complete, which saw the Upgrade header
        except (httptools.HttpParserError, _HeadTooLarge, _Refused) as exc:
            if not self.closing:
                self._refuse(self._refusal_for(_callback_error(exc)))

    def _refusal_for(self, cause: Exception) -> Response:
        if isinstance(cause, _Refused):
            return cause.response
        if isinstance(cause, _HeadTooLarge) and not self.url:  # the request line is the long part
            return self._line_too_long()
        if isinstance(cause, _HeadTooLarge):
            return error_response(cause.status, str(cause))
        return error_response(400, f"malformed HTTP request: {cause}")

    def _line_too_long(self) -> Response:
        return error_response(414, f"request line longer than {self.max_header_bytes} bytes")

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.deadline == math.inf:
            self._set_deadline(self.last_active + self.server.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        self.header_bytes += len(url)
        if self.header_bytes > self.max_header_bytes:
            raise _Refused(self._line_too_long())

    def on_headers_complete(self) -> None:
        self._finish_head()
        self._set_deadline(self.last_active + self.server.body_timeout)
        parsed = httptools.parse_url(b"".join(self.url))
        self.request = Request(
            method=self.parser.get_method().decode("ascii"),
            path=(parsed.path or b"/").decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self.headers,
            body=b"",
        )
        refusal = self._check(self.request)
        if refusal is not None:
            raise _Refused(refusal)

    def _check(self, request: Request) -> Response | None:
        """The early answer to a request, if its head alone decides it."""
        if self.server.check_head is not None:
            try:
                refusal = self.server.check_head(request)
            except Exception:
                log.exception(
                    "request check failed", extra={"server": self.server.name, "path": request.path}
                )
                return error_response(500, "internal error")
            if refusal is not None:
                refusal.keep_alive = False
                return refusal
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.server.max_body_bytes:
            return self._body_too_large()
        return None

    def _body_too_large(self) -> Response:
        return error_response(413, f"request body larger than {self.server.max_body_bytes} bytes")

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.server.max_body_bytes:
            raise _Refused(self._body_too_large())
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.deadline = math.inf  # the timer, if armed for it, finds nothing due and re-arms
        if self.parser.should_upgrade():
            self._refuse(error_response(400, "protocol upgrade is not served on this port"))
            return
        request = self.request
        assert request is not None
        request.body = b"".join(self.body)
        self.request = None
        self._reset()  # the next head is counted from zero, even its bytes still held in `pending`
        self._enqueue((request, self.parser.should_keep_alive()))

    # answering, in order

    def _refuse(self, response: Response) -> None:
        """Answer after whatever is queued, then close; read nothing more of this request."""
        if self.closing:
            return
        response.keep_alive = False
        self._enqueue(response)
        self.closing = True
        self.deadline = math.inf
        self._pause_reading()

    def _turn_away(self) -> None:
        assert self.transport is not None
        self.closing = True
        self.server.turned_away += 1
        limit = self.server.max_connections
        response = error_response(503, f"more than {limit} connections open; retry later")
        self.transport.write(_encode_response(response, head_only=False, close=True))
        self.transport.close()  # no lingering: a refused connection must not hold anything

    def _enqueue(self, item: tuple[Request, bool] | Response) -> None:
        self.queue.append(item)
        if len(self.queue) >= MAX_PIPELINED:
            self._pause_reading()
        if self.worker is None:
            self.worker = self.loop.create_task(self._answer_queued())

    def _pause_reading(self) -> None:
        if self.reading and self.transport is not None:
            self.transport.pause_reading()
            self.reading = False

    def _resume_reading(self) -> None:
        if not self.reading and self.transport is not None:
            self.transport.resume_reading()
            self.reading = True

    async def _answer_queued(self) -> None:
        try:
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, Response):
                    self._write(item, head_only=False, keep_alive=False)
                    self._linger()
                    return
                request, keep_alive = item
                response = await self._handle(request)
                if not self.writable.is_set():
                    await self.writable.wait()
                keep_alive = keep_alive and response.keep_alive and not self.server.stopping
                self._write(response, head_only=request.method == "HEAD", keep_alive=keep_alive)
                if not keep_alive:
                    self._close()
                    return
                if not self.closing and len(self.queue) < MAX_PIPELINED // 2:
                    self._resume_reading()
        finally:
            self.worker = None
            self.last_active = self.loop.time()
            self._wake_by(self.last_active + self.server.idle_timeout)

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

    # lifecycle

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _linger(self) -> None:
        """Close after a refusal without losing it: send FIN, then drop what still arrives until
        the client closes or LINGER_SECONDS pass (a reset would discard the unread refusal)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():  # TLS
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        self._resume_reading()
        self._set_deadline(self.loop.time() + LINGER_SECONDS)

    def close_when_idle(self) -> None:
        self.closing = True
        if self.worker is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _set_deadline(self, at: float) -> None:
        self.deadline = at
        self._wake_by(at)

    def _wake_by(self, at: float) -> None:
        if at < self.timer_at:
            self._arm(at)

    def _arm(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self.timer, self.timer_at = None, math.inf
        if self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if now >= self.deadline:
            if self.lingering:
                self.transport.abort()
                return
            if self.reading:  # the client is the one that is late
                self._refuse(self._late())
                return
            self.deadline = now + self.server.header_timeout  # held back by us: not its fault
        idle_at = self.last_active + self.server.idle_timeout
        idle = self.worker is None and self.deadline == math.inf and not self.closing
        if idle and now >= idle_at:
            self.transport.close()
            return
        if idle_at <= now:
            idle_at = now + self.server.idle_timeout  # busy answering: look again later
        self._arm(min(self.deadline, idle_at))

    def _late(self) -> Response:
        part, timeout = "head", self.server.header_timeout
        if self.in_body:
            part, timeout = "body", self.server.body_timeout
        return error_response(408, f"request {part} not received in full within {timeout:g} s")


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


class _ClientConnection(asyncio.Protocol, _HeadReader):
    head_kind = "response"
    max_header_bytes = MAX_HEADER_BYTES

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[ClientResponse] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._start_head()
        self.in_body = False
        self.pending = bytearray()
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.status = 0
        self.received = False
        self.headers_done = False

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
            self._feed(data)
        except (httptools.HttpParserError, _HeadTooLarge) as exc:
            if not self.waiter.done():
                reason = _callback_error(exc)
                self.waiter.set_exception(
                    HttpClientError(f"malformed answer from {self.client.url}: {reason}")
                )
            self.close()

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._finish_head()
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if self.body_bytes > self.client.max_response_bytes:
            limit = self.client.max_response_bytes
            raise httptools.HttpParserError(f"answer larger than {limit} bytes")
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
