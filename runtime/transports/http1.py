"""HTTP/1.1 pieces both directions share: the request and response records, JSON answers, the
header limits, and the head reader that feeds httptools.

Why our own HTTP/1.1 and not aiohttp: at light load a message crosses four HTTP exchanges on its
way client -> node -> origin -> node -> client, and aiohttp spends 100-170 µs of CPU on each, which
alone made the round trip five times that of a bare echo server. httptools (llhttp, the parser
Node.js uses) does the parsing; our code only keeps connections: Content-Length and chunked bodies,
keep-alive, pipelined requests answered in order, bounded headers and bodies, timeouts, TLS.
Nothing the node does not need (no redirects, cookies, compression or proxies). The server is in
`http1_server.py`, the client in `http1_client.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools

MAX_HEADER_BYTES = 64 * 1024
# Header lines in one head. Real clients send about ten; the cap stops a head of thousands of
# tiny lines from costing a callback and a dict update each.
MAX_HEADER_LINES = 100


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


class HeadTooLarge(Exception):
    """A message head crossed a bound; the message says which."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.status = status


class HeadReader:
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

    def _too_large(self) -> HeadTooLarge:
        return HeadTooLarge(f"{self.head_kind} head larger than {self.max_header_bytes} bytes", 431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_lines += 1
        self.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.header_lines > MAX_HEADER_LINES:
            raise HeadTooLarge(
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


def callback_error(exc: Exception) -> Exception:
    """httptools wraps an exception raised in a callback; the original is its context."""
    if isinstance(exc, httptools.HttpParserError) and isinstance(exc.__context__, Exception):
        return exc.__context__
    return exc
