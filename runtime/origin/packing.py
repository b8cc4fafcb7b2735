"""Commands encoded once and packed into SNS messages and PublishBatch calls, within byte bounds.

Pure, so that every size decision is tested without AWS. A command naming more connections than one
message holds is split into several commands over parts of the IDs (a send, close, subscribe or
unsubscribe acts per connection, so its parts stand alone); a publish is never split, since each
part would reach every subscriber. Commands keep their order, so messages hold consecutive runs
of them. SNS limits each message and the sum of a PublishBatch's messages to the topic's maximum
message size, and a batch to 10 entries.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024  # SNS default MaximumMessageSize
MIN_MAX_MESSAGE_BYTES = 1024
MAX_MAX_MESSAGE_BYTES = 1024 * 1024  # the most a topic's MaximumMessageSize may be
MAX_BATCH_ENTRIES = 10  # PublishBatch takes at most 10 messages

_HEAD = '{"commands":['
_TAIL = "]}"
ENVELOPE_BYTES = len(_HEAD) + len(_TAIL)

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A publish context is any JSON value, and NaN or Infinity are not JSON.
_encode_strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class MessageTooLarge(ValueError):
    """One command cannot fit in a message even when it names a single connection."""


@dataclass(frozen=True, slots=True)
class EncodedCommand:
    """One command's JSON and its size in UTF-8 bytes, computed once when it is buffered."""

    text: str
    size: int


def check_max_message_bytes(value: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_MAX_MESSAGE_BYTES <= value <= MAX_MAX_MESSAGE_BYTES
    ):
        raise ValueError(
            f"max_message_bytes must be between {MIN_MAX_MESSAGE_BYTES} and "
            f"{MAX_MAX_MESSAGE_BYTES} (got {value!r})"
        )
    return value


