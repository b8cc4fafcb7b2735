"""Batch planning for SQS/SNS: bounds per call, order per connection, and what SQS accepts."""

from __future__ import annotations

import hashlib
import json

from runtime.core.sqs_batches import (
    Entry,
    attributes_size,
    bucket_group,
    chain_calls,
    deduplication_id,
    entries_for,
    group_id,
    pack_entries,
    plan_calls,
    unpacked,
)
from runtime.wire import events
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress

NODE = events.NodeContext(stage="test", region="us-east-1", domain_name="example.com")
DETAILS = events.HandshakeDetails("/", [("user-agent", "pytest")], [], "203.0.113.9", None)
ISSUER = ConnectionIdIssuer("us-east-1", NodeAddress("10.0.0.1", 9100))


def fragment(connection_id: str) -> str:
    return events.connection_fragment(NODE, connection_id, 1, DETAILS)


def messages(connection_id: str, count: int, size: int = 10, route: str = "$default") -> list:
    part = fragment(connection_id)
    return [
        events.message_event(part, index + 1, 2, route, f"{index}:".ljust(size, "x"))
        for index in range(count)
    ]


def entry(index: int, group: str, size: int = 100) -> Entry:
    return Entry(index, "{}", size, group, f"m{index}", "MESSAGE", "$default")


def test_entries_carry_group_dedup_id_and_attributes_of_each_event() -> None:
    first, second = ISSUER.issue(), ISSUER.issue()
    batch = [
        events.connect_event(fragment(first), 0, 1, DETAILS),
        *messages(first, 2, route="chat"),
        *events.keepalive_events(NODE, [first, second], 3, 1000),
        events.gone_event(NODE, second, "send", 4),
    ]
    entries = entries_for(batch, default_group="keepalive-node-1")
    assert [e.index for e in entries] == [0, 1, 2, 3, 4]
    assert [e.group for e in entries] == [first, first, first, "keepalive-node-1", second]
    assert [(e.event_type, e.route_key) for e in entries] == [
        ("CONNECT", "$connect"),
        ("MESSAGE", "chat"),
        ("MESSAGE", "chat"),
        ("KEEPALIVE", "$keepalive"),
        ("GONE", "$gone"),
    ]
    for event, item in zip(batch, entries, strict=True):
        context = json.loads(event)["requestContext"]
        assert item.message_id == context["messageId"] == deduplication_id(item.message_id)
        assert item.body == event.decode()
        assert item.size == len(event) + attributes_size(item.event_type, item.route_key)


def test_characters_sqs_refuses_are_escaped_without_changing_the_json() -> None:
    connection_id = ISSUER.issue()
    part = fragment(connection_id)
    event = events.message_event(part, 1, 2, "\uffffroute", "a\ufffeb\uffffc\U0001f600")
    (item,) = entries_for([event], default_group="k")
    assert "\ufffe" not in item.body and "\uffff" not in item.body
    assert json.loads(item.body) == json.loads(event)
    assert item.route_key == "\ufffdroute"  # attributes cannot be escaped: replaced
    assert item.size == len(item.body.encode()) + attributes_size("MESSAGE", item.route_key)


def test_ids_that_sqs_would_refuse_as_group_are_hashed_to_fit() -> None:
    connection_id = ISSUER.issue()
    assert group_id(connection_id) == connection_id
    for junk in ("", "x" * 129, "with space", "caf\u00e9"):
        hashed = group_id(junk)
        assert hashed.startswith("h-") and len(hashed) <= 128 and hashed == group_id(junk)


def test_calls_hold_at_most_ten_entries_and_the_byte_bound() -> None:
    entries = [entry(i, f"c{i}", size=300) for i in range(25)]
    plan = plan_calls(entries, max_entries=10, max_call_bytes=1000, max_message_bytes=1000)
    calls = [call for chain in plan.chains for call in chain]
    assert [len(call) for call in calls] == [3] * 8 + [1]
    assert [e.index for call in calls for e in call] == list(range(25))
    plan = plan_calls(entries, max_entries=10, max_call_bytes=10**6, max_message_bytes=1000)
    assert [len(call) for chain in plan.chains for call in chain] == [10, 10, 5]


def test_calls_sharing_a_connection_form_one_chain_in_order() -> None:
    # a: 12 entries spanning two calls; b, c: short; d spans the 3rd and 4th call.
    entries = [entry(i, "a") for i in range(12)]
    entries += [entry(12 + i, "b") for i in range(3)] + [entry(15, "c")]
    entries += [entry(16 + i, "d") for i in range(14)]
    plan = plan_calls(entries, max_entries=10, max_call_bytes=10**6, max_message_bytes=1000)
    chains = [[[e.index for e in call] for call in chain] for chain in plan.chains]
    assert chains == [
        [list(range(10)), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], list(range(20, 30))]
    ]
    independent = [entry(i, f"g{i // 10}") for i in range(30)]
    plan = plan_calls(independent, max_entries=10, max_call_bytes=10**6, max_message_bytes=1000)
    assert len(plan.chains) == 3


