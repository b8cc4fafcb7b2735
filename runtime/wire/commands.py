"""Commands from the origin, parsed and checked one by one: a bad one never sinks its neighbours."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runtime.wire.channels import (
    DEFAULT_RULES,
    ChannelCommand,
    ChannelPublish,
    ChannelRules,
    Interest,
    Subscribe,
    Unsubscribe,
    channel_command_json,
    parse_channel_publish,
    parse_subscribe,
    parse_unsubscribe,
)
from runtime.wire.command_fields import (
    MAX_IDS_PER_COMMAND,
    CommandBodyError,
    CommandError,
    connection_ids,
    data_json,
    encode_json,
    kind_of,
    payload,
)
from runtime.wire.connection_id import NodeAddress
from runtime.wire.graphql_contract import MAX_KEY_LENGTH
from runtime.wire.presence import PresenceAnswer, PresenceAsk

__all__ = [
    "MAX_IDS_PER_COMMAND",
    "Answer",
    "Ask",
    "Broadcast",
    "ChannelPublish",
    "ChannelRules",
    "Close",
    "Command",
    "CommandBodyError",
    "CommandError",
    "Interest",
    "PeerCommand",
    "PresenceAnswer",
    "PresenceAsk",
    "Publish",
    "Rejection",
    "Send",
    "Subscribe",
    "Unsubscribe",
    "encode_commands",
    "max_body_bytes",
    "parse_body",
    "parse_command",
]

MAX_COMMANDS_PER_BODY = 10_000
MAX_CLOSE_REASON_BYTES = 123
MAX_PUBLISH_KEYS = 1_000


def max_body_bytes(max_payload_bytes: int) -> int:
    """Largest command body to accept: the largest payload, base64-inflated, plus many IDs."""
    return max(16 << 20, 2 * max_payload_bytes + (4 << 20))


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


Command = Send | Close | Broadcast | Publish | ChannelCommand


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


# What travels between nodes: the origin's commands, the @connections asks and answers, which
# channels each node holds, and the presence asks and answers.
PeerCommand = Command | Ask | Answer | Interest | PresenceAsk | PresenceAnswer


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    error: str

    def as_json(self) -> dict[str, object]:
        return {"index": self.index, "error": self.error}


def parse_body(
    body: bytes | str, *, max_payload_bytes: int, rules: ChannelRules = DEFAULT_RULES
) -> tuple[list[Command], list[Rejection]]:
    """Split a body into valid commands and rejections, keeping each command's index; `rules`
    are the node's channel settings."""
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
        raise CommandBodyError(f'"commands" must be a list (got {kind_of(items)})')
    if len(items) > MAX_COMMANDS_PER_BODY:
        raise CommandBodyError(
            f'"commands" may hold at most {MAX_COMMANDS_PER_BODY} commands (got {len(items)})'
        )
    commands: list[Command] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            commands.append(parse_command(item, max_payload_bytes=max_payload_bytes, rules=rules))
        except CommandError as exc:
            rejections.append(Rejection(index, f"commands[{index}]: {exc}"))
    return commands, rejections


def parse_command(
    item: Any, *, max_payload_bytes: int, rules: ChannelRules = DEFAULT_RULES
) -> Command:
    if not isinstance(item, dict):
        raise CommandError(f"a command must be an object (got {kind_of(item)})")
    action = item.get("action")
    if action == "send":
        data, binary = payload(item, max_payload_bytes)
        return Send(connection_ids(item), data, binary)
    if action == "close":
        return Close(connection_ids(item), _close_code(item), _close_reason(item))
    if action == "broadcast":
        data, binary = payload(item, max_payload_bytes)
        return Broadcast(data, binary)
    if action == "publish":
        return _publish(item, rules, max_payload_bytes)
    if action == "subscribe":
        return parse_subscribe(item, rules)
    if action == "unsubscribe":
        return parse_unsubscribe(item, rules)
    raise CommandError(
        '"action" must be one of send, close, broadcast, publish, subscribe, unsubscribe '
        f"(got {action!r})"
    )


def _publish(
    item: dict[str, Any], rules: ChannelRules, max_payload_bytes: int
) -> Publish | ChannelPublish:
    """A publish goes to a channel's subscribers ("channel") or re-runs GraphQL subscriptions
    ("keys"), never both: which one is meant must be plain."""
    to_channel, to_keys = "channel" in item, "keys" in item
    if to_channel and to_keys:
        raise CommandError(
            'a publish holds "channel" (to its subscribers) or "keys" (to GraphQL '
            "subscriptions), not both"
        )
    if to_channel:
        return parse_channel_publish(item, rules, max_payload_bytes)
    if not to_keys:
        raise CommandError(
            'a publish needs "channel" (to its subscribers) or "keys" (to GraphQL '
            "subscriptions): neither is there"
        )
    return Publish(_keys(item), _context(item, max_payload_bytes))


def _keys(item: dict[str, Any]) -> tuple[str, ...]:
    keys = item.get("keys")
    if not isinstance(keys, list) or not keys:
        raise CommandError(f'"keys" must be a non-empty list (got {kind_of(keys)})')
    if len(keys) > MAX_PUBLISH_KEYS:
        raise CommandError(f'"keys" may hold at most {MAX_PUBLISH_KEYS} keys (got {len(keys)})')
    for position, key in enumerate(keys):
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise CommandError(
                f'"keys"[{position}] must be a string of 1 to {MAX_KEY_LENGTH} characters '
                f"(got {kind_of(key) if not isinstance(key, str) else repr(key[:40])})"
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
        context = encode_json(item.get("context")).encode("utf-8")
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
        raise CommandError(f'"reason" must be a string (got {kind_of(reason)})')
    try:
        size = len(reason.encode("utf-8"))
    except UnicodeEncodeError:
        raise CommandError('"reason" holds lone surrogates: not valid UTF-8 text') from None
    if size > MAX_CLOSE_REASON_BYTES:
        raise CommandError(f'"reason" must be at most {MAX_CLOSE_REASON_BYTES} bytes (got {size})')
    return reason


def encode_commands(commands: list[Command]) -> bytes:
    """The JSON body for commands, as a peer or the HTTP endpoint expects it."""
    out: list[dict[str, object]] = []
    for command in commands:
        if isinstance(command, Subscribe | Unsubscribe | ChannelPublish):
            out.append(channel_command_json(command))
        elif isinstance(command, Publish):
            out.append(
                {
                    "action": "publish",
                    "keys": list(command.keys),
                    "context": json.loads(command.context),
                }
            )
        elif isinstance(command, Close):
            out.append(
                {
                    "action": "close",
                    "connectionIds": list(command.connection_ids),
                    "code": command.code,
                    "reason": command.reason,
                }
            )
        else:
            entry: dict[str, object] = {"action": command.action}
            entry.update(data_json(command.payload, command.binary))
            if isinstance(command, Send):
                entry["connectionIds"] = list(command.connection_ids)
            out.append(entry)
    return encode_json({"commands": out}).encode()
