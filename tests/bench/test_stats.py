"""The benchmarks' one percentile: the figures of `statistics.quantiles(method="inclusive")`."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.stats import percentile


def test_matches_the_inclusive_quantiles_at_every_whole_percent() -> None:
    generator = random.Random(7)
    for size in (2, 3, 10, 101, 1000):
        samples = [generator.expovariate(1.0) for _ in range(size)]
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        for whole in range(1, 100):
            assert percentile(samples, whole / 100) == pytest.approx(cuts[whole - 1])


def test_ends_and_order() -> None:
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 1.0) == 3.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.5) == 1.5  # between the two, not the nearer
    assert percentile([5.0], 0.99) == 5.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], 99)
