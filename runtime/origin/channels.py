"""Channel names and userInfo checked in the SDK by the node's rules, so a bad call fails at once.

A command that reaches the nodes through the commands topic is rejected there only in the node's
log, where the origin never looks; checking here turns that into an exception at the call. The
limits mirror the node's defaults (`--max-channel-name-length`, `--max-user-info-bytes`); a
deployment that changes them passes the same values as `ChannelRules` to `GatewayClient`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_CHANNELS_PER_COMMAND = 100
CHANNEL_CHARACTERS = "A-Z a-z 0-9 _ - . : @ / = + ! ~"
_NAME = re.compile(r"[A-Za-z0-9_\-.:@/=+!~]+")
# The node's ranges for its settings: a client cannot expect more than a node may allow.
NAME_LENGTH_RANGE = (1, 1024)
USER_INFO_BYTES_RANGE = (0, 65536)

# As the node measures userInfo: compact JSON, UTF-8, and NaN or Infinity are not JSON.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """The nodes' channel limits; the defaults are the nodes' defaults."""

    max_name_length: int = 128
    max_user_info_bytes: int = 1024

    def __post_init__(self) -> None:
        for name, value, (low, high) in (
            ("max_name_length", self.max_name_length, NAME_LENGTH_RANGE),
            ("max_user_info_bytes", self.max_user_info_bytes, USER_INFO_BYTES_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high} (got {value!r})")


def check_channel(channel: object, rules: ChannelRules, field: str = '"channel"') -> str:
    """One channel name, or a ValueError naming the field and the rule it breaks."""
    if not isinstance(channel, str):
        raise ValueError(f"{field} must be a string (got {_kind(channel)})")
    if len(channel) > rules.max_name_length or not _NAME.fullmatch(channel):
        raise ValueError(
            f"{field} must be 1 to {rules.max_name_length} characters from "
            f"{CHANNEL_CHARACTERS} (got {channel[:40]!r})"
        )
    return channel


def check_channels(channels: str | Iterable[str], rules: ChannelRules) -> list[str]:
    """The channels of a subscribe or unsubscribe, each counted once, in the order given."""
    names = [channels] if isinstance(channels, str) else list(channels)
    if not names:
        raise ValueError('"channels" must be a non-empty list')
    if len(names) > MAX_CHANNELS_PER_COMMAND:
        raise ValueError(
            f'"channels" may hold at most {MAX_CHANNELS_PER_COMMAND} channels (got {len(names)})'
        )
    for position, name in enumerate(names):
        check_channel(name, rules, f'"channels"[{position}]')
    return list(dict.fromkeys(names))


def user_info_json(user_info: Any, rules: ChannelRules) -> str:
    """The JSON text of a subscriber's userInfo, within the nodes' size limit."""
    try:
        text = _encode(user_info)
    except TypeError as exc:
        raise TypeError(f'"userInfo" must be JSON-serialisable: {exc}') from None
    except ValueError as exc:
        raise ValueError(f'"userInfo" must be JSON-serialisable: {exc}') from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError('"userInfo" holds lone surrogates: not valid UTF-8 text') from None
    if size > rules.max_user_info_bytes:
        raise ValueError(
            f'"userInfo" is {size} bytes of JSON; the most it may be is {rules.max_user_info_bytes}'
        )
    return text


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
