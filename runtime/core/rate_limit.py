"""Token buckets per key (a source IP, or "" for a whole node), with a bounded key table.

Anyone can bring new keys (IPv6 gives an attacker millions of source addresses), so the table
holds at most `max_keys`. A full bucket carries no state a fresh one would not (a new key starts
full), so full buckets are dropped first; only when none is full are the least recently used
dropped, a few at a time so that finding them stays cheap.
"""

from __future__ import annotations

import itertools

# When the table is full and nothing in it is full, this share of it goes at once (oldest first):
# each sweep of the table then buys room for many new keys, so a flood of new keys costs O(1)
# per key on average rather than a sweep each.
_EVICT_SHARE = 8


class TokenBuckets:
    """`rate` tokens a second up to `burst` per key; each allowed event takes one token.

    Sans-I/O: the caller passes the monotonic time, so tests control the clock.
    """

    def __init__(self, rate: float, burst: int, max_keys: int) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be above 0 per second (got {rate})")
        if burst < 1:
            raise ValueError(f"burst must be at least 1 (got {burst})")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1 (got {max_keys})")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        # key -> (tokens, when they were counted); insertion order is least recently used first.
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        """Take a token from `key`'s bucket if it has one."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._make_room(now)
            tokens = float(self.burst)
        else:
            tokens = self._level(bucket, now)
            now = max(now, bucket[1])  # a clock that went back must not count that time twice
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)  # to the end: most recently used
        return allowed

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` has a token again (0 when it has one now)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        return max(0.0, (1.0 - self._level(bucket, now)) / self.rate)

    def _level(self, bucket: tuple[float, float], now: float) -> float:
        tokens, then = bucket
        return min(float(self.burst), tokens + max(0.0, now - then) * self.rate)

    def _make_room(self, now: float) -> None:
        """Drop every full bucket; if that frees too little, drop the least recently used."""
        burst = float(self.burst)
        full = [key for key, bucket in self._buckets.items() if self._level(bucket, now) >= burst]
        for key in full:
            del self._buckets[key]
        wanted = max(1, self.max_keys // _EVICT_SHARE)
        excess = len(self._buckets) - (self.max_keys - wanted)
        for key in list(itertools.islice(self._buckets, max(0, excess))):
            del self._buckets[key]
