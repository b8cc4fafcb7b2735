"""Channel names and userInfo checked in the SDK by the node's own rules, so a bad call fails at
once.

A command that reaches the nodes through the commands topic is rejected there only in the node's
log, where the origin never looks; checking here turns that into an exception at the call. The
rules are the wire's (runtime/wire/channels.py), with the node's defaults; a deployment that
changes `--max-channel-name-length` or `--max-user-info-bytes` passes the same values as
`ChannelRules` to `GatewayClient`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from runtime.wire.channels import MAX_CHANNELS_PER_COMMAND, ChannelRules, channel_name

__all__ = [
    "MAX_CHANNELS_PER_COMMAND",
    "ChannelRules",
    "check_channel",
    "check_channels",
    "user_info_json",
]

# As the node measures userInfo: compact JSON, UTF-8, and NaN or Infinity are not JSON.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def check_channel(channel: object, rules: ChannelRules, field: str = '"channel"') -> str:
    """One channel name, or a ValueError naming the field and the rule it breaks."""
    return channel_name(channel, field, rules)  # its CommandError is a ValueError


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
