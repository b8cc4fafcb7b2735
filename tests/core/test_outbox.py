"""EventOutbox: bounded, batched, in order per key, through retries and concurrent batches."""

from __future__ import annotations

import random

import pytest

from runtime.core.outbox import Batch, EventOutbox

BIG = 1 << 30


def outbox(max_bytes: int = BIG, max_events: int = 1_000_000) -> EventOutbox:
    return EventOutbox(max_bytes=max_bytes, max_events=max_events)


def take_all(box: EventOutbox) -> Batch:
    batch = box.take(max_events=1_000_000, max_bytes=BIG)
    assert batch is not None
    return batch


def keys_of(batch: Batch) -> list[str]:
    return [key for key, _ in batch.parts]


def test_empty_outbox_has_nothing_to_take() -> None:
    box = outbox()
    assert box.take(max_events=10, max_bytes=100) is None
    assert not box.sendable
    assert len(box) == 0


def test_per_key_fifo_order() -> None:
    box = outbox()
    for index in range(5):
        box.add("a", f"a{index}".encode(), now=index)
        box.add("b", f"b{index}".encode(), now=index)
    batch = take_all(box)
    assert [event for event in batch.events if event.startswith(b"a")] == [
        f"a{index}".encode() for index in range(5)
    ]
    assert [event for event in batch.events if event.startswith(b"b")] == [
        f"b{index}".encode() for index in range(5)
    ]
    # Whole queues of ready keys, in the order the keys became ready.
    assert keys_of(batch) == ["a", "b"]
    assert batch.events == [f"a{i}".encode() for i in range(5)] + [
        f"b{i}".encode() for i in range(5)
    ]
    assert batch.nbytes == sum(len(event) for event in batch.events)


def test_take_respects_max_events() -> None:
    box = outbox()
    for index in range(5):
        box.add("a", bytes([index]), now=0)
    box.add("b", b"b", now=0)
    batch = box.take(max_events=3, max_bytes=BIG)
    assert batch is not None
    assert batch.events == [bytes([0]), bytes([1]), bytes([2])]
    assert keys_of(batch) == ["a"]
    # "a" is in flight: the next batch holds only "b", never a4 ahead of the in-flight a0..a2.
    second = box.take(max_events=3, max_bytes=BIG)
    assert second is not None
    assert second.events == [b"b"]
    assert box.take(max_events=3, max_bytes=BIG) is None


def test_take_respects_max_bytes_across_keys() -> None:
    box = outbox()
    box.add("a", b"x" * 10, now=0)
    box.add("a", b"y" * 10, now=0)
    box.add("b", b"z" * 10, now=0)
    batch = box.take(max_events=100, max_bytes=25)
    assert batch is not None
    assert batch.events == [b"x" * 10, b"y" * 10]
    assert batch.nbytes == 20
    assert keys_of(batch) == ["a"]
    rest = box.take(max_events=100, max_bytes=25)
    assert rest is not None
    assert rest.events == [b"z" * 10]


def test_take_respects_max_bytes_within_a_key() -> None:
    box = outbox()
    for index in range(4):
        box.add("a", bytes([index]) * 10, now=0)
    batch = box.take(max_events=100, max_bytes=30)
    assert batch is not None
    assert batch.events == [bytes([0]) * 10, bytes([1]) * 10, bytes([2]) * 10]
    assert box.take(max_events=100, max_bytes=30) is None  # a3 waits for a0..a2
    box.complete(batch)
    last = box.take(max_events=100, max_bytes=30)
    assert last is not None
    assert last.events == [bytes([3]) * 10]


def test_take_always_returns_at_least_one_event() -> None:
    box = outbox()
    box.add("a", b"x" * 100, now=0)
    box.add("a", b"y", now=0)
    batch = box.take(max_events=10, max_bytes=10)
    assert batch is not None
    assert batch.events == [b"x" * 100]
    assert batch.nbytes == 100


def test_key_in_flight_is_not_taken_again_until_complete() -> None:
    box = outbox()
    box.add("a", b"1", now=0)
    first = take_all(box)
    box.add("a", b"2", now=1)
    box.add("a", b"3", now=2)
    assert not box.sendable
    assert box.take(max_events=10, max_bytes=BIG) is None
    box.add("b", b"other", now=3)
    other = take_all(box)
    assert other.events == [b"other"]
    box.complete(first)
    assert box.sendable
    second = take_all(box)
    assert second.events == [b"2", b"3"]


