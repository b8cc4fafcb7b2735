"""A synchronous $connect handler's answer, read as API Gateway's $connect integration reads it.

A handler returning nothing (`null`, or an object with no statusCode) accepts: API Gateway lets a
$connect integration that returns without error connect. Otherwise `statusCode` decides, and the
handler's headers go into the handshake response, so every header is checked here first: the
ones the handshake owns are dropped, and one that could split the response or break its
encoding refuses the whole answer (the caller then refuses the handshake with its error status:
a broken handler must never let a client in).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    """What a synchronous $connect handler answered: a 2xx accepts, anything else refuses with
    that status. `headers` go into the handshake response (Sec-WebSocket-Protocol chooses the
    subprotocol); `body` is the refusal's text."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""


MAX_BODY_BYTES = 1024
MAX_HEADERS = 32
MAX_HEADERS_BYTES = 8 * 1024  # names, values, ": " and CRLF, as they go on the wire
# Headers the handshake itself writes, or that would make the response lie about its framing.
OWNED_HEADERS = frozenset(
    {
        "connection",
        "upgrade",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-version",
        "content-length",
        "transfer-encoding",
        "server",
        "date",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
# RFC 9110 field-value characters, as websockets encodes them (ISO-8859-1): HTAB, visible ASCII
# and space, obs-text. CR, LF, NUL, the other controls and anything past U+00FF are refused.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_STATUS = re.compile(r"[0-9]{3}")


class UnsafeHeader(ValueError):
    """A header that must not reach a response: a bad name, a value that would split the
    response, or too many or too large headers."""


def parse_lambda_answer(payload: bytes) -> ConnectAnswer:
    """The answer in a Lambda proxy result; ValueError (UnsafeHeader for headers) says what is
    wrong with a malformed one."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise ValueError(f"answer is not JSON: {_preview(payload)}") from None
    return read_lambda_answer(document)


def read_lambda_answer(document: object) -> ConnectAnswer:
    """`parse_lambda_answer` for a result already decoded from JSON."""
    if document is None:
        return ConnectAnswer(200)
    if not isinstance(document, dict):
        raise ValueError(f"answer must be a JSON object or null (got {type(document).__name__})")
    status = _status(document.get("statusCode"))
    headers = safe_headers(_merged_headers(document))
    return ConnectAnswer(status, headers, _body(document))


def safe_headers(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """`pairs` fit for a handshake response: the ones it owns dropped, the rest checked."""
    kept: list[tuple[str, str]] = []
    size = 0
    for name, value in pairs:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise UnsafeHeader(f"header name {name!r:.50} is not an HTTP token")
        if not isinstance(value, str):
            raise UnsafeHeader(f"header {name:.50} has a value that is not a string: {value!r:.50}")
        if not _FIELD_VALUE.fullmatch(value):
            raise UnsafeHeader(
                f"header {name:.50} has a value HTTP cannot carry (CR, LF, NUL, another control "
                f"character or one past U+00FF): {value!r:.100}"
            )
        if name.lower() in OWNED_HEADERS:
            continue
        kept.append((name, value))
        size += len(name) + len(value) + 4
        if len(kept) > MAX_HEADERS:
            raise UnsafeHeader(f"more than {MAX_HEADERS} headers")
        if size > MAX_HEADERS_BYTES:
            raise UnsafeHeader(f"headers larger than {MAX_HEADERS_BYTES} bytes in all")
    return tuple(kept)


def cut_text(raw: bytes) -> str:
    """At most MAX_BODY_BYTES of `raw` as text (UTF-8, invalid bytes replaced), cut between
    characters."""
    end = len(raw)
    if end > MAX_BODY_BYTES:
        end = MAX_BODY_BYTES
        while end > MAX_BODY_BYTES - 3 and raw[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
    return raw[:end].decode("utf-8", "replace")


def printable_text(raw: bytes) -> str:
    """`cut_text`, with line breaks and tabs as spaces and other unprintable characters as
    U+FFFD: a refusal's text from an arbitrary HTTP body, safe to show and to log."""
    text = cut_text(raw)
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else " " if char.isspace() else "\ufffd" for char in text
    )


def _status(value: Any) -> int:
    if value is None:
        return 200
    if isinstance(value, str) and _STATUS.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    raise ValueError(f"statusCode must be an HTTP status from 100 to 599 (got {value!r:.50})")


def _merged_headers(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`headers` and `multiValueHeaders` in one list; a pair in both appears once (API
    Gateway's rule: the multi-value one wins)."""
    single = document.get("headers")
    multi = document.get("multiValueHeaders")
    single = {} if single is None else single
    multi = {} if multi is None else multi
    if not isinstance(single, dict) or not all(isinstance(v, str) for v in single.values()):
        raise ValueError("headers must be an object of strings")
    if not isinstance(multi, dict) or not all(
        isinstance(values, list) and all(isinstance(v, str) for v in values)
        for values in multi.values()
    ):
        raise ValueError("multiValueHeaders must be an object of lists of strings")
    from_multi = [(name, value) for name, values in multi.items() for value in values]
    seen = {(name.lower(), value) for name, value in from_multi}
    merged = [(name, value) for name, value in single.items() if (name.lower(), value) not in seen]
    return merged + from_multi


def _body(document: Mapping[str, Any]) -> str:
    body = document.get("body")
    if body is None:
        return ""
    if not isinstance(body, str):
        raise ValueError(f"body must be a string (got {type(body).__name__})")
    if document.get("isBase64Encoded") is True:
        try:
            return cut_text(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("body is marked isBase64Encoded but is not base64") from None
    # Encoded with "replace": JSON can carry a lone surrogate, which UTF-8 cannot.
    return cut_text(body[: MAX_BODY_BYTES + 1].encode("utf-8", "replace"))


def _preview(payload: bytes) -> str:
    return payload[:100].decode("utf-8", "replace")
