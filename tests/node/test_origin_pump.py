"""The origin pump: readers wait for room in order and the bound holds for all of them; events
the transport can never carry are dropped once, reported, and block nothing behind them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from runtime.core.outbox import EventOutbox
from runtime.node.origin_pump import OriginPump
from runtime.transports.base import OriginRefused
from tests.doubles.memory import MemoryOrigin


def pump(origin: MemoryOrigin, max_bytes: int = 1000) -> OriginPump:
    return OriginPump(EventOutbox(max_bytes=max_bytes, max_events=100), origin)


async def test_readers_get_room_in_the_order_they_asked() -> None:
    origin = MemoryOrigin()
    origin.up = False
    box = pump(origin)
    box.start()
    try:
        assert box.offer("a", b'{"n":1}' + b" " * 593)  # 600 of 1000
        woken: list[str] = []

        async def reader(name: str, size: int) -> None:
            await box.wait_for_room(size)
            woken.append(name)
            box.add(name, b"{}" + b" " * (size - 2))

        first = asyncio.create_task(reader("big", 700))  # does not fit until "a" is gone
        await asyncio.sleep(0)
        second = asyncio.create_task(reader("small", 100))  # would fit, but may not overtake
        await asyncio.sleep(0.05)
        assert woken == []
        assert not box.offer("late", b"{}")  # nor may a newcomer
        origin.up = True  # "a" is delivered: 700 fits, then 100 beside it
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert woken == ["big", "small"]
        assert box.outbox.nbytes + box.outbox.reserved_bytes <= 1000
    finally:
        await box.stop()


async def test_a_waiter_that_leaves_passes_its_turn_on() -> None:
    origin = MemoryOrigin()
    origin.up = False
    box = pump(origin)
    box.start()
    try:
        assert box.offer("a", b"{}" + b" " * 598)
        blocked = asyncio.create_task(box.wait_for_room(900))
        await asyncio.sleep(0)
        behind = asyncio.create_task(box.wait_for_room(300))
        await asyncio.sleep(0.02)
        assert not behind.done()
        blocked.cancel()  # its client left
        await asyncio.wait_for(behind, 1)  # 600 + 300 fits: no need to wait for the origin
    finally:
        await box.stop()


class RefusingOrigin(MemoryOrigin):
    """Refuses for good every event holding `marker` (as SQS refuses a message it cannot take)
    after taking the rest of the batch, and remembers what it took, as the contract asks."""

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.marker = marker
        self.taken: set[bytes] = set()

    async def deliver(self, events: Sequence[bytes]) -> None:
        refused = [index for index, event in enumerate(events) if self.marker in event]
        fresh = [e for e in events if self.marker not in e and e not in self.taken]
        await super().deliver(fresh)
        self.taken.update(fresh)
        if refused:
            raise OriginRefused(f"{len(refused)} refused", refused)


async def test_refused_events_are_dropped_once_and_reported() -> None:
    origin = RefusingOrigin(b"poison")
    dropped: list[tuple[str, bytes]] = []
    box = OriginPump(
        EventOutbox(max_bytes=10_000, max_events=100), origin, on_dropped=dropped.extend
    )
    box.start()
    try:
        for event in (b'{"n":"a1"}', b'{"n":"poison"}', b'{"n":"a2"}'):
            box.add("a", event)
        box.add("b", b'{"n":"b1"}')
        assert await box.flush(5)
        assert dropped == [("a", b'{"n":"poison"}')]
        assert box.dropped == 1 and box.failures == 0  # no backoff: nothing was unavailable
        assert [event["n"] for event in origin.events] == ["a1", "a2", "b1"]
    finally:
        await box.stop()