def test_fifo_calls_hold_one_entry_of_a_group_each_in_order() -> None:
    # a: 3 entries, b: 2, c: 1, d: 12. Each goes in the first call after its group's previous
    # entry that has room; a group's entries keep their order from call to call.
    entries = [entry(0, "a"), entry(1, "a"), entry(2, "b"), entry(3, "a"), entry(4, "b")]
    entries += [entry(5, "c")] + [entry(6 + i, "d") for i in range(12)]
    plan = plan_calls(
        entries, max_entries=3, max_call_bytes=10**6, max_message_bytes=1000, one_per_group=True
    )
    calls = [[e.index for e in call] for chain in plan.chains for call in chain]
    assert calls[:4] == [[0, 2, 5], [1, 4, 6], [3, 7], [8]]
    assert calls[4:] == [[index] for index in range(9, 18)]
    for call in calls:
        assert len({entries[index].group for index in call}) == len(call)
    for group in "abcd":
        order = [index for call in calls for index in call if entries[index].group == group]
        assert order == sorted(order)
    assert len(plan.chains) == 1  # they share groups: one after another
    # The byte bound holds as before.
    large = [entry(i, f"g{i}", size=400) for i in range(5)]
    plan = plan_calls(
        large, max_entries=10, max_call_bytes=1000, max_message_bytes=1000, one_per_group=True
    )
    assert [len(call) for chain in plan.chains for call in chain] == [2, 2, 1]


def test_chains_join_transitively_and_keep_call_order() -> None:
    calls = [[entry(0, "a")], [entry(1, "b")], [entry(2, "b"), entry(3, "c")], [entry(4, "a")]]
    calls.append([entry(5, "c")])
    chains = chain_calls(calls)
    assert [[call[0].index for call in chain] for chain in chains] == [[0, 4], [1, 2, 5]]


def test_too_large_entries_are_refused_and_their_followers_held() -> None:
    entries = [entry(0, "a"), entry(1, "a", size=5000), entry(2, "b"), entry(3, "a")]
    plan = plan_calls(entries, max_entries=10, max_call_bytes=10**6, max_message_bytes=1000)
    assert [e.index for e in plan.refused] == [1]
    assert [e.index for e in plan.held] == [3]
    assert [[e.index for e in call] for chain in plan.chains for call in chain] == [[0, 2]]


# --- packed messages ----------------------------------------------------------------------------


def packed_events(entry: Entry) -> list[dict]:
    """What a consumer reads from a message: the events of a pack, or the one event."""
    document = json.loads(entry.body)
    return document.get("events", [document])


def connection_of(event: dict) -> str:
    return event["requestContext"]["connectionId"]


def test_events_pack_into_the_http_origins_body_with_their_shared_attributes() -> None:
    first, second = ISSUER.issue(), ISSUER.issue()
    batch = [*messages(first, 3, route="chat"), *messages(second, 2, route="chat")]
    entries = entries_for(batch, default_group="keepalive")
    [pack] = pack_entries(entries, max_events=100, max_message_bytes=64 << 10)
    assert pack.body == '{"events":[' + ",".join(e.decode() for e in batch) + "]}"
    assert json.loads(pack.body) == {"events": [json.loads(e) for e in batch]}
    assert pack.attributes() == {"eventType": "MESSAGE", "routeKey": "chat"}
    assert pack.size == len(pack.body.encode()) + attributes_size("MESSAGE", "chat")
    assert [member.index for member in pack.events] == [0, 1, 2, 3, 4]
    ids = ",".join(member.message_id for member in entries)
    assert pack.message_id == hashlib.sha256(ids.encode()).hexdigest()
    assert len(pack.message_id) == 64 and deduplication_id(pack.message_id) == pack.message_id


def test_a_pack_holds_one_event_type_and_route_and_each_connection_stays_in_order() -> None:
    """Route A, route B, route A from one connection: the second A may not join the first A's
    pack (it would overtake B), so reading packs in order gives the connection's order."""
    one, two = ISSUER.issue(), ISSUER.issue()
    batch = [
        events.connect_event(fragment(one), 0, 1, DETAILS),
        *messages(one, 1, route="a"),
        *messages(two, 1, route="a"),
        *messages(one, 1, route="b"),
        *messages(two, 1, route="a"),  # joins the first "a" pack: `two` has no later pack
        *messages(one, 1, route="a"),  # may not: `one` is in the "b" pack since
    ]
    packs = pack_entries(
        entries_for(batch, default_group="keepalive"), max_events=100, max_message_bytes=1 << 20
    )
    assert [(p.event_type, p.route_key, len(p.events)) for p in packs] == [
        ("CONNECT", "$connect", 1),
        ("MESSAGE", "a", 3),
        ("MESSAGE", "b", 1),
        ("MESSAGE", "a", 1),
    ]
    for connection in (one, two):
        seen = [
            event["requestContext"]["messageId"]
            for pack in packs
            for event in packed_events(pack)
            if connection_of(event) == connection
        ]
        sent = [
            json.loads(event)["requestContext"]["messageId"]
            for event in batch
            if connection_of(json.loads(event)) == connection
        ]
        assert seen == sent
    for pack in packs:
        kinds = {
            (e["requestContext"]["eventType"], e["requestContext"]["routeKey"])
            for e in packed_events(pack)
        }
        assert kinds == {(pack.event_type, pack.route_key)}


