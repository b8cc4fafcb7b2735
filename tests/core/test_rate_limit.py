"""TokenBuckets: a bucket per key, refilled by the clock the caller passes, in a bounded table."""

from __future__ import annotations

import time

import pytest

from runtime.core.rate_limit import TokenBuckets


def test_a_new_key_has_a_full_burst_then_is_refused() -> None:
    buckets = TokenBuckets(rate=1, burst=3, max_keys=10)
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate() -> None:
    buckets = TokenBuckets(rate=2, burst=2, max_keys=10)
    assert buckets.allow("a", 0.0)
    assert buckets.allow("a", 0.0)
    assert not buckets.allow("a", 0.0)
    assert not buckets.allow("a", 0.4)  # 0.8 of a token
    assert buckets.allow("a", 0.5)  # one token (0.4 s of refill was kept)
    assert not buckets.allow("a", 0.5)


def test_refill_stops_at_the_burst() -> None:
    buckets = TokenBuckets(rate=100, burst=2, max_keys=10)
    buckets.allow("a", 0.0)
    allowed = [buckets.allow("a", 1000.0) for _ in range(3)]
    assert allowed == [True, True, False]


def test_a_clock_going_back_adds_no_tokens() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_keys=10)
    assert buckets.allow("a", 10.0)
    assert not buckets.allow("a", 5.0)
    assert not buckets.allow("a", 10.5)


def test_retry_after_says_when_a_token_is_back() -> None:
    buckets = TokenBuckets(rate=4, burst=1, max_keys=10)
    assert buckets.retry_after("a", 0.0) == 0.0  # unknown key: full
    assert buckets.allow("a", 0.0)
    assert buckets.retry_after("a", 0.0) == pytest.approx(0.25)
    assert buckets.retry_after("a", 0.1) == pytest.approx(0.15)
    assert buckets.retry_after("a", 1.0) == 0.0


def test_one_key_running_dry_leaves_the_others_alone() -> None:
    buckets = TokenBuckets(rate=1, burst=5, max_keys=100)
    attacker = [buckets.allow("203.0.113.9", 0.0) for _ in range(1000)]
    assert sum(attacker) == 5
    assert all(buckets.allow("198.51.100.1", 0.0) for _ in range(5))
    assert not buckets.allow("203.0.113.9", 0.0)


def test_a_single_key_bounds_a_whole_node() -> None:
    buckets = TokenBuckets(rate=10, burst=20, max_keys=1)
    allowed = sum(buckets.allow("", t / 100) for t in range(100))  # 100 in one second
    assert allowed == 29  # the burst and the 9.9 tokens 0.99 s brings
    assert len(buckets) == 1


def test_a_million_distinct_keys_never_grow_the_table_past_max_keys() -> None:
    buckets = TokenBuckets(rate=1, burst=1, max_keys=1000)
    started = time.monotonic()
    largest = 0
    for n in range(1_000_000):
        assert buckets.allow(f"k{n}", n * 1e-6)  # every new key starts with its burst
        if n % 997 == 0:
            largest = max(largest, len(buckets))
    largest = max(largest, len(buckets))
    assert 900 <= largest <= 1000
    assert time.monotonic() - started < 20  # no sweep of the table per new key


def test_full_buckets_go_first_then_the_oldest() -> None:
    buckets = TokenBuckets(rate=1, burst=2, max_keys=4)
    buckets.allow("old-full", 0.0)  # full again from t=1
    for key in ("drained-1", "drained-2", "drained-3"):
        buckets.allow(key, 9.0)
        buckets.allow(key, 9.0)
    assert buckets.allow("new", 9.0)
    # The full bucket made the room: the drained ones keep their state.
    assert not buckets.allow("drained-1", 9.0)
    assert not buckets.allow("drained-3", 9.0)
    # Now nothing is full: the least recently used (drained-2) goes, and comes back full.
    assert buckets.allow("newer", 9.0)
    assert len(buckets) <= 4
    assert buckets.allow("drained-2", 9.0)


def test_the_oldest_go_when_the_table_is_full_of_drained_keys() -> None:
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=16)
    for n in range(16):
        buckets.allow(f"k{n}", 0.0)
    buckets.allow("k15", 0.0)  # k15 used last; k0 is the oldest
    assert buckets.allow("new", 0.0)
    assert len(buckets) <= 16
    assert buckets.allow("k0", 0.0)  # dropped: a fresh bucket
    assert not buckets.allow("k15", 0.0)  # kept: still dry


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys", "message"),
    [
        (0, 1, 1, "rate must be above 0"),
        (-1, 1, 1, "rate must be above 0"),
        (float("nan"), 1, 1, "rate must be above 0"),
        (1, 0, 1, "burst must be at least 1"),
        (1, 1, 0, "max_keys must be at least 1"),
    ],
)
def test_bad_parameters_are_refused(rate: float, burst: int, max_keys: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenBuckets(rate=rate, burst=burst, max_keys=max_keys)
