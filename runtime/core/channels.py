"""Channels, sans-I/O: this node's subscriptions (`ChannelTable`) and what it knows of its peers'
channels (`PeerInterest`), which decides where a publish goes.

A subscription is one entry in its channel's member dict plus a share of its connection's record.
Memory is the budget (200 bytes a subscription at most, measured in
tests/core/test_channel_table.py), so the common subscription (no userInfo, no presence events)
shares one `Member` object, a connection with one channel keeps the name alone rather than a
tuple of it, and every record
points at its channel's one name string (the member dict's), not at the copy each command brings.
(Not `sys.intern`: interned strings are immortal on some Python versions, and names come and go.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from runtime.wire.channels import Interest
from runtime.wire.commands import CommandError
from runtime.wire.connection_id import NodeAddress

# Names per Interest message: a node's full list is cut into messages of this many bytes or less.
INTEREST_MESSAGE_BYTES = 64 * 1024


class SubscriptionRefused(CommandError):
    """A limit would be passed; nothing of the subscribe was done (for that connection)."""


@dataclass(frozen=True, slots=True)
class Member:
    """What a subscription holds beside its connection: userInfo (JSON text, b"" for none) and
    whether it asked for JOIN/LEAVE events."""

    user_info: bytes = b""
    presence_events: bool = False


_PLAIN = Member()
_PRESENCE_ONLY = Member(b"", True)
_NO_MEMBERS: Mapping[str, Member] = MappingProxyType({})


def member(user_info: bytes, presence_events: bool) -> Member:
    """A Member, shared whenever there is no userInfo (the common case costs no object)."""
    if not user_info:
        return _PRESENCE_ONLY if presence_events else _PLAIN
    return Member(user_info, presence_events)


class _Group(dict[str, Member]):
    """A channel's members here (connection ID to Member), and the channel's name, which every
    connection's record shares."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class Membership(NamedTuple):
    """One subscription that began or ended: for JOIN and LEAVE events."""

    channel: str
    connection_id: str
    member: Member


