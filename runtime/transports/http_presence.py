"""Presence over HTTP, on the command listener beside `POST /commands` (and with its token):

    GET /channels/<channel>                          {"channel", "count"}
    GET /channels/<channel>/members?limit=&after=    {"channel", "members", "next"}

both with `"partial": true` and `"missingNodes"` when some node did not answer in time. The
channel is percent-decoded (a "/" in a name travels as %2F) and checked by the node's channel
rules; `limit` is 1 to MAX_PAGE_SIZE (default DEFAULT_PAGE_SIZE), `after` the `next` of the
previous page. A bad one is 400 with the reason; a channel nobody is in is count 0, not 404.
"""

from __future__ import annotations

import json
from typing import Protocol
from urllib.parse import parse_qsl

from runtime.core.presence import PresenceBusy, PresenceResult
from runtime.transports.http1 import Response, json_response
from runtime.wire.channels import ChannelRules, channel_name
from runtime.wire.command_fields import CommandError
from runtime.wire.presence import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, is_cursor, members_json

MAX_QUERY_FIELDS = 8

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class PresenceQueries(Protocol):
    """What answers presence queries (runtime/node/presence.py)."""

    async def count(self, channel: str) -> PresenceResult: ...

    async def members(self, channel: str, after: str, limit: int) -> PresenceResult: ...


class BadQuery(ValueError):
    """A query the node cannot answer as asked: 400, with this message."""


async def presence_response(
    queries: PresenceQueries, channel: str, members: bool, query: str, rules: ChannelRules
) -> Response:
    """The answer to one presence request whose path, method and token were checked."""
    try:
        channel_name(channel, "the channel in the path", rules)
        after, limit = _page_query(query) if members else _no_query(query)
        result = await (
            queries.members(channel, after, limit) if members else queries.count(channel)
        )
    except (CommandError, BadQuery) as exc:
        return json_response({"error": str(exc)}, 400)
    except PresenceBusy as exc:
        return json_response({"error": str(exc)}, 429, headers={"Retry-After": "1"})
    return Response(200, _body(channel, result, members), {"Content-Type": "application/json"})


def _fields(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise BadQuery(f"too many query parameters (at most {MAX_QUERY_FIELDS})") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise BadQuery(f"query parameter {name[:40]!r} is given twice")
        fields[name] = value
    return fields


def _no_query(query: str) -> tuple[str, int]:
    fields = _fields(query)
    if fields:
        raise BadQuery(
            f"unknown query parameter {next(iter(fields))[:40]!r}: a channel's count takes none "
            "(its members are at /channels/<channel>/members)"
        )
    return "", 0


def _page_query(query: str) -> tuple[str, int]:
    fields = _fields(query)
    for name in fields:
        if name not in ("limit", "after"):
            raise BadQuery(f"unknown query parameter {name[:40]!r}: use limit and after")
    text = fields.get("limit", str(DEFAULT_PAGE_SIZE))
    if not (
        len(text) <= 4 and text.isascii() and text.isdigit() and 0 < int(text) <= MAX_PAGE_SIZE
    ):
        raise BadQuery(
            f"limit must be a whole number from 1 to {MAX_PAGE_SIZE} (got {text[:40]!r})"
        )
    after = fields.get("after", "")
    if after and not is_cursor(after):
        raise BadQuery(
            f"after must be a connection ID, the next of the previous page (got {after[:40]!r})"
        )
    return after, int(text)


def _body(channel: str, result: PresenceResult, members: bool) -> bytes:
    """The answer's JSON, the member list joined from the userInfo text as kept."""
    page = result.page
    parts = [b'"channel":' + _dumps(channel).encode()]
    if members:
        parts.append(b'"members":' + members_json(page.members))
        parts.append(b'"next":' + _dumps(page.next).encode())
    else:
        parts.append(b'"count":%d' % page.count)
    if result.partial:
        parts.append(b'"partial":true')
        parts.append(b'"missingNodes":' + _dumps([str(node) for node in result.missing]).encode())
    return b"{" + b",".join(parts) + b"}"
