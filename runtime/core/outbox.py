"""Events waiting for the origin: bounded, batched, and in order per connection.

Several requests to the origin may be in flight at once, but never two holding events of the same
connection: a connection's next events wait until its in-flight batch is acknowledged, and a failed
batch goes back to the head of its connections' queues. That keeps per-connection order through
retries while unrelated connections keep flowing.

The bounds hold for every kind of event. Each open connection has room set aside for its
DISCONNECT (which can never be refused), and no more than half of each bound is ever set aside, so
client messages always have room to move.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass(slots=True)
class Batch:
    events: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    # (key, events of that key in this batch, enqueue times), to release or put back.
    parts: list[tuple[str, list[tuple[bytes, float]]]] = field(default_factory=list)


class EventOutbox:
    """Bounded FIFO per key (a connection ID, or a node-level key for keep-alives)."""

    def __init__(self, *, max_bytes: int, max_events: int) -> None:
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.nbytes = 0
        self.nevents = 0
        # Of those, the ones not in flight (waiting to be taken, or behind an in-flight batch).
        self.queued_bytes = 0
        self.queued_events = 0
        # Set aside for events that must be taken whenever they come (DISCONNECTs).
        self.reserved_bytes = 0
        self.reserved_events = 0
        self._pending: dict[str, deque[tuple[bytes, float]]] = {}
        self._ready: deque[str] = deque()
        self._in_flight: set[str] = set()
        self._since: dict[str, float] = {}

    def __len__(self) -> int:
        return self.nevents

    @property
    def full(self) -> bool:
        """At the bound: producers should stop reading from clients until it clears."""
        return (
            self.nbytes + self.reserved_bytes >= self.max_bytes
            or self.nevents + self.reserved_events >= self.max_events
        )

    def has_room_for(self, nbytes: int, nevents: int = 1) -> bool:
        """Whether events of `nbytes` in all (`nevents` of them) fit under both bounds now."""
        return (
            self.nbytes + self.reserved_bytes + nbytes <= self.max_bytes
            and self.nevents + self.reserved_events + nevents <= self.max_events
        )

    def can_reserve(self, nbytes: int, nevents: int = 1) -> bool:
        """Whether that much more may be set aside: at most half of each bound ever is."""
        return (
            self.reserved_bytes + nbytes <= self.max_bytes // 2
            and self.reserved_events + nevents <= self.max_events // 2
        )

    def reserve(self, nbytes: int, nevents: int = 1) -> None:
        """Set room aside for events that will come later and must not be refused."""
        self.reserved_bytes += nbytes
        self.reserved_events += nevents

    def release(self, nbytes: int, nevents: int = 1) -> None:
        """Give back room set aside (the event it was for is being added, or never will be)."""
        self.reserved_bytes -= nbytes
        self.reserved_events -= nevents

    @property
    def sendable(self) -> bool:
        return bool(self._ready)

    def add(self, key: str, event: bytes, now: float) -> None:
        """Accept an event. Always succeeds: callers check `has_room_for` (or used a reserve)."""
        queue = self._pending.get(key)
        if queue is None:
            queue = self._pending[key] = deque()
        if not queue and key not in self._in_flight:
            self._ready.append(key)
        if key not in self._since:
            self._since[key] = now
        queue.append((event, now))
        self.nbytes += len(event)
        self.nevents += 1
        self.queued_bytes += len(event)
        self.queued_events += 1

    def oldest_ready(self) -> float | None:
        """When the first event of the longest-ready connection was queued (None: none is
        ready), so a lingering sender knows how long the oldest sendable event has waited."""
        if not self._ready:
            return None
        return self._pending[self._ready[0]][0][1]

    def take(self, *, max_events: int, max_bytes: int) -> Batch | None:
        """The next batch: whole queues of ready keys while they fit; at least one event."""
        if not self._ready:
            return None
        batch = Batch()
        events = batch.events
        while self._ready and len(events) < max_events:
            key = self._ready[0]
            queue = self._pending[key]
            taken: list[tuple[bytes, float]] = []
            while queue and len(events) < max_events:
                event = queue[0][0]
                if events and batch.nbytes + len(event) > max_bytes:
                    break
                taken.append(queue.popleft())
                events.append(event)
                batch.nbytes += len(event)
            if not taken:
                break
            self._ready.popleft()
            self._in_flight.add(key)
            batch.parts.append((key, taken))
            self.queued_events -= len(taken)
            self.queued_bytes -= sum(len(item[0]) for item in taken)
            if queue:
                break  # this batch is full; the key stays blocked until it is acknowledged
        return batch

    def complete(self, batch: Batch) -> None:
        """The origin has the batch: release its memory and unblock its keys."""
        for key, taken in batch.parts:
            self._in_flight.discard(key)
            queue = self._pending[key]
            if queue:
                self._ready.append(key)
                self._since[key] = queue[0][1]
            else:
                del self._pending[key]
                del self._since[key]
            self.nevents -= len(taken)
            self.nbytes -= sum(len(event) for event, _ in taken)

    def retry(self, batch: Batch, *, drop: Collection[int] = ()) -> list[tuple[str, bytes]]:
        """The batch failed: its events go back to the head of their queues, order kept.

        `drop` names events (positions in `batch.events`) that can never be delivered: they are
        forgotten instead, and returned as (key, event) so the caller can say what was lost.
        """
        dropped: list[tuple[str, bytes]] = []
        if drop:
            drop = set(drop)
            position = 0
            for key, taken in batch.parts:
                kept = []
                for item in taken:
                    if position in drop:
                        dropped.append((key, item[0]))
                    else:
                        kept.append(item)
                    position += 1
                taken[:] = kept
            self.nevents -= len(dropped)
            self.nbytes -= sum(len(event) for _, event in dropped)
        for key, taken in reversed(batch.parts):
            self._in_flight.discard(key)
            queue = self._pending[key]
            queue.extendleft(reversed(taken))
            self.queued_events += len(taken)
            self.queued_bytes += sum(len(item[0]) for item in taken)
            if queue:
                self._ready.appendleft(key)  # an in-flight key is never in the ready list
                self._since[key] = queue[0][1]
            else:
                del self._pending[key]
                del self._since[key]
        return dropped

    def stale_keys(self, now: float, max_age: float) -> list[str]:
        """Keys whose oldest undelivered event has waited longer than `max_age` seconds."""
        limit = now - max_age
        return [key for key, since in self._since.items() if since < limit]
