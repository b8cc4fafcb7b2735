"""Presence from an origin: how many connections a channel has, and which, asked of any node.

The nodes answer on their command listener (`GET /channels/<channel>` and `.../members`, with the
command token): the node asked gathers every node's members, so one node's URL is enough. An
origin reaches it from inside the VPC (the stack's `connectionsApi` opens the command port to the
origin's security group) or, locally, at `python -m runtime local`'s command port. Within an
event, `PresenceClient.at_node_of(connection_id, port)` asks the node holding that connection.

A node that does not answer in time is left out: the answer is then `partial`, and names it in
`missing_nodes`. Blocking, stdlib only (it fits a Lambda package); safe to share between threads
(each call opens its own HTTP connection).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from runtime.origin.channels import ChannelRules, check_channel
from runtime.wire.channels import DEFAULT_RULES
from runtime.wire.connection_id import NodeAddress, parse_connection_id
from runtime.wire.presence import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, channel_path

__all__ = [
    "ChannelCount",
    "ChannelMember",
    "MembersPage",
    "PresenceClient",
    "PresenceError",
]

MAX_ANSWER_BYTES = 32 << 20  # a page is at most 4 MiB of members


class PresenceError(RuntimeError):
    """The node refused the query (`status` and its message), or answered something unreadable
    (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"presence query failed ({status}): {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ChannelCount:
    channel: str
    count: int
    missing_nodes: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        """Some node did not answer in time: its members are not counted."""
        return bool(self.missing_nodes)


@dataclass(frozen=True, slots=True)
class ChannelMember:
    connection_id: str
    user_info: Any = None  # what the subscribe gave, None for none


@dataclass(frozen=True, slots=True)
class MembersPage:
    channel: str
    members: tuple[ChannelMember, ...]
    next: str | None  # the cursor of the next page; None on the last
    missing_nodes: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.missing_nodes)


class PresenceClient:
    """Counts and member lists of channels, from a node's command listener at `url` (such as
    http://10.0.1.5:8081), with the nodes' command token."""

    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        timeout: float = 10.0,
        rules: ChannelRules = DEFAULT_RULES,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL (got {url!r})")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout  # per request; a node waits up to --peer-down-seconds for peers
        self.rules = rules

    @classmethod
    def at_node_of(
        cls, connection_id: str, port: int, token: str = "", **options: Any
    ) -> PresenceClient:
        """A client of the node holding `connection_id`, whose command listener is on `port`."""
        node = parse_connection_id(connection_id).node
        return cls(f"http://{NodeAddress(node.host, port)}", token, **options)

    def count(self, channel: str) -> ChannelCount:
        """How many connections are subscribed to `channel`, over the whole cluster."""
        answer = self._get(channel_path(self._checked(channel)), {})
        return ChannelCount(channel, _number(answer, "count"), _missing(answer))

    def page(
        self, channel: str, after: str | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> MembersPage:
        """One page of members by connection ID: the first `limit` (1 to 1000) after `after`
        (the `next` of the previous page; None for the first)."""
        if type(limit) is not int or not 0 < limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE_SIZE} (got {limit!r})")
        query = {"limit": str(limit), **({"after": after} if after else {})}
        answer = self._get(channel_path(self._checked(channel), members=True), query)
        items = answer.get("members")
        following = answer.get("next")
        if not isinstance(items, list) or not (following is None or isinstance(following, str)):
            raise PresenceError(0, f"unreadable answer: {answer!r:.200}")
        members = tuple(_member(item) for item in items)
        return MembersPage(channel, members, following, _missing(answer))

    def pages(self, channel: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[MembersPage]:
        """Every page of the channel's members, in connection ID order (each page fetched as
        the previous one is used up)."""
        after: str | None = None
        while True:
            page = self.page(channel, after, page_size)
            yield page
            if page.next is None:
                return
            if after is not None and page.next <= after:
                raise PresenceError(0, f"the cursor did not move past {after!r}")
            after = page.next

    def members(self, channel: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[ChannelMember]:
        """Every member of the channel, fetched page by page. Pages that miss a node are not
        flagged here: use `pages` where that matters."""
        for page in self.pages(channel, page_size):
            yield from page.members

    # Inside

    def _checked(self, channel: str) -> str:
        return check_channel(channel, self.rules)  # a ValueError naming the rule

    def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        factory = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = factory(self._host, self._port, timeout=self.timeout)
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            status, body = response.status, response.read(MAX_ANSWER_BYTES)
        except http.client.HTTPException as exc:
            raise PresenceError(0, f"{type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise PresenceError(
                status, str(error) if error else body[:200].decode("utf-8", "replace")
            )
        if not isinstance(answer, dict):
            raise PresenceError(0, f"unreadable answer: {body[:200]!r}")
        return answer


def _number(answer: dict[str, Any], field: str) -> int:
    value = answer.get(field)
    if type(value) is not int:
        raise PresenceError(0, f"unreadable answer: {field} is {value!r:.40}")
    return value


def _missing(answer: dict[str, Any]) -> tuple[str, ...]:
    nodes = answer.get("missingNodes", [])
    return tuple(str(node) for node in nodes) if isinstance(nodes, list) else ()


def _member(item: object) -> ChannelMember:
    if not isinstance(item, dict) or not isinstance(item.get("connectionId"), str):
        raise PresenceError(0, f"unreadable member: {item!r:.200}")
    return ChannelMember(item["connectionId"], item.get("userInfo"))
