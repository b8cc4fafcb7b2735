"""The HTTP/1.1 server: the command endpoint and `@connections` answer on it.

It faces whoever reaches its port, token or not, so every resource a request can hold is bounded
before it is spent: head bytes and lines as they arrive, the time a head and a body may take, the
body size (from Content-Length before reading, or as a chunked body crosses it), the number of
connections, and an early check (path, method, token) before any body is read.

Longer than 400 lines because most of it is one connection's state machine (reading, answering
pipelined requests in order, one timer for every deadline, lingering after a refusal), whose parts
read each other's state and are easier to check side by side than spread over modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

from runtime.transports.http1 import (
    MAX_HEADER_BYTES,
    HeadReader,
    HeadTooLarge,
    Request,
    Response,
    callback_error,
    error_response,
    json_response,
)

log = logging.getLogger("runtime.http")

# Requests a client may queue on one connection before the server stops reading from it.
MAX_PIPELINED = 16
# After refusing a request whose body (or further requests) may still be arriving, the server
# reads and drops for at most this long before closing: closing a socket with unread data sends a
# reset, which can destroy the refusal before the client reads it.
LINGER_SECONDS = 2.0


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


class _Refused(Exception):
    """Raised in a parser callback to stop reading a request that is answered with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


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


class _ServerConnection(asyncio.Protocol, HeadReader):
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
        except (httptools.HttpParserError, HeadTooLarge, _Refused) as exc:
            if not self.closing:
                self._refuse(self._refusal_for(callback_error(exc)))

    def _refusal_for(self, cause: Exception) -> Response:
        if isinstance(cause, _Refused):
            return cause.response
        if isinstance(cause, HeadTooLarge) and not self.url:  # the request line is the long part
            return self._line_too_long()
        if isinstance(cause, HeadTooLarge):
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