def payload_json(data: str | bytes | bytearray | memoryview) -> tuple[str, bool]:
    """The JSON of a command's "data" and whether it is base64: text stays text."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("data holds lone surrogates: not valid UTF-8 text") from None
        return _encode(data), False
    if isinstance(data, bytes | bytearray | memoryview):
        return f'"{base64.b64encode(data).decode("ascii")}"', True
    raise TypeError(f"data must be str or bytes (got {type(data).__name__})")


def send_commands(
    connection_ids: Sequence[str], data_json: str, binary: bool, max_message_bytes: int
) -> list[EncodedCommand]:
    tail = f'],"data":{data_json},"isBase64Encoded":{"true" if binary else "false"}}}'
    return _split_by_ids(
        '{"action":"send","connectionIds":[', tail, connection_ids, max_message_bytes
    )


def close_commands(
    connection_ids: Sequence[str], code: int, reason: str, max_message_bytes: int
) -> list[EncodedCommand]:
    tail = f'],"code":{code},"reason":{_encode(reason)}}}'
    return _split_by_ids(
        '{"action":"close","connectionIds":[', tail, connection_ids, max_message_bytes
    )


def broadcast_command(data_json: str, binary: bool, max_message_bytes: int) -> EncodedCommand:
    text = (
        f'{{"action":"broadcast","data":{data_json},'
        f'"isBase64Encoded":{"true" if binary else "false"}}}'
    )
    size = len(text.encode("utf-8"))
    if size > max_message_bytes - ENVELOPE_BYTES:
        raise MessageTooLarge(
            f"a broadcast of {size} bytes cannot fit in a message of at most "
            f"{max_message_bytes} bytes; send less data or raise max_message_bytes"
        )
    return EncodedCommand(text, size)


def publish_command(keys: Sequence[str], context: Any, max_message_bytes: int) -> EncodedCommand:
    """One publish command; `keys` follow the node's rules already (the caller checks them).

    Never split: a subscription matching keys of two commands would be re-executed twice.
    """
    try:
        context_json = _encode_strict(context)
    except TypeError as exc:
        raise TypeError(f"context must be JSON-serialisable: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"context must be JSON-serialisable: {exc}") from None
    text = f'{{"action":"publish","keys":{_encode(list(keys))},"context":{context_json}}}'
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("keys or context hold lone surrogates: not valid UTF-8 text") from None
    if size > max_message_bytes - ENVELOPE_BYTES:
        raise MessageTooLarge(
            f"a publish of {size} bytes cannot fit in a message of at most "
            f"{max_message_bytes} bytes; publish a smaller context or raise max_message_bytes"
        )
    return EncodedCommand(text, size)


def subscribe_commands(
    connection_ids: Sequence[str],
    channels: Sequence[str],
    user_info_json: str | None,
    presence_events: bool,
    max_message_bytes: int,
    occupancy_events: bool = False,
) -> list[EncodedCommand]:
    """Split by IDs like a send: a subscribe is per connection, so parts of it stand alone."""
    tail = f'],"channels":{_encode(list(channels))}'
    if user_info_json is not None:
        tail += f',"userInfo":{user_info_json}'
    if presence_events:
        tail += ',"presenceEvents":true'
    if occupancy_events:
        tail += ',"occupancyEvents":true'
    return _split_by_ids(
        '{"action":"subscribe","connectionIds":[',
        tail + "}",
        connection_ids,
        max_message_bytes,
        advice="name fewer channels, give a smaller userInfo",
    )


def unsubscribe_commands(
    connection_ids: Sequence[str], channels: Sequence[str], max_message_bytes: int
) -> list[EncodedCommand]:
    tail = f'],"channels":{_encode(list(channels))}}}'
    return _split_by_ids(
        '{"action":"unsubscribe","connectionIds":[',
        tail,
        connection_ids,
        max_message_bytes,
        advice="name fewer channels",
    )


def channel_publish_command(
    channel: str,
    data_json: str,
    binary: bool,
    except_ids: Sequence[str],
    max_message_bytes: int,
) -> EncodedCommand:
    """One publish to a channel. Never split: each part would reach every subscriber again."""
    text = (
        f'{{"action":"publish","channel":{_encode(channel)},"data":{data_json},'
        f'"isBase64Encoded":{"true" if binary else "false"}'
        + (f',"exceptConnectionIds":[{_ids(list(except_ids))}]' if except_ids else "")
        + "}"
    )
    size = len(text.encode("utf-8"))
    if size > max_message_bytes - ENVELOPE_BYTES:
        raise MessageTooLarge(
            f"a publish to a channel of {size} bytes cannot fit in a message of at most "
            f"{max_message_bytes} bytes; send less data, leave out fewer connections or raise "
            "max_message_bytes"
        )
    return EncodedCommand(text, size)


def _split_by_ids(
    head: str,
    tail: str,
    connection_ids: Sequence[str],
    max_message_bytes: int,
    *,
    advice: str = "send less data",
) -> list[EncodedCommand]:
    """As few commands as fit: each holds as many IDs as a message has room for beside the rest.

    IDs are checked connection IDs, so they are ASCII and need no JSON escaping.
    """
    fixed = len(head) + len(tail.encode("utf-8"))
    budget = max_message_bytes - ENVELOPE_BYTES
    smallest = fixed + max(map(len, connection_ids)) + 2
    if smallest > budget:
        raise MessageTooLarge(
            f"a command of {smallest} bytes cannot fit in a message of at most "
            f"{max_message_bytes} bytes; {advice} or raise max_message_bytes"
        )
    commands: list[EncodedCommand] = []
    chunk: list[str] = []
    size = fixed
    for connection_id in connection_ids:
        cost = len(connection_id) + 2 + (1 if chunk else 0)
        if chunk and size + cost > budget:
            commands.append(EncodedCommand(f"{head}{_ids(chunk)}{tail}", size))
            chunk, size, cost = [], fixed, len(connection_id) + 2
        chunk.append(connection_id)
        size += cost
    commands.append(EncodedCommand(f"{head}{_ids(chunk)}{tail}", size))
    return commands


def _ids(connection_ids: list[str]) -> str:
    return '"' + '","'.join(connection_ids) + '"'


def pack_messages(commands: Iterable[EncodedCommand], max_message_bytes: int) -> list[str]:
    """Message bodies `{"commands": [...]}` of consecutive commands, each within the bound."""
    bodies: list[str] = []
    texts: list[str] = []
    size = ENVELOPE_BYTES
    for command in commands:
        cost = command.size + (1 if texts else 0)
        if texts and size + cost > max_message_bytes:
            bodies.append(_HEAD + ",".join(texts) + _TAIL)
            texts, size, cost = [], ENVELOPE_BYTES, command.size
        texts.append(command.text)
        size += cost
    if texts:
        bodies.append(_HEAD + ",".join(texts) + _TAIL)
    return bodies


def pack_batches(bodies: Sequence[str], max_message_bytes: int) -> list[list[str]]:
    """PublishBatch calls: at most 10 messages whose sizes sum to at most the message bound."""
    batches: list[list[str]] = []
    batch: list[str] = []
    total = 0
    for body in bodies:
        size = len(body.encode("utf-8"))
        if batch and (len(batch) == MAX_BATCH_ENTRIES or total + size > max_message_bytes):
            batches.append(batch)
            batch, total = [], 0
        batch.append(body)
        total += size
    if batch:
        batches.append(batch)
    return batches
