"""What every command parser shares: the errors, the fields several commands hold (connection
IDs, data), how a bad value is named in a message, and the compact JSON encoder.

Its own module so that the channel commands (`channels.py`) and the others (`commands.py`) parse
their common fields one way without importing each other.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

MAX_IDS_PER_COMMAND = 100_000


class CommandBodyError(ValueError):
    """The body as a whole is unusable (not JSON, or not {"commands": [...]})."""


class CommandError(ValueError):
    """One command is invalid; the message names the field and what would be right."""


def kind_of(value: object) -> str:
    """A value's JSON-ish type for an error message: never the value, which may be huge."""
    return "null" if value is None else type(value).__name__


encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def connection_ids(item: dict[str, Any], field: str = "connectionIds") -> tuple[str, ...]:
    """A non-empty list of strings, duplicates dropped keeping the first order."""
    ids = item.get(field)
    if not isinstance(ids, list) or not ids:
        raise CommandError(f'"{field}" must be a non-empty list (got {kind_of(ids)})')
    return string_list(ids, field)


def string_list(ids: list[Any], field: str) -> tuple[str, ...]:
    """At most MAX_IDS_PER_COMMAND strings, duplicates dropped keeping the first order."""
    if len(ids) > MAX_IDS_PER_COMMAND:
        raise CommandError(f'"{field}" may hold at most {MAX_IDS_PER_COMMAND} IDs (got {len(ids)})')
    if len(ids) == 1 and type(ids[0]) is str:
        return (ids[0],)  # the common case, on the hot path of every command
    for position, value in enumerate(ids):
        if not isinstance(value, str):
            raise CommandError(f'"{field}"[{position}] must be a string (got {kind_of(value)})')
    return tuple(dict.fromkeys(ids))


def payload(item: dict[str, Any], max_bytes: int) -> tuple[bytes, bool]:
    """The command's "data" as bytes (base64-decoded with "isBase64Encoded"), at most
    `max_bytes` of them."""
    data = item.get("data")
    if not isinstance(data, str):
        raise CommandError(f'"data" must be a string (got {kind_of(data)})')
    binary = item.get("isBase64Encoded", False)
    if not isinstance(binary, bool):
        raise CommandError(f'"isBase64Encoded" must be true or false (got {kind_of(binary)})')
    if binary:
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError('"data" is not valid base64 but "isBase64Encoded" is true') from None
    else:
        try:
            decoded = data.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError('"data" holds lone surrogates: not valid UTF-8 text') from None
    if len(decoded) > max_bytes:
        raise CommandError(
            f'"data" is {len(decoded)} bytes; the most a message may be is {max_bytes}'
        )
    return decoded, binary


def data_json(payload: bytes, binary: bool) -> dict[str, object]:
    """The JSON fields "data" and "isBase64Encoded" for a payload: `payload`'s inverse."""
    data = base64.b64encode(payload).decode("ascii") if binary else payload.decode("utf-8")
    return {"data": data, "isBase64Encoded": binary}
