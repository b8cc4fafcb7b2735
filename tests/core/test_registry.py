"""ConnectionRegistry and its entries: sequence numbers, uniqueness, snapshots."""

from __future__ import annotations

import pytest

from runtime.core.registry import ConnectionEntry, ConnectionRegistry
from runtime.core.send_buffer import SendBacklog


def entry(connection_id: str, handle: object = None) -> ConnectionEntry[object]:
    return ConnectionEntry(connection_id, handle, '"connectionId":"x"', 1_700_000_000_000)


def test_sequence_counts_from_zero() -> None:
    item = entry("a")
    assert [item.sequence() for _ in range(4)] == [0, 1, 2, 3]
    assert item.next_sequence == 4


def test_entries_have_their_own_backlog() -> None:
    first, second = entry("a"), entry("b")
    assert isinstance(first.backlog, SendBacklog)
    assert first.backlog is not second.backlog
    first.backlog.record(10, 10)
    assert second.backlog.ends is None
    assert first.closing is False


def test_add_get_remove() -> None:
    registry: ConnectionRegistry[object] = ConnectionRegistry()
    handle = object()
    item = entry("a", handle)
    registry.add(item)
    assert "a" in registry
    assert "b" not in registry
    assert 5 not in registry
    assert len(registry) == 1
    assert registry.get("a") is item
    assert registry.get("a").handle is handle
    assert registry.get("b") is None
    assert registry.remove("a") is item
    assert registry.remove("a") is None
    assert "a" not in registry
    assert len(registry) == 0


def test_duplicate_ids_are_refused() -> None:
    registry: ConnectionRegistry[object] = ConnectionRegistry()
    first = entry("a")
    registry.add(first)
    with pytest.raises(KeyError, match="already registered"):
        registry.add(entry("a"))
    assert registry.get("a") is first


def test_ids_and_iteration_keep_insertion_order() -> None:
    registry: ConnectionRegistry[object] = ConnectionRegistry()
    for name in ("c", "a", "b"):
        registry.add(entry(name))
    assert registry.ids() == ["c", "a", "b"]
    assert [item.connection_id for item in registry] == ["c", "a", "b"]


def test_iteration_is_a_snapshot_so_removal_while_iterating_is_safe() -> None:
    registry: ConnectionRegistry[object] = ConnectionRegistry()
    for name in ("a", "b", "c"):
        registry.add(entry(name))
    seen = []
    for item in registry:
        seen.append(item.connection_id)
        registry.remove(item.connection_id)
    assert seen == ["a", "b", "c"]
    assert len(registry) == 0
    ids = registry.ids()
    registry.add(entry("d"))
    assert ids == []  # ids() is a copy
