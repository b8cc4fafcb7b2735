"""SendBacklog counts whole messages still in the transport buffer from its unflushed bytes."""

from __future__ import annotations

import random

import pytest

from runtime.core.send_buffer import SendBacklog, SendLimits


def test_nothing_buffered_when_the_transport_flushed_everything() -> None:
    backlog = SendBacklog()
    assert backlog.record(100, 0) == (0, 0)
    assert backlog.ends is None
    assert backlog.record(100, 0) == (0, 0)


def test_partial_flushes_count_messages_still_buffered() -> None:
    backlog = SendBacklog()
    assert backlog.record(100, 100) == (1, 100)  # nothing of message 1 flushed
    assert backlog.record(100, 200) == (2, 200)
    assert backlog.record(100, 150) == (2, 150)  # message 1 gone, half of message 2 flushed
    assert backlog.record(50, 60) == (2, 60)  # 10 bytes left of message 3, then message 4
    assert backlog.record(10, 5) == (1, 5)  # only part of message 5 left
    assert backlog.record(10, 15) == (2, 15)


def test_a_message_partly_flushed_still_counts() -> None:
    backlog = SendBacklog()
    assert backlog.record(1000, 1) == (1, 1)


def test_resets_when_unflushed_is_zero() -> None:
    backlog = SendBacklog()
    backlog.record(100, 100)
    backlog.record(100, 200)
    assert backlog.record(100, 0) == (0, 0)
    assert backlog.ends is None
    # Afterwards only the new message counts, not the ones flushed before the reset.
    assert backlog.record(40, 40) == (1, 40)
    assert backlog.record(40, 50) == (2, 50)


def test_negative_unflushed_is_treated_as_empty() -> None:
    backlog = SendBacklog()
    backlog.record(10, 10)
    assert backlog.record(10, -1) == (0, 0)


@pytest.mark.parametrize("seed", range(10))
def test_matches_a_model_of_the_transport(seed: int) -> None:
    """A transport that flushes arbitrary amounts between writes; count messages not fully sent."""
    rng = random.Random(seed)
    backlog = SendBacklog()
    ends: list[int] = []  # stream offset where each message ends
    written = flushed = 0
    for _ in range(2000):
        # The transport flushes some of what it holds before (and during) the next write.
        if rng.random() < 0.3:
            flushed = written  # drained completely
        else:
            flushed += rng.randint(0, written - flushed)
        size = rng.randint(1, 200)
        written += size
        ends.append(written)
        if rng.random() < 0.5:
            flushed += rng.randint(0, written - flushed)  # part of it went out at once
        unflushed = written - flushed
        expected = sum(1 for end in ends if end > flushed)
        assert backlog.record(size, unflushed) == (expected, unflushed)


def test_send_limits_exceeded() -> None:
    limits = SendLimits(max_messages=10, max_bytes=1000)
    assert not limits.exceeded(0, 0)
    assert not limits.exceeded(10, 1000)
    assert limits.exceeded(11, 0)
    assert limits.exceeded(0, 1001)
    assert limits.exceeded(11, 1001)