def test_packs_respect_the_event_count_and_the_byte_bound() -> None:
    connection = ISSUER.issue()
    batch = messages(connection, 50, size=500)
    entries = entries_for(batch, default_group="keepalive")
    by_count = pack_entries(entries, max_events=7, max_message_bytes=1 << 20)
    assert [len(p.events) for p in by_count] == [7] * 7 + [1]
    bound = 4096
    by_bytes = pack_entries(entries, max_events=1000, max_message_bytes=bound)
    assert all(p.size <= bound for p in by_bytes)
    assert all(p.size + by_bytes[0].events[0].size > bound for p in by_bytes[:-1])  # full
    assert sum(len(p.events) for p in by_bytes) == 50
    assert [json.loads(e) for p in by_bytes for e in [m.body for m in p.events]] == [
        json.loads(e) for e in batch
    ]
    for pack in by_bytes:
        assert len(pack.body.encode()) + attributes_size("MESSAGE", "$default") == pack.size


def test_an_event_too_large_to_share_a_message_travels_alone_as_itself() -> None:
    connection = ISSUER.issue()
    small, large, after = (
        messages(connection, 1, size=100)[0],
        messages(connection, 1, size=5000)[0],
        messages(connection, 1, size=100)[0],
    )
    packs = pack_entries(
        entries_for([small, large, after], default_group="k"),
        max_events=100,
        max_message_bytes=4096,
    )
    assert [len(p.events) for p in packs] == [1, 1, 1]  # order kept: `after` may not overtake
    assert packs[0].members and not packs[1].members and packs[2].members
    assert packs[1].body == large.decode()
    assert packs[1].message_id == json.loads(large)["requestContext"]["messageId"]


def test_on_fifo_a_connections_packs_share_its_bucket_and_buckets_spread() -> None:
    connections = [ISSUER.issue() for _ in range(64)]
    batch = [event for connection in connections for event in messages(connection, 2)]
    entries = entries_for(batch, default_group="keepalive-n")
    regroup = {e.group: bucket_group(e.group, 8, "n1-b") for e in entries}
    packs = pack_entries(entries, max_events=1000, max_message_bytes=1 << 20, regroup=regroup)
    assert {p.group for p in packs} == {f"n1-b{n}" for n in range(8)}  # 64 connections fill 8
    for pack in packs:
        for event in packed_events(pack):
            assert bucket_group(connection_of(event), 8, "n1-b") == pack.group
    # Stable: the same connection maps to the same bucket every time.
    assert bucket_group(connections[0], 8, "n1-b") == bucket_group(connections[0], 8, "n1-b")
    # Keep-alives (no connection) keep their node's own group.
    keepalives = entries_for(
        events.keepalive_events(NODE, connections[:3], 3, 1000), default_group="keepalive-n"
    )
    [pack] = pack_entries(
        keepalives, max_events=10, max_message_bytes=1 << 20, regroup={"keepalive-n": "keepalive-n"}
    )
    assert pack.group == "keepalive-n"


def test_a_refused_pack_unpacks_into_its_events_in_its_group() -> None:
    connection = ISSUER.issue()
    entries = entries_for(messages(connection, 3), default_group="k")
    [pack] = pack_entries(
        entries, max_events=10, max_message_bytes=1 << 20, regroup={connection: "b3"}
    )
    singles = unpacked(pack)
    assert [s.body for s in singles] == [e.body for e in entries]
    assert {s.group for s in singles} == {"b3"}
    assert [s.index for s in singles] == [0, 1, 2]


def test_the_fast_reading_of_the_nodes_events_agrees_with_a_full_parse() -> None:
    """Entries read the head of the node's own events without parsing them; whatever a client
    or an authorizer puts in an event cannot change what they read."""
    connection = ISSUER.issue()
    spoofing = {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "someone-else"}
    part = events.connection_fragment(NODE, connection, 1, DETAILS, authorizer=spoofing)
    batch = [
        events.connect_event(part, 0, 1, DETAILS),
        events.message_event(part, 1, 2, 'route "quoted" \\ é \u2028', '"routeKey":"evil"'),
        events.message_event(part, 2, 2, "$default", b"\x00binary"),
        events.message_event(part, 3, 2, "plain", "text with \ufffe inside"),
        events.disconnect_event(part, 4, 3, 1000, '"connectionId":"x"'),
        *events.keepalive_events(NODE, [connection], 5, 1000),
        events.gone_event(NODE, connection, "send", 6),
    ]
    entries = entries_for(batch, default_group="keepalive")
    for event, entry in zip(batch, entries, strict=True):
        context = json.loads(event)["requestContext"]
        assert entry.event_type == context["eventType"]
        assert entry.route_key == context["routeKey"]
        assert entry.message_id == context["messageId"]
        expected_group = context.get("connectionId", "keepalive")
        assert entry.group == group_id(expected_group)
        assert json.loads(entry.body) == json.loads(event)
    assert entries[1].route_key == 'route "quoted" \\ é \u2028'
