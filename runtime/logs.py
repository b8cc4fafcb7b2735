"""Logs: one JSON object a line for machines (CloudWatch), readable lines for people.

Log calls pass fields as `extra`; a line about a connection always has `connectionId`. Fields
often hold what clients chose (close reasons, headers, paths): the JSON encoder escapes them,
and the text format quotes and escapes them, so no client can write a line of its own.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class LogThrottle:
    """At most one line per `seconds` for each kind of event that anyone can repeat at will
    (a refused handshake): a flood must not become a flood of log lines. The line that gets
    through says how many were held back since the last one."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._next: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def allow(self, kind: str, now: float) -> int | None:
        """None: hold this one back; else how many of `kind` were held back before it."""
        if now < self._next.get(kind, 0.0):
            self._held[kind] += 1
            return None
        self._next[kind] = now + self.seconds
        return self._held.pop(kind, 0)


def _escaped(text: str) -> str:
    """Non-printable characters (line breaks, terminal escapes, U+2028...) as Python escapes."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _field_text(value: object) -> str:
    """A field's value on one line that cannot pass for more fields: quoted if it needs it."""
    text = str(value)
    if text and text.isprintable() and not any(char in text for char in ' ="\\'):
        return text
    return '"' + _escaped(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{key}={_field_text(value)}" for key, value in _fields(record).items())
        message = _escaped(record.getMessage())
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {message}"
        if extra:
            line += "  " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    """Send every log line to stdout in the format asked for (auto: JSON unless a terminal)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The websockets library logs every failed handshake at INFO; ours say it better.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("runtime.metrics").setLevel(logging.INFO)
