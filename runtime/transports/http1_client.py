"""The HTTP/1.1 client: the node's way to its HTTP origin, connect handler, authorizer's key
set and GraphQL origin, over a small pool of kept-alive connections."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from runtime.transports.http1 import MAX_HEADER_BYTES, HeadReader, HeadTooLarge, callback_error


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


class _ClientConnection(asyncio.Protocol, HeadReader):
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
        except (httptools.HttpParserError, HeadTooLarge) as exc:
            if not self.waiter.done():
                reason = callback_error(exc)
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