def test_completion_order_between_keys_is_free() -> None:
    box = outbox()
    box.add("a", b"a1", now=0)
    first = take_all(box)
    box.add("b", b"b1", now=0)
    second = take_all(box)
    box.complete(second)
    box.add("b", b"b2", now=1)
    assert take_all(box).events == [b"b2"]  # "a" in flight does not hold back "b"
    box.complete(first)
    assert box.take(max_events=10, max_bytes=BIG) is None


def test_retry_puts_events_back_at_the_head_in_order() -> None:
    box = outbox()
    for event in (b"a1", b"a2", b"a3"):
        box.add("a", event, now=0)
    batch = box.take(max_events=2, max_bytes=BIG)
    assert batch is not None
    assert batch.events == [b"a1", b"a2"]
    box.add("a", b"a4", now=1)
    box.retry(batch)
    again = take_all(box)
    assert again.events == [b"a1", b"a2", b"a3", b"a4"]


def test_retry_of_several_keys_comes_before_other_ready_keys() -> None:
    box = outbox()
    box.add("a", b"a1", now=0)
    box.add("b", b"b1", now=0)
    batch = take_all(box)
    assert keys_of(batch) == ["a", "b"]
    box.add("c", b"c1", now=1)
    box.add("b", b"b2", now=1)
    box.retry(batch)
    again = take_all(box)
    assert again.events == [b"a1", b"b1", b"b2", b"c1"]
    assert keys_of(again) == ["a", "b", "c"]


def test_retry_keeps_the_counts() -> None:
    box = outbox()
    box.add("a", b"12345", now=0)
    batch = take_all(box)
    box.retry(batch)
    assert (box.nbytes, box.nevents) == (5, 1)
    box.complete(take_all(box))
    assert (box.nbytes, box.nevents) == (0, 0)


def test_counts_return_to_zero_after_complete() -> None:
    box = outbox()
    box.add("a", b"123", now=0)
    box.add("b", b"4567", now=0)
    box.add("a", b"89", now=0)
    assert (box.nbytes, box.nevents, len(box)) == (9, 3, 3)
    batch = take_all(box)
    assert (box.nbytes, box.nevents) == (9, 3)  # still held until the origin has them
    box.complete(batch)
    assert (box.nbytes, box.nevents, len(box)) == (0, 0, 0)
    assert not box.sendable
    assert box.stale_keys(now=1e9, max_age=0) == []


def test_full_flag_at_the_event_bound() -> None:
    box = outbox(max_events=3)
    box.add("a", b"x", now=0)
    box.add("b", b"x", now=0)
    assert not box.full
    box.add("c", b"x", now=0)
    assert box.full
    batch = box.take(max_events=1, max_bytes=BIG)
    assert batch is not None
    assert box.full  # taking is not delivering
    box.retry(batch)
    assert box.full
    box.complete(box.take(max_events=1, max_bytes=BIG))
    assert not box.full


def test_full_flag_at_the_byte_bound() -> None:
    box = outbox(max_bytes=100)
    box.add("a", b"x" * 99, now=0)
    assert not box.full
    box.add("a", b"x", now=0)
    assert box.full
    box.add("a", b"x" * 50, now=0)  # adding past the bound still succeeds
    assert box.nbytes == 150
    batch = box.take(max_events=2, max_bytes=BIG)
    box.complete(batch)
    assert box.nbytes == 50
    assert not box.full


def test_stale_keys_by_age() -> None:
    box = outbox()
    box.add("a", b"1", now=0)
    box.add("b", b"1", now=5)
    box.add("a", b"2", now=8)
    assert box.stale_keys(now=10, max_age=20) == []
    assert box.stale_keys(now=10, max_age=7) == ["a"]
    assert sorted(box.stale_keys(now=10, max_age=4)) == ["a", "b"]
    assert box.stale_keys(now=10, max_age=10) == []  # exactly max_age is not yet stale


def test_stale_age_counts_in_flight_events_then_moves_on() -> None:
    box = outbox()
    box.add("a", b"1", now=0)
    batch = take_all(box)
    box.add("a", b"2", now=8)
    assert box.stale_keys(now=10, max_age=5) == ["a"]  # a1 is still undelivered
    box.complete(batch)
    assert box.stale_keys(now=10, max_age=5) == []  # oldest is now a2, from t=8
    assert box.stale_keys(now=20, max_age=5) == ["a"]
    box.retry(retried := take_all(box))
    assert box.stale_keys(now=20, max_age=5) == ["a"]
    box.complete(take_all(box))
    assert retried.events == [b"2"]
    assert box.stale_keys(now=100, max_age=0) == []


def test_stale_age_restarts_for_a_key_that_emptied() -> None:
    box = outbox()
    box.add("a", b"1", now=0)
    box.complete(take_all(box))
    box.add("a", b"2", now=50)
    assert box.stale_keys(now=52, max_age=5) == []


