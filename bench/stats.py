"""One definition of a percentile for every benchmark, so that their p50s and p99s compare.

Linear interpolation between the closest ranks: of n samples in order, the q-quantile lies at rank
q * (n - 1), counted from 0. It is the "inclusive" method of `statistics.quantiles` and numpy's
default; a benchmark with few samples reports a value between two of them, not the nearer one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of the samples, in any order; ValueError if there are none."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be between 0 and 1 (got {q})")
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("a percentile of no samples")
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
