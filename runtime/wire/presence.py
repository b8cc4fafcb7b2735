"""Presence on the wire: the peer-only ask and answer for a channel's members, the member list's
JSON, and the HTTP paths of the presence queries (the node serves them, the SDK calls them).

A member is a connection ID and its userInfo, kept as the JSON text the subscribe gave (b"" for
none): member lists are written by joining that text, never by parsing it again. Connection IDs
are URL-safe base64, so they need no escaping inside a JSON string.

A channel name may hold "/", so the paths percent-encode it (`%2F`): `/channels/<channel>` is
the count, `/channels/<channel>/members` the list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from runtime.wire.connection_id import MAX_ENCODED_LENGTH, NodeAddress

PRESENCE_PATH = "/channels"
MEMBERS_SEGMENT = "members"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# The most member-list JSON one node answers, and one page holds (a page with large userInfo
# may end before its limit): far below the peer link's largest message (16 MiB at least).
MAX_PAGE_BYTES = 4 << 20
# JSON around one member: {"connectionId":"","userInfo":} and a comma.
_ENTRY_OVERHEAD = 32
_ID = re.compile(r"[A-Za-z0-9_\-]+")  # the characters of every connection ID

MemberEntry = tuple[str, bytes]
"""A member: its connection ID and its userInfo as JSON text (b"" for none)."""


@dataclass(slots=True)
class PresenceAsk:
    """Peer-only: "how many members of `channel` do you hold, and (with `limit` > 0) which,
    the first `limit` by connection ID after `after`?" Answered with a PresenceAnswer to
    `reply_to`."""

    request_id: int
    reply_to: NodeAddress
    channel: str
    after: str = ""  # "" for from the start
    limit: int = 0  # 0 for the count only

    action = "presenceAsk"


@dataclass(slots=True)
class PresenceAnswer:
    """Peer-only: the answering node's `count` of the channel's members, and `members`, a JSON
    list of {"connectionId", "userInfo"?} sorted by ID; `more` when it holds members past the
    last one listed (a list cut by its limit or by MAX_PAGE_BYTES)."""

    request_id: int
    count: int
    members: bytes = b"[]"
    more: bool = False

    action = "presenceAnswer"


def entry_size(entry: MemberEntry) -> int:
    """An upper bound of the entry's bytes in a member list."""
    return len(entry[0]) + len(entry[1]) + _ENTRY_OVERHEAD


def members_json(entries: tuple[MemberEntry, ...] | list[MemberEntry]) -> bytes:
    """The JSON list of members, joined from their IDs and userInfo text."""
    parts = []
    for connection_id, user_info in entries:
        if user_info:
            parts.append(
                b'{"connectionId":"%s","userInfo":%s}' % (connection_id.encode(), user_info)
            )
        else:
            parts.append(b'{"connectionId":"%s"}' % connection_id.encode())
    return b"[" + b",".join(parts) + b"]"


# userInfo as the node keeps it: compact, UTF-8, and no NaN or Infinity (not JSON).
_encode_user_info = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


def parse_members(data: bytes) -> tuple[MemberEntry, ...]:
    """A member list as `members_json` writes it; ValueError for anything else."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"a member list that is not JSON ({exc})") from None
    if not isinstance(document, list):
        raise ValueError("a member list that is not a JSON list")
    entries: list[MemberEntry] = []
    for item in document:
        connection_id = item.get("connectionId") if isinstance(item, dict) else None
        if not isinstance(connection_id, str) or not is_cursor(connection_id):
            raise ValueError("a member without a connection ID")
        user_info = item.get("userInfo")
        try:
            info = b"" if user_info is None else _encode_user_info(user_info).encode("utf-8")
        except ValueError:
            raise ValueError("a member whose userInfo is not JSON (NaN or Infinity)") from None
        entries.append((connection_id, info))
    return tuple(entries)


def is_cursor(text: str) -> bool:
    """Whether `text` could be a connection ID, as a page's `after` must (it travels as ASCII
    between nodes): 1 to MAX_ENCODED_LENGTH URL-safe base64 characters."""
    return 0 < len(text) <= MAX_ENCODED_LENGTH and _ID.fullmatch(text) is not None


def channel_path(channel: str, *, members: bool = False) -> str:
    """The query's path, the channel's every reserved character (such as "/") percent-encoded."""
    path = f"{PRESENCE_PATH}/{quote(channel, safe='')}"
    return f"{path}/{MEMBERS_SEGMENT}" if members else path


def presence_target(path: str) -> tuple[str, bool] | None:
    """(channel, members?) of a presence path, the channel percent-decoded; None for any other
    path. The channel is not checked here: the caller applies its rules."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "" or f"/{parts[1]}" != PRESENCE_PATH:
        return None
    if len(parts) == 3:
        return unquote(parts[2]), False
    if len(parts) == 4 and parts[3] == MEMBERS_SEGMENT:
        return unquote(parts[2]), True
    return None
