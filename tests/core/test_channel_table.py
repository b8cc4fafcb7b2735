"""Channels, sans-I/O: this node's subscriptions and their limits, what it knows of its peers'
channels (where a publish goes), the full list cut into Interest messages, and the memory a
subscription costs."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from runtime.core.channels import (
    ChannelTable,
    Member,
    Membership,
    PeerInterest,
    Subscribed,
    SubscriptionRefused,
    Unsubscribed,
    interest_messages,
    member,
)
from runtime.wire.commands import CommandError, Interest
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress

ISSUER = ConnectionIdIssuer("eu-west-1", NodeAddress("10.0.0.7", 9100))
PEER_A = NodeAddress("10.0.0.8", 9100)
PEER_B = NodeAddress("10.0.0.9", 9100)
PEER_C = NodeAddress("fd00::3", 9100)
PEERS = (PEER_A, PEER_B, PEER_C)
INFO = b'{"name":"Zo\xc3\xab"}'


def table(per_connection: int = 100, total: int = 1_000_000) -> ChannelTable:
    return ChannelTable(per_connection, total)


# Subscribing ---------------------------------------------------------------------------------


def test_subscribe_reports_new_channels_and_joined_members() -> None:
    channels = table()
    done = channels.subscribe("c1", ("room:1", "room:2"))
    plain = Member()
    assert done == Subscribed(
        ("room:1", "room:2"),
        (Membership("room:1", "c1", plain), Membership("room:2", "c1", plain)),
    )
    done = channels.subscribe("c2", ("room:2", "room:3"), INFO, True)
    rich = Member(INFO, True)
    assert done.new_channels == ("room:3",)  # room:2 was held here already
    assert done.joined == (Membership("room:2", "c2", rich), Membership("room:3", "c2", rich))
    assert dict(channels.members("room:2")) == {"c1": plain, "c2": rich}
    assert channels.count("room:2") == 2
    assert channels.count("room:9") == 0
    assert dict(channels.members("room:9")) == {}
    assert sorted(channels.channels()) == ["room:1", "room:2", "room:3"]
    assert channels.total == 4
    assert channels.of("c1") == ("room:1", "room:2")
    assert channels.of("c2") == ("room:2", "room:3")
    assert channels.of("nobody") == ()


def test_duplicates_in_one_subscribe_count_once() -> None:
    channels = table(per_connection=2)
    done = channels.subscribe("c1", ("a", "b", "a", "b"))
    assert [joined.channel for joined in done.joined] == ["a", "b"]
    assert channels.total == 2


def test_a_resubscribe_updates_the_member_and_does_not_count_twice() -> None:
    channels = table(per_connection=2, total=2)
    channels.subscribe("c1", ("a", "b"))
    done = channels.subscribe("c1", ("b", "a"), INFO, True)
    assert done == Subscribed((), ())  # nothing joined, nothing new: no JOIN, no Interest
    assert channels.members("a")["c1"] == Member(INFO, True)
    assert channels.members("b")["c1"] == Member(INFO, True)
    assert channels.total == 2
    assert channels.of("c1") == ("a", "b")
    done = channels.subscribe("c1", ("a",))  # and back to plain
    assert channels.members("a")["c1"] == Member()


def test_the_common_subscription_shares_one_member() -> None:
    channels = table()
    channels.subscribe("c1", ("a", "b"))
    channels.subscribe("c2", ("a",))
    assert channels.members("a")["c1"] is channels.members("a")["c2"]
    assert channels.members("a")["c1"] is channels.members("b")["c1"]
    assert member(b"", True) is member(b"", True)
    assert member(INFO, False) == Member(INFO, False)


def test_members_is_a_read_only_view() -> None:
    channels = table()
    channels.subscribe("c1", ("a",))
    view = channels.members("a")
    with pytest.raises(TypeError):
        view["c2"] = Member()  # type: ignore[index]
    channels.subscribe("c2", ("a",))
    assert set(view) == {"c1", "c2"}  # live


@pytest.mark.parametrize(("per_connection", "total"), [(0, 10), (10, 0), (-1, -1)])
def test_limits_must_be_positive(per_connection: int, total: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ChannelTable(per_connection, total)


# Limits: all or nothing ----------------------------------------------------------------------


def test_the_per_connection_limit_refuses_the_whole_subscribe() -> None:
    channels = table(per_connection=3)
    channels.subscribe("c1", ("a", "b"))
    with pytest.raises(SubscriptionRefused) as refused:
        channels.subscribe("c1", ("b", "c", "d"), INFO, True)
    assert str(refused.value) == (
        "connection c1 would hold 4 subscriptions; a connection may hold at most 3"
    )
    assert isinstance(refused.value, CommandError)  # reported per command like the others
    # Nothing of it was done: not the new ones, nor the update of "b".
    assert channels.of("c1") == ("a", "b")
    assert channels.members("b")["c1"] == Member()
    assert channels.count("c") == channels.count("d") == 0
    assert channels.total == 2
    # Channels it already has do not count again: this one fits.
    assert channels.subscribe("c1", ("a", "b", "c")).new_channels == ("c",)
    # The limit is per connection: another one has its own.
    channels.subscribe("c2", ("a", "b", "c"))
    assert channels.total == 6


def test_the_node_limit_refuses_whole_and_frees_up_as_subscriptions_end() -> None:
    channels = table(per_connection=10, total=5)
    channels.subscribe("c1", ("a", "b", "c"))
    with pytest.raises(SubscriptionRefused, match="this node holds 3 subscriptions; 3 more would"):
        channels.subscribe("c2", ("a", "d", "e"))
    assert channels.of("c2") == ()
    assert sorted(channels.channels()) == ["a", "b", "c"]
    channels.subscribe("c2", ("a", "d"))  # exactly at the limit
    assert channels.total == 5
    with pytest.raises(SubscriptionRefused, match="its limit of 5"):
        channels.subscribe("c3", ("a",))
    channels.subscribe("c1", ("a", "b"), INFO)  # a re-subscribe adds nothing: still allowed
    channels.unsubscribe("c1", ("c",))
    channels.subscribe("c3", ("a",))
    channels.drop("c2")
    channels.subscribe("c3", ("x", "y"))
    assert channels.total == 5


# Unsubscribing and dropping ------------------------------------------------------------------


def test_unsubscribe_reports_who_left_and_which_channels_are_gone() -> None:
    channels = table()
    channels.subscribe("c1", ("a", "b", "c"), INFO, True)
    channels.subscribe("c2", ("a",))
    done = channels.unsubscribe("c1", ("a", "b", "zzz", "a"))
    rich = Member(INFO, True)
    assert done == Unsubscribed(("b",), (Membership("a", "c1", rich), Membership("b", "c1", rich)))
    assert channels.of("c1") == ("c",)
    assert sorted(channels.channels()) == ["a", "c"]
    assert channels.total == 2
    assert channels.unsubscribe("c1", ("a", "b")) == Unsubscribed((), ())  # not subscribed
    assert channels.unsubscribe("nobody", ("a",)) == Unsubscribed((), ())
    done = channels.unsubscribe("c1", ("c",))
    assert done.gone_channels == ("c",)
    assert channels.of("c1") == ()
    assert channels.total == 1


def test_drop_ends_every_subscription_of_the_connection() -> None:
    channels = table()
    channels.subscribe("c1", ("a", "b"))
    channels.subscribe("c1", ("c",), INFO)
    channels.subscribe("c2", ("b",))
    done = channels.drop("c1")
    assert set(done.gone_channels) == {"a", "c"}
    assert set(done.left) == {
        Membership("a", "c1", Member()),
        Membership("b", "c1", Member()),
        Membership("c", "c1", Member(INFO)),
    }
    assert channels.of("c1") == ()
    assert channels.channels() == ("b",)
    assert channels.total == 1
    assert channels.drop("c1") == Unsubscribed((), ())
    assert channels.drop("c2").gone_channels == ("b",)
    assert channels.total == 0
    assert channels.channels() == ()


def test_one_channel_and_many_channels_keep_their_order_through_changes() -> None:
    channels = table()
    channels.subscribe("c1", ("a",))
    assert channels.of("c1") == ("a",)
    channels.subscribe("c1", ("b", "c"))
    channels.unsubscribe("c1", ("b",))
    assert channels.of("c1") == ("a", "c")
    channels.unsubscribe("c1", ("a",))
    assert channels.of("c1") == ("c",)
    channels.subscribe("c1", ("d",))
    assert channels.of("c1") == ("c", "d")


# What peers hold -----------------------------------------------------------------------------


def test_an_unsynced_peer_gets_every_publish() -> None:
    interest = PeerInterest()
    assert interest.targets("room:1", PEERS, 0.0) == list(PEERS)
    assert not interest.synced(PEER_A)
    interest.apply(Interest(PEER_A, ("room:1",), (), True))
    assert interest.synced(PEER_A)
    assert interest.targets("room:1", PEERS, 0.0) == list(PEERS)
    assert interest.targets("room:2", PEERS, 0.0) == [PEER_B, PEER_C]


def test_changes_add_and_remove_and_a_full_list_replaces() -> None:
    interest = PeerInterest()
    interest.apply(Interest(PEER_A, ("a", "b"), (), True))
    interest.apply(Interest(PEER_B, (), (), True))
    interest.apply(Interest(PEER_A, ("c",), ("a",), False))
    assert interest.channels_of(PEER_A) == frozenset({"b", "c"})
    assert interest.targets("a", PEERS, 0.0) == [PEER_C]  # only the unsynced one
    assert interest.targets("c", PEERS, 0.0) == [PEER_A, PEER_C]
    interest.apply(Interest(PEER_A, ("z",), (), True))
    assert interest.channels_of(PEER_A) == frozenset({"z"})
    assert interest.targets("c", PEERS, 0.0) == [PEER_C]
    assert interest.targets("z", (PEER_A, PEER_B), 0.0) == [PEER_A]
    # A change from a peer not yet synced is kept; it stays a target of everything.
    interest.apply(Interest(PEER_C, ("q",), (), False))
    assert interest.channels_of(PEER_C) == frozenset({"q"})
    assert interest.targets("nothing", PEERS, 0.0) == [PEER_C]


def test_expect_counts_on_a_forwarded_subscribe_for_a_while() -> None:
    """No news of the peer cancels an expectation (a removal racing the subscribe, a full list
    taken before it); its end does, so a refused or GONE subscribe leaves nothing behind."""
    interest = PeerInterest(expect_seconds=10.0)
    interest.apply(Interest(PEER_A, ("room:2",), (), True))
    assert interest.targets("room:1", (PEER_A,), 0.0) == []
    interest.expect(PEER_A, ("room:1", "room:2"), 0.0)
    assert interest.targets("room:1", (PEER_A,), 1.0) == [PEER_A]
    assert interest.channels_of(PEER_A) == frozenset({"room:2"})  # what it said, alone
    interest.apply(Interest(PEER_A, (), ("room:2",), False))  # its last member of room:2 left
    interest.apply(Interest(PEER_A, (), (), True))  # a full list taken before the subscribe
    assert interest.targets("room:2", (PEER_A,), 9.0) == [PEER_A]  # still expected
    assert interest.targets("room:1", (PEER_A,), 9.9) == [PEER_A]
    assert interest.targets("room:1", (PEER_A,), 10.0) == []  # expired: it never said so
    interest.expect(PEER_A, ("room:3",), 20.0)
    interest.expect(PEER_A, ("room:3",), 25.0)  # renewed
    assert interest.targets("room:3", (PEER_A,), 31.0) == [PEER_A]
    assert interest.targets("room:3", (PEER_A,), 35.0) == []
    assert not interest._expected and not interest._expiry  # nothing left behind


def test_forget_makes_a_peer_unknown_and_unsynced_again() -> None:
    interest = PeerInterest()
    interest.apply(Interest(PEER_A, ("a",), (), True))
    interest.forget(PEER_A)
    assert not interest.synced(PEER_A)
    assert interest.channels_of(PEER_A) == frozenset()
    assert interest.targets("b", (PEER_A,), 0.0) == [PEER_A]  # back up: it gets everything
    interest.apply(Interest(PEER_A, ("b",), (), True))
    assert interest.targets("a", (PEER_A,), 0.0) == []
    assert interest.targets("b", (PEER_A,), 0.0) == [PEER_A]
    interest.forget(PEER_B)  # never known: nothing to do


def test_only_the_peers_given_are_targets() -> None:
    interest = PeerInterest()
    interest.apply(Interest(PEER_A, ("a",), (), True))
    assert interest.targets("a", (), 0.0) == []
    assert interest.targets("a", (PEER_B,), 0.0) == [PEER_B]  # unsynced


# The full list, cut ----------------------------------------------------------------------------


def test_a_short_list_is_one_full_message_and_an_empty_one_too() -> None:
    assert interest_messages(PEER_A, ["a", "b"]) == [Interest(PEER_A, ("a", "b"), (), True)]
    assert interest_messages(PEER_A, []) == [Interest(PEER_A, (), (), True)]


def test_a_long_list_is_cut_into_bounded_messages_first_full() -> None:
    names = [f"room:{n:06d}" for n in range(20_000)]  # 12 bytes and a newline each
    messages = interest_messages(PEER_A, names, max_bytes=64 * 1024)
    assert len(messages) == 4  # 260,000 bytes in 65,536-byte messages
    assert [message.full for message in messages] == [True, False, False, False]
    for message in messages:
        assert sum(len(name) + 1 for name in message.added) <= 64 * 1024
        assert message.removed == ()
        assert message.node == PEER_A
    assert [name for message in messages for name in message.added] == names
    # The receiver, applying them in order, knows the whole list.
    interest = PeerInterest()
    interest.apply(Interest(PEER_A, ("stale",), (), True))
    for message in messages:
        interest.apply(message)
    assert interest.channels_of(PEER_A) == frozenset(names)


def test_a_message_holds_at_least_one_name() -> None:
    messages = interest_messages(PEER_A, ["a" * 10, "b" * 10, "c"], max_bytes=8)
    assert [message.added for message in messages] == [("a" * 10,), ("b" * 10,), ("c",)]


# Memory and speed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connections", "per_connection", "channel_count"),
    [(10_000, 10, 1_000), (100_000, 1, 100), (100_000, 1, 1)],
)
def test_a_subscription_costs_at_most_200_bytes(
    connections: int, per_connection: int, channel_count: int
) -> None:
    """100,000 subscriptions without userInfo, measured by tracemalloc above the connections'
    own IDs and the names the commands brought (each command its own copy, as JSON makes)."""
    ids = [ISSUER.issue() for _ in range(connections)]
    names = [f"room:{n}" for n in range(channel_count)]
    commands = [
        tuple(
            "".join(names[(index * per_connection + k) % channel_count])
            for k in range(per_connection)
        )
        for index in range(connections)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        channels = ChannelTable(per_connection, 1_000_000)
        for connection_id, command in zip(ids, commands, strict=True):
            channels.subscribe(connection_id, command)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    subscriptions = connections * per_connection
    assert channels.total == subscriptions
    per_subscription = used / subscriptions
    print(f"{per_subscription:.1f} bytes per subscription")  # shown with pytest -s
    assert per_subscription <= 200


def test_a_count_and_the_members_of_a_large_channel_answer_at_once() -> None:
    channels = ChannelTable(1, 200_000)
    for n in range(100_000):
        channels.subscribe(f"c{n}", ("big",))
    started = time.perf_counter()
    assert channels.count("big") == 100_000
    assert len(channels.members("big")) == 100_000
    assert time.perf_counter() - started < 0.05
    started = time.perf_counter()
    for n in range(100_000):
        channels.drop(f"c{n}")
    assert channels.total == 0
    assert channels.channels() == ()
    assert time.perf_counter() - started < 5  # generous on a shared machine