# Randomized property test --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_random_interleavings_deliver_each_event_once_and_in_order(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"k{n}" for n in range(rng.randint(1, 7))]
    box = outbox(max_bytes=rng.randint(50, 500), max_events=rng.randint(3, 40))
    added = {key: 0 for key in keys}
    delivered: dict[str, list[int]] = {key: [] for key in keys}
    in_flight: list[Batch] = []
    held_bytes = 0
    clock = 0.0

    def event(key: str, number: int) -> bytes:
        return f"{key}:{number}:".encode() + b"p" * rng.randint(0, 30)

    def check_batch(batch: Batch, max_events: int, max_bytes: int) -> None:
        assert batch.events
        assert len(batch.events) <= max_events
        assert batch.nbytes == sum(len(e) for e in batch.events)
        assert batch.nbytes <= max_bytes or len(batch.events) == 1
        assert batch.events == [e for _, taken in batch.parts for e, _ in taken]
        batch_keys = keys_of(batch)
        assert len(batch_keys) == len(set(batch_keys))
        busy = {key for other in in_flight for key in keys_of(other)}
        assert not busy & set(batch_keys), "a key is in two batches at once"

    def finish(batch: Batch) -> None:
        nonlocal held_bytes
        for key, taken in batch.parts:
            for raw, _ in taken:
                owner, number, _ = raw.decode().split(":")
                assert owner == key
                delivered[key].append(int(number))
                held_bytes -= len(raw)
        box.complete(batch)

    for _ in range(1500):
        clock += rng.random()
        roll = rng.random()
        if roll < 0.45:
            key = rng.choice(keys)
            raw = event(key, added[key])
            added[key] += 1
            held_bytes += len(raw)
            box.add(key, raw, now=clock)
        elif roll < 0.7:
            max_events, max_bytes = rng.randint(1, 6), rng.randint(1, 80)
            batch = box.take(max_events=max_events, max_bytes=max_bytes)
            if batch is not None:
                check_batch(batch, max_events, max_bytes)
                in_flight.append(batch)
        elif in_flight:
            batch = in_flight.pop(rng.randrange(len(in_flight)))
            if roll < 0.88:
                finish(batch)
            else:
                box.retry(batch)
        assert box.nevents == sum(added.values()) - sum(map(len, delivered.values()))
        assert box.nbytes == held_bytes
        assert box.full == (box.nbytes >= box.max_bytes or box.nevents >= box.max_events)
        for key in keys:
            assert delivered[key] == list(range(len(delivered[key]))), (key, delivered[key])

    # Drain: complete what is in flight, then take and complete until nothing is left.
    for batch in in_flight:
        finish(batch)
    in_flight.clear()
    while (batch := box.take(max_events=rng.randint(1, 6), max_bytes=50)) is not None:
        finish(batch)
    for key in keys:
        assert delivered[key] == list(range(added[key]))
    assert (box.nbytes, box.nevents, box.sendable) == (0, 0, False)
    assert box.stale_keys(now=clock + 1e6, max_age=0) == []


# Room set aside, and events dropped for good ---------------------------------------------------


def test_reserved_room_counts_against_both_bounds() -> None:
    box = outbox(max_bytes=100, max_events=10)
    assert box.can_reserve(50) and not box.can_reserve(51)  # at most half is ever set aside
    assert not box.can_reserve(1, nevents=6)
    box.reserve(40)
    assert box.has_room_for(60) and not box.has_room_for(61)
    assert box.has_room_for(1, nevents=9) and not box.has_room_for(1, nevents=10)
    box.add("a", b"x" * 60, now=0)
    assert box.full  # 60 held + 40 kept aside
    box.release(40)
    box.add("a", b"d" * 30, now=0)  # what the room was kept for
    assert (box.nbytes, box.reserved_bytes, box.full) == (90, 0, False)


def test_retry_dropping_forgets_those_events_and_keeps_the_order_of_the_rest() -> None:
    box = outbox()
    for event in (b"a0", b"a1", b"a2"):
        box.add("a", event, now=0)
    box.add("b", b"b0", now=1)
    batch = take_all(box)
    assert batch.events == [b"a0", b"a1", b"a2", b"b0"]
    dropped = box.retry(batch, drop={1, 3})
    assert dropped == [("a", b"a1"), ("b", b"b0")]
    assert (box.nevents, box.nbytes) == (2, 4)
    again = take_all(box)
    assert again.events == [b"a0", b"a2"]
    box.complete(again)
    assert (box.nevents, box.nbytes, box.sendable) == (0, 0, False)
    assert box.stale_keys(now=1e9, max_age=0) == []
