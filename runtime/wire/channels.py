"""The channel commands (subscribe, unsubscribe, publish to a channel), their rules and their
JSON, and `Interest`, the peer-only message by which a node tells the others its channels.

A channel name is 1 to `ChannelRules.max_name_length` characters of A-Z a-z 0-9 and
`_ - . : @ / = + ! ~`: no spaces, no control characters, never a newline, so lists of names
travel newline-joined between nodes. The rules are the node's settings (`Settings.channel_rules`);
parsers given none use the defaults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from runtime.wire.command_fields import (
    CommandError,
    connection_ids,
    data_json,
    kind_of,
    payload,
    string_list,
)
from runtime.wire.connection_id import MAX_ENCODED_LENGTH, NodeAddress

MAX_CHANNELS_PER_COMMAND = 100
# The bounds of the node's settings: the longest name and the largest userInfo it may allow.
MAX_CHANNEL_NAME_LENGTH = 1024
MAX_USER_INFO_BYTES = 65536
NAME_CHARACTERS = "A-Z a-z 0-9 _ - . : @ / = + ! ~"
_NAME = re.compile(r"[A-Za-z0-9_\-.:@/=+!~]+")
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9_\-]+")  # URL-safe base64, as in every connection ID
# userInfo goes back to origins in presence answers and events: JSON they can all read, so no
# NaN or Infinity (which Python's parser accepts).
_encode_user_info = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """What a node accepts in channel commands; its settings build one."""

    max_name_length: int = 128
    max_user_info_bytes: int = 1024

    def __post_init__(self) -> None:
        for name, value in (
            ("max_name_length", self.max_name_length),
            ("max_user_info_bytes", self.max_user_info_bytes),
        ):
            if type(value) is not int:  # a bool is no limit
                raise ValueError(f"{name} must be between its bounds, an integer (got {value!r})")
        if not 1 <= self.max_name_length <= MAX_CHANNEL_NAME_LENGTH:
            raise ValueError(
                f"max_name_length must be between 1 and {MAX_CHANNEL_NAME_LENGTH} "
                f"(got {self.max_name_length})"
            )
        if not 0 <= self.max_user_info_bytes <= MAX_USER_INFO_BYTES:
            raise ValueError(
                f"max_user_info_bytes must be between 0 and {MAX_USER_INFO_BYTES} "
                f"(got {self.max_user_info_bytes})"
            )


DEFAULT_RULES = ChannelRules()


@dataclass(slots=True)
class Subscribe:
    """Subscribe connections to channels; `user_info` is JSON text (b"" when none was given)."""

    connection_ids: tuple[str, ...]
    channels: tuple[str, ...]
    user_info: bytes = b""
    presence_events: bool = False
    occupancy_events: bool = False  # the channel asks for periodic OCCUPANCY events

    action = "subscribe"


@dataclass(slots=True)
class Unsubscribe:
    connection_ids: tuple[str, ...]
    channels: tuple[str, ...]

    action = "unsubscribe"


@dataclass(slots=True)
class ChannelPublish:
    """A message for every subscriber of `channel` except the connections in `except_ids`."""

    channel: str
    payload: bytes
    binary: bool
    except_ids: tuple[str, ...] = ()

    action = "publish"


@dataclass(slots=True)
class Interest:
    """Peer-only: `node` now holds `added` and no longer `removed`; with `full`, `added` is all
    it holds (what the receiver knew of `node` is replaced) and `removed` is empty."""

    node: NodeAddress
    added: tuple[str, ...]
    removed: tuple[str, ...] = ()
    full: bool = False
    # With `full`: the sender has just come up to the receiver (it may have restarted faster
    # than the receiver could notice), so the receiver answers with its own full list.
    answer_me: bool = False

    action = "interest"


ChannelCommand = Subscribe | Unsubscribe | ChannelPublish


def parse_subscribe(item: dict[str, Any], rules: ChannelRules) -> Subscribe:
    return Subscribe(
        connection_ids(item),
        _channels(item, rules),
        _user_info(item, rules),
        _flag(item, "presenceEvents"),
        _flag(item, "occupancyEvents"),
    )


def parse_unsubscribe(item: dict[str, Any], rules: ChannelRules) -> Unsubscribe:
    return Unsubscribe(connection_ids(item), _channels(item, rules))


def parse_channel_publish(
    item: dict[str, Any], rules: ChannelRules, max_payload_bytes: int
) -> ChannelPublish:
    """A publish with "channel"; the caller has checked it holds no "keys"."""
    channel = channel_name(item.get("channel"), '"channel"', rules)
    data, binary = payload(item, max_payload_bytes)
    return ChannelPublish(channel, data, binary, _except_ids(item))


def channel_name(value: object, field: str, rules: ChannelRules) -> str:
    """`value` if it is a channel name by `rules`; else a CommandError naming `field`."""
    if type(value) is str and len(value) <= rules.max_name_length and _NAME.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise CommandError(f"{field} must be a string (got {kind_of(value)})")
    if not value or len(value) > rules.max_name_length:
        raise CommandError(
            f"{field} must be a channel name of 1 to {rules.max_name_length} characters "
            f"(got {len(value)})"
        )
    bad = next(character for character in value if not _NAME.fullmatch(character))
    raise CommandError(
        f"{field} holds {bad!r} (U+{ord(bad):04X}): a channel name may hold only {NAME_CHARACTERS}"
    )


def _channels(item: dict[str, Any], rules: ChannelRules) -> tuple[str, ...]:
    names = item.get("channels")
    if not isinstance(names, list) or not names:
        raise CommandError(f'"channels" must be a non-empty list (got {kind_of(names)})')
    if len(names) > MAX_CHANNELS_PER_COMMAND:
        raise CommandError(
            f'"channels" may hold at most {MAX_CHANNELS_PER_COMMAND} channels (got {len(names)})'
        )
    for position, name in enumerate(names):
        channel_name(name, f'"channels"[{position}]', rules)
    return tuple(dict.fromkeys(names))


def _except_ids(item: dict[str, Any]) -> tuple[str, ...]:
    """Connections to leave out: strings that could be connection IDs (they travel between
    nodes as ASCII lines), checked in one pass over them all."""
    excepted = item.get("exceptConnectionIds", [])
    if not isinstance(excepted, list):
        raise CommandError(f'"exceptConnectionIds" must be a list (got {kind_of(excepted)})')
    if not excepted:
        return ()
    ids = string_list(excepted, "exceptConnectionIds")
    if (
        _ID_CHARACTERS.fullmatch("".join(ids))
        and "" not in ids
        and max(map(len, ids)) <= MAX_ENCODED_LENGTH
    ):
        return ids
    position, bad = next(
        (position, value)
        for position, value in enumerate(excepted)
        if not value or len(value) > MAX_ENCODED_LENGTH or not _ID_CHARACTERS.fullmatch(value)
    )
    raise CommandError(
        f'"exceptConnectionIds"[{position}] is not a connection ID (got {bad[:40]!r})'
    )


def _user_info(item: dict[str, Any], rules: ChannelRules) -> bytes:
    value = item.get("userInfo")
    if value is None:  # absent, or null: the same to every reader of presence
        return b""
    try:
        text = _encode_user_info(value).encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError('"userInfo" holds lone surrogates: not valid UTF-8 text') from None
    except ValueError:
        raise CommandError('"userInfo" holds NaN or Infinity, which JSON cannot carry') from None
    except RecursionError:
        raise CommandError('"userInfo" is nested too deeply') from None
    if len(text) > rules.max_user_info_bytes:
        raise CommandError(
            f'"userInfo" is {len(text)} bytes of JSON; the most it may be is '
            f"{rules.max_user_info_bytes}"
        )
    return text


def _flag(item: dict[str, Any], name: str) -> bool:
    value = item.get(name, False)
    if not isinstance(value, bool):
        raise CommandError(f'"{name}" must be true or false (got {kind_of(value)})')
    return value


def channel_command_json(command: ChannelCommand) -> dict[str, object]:
    """A channel command as the JSON body holds it: what the parsers above read back."""
    if isinstance(command, ChannelPublish):
        entry: dict[str, object] = {"action": "publish", "channel": command.channel}
        entry.update(data_json(command.payload, command.binary))
        if command.except_ids:
            entry["exceptConnectionIds"] = list(command.except_ids)
        return entry
    entry = {
        "action": command.action,
        "connectionIds": list(command.connection_ids),
        "channels": list(command.channels),
    }
    if isinstance(command, Subscribe):
        if command.user_info:
            entry["userInfo"] = json.loads(command.user_info)
        entry["presenceEvents"] = command.presence_events
        if command.occupancy_events:
            entry["occupancyEvents"] = True
    return entry
