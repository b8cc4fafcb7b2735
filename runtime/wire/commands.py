"""Commands from the origin, parsed and checked one by one: a bad one never sinks its neighbours."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from runtime.wire.connection_id import NodeAddress
from runtime.wire.graphql_contract import MAX_KEY_LENGTH

MAX_COMMANDS_PER_BODY = 10_000
MAX_IDS_PER_COMMAND = 100_000
MAX_CLOSE_REASON_BYTES = 123
MAX_PUBLISH_KEYS = 1_000


def max_body_bytes(max_payload_bytes: int) -> int:
    """Largest command body to accept: the largest payload, base64-inflated, plus many IDs."""
    return max(16 << 20, 2 * max_payload_bytes + (4 << 20))


class CommandBodyError(ValueError):
    """The body as a whole is unusable (not JSON, or not {"commands": [...]})."""


class CommandError(ValueError):
    """One command is invalid; the message names the field and what would be right."""


@dataclass(slots=True)
class Send:
    connection_ids: tuple[str, ...]
    payload: bytes
    binary: bool

    action = "send"


@dataclass(slots=True)
class Close:
    connection_ids: tuple[str, ...]
    code: int
    reason: str

    action = "close"


@dataclass(slots=True)
class Broadcast:
    payload: bytes
    binary: bool

    action = "broadcast"


@dataclass(slots=True)
class Publish:
    """Re-run the GraphQL subscriptions with these keys on every node; `context` is JSON text."""

    keys: tuple[str, ...]
    context: bytes

    action = "publish"


Command = Send | Close | Broadcast | Publish


@dataclass(slots=True)
class Ask:
    """A peer's @connections request for a connection this node holds; peer-only (never parsed
    from an origin): the owner carries out `action` and forwards an `Answer` to `reply_to`."""

    request_id: int
    reply_to: NodeAddress
    connection_id: str
    action: str  # "get", "post" or "delete"
    payload: bytes = b""  # what "post" sends
    binary: bool = False


@dataclass(slots=True)
class Answer:
    """The owner's answer to an `Ask`: the HTTP status to give, and for "get" the connection's
    information as JSON (b"" otherwise)."""

    request_id: int
    status: int
    info: bytes = b""


# What travels between nodes: the origin's commands, and the @connections asks and answers.
PeerCommand = Command | Ask | Answer


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str

    def as_json(self) -> dict[str, object]:
        return {"index": self.index, "error": self.error}


def parse_body(
    body: bytes | str, *, max_payload_bytes: int
) -> tuple[list[Command], list[Rejection]]:
    """Split a body into valid commands and rejections, keeping each command's index."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandBodyError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise CommandBodyError("body is nested too deeply") from None
    if not isinstance(document, dict) or "commands" not in document:
        raise CommandBodyError('body must be a JSON object {"commands": [...]}')
    items = document["commands"]
    if not isinstance(items, list):
        raise CommandBodyError(f'"commands" must be a list (got {_kind(items)})')
    if len(items) > MAX_COMMANDS_PER_BODY:
        raise CommandBodyError(
            f'"commands" may hold at most {MAX_COMMANDS_PER_BODY} commands (got {len(items)})'
        )
    commands: list[Command] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            commands.append(parse_command(item, max_payload_bytes=max_payload_bytes))
        except CommandError as exc:
            rejections.append(Rejection(index, f"commands[{index}]: {exc}"))
    return commands, rejections


def parse_command(item: Any, *, max_payload_bytes: int) -> Command:
    if not isinstance(item, dict):
        raise CommandError(f"a command must be an object (got {_kind(item)})")
    action = item.get("action")
    if action == "send":
        payload, binary = _payload(item, max_payload_bytes)
        return Send(_connection_ids(item), payload, binary)
    if action == "close":
        return Close(_connection_ids(item), _close_code(item), _close_reason(item))
    if action == "broadcast":
        payload, binary = _payload(item, max_payload_bytes)
        return Broadcast(payload, binary)
    if action == "publish":
        return Publish(_keys(item), _context(item, max_payload_bytes))
    raise CommandError(f'"action" must be one of send, close, broadcast, publish (got {action!r})')


