"""Batch planning for SQS/SNS: bounds per call, order per connection, and what SQS accepts."""

from __future__ import annotations

import json

from runtime.core.sqs_batches import (
    Entry,
    attributes_size,
    chain_calls,
    deduplication_id,
    entries_for,
    group_id,
    plan_calls,
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
