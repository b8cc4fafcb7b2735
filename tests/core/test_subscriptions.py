"""The subscription index: one input per digest, found by key, gone with its last subscriber."""

from __future__ import annotations

from runtime.core.subscriptions import SubscriptionIndex


def add(index: SubscriptionIndex, connection: str, operation: str, digest: str, *keys: str) -> None:
    index.add(
        (connection, operation),
        digest,
        keys,
        query=f"subscription {{ q_{digest} }}",
        variables={"d": digest},
        operation_name=None,
        input_context={"digest": digest, "first": connection},
    )


def test_subscribers_of_one_digest_share_one_input() -> None:
    index = SubscriptionIndex()
    add(index, "c1", "1", "d1", "room:a")
    add(index, "c2", "7", "d1", "room:a")
    add(index, "c3", "1", "d2", "room:a", "room:b")
    matched = index.matching(("room:a",))
    assert sorted(held.digest for held in matched) == ["d1", "d2"]
    d1 = index.get("d1")
    assert d1 is not None and list(d1.subscribers) == [("c1", "1"), ("c2", "7")]
    assert d1.input_context == {"digest": "d1", "first": "c1"}  # the first subscriber's
    assert [held.digest for held in index.matching(("room:b", "room:a", "room:b"))] == ["d2", "d1"]
    assert index.matching(("room:z",)) == []
    assert len(index) == 3 and index.inputs() == 2
    assert sorted(index.keys()) == ["room:a", "room:b"]


def test_removal_forgets_inputs_and_keys_with_the_last_subscriber() -> None:
    index = SubscriptionIndex()
    add(index, "c1", "1", "d1", "k")
    add(index, "c2", "1", "d1", "k")
    assert index.remove(("c1", "1"))
    assert not index.remove(("c1", "1"))
    assert [held.digest for held in index.matching(("k",))] == ["d1"]
    assert index.remove(("c2", "1"))
    assert index.matching(("k",)) == [] and index.keys() == [] and index.get("d1") is None
    assert len(index) == 0 and index.inputs() == 0


def test_a_connection_leaving_takes_all_its_operations() -> None:
    index = SubscriptionIndex()
    add(index, "c1", "1", "d1", "a")
    add(index, "c1", "2", "d2", "b")
    add(index, "c2", "1", "d2", "b")
    assert index.remove_connection("c1") == 2
    assert index.remove_connection("c1") == 0
    assert index.get("d1") is None
    held = index.get("d2")
    assert held is not None and list(held.subscribers) == [("c2", "1")]
    assert index.keys() == ["b"]


def test_adding_an_operation_again_replaces_it() -> None:
    index = SubscriptionIndex()
    add(index, "c1", "1", "d1", "a")
    add(index, "c1", "1", "d2", "b")
    assert index.get("d1") is None and index.keys() == ["b"] and len(index) == 1


def test_many_subscribers_many_keys_stay_consistent() -> None:
    index = SubscriptionIndex()
    for n in range(1000):
        add(index, f"c{n % 100}", str(n), f"d{n % 10}", f"k{n % 7}", f"k{n % 3}")
    assert index.inputs() == 10 and len(index) == 1000
    for n in range(0, 1000, 2):
        assert index.remove((f"c{n % 100}", str(n)))
    for connection in range(100):
        index.remove_connection(f"c{connection}")
    assert len(index) == 0 and index.inputs() == 0 and index.keys() == []