@dataclass(frozen=True, slots=True)
class Subscribed:
    """`new_channels`: held here for the first time (peers are to hear of them); `joined`: the
    subscriptions actually added (a re-subscribe updates its member and is not among them)."""

    new_channels: tuple[str, ...]
    joined: tuple[Membership, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """`gone_channels`: no longer held here (peers are to hear of it); `left`: the subscriptions
    that ended, with what they held."""

    gone_channels: tuple[str, ...]
    left: tuple[Membership, ...]


_NOTHING = Unsubscribed((), ())


class ChannelTable:
    """This node's subscriptions, with a limit per connection and one for the node.

    Pass the connection's own ID string (the registry's): the table keeps that object rather
    than a copy, once per channel it subscribes to.
    """

    def __init__(self, max_per_connection: int, max_total: int) -> None:
        if max_per_connection < 1 or max_total < 1:
            raise ValueError(
                "max_per_connection and max_total must be at least 1 "
                f"(got {max_per_connection} and {max_total})"
            )
        self.max_per_connection = max_per_connection
        self.max_total = max_total
        self._members: dict[str, _Group] = {}
        # A connection's channels: the name alone for one (most connections), else a tuple.
        self._of: dict[str, str | tuple[str, ...]] = {}
        self._total = 0

    @property
    def total(self) -> int:
        """Subscriptions held here."""
        return self._total

    def of(self, connection_id: str) -> tuple[str, ...]:
        """The channels `connection_id` is subscribed to, in the order it subscribed."""
        held = self._of.get(connection_id, ())
        return (held,) if isinstance(held, str) else held

    def members(self, channel: str) -> Mapping[str, Member]:
        """A live, read-only view of `channel`'s members here (copy it before awaiting)."""
        group = self._members.get(channel)
        return _NO_MEMBERS if group is None else MappingProxyType(group)

    def count(self, channel: str) -> int:
        group = self._members.get(channel)
        return 0 if group is None else len(group)

    def channels(self) -> tuple[str, ...]:
        """Every channel with at least one member here."""
        return tuple(self._members)

    def subscribe(
        self,
        connection_id: str,
        channels: Sequence[str],
        user_info: bytes = b"",
        presence_events: bool = False,
    ) -> Subscribed:
        """Subscribe to all of `channels` or, with a limit in the way, to none (raising
        SubscriptionRefused); a channel already held takes the new userInfo and presence flag."""
        held = self.of(connection_id)
        groups = self._members
        fresh: list[str] = []
        again: list[str] = []
        for channel in dict.fromkeys(channels):
            group = groups.get(channel)
            (again if group is not None and connection_id in group else fresh).append(channel)
        if len(held) + len(fresh) > self.max_per_connection:
            raise SubscriptionRefused(
                f"connection {connection_id} would hold {len(held) + len(fresh)} subscriptions; "
                f"a connection may hold at most {self.max_per_connection}"
            )
        if self._total + len(fresh) > self.max_total:
            raise SubscriptionRefused(
                f"this node holds {self._total} subscriptions; {len(fresh)} more would pass "
                f"its limit of {self.max_total}"
            )
        joining = member(user_info, presence_events)
        for channel in again:
            groups[channel][connection_id] = joining
        if not fresh:
            return Subscribed((), ())
        new_channels: list[str] = []
        added: list[str] = []
        for channel in fresh:
            group = groups.get(channel)
            if group is None:
                group = groups[channel] = _Group(channel)
                new_channels.append(channel)
            group[connection_id] = joining
            added.append(group.name)
        self._keep(connection_id, held + tuple(added))
        self._total += len(added)
        return Subscribed(
            tuple(new_channels),
            tuple(Membership(channel, connection_id, joining) for channel in added),
        )

    def unsubscribe(self, connection_id: str, channels: Iterable[str]) -> Unsubscribed:
        """End the subscriptions of `connection_id` to those of `channels` it has."""
        held = self.of(connection_id)
        if not held:
            return _NOTHING
        ending = set(channels).intersection(held)
        if not ending:
            return _NOTHING
        self._keep(connection_id, tuple(channel for channel in held if channel not in ending))
        return self._end(connection_id, [channel for channel in held if channel in ending])

    def drop(self, connection_id: str) -> Unsubscribed:
        """The connection closed: every subscription of it ends."""
        held = self._of.pop(connection_id, None)
        if held is None:
            return _NOTHING
        return self._end(connection_id, [held] if isinstance(held, str) else list(held))

    def _keep(self, connection_id: str, channels: tuple[str, ...]) -> None:
        if not channels:
            self._of.pop(connection_id, None)
        else:
            self._of[connection_id] = channels[0] if len(channels) == 1 else channels

    def _end(self, connection_id: str, channels: list[str]) -> Unsubscribed:
        groups = self._members
        gone: list[str] = []
        left: list[Membership] = []
        for channel in channels:
            group = groups[channel]
            left.append(Membership(channel, connection_id, group.pop(connection_id)))
            if not group:
                del groups[channel]
                gone.append(channel)
        self._total -= len(left)
        return Unsubscribed(tuple(gone), tuple(left))


class PeerInterest:
    """Which channels each peer holds, as its Interest messages (and our own forwards) say.

    A peer counts as synced once a full Interest of it arrived since it came up; until then
    every publish goes to it, so a late or restarted peer misses none.

    A subscribe this node forwards makes an expectation, kept apart from what the peer said and
    for `expect_seconds` only: no news of the peer (a removal racing the subscribe, a full list
    taken before it) cancels it, and by its end the peer's own news says whether it holds the
    channel. So an expectation never outlives a subscribe the peer refused or found GONE, and
    forwarded subscribes cannot grow this table without bound.
    """

    def __init__(self, expect_seconds: float = 10.0) -> None:
        self.expect_seconds = expect_seconds
        self._held: dict[NodeAddress, set[str]] = {}
        self._synced: set[NodeAddress] = set()
        self._expected: dict[tuple[NodeAddress, str], float] = {}  # (peer, channel) -> until
        self._expiry: deque[tuple[float, NodeAddress, str]] = deque()

    def apply(self, interest: Interest) -> None:
        if interest.full:
            self._held[interest.node] = set(interest.added)
            self._synced.add(interest.node)
            return
        held = self._held.setdefault(interest.node, set())
        held.update(interest.added)
        held.difference_update(interest.removed)

    def expect(self, node: NodeAddress, channels: Iterable[str], now: float) -> None:
        """This node just forwarded a subscribe to `node`: count on it holding `channels` for a
        while, whatever else it says meanwhile."""
        self._expire(now)
        until = now + self.expect_seconds
        for channel in channels:
            self._expected[node, channel] = until
            self._expiry.append((until, node, channel))

    def forget(self, node: NodeAddress) -> None:
        """`node` is down: nothing is known of it, and it is unsynced until its next full list."""
        self._held.pop(node, None)
        self._synced.discard(node)

    def synced(self, node: NodeAddress) -> bool:
        return node in self._synced

    def holds(self, node: NodeAddress, channel: str) -> bool:
        """What `node` said it holds (expectations aside)."""
        return channel in self._held.get(node, _NO_NAMES)

    def channels_of(self, node: NodeAddress) -> frozenset[str]:
        return frozenset(self._held.get(node, ()))

    def targets(self, channel: str, peers: Iterable[NodeAddress], now: float) -> list[NodeAddress]:
        """The peers a publish to `channel` goes to: those holding it or expected to, and those
        not synced."""
        self._expire(now)
        held, synced, expected = self._held, self._synced, self._expected
        return [
            peer
            for peer in peers
            if peer not in synced
            or channel in held.get(peer, _NO_NAMES)
            or (peer, channel) in expected
        ]

    def _expire(self, now: float) -> None:
        expiry, expected = self._expiry, self._expected
        while expiry and expiry[0][0] <= now:
            until, node, channel = expiry.popleft()
            if expected.get((node, channel)) == until:  # not renewed since
                del expected[node, channel]


_NO_NAMES: frozenset[str] = frozenset()


def interest_messages(
    node: NodeAddress, channels: Iterable[str], max_bytes: int = INTEREST_MESSAGE_BYTES
) -> list[Interest]:
    """`node`'s full channel list as Interest messages of at most `max_bytes` of names each: the
    first full (it replaces what the receiver knew), the rest additions. Send them in one forward,
    so that the receiver applies them all before any publish it carries out next."""
    messages: list[Interest] = []
    batch: list[str] = []
    size = 0
    for channel in channels:
        length = len(channel.encode("utf-8")) + 1  # and its newline
        if batch and size + length > max_bytes:
            messages.append(Interest(node, tuple(batch), (), not messages))
            batch, size = [], 0
        batch.append(channel)
        size += length
    messages.append(Interest(node, tuple(batch), (), not messages))
    return messages