def _connection_ids(item: dict[str, Any]) -> tuple[str, ...]:
    ids = item.get("connectionIds")
    if not isinstance(ids, list) or not ids:
        raise CommandError(f'"connectionIds" must be a non-empty list (got {_kind(ids)})')
    if len(ids) > MAX_IDS_PER_COMMAND:
        raise CommandError(
            f'"connectionIds" may hold at most {MAX_IDS_PER_COMMAND} IDs (got {len(ids)})'
        )
    if len(ids) == 1 and type(ids[0]) is str:
        return (ids[0],)  # the common case, on the hot path of every command
    for position, value in enumerate(ids):
        if not isinstance(value, str):
            raise CommandError(f'"connectionIds"[{position}] must be a string (got {_kind(value)})')
    return tuple(dict.fromkeys(ids))


def _payload(item: dict[str, Any], max_bytes: int) -> tuple[bytes, bool]:
    data = item.get("data")
    if not isinstance(data, str):
        raise CommandError(f'"data" must be a string (got {_kind(data)})')
    binary = item.get("isBase64Encoded", False)
    if not isinstance(binary, bool):
        raise CommandError(f'"isBase64Encoded" must be true or false (got {_kind(binary)})')
    if binary:
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError('"data" is not valid base64 but "isBase64Encoded" is true') from None
    else:
        try:
            payload = data.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError('"data" holds lone surrogates: not valid UTF-8 text') from None
    if len(payload) > max_bytes:
        raise CommandError(
            f'"data" is {len(payload)} bytes; the most a message may be is {max_bytes}'
        )
    return payload, binary


def _keys(item: dict[str, Any]) -> tuple[str, ...]:
    keys = item.get("keys")
    if not isinstance(keys, list) or not keys:
        raise CommandError(f'"keys" must be a non-empty list (got {_kind(keys)})')
    if len(keys) > MAX_PUBLISH_KEYS:
        raise CommandError(f'"keys" may hold at most {MAX_PUBLISH_KEYS} keys (got {len(keys)})')
    for position, key in enumerate(keys):
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise CommandError(
                f'"keys"[{position}] must be a string of 1 to {MAX_KEY_LENGTH} characters '
                f"(got {_kind(key) if not isinstance(key, str) else repr(key[:40])})"
            )
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError(
                f'"keys"[{position}] holds lone surrogates: not valid UTF-8 text'
            ) from None
    return tuple(dict.fromkeys(keys))


def _context(item: dict[str, Any], max_bytes: int) -> bytes:
    try:
        context = _encode(item.get("context")).encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError('"context" holds lone surrogates: not valid UTF-8 text') from None
    if len(context) > max_bytes:
        raise CommandError(
            f'"context" is {len(context)} bytes of JSON; the most it may be is {max_bytes}'
        )
    return context


def _close_code(item: dict[str, Any]) -> int:
    code = item.get("code", 1000)
    if (
        isinstance(code, bool)
        or not isinstance(code, int)
        or not (code == 1000 or 3000 <= code <= 4999)
    ):
        raise CommandError(f'"code" must be 1000 or between 3000 and 4999 (got {code!r})')
    return code


def _close_reason(item: dict[str, Any]) -> str:
    reason = item.get("reason", "")
    if not isinstance(reason, str):
        raise CommandError(f'"reason" must be a string (got {_kind(reason)})')
    try:
        size = len(reason.encode("utf-8"))
    except UnicodeEncodeError:
        raise CommandError('"reason" holds lone surrogates: not valid UTF-8 text') from None
    if size > MAX_CLOSE_REASON_BYTES:
        raise CommandError(f'"reason" must be at most {MAX_CLOSE_REASON_BYTES} bytes (got {size})')
    return reason


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_commands(commands: list[Command]) -> bytes:
    """The JSON body for commands, as a peer or the HTTP endpoint expects it."""
    out = []
    for command in commands:
        if isinstance(command, Publish):
            out.append(
                {
                    "action": "publish",
                    "keys": list(command.keys),
                    "context": json.loads(command.context),
                }
            )
            continue
        if isinstance(command, Close):
            out.append(
                {
                    "action": "close",
                    "connectionIds": list(command.connection_ids),
                    "code": command.code,
                    "reason": command.reason,
                }
            )
            continue
        data = (
            base64.b64encode(command.payload).decode("ascii")
            if command.binary
            else command.payload.decode("utf-8")
        )
        entry: dict[str, object] = {
            "action": command.action,
            "data": data,
            "isBase64Encoded": command.binary,
        }
        if isinstance(command, Send):
            entry["connectionIds"] = list(command.connection_ids)
        out.append(entry)
    return _encode({"commands": out}).encode()
