"""Moves events from the outbox to the origin transport: batching, retries, backpressure.

A batch leaves as soon as a request slot is free and carries whatever arrived meanwhile, so light
load adds no waiting and heavy load gets large batches; a transport with a `linger` (SQS and SNS,
which bill per request) waits up to that long for a batch to fill, so light load gets fewer, fuller
messages. After a failure the pump backs off (with
jitter) and retries the same events first; it never drops them, except events the transport says
it can never carry (`OriginRefused`): those are dropped and reported, never retried at the head of
the line.

Admission is here too: every event enters against the outbox's bounds. Readers of clients wait
for room (`wait_for_room`) in the order they asked, so the bound holds however many wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable

from runtime.core.outbox import Batch, EventOutbox
from runtime.transports.base import OriginRefused, OriginTransport

log = logging.getLogger("runtime.origin")

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0

# Told of events dropped for good, as (key, event): the node closes their connections.
DroppedHandler = Callable[[list[tuple[str, bytes]]], None]


class OriginPump:
    def __init__(
        self,
        outbox: EventOutbox,
        transport: OriginTransport,
        on_dropped: DroppedHandler | None = None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.on_dropped = on_dropped
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        # Deliveries that succeeded and the seconds they took, for the OriginLatency metric.
        self.round_trips = 0
        self.round_trip_seconds = 0.0
        self._wake = asyncio.Event()
        self._filled = asyncio.Event()  # a lingering batch has filled
        self._empty = asyncio.Event()
        self._empty.set()
        # Readers waiting for room, first come first served: (bytes wanted, 0: any room).
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._slots = asyncio.Semaphore(transport.concurrency)
        self._consecutive_failures = 0
        self._retry_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    # Admission

    @property
    def has_room(self) -> bool:
        """Below the bound with nobody waiting ahead: a reader may take one more message."""
        return not self._waiters and not self.outbox.full

    def add(self, key: str, event: bytes) -> None:
        """Queue an event the caller already has room for (checked, or set aside)."""
        self.outbox.add(key, event, time.monotonic())
        self._empty.clear()
        self._wake.set()
        if self._batch_full():
            self._filled.set()

    def offer(self, key: str, event: bytes) -> bool:
        """Queue the event if it fits now; False (nothing queued) if it does not."""
        if self._waiters or not self.outbox.has_room_for(len(event)):
            return False
        self.add(key, event)
        return True

    def can_admit_connection(self, connect_bytes: int, disconnect_room: int) -> bool:
        """Whether a new connection's CONNECT and the room for its DISCONNECT fit now."""
        outbox = self.outbox
        return (
            not self._waiters
            and outbox.has_room_for(connect_bytes + disconnect_room, 2)
            and outbox.can_reserve(disconnect_room)
        )

    def admit_connection(self, key: str, connect: bytes | None, disconnect_room: int) -> bool:
        """Queue a CONNECT (None: suppressed) and set room aside for its DISCONNECT, or refuse
        both."""
        if not self.can_admit_connection(len(connect or b""), disconnect_room):
            return False
        self.outbox.reserve(disconnect_room)
        if connect is not None:
            self.add(key, connect)
        return True

    def add_disconnect(self, key: str, disconnect: bytes, disconnect_room: int) -> None:
        """Queue a DISCONNECT into the room set aside for it at CONNECT: never refused."""
        self.outbox.release(disconnect_room)
        self.add(key, disconnect)

    async def wait_for_room(self, nbytes: int = 0) -> None:
        """Until an event of `nbytes` fits (0: until the buffer is below its bound)."""
        if not self._waiters and self._fits(nbytes, 0, 0):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((nbytes, waiter))
        try:
            await waiter
        except BaseException:
            # Gone (its client left): whatever it held up, or was given, goes to the next.
            waiter.cancel()
            self._wake_waiters()
            raise

    def _fits(self, nbytes: int, given_bytes: int, given_events: int) -> bool:
        outbox = self.outbox
        if nbytes == 0:  # a reader about to read one message of unknown size
            return (
                outbox.nbytes + outbox.reserved_bytes + given_bytes < outbox.max_bytes
                and outbox.nevents + outbox.reserved_events + given_events < outbox.max_events
            )
        return outbox.has_room_for(given_bytes + nbytes, given_events + 1)

    def _wake_waiters(self) -> None:
        """Wake waiters in order while the room freed covers them; the first that does not fit
        keeps its place, and those behind it wait too (no overtaking)."""
        waiters = self._waiters
        given_bytes = given_events = 0
        while waiters:
            nbytes, waiter = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            if not self._fits(nbytes, given_bytes, given_events):
                return
            waiters.popleft()
            waiter.set_result(None)
            given_bytes += nbytes
            given_events += 1

    # Delivery

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="origin-pump")

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued event reached the origin; False if time ran out."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(
            *self._tasks, *([self._runner] if self._runner else []), return_exceptions=True
        )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.outbox.sendable:
                await self._slots.acquire()
                delay = self._retry_at - time.monotonic()
                if delay > 0:  # the origin failed lately: no request before the backoff ends
                    self._slots.release()
                    await asyncio.sleep(delay)
                    continue
                await self._linger()
                batch = self.outbox.take(
                    max_events=self.transport.max_batch_events,
                    max_bytes=self.transport.max_batch_bytes,
                )
                if batch is None:
                    self._slots.release()
                    break
                task = asyncio.create_task(self._send(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _linger(self) -> None:
        """Wait until a batch's worth is queued or the oldest queued event has waited `linger`."""
        linger = self.transport.linger
        if linger <= 0:
            return
        while not self._batch_full():
            oldest = self.outbox.oldest_ready()
            if oldest is None:
                return
            delay = oldest + linger - time.monotonic()
            if delay <= 0:
                return
            self._filled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._filled.wait(), delay)

    def _batch_full(self) -> bool:
        return (
            self.outbox.queued_events >= self.transport.max_batch_events
            or self.outbox.queued_bytes >= self.transport.max_batch_bytes
        )

    async def _send(self, batch: Batch) -> None:
        started = time.monotonic()
        try:
            await self.transport.deliver(batch.events)
        except asyncio.CancelledError:
            self.outbox.retry(batch)
            raise
        except OriginRefused as exc:
            # The rest of the batch was delivered or goes again at once: no backoff for it.
            self._drop(self.outbox.retry(batch, drop=exc.refused))
        except Exception as exc:  # any other failure: keep the events, back off, retry
            self.outbox.retry(batch)
            self.failures += 1
            self._consecutive_failures += 1
            backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._consecutive_failures - 1))
            self._retry_at = time.monotonic() + backoff * random.uniform(0.5, 1.0)
            log.warning(
                "origin request failed; will retry",
                extra={
                    "error": str(exc) or type(exc).__name__,
                    "events": len(batch.events),
                    "buffered": len(self.outbox),
                    "retryInSeconds": round(backoff, 3),
                },
            )
        else:
            if self._consecutive_failures:
                log.info("origin reachable again", extra={"buffered": len(self.outbox)})
            self._consecutive_failures = 0
            self._retry_at = 0.0
            self.outbox.complete(batch)
            self.delivered += len(batch.events)
            self.round_trips += 1
            self.round_trip_seconds += time.monotonic() - started
        finally:
            if not len(self.outbox):
                self._empty.set()
            self._wake_waiters()
            self._slots.release()
            self._wake.set()

    def _drop(self, dropped: list[tuple[str, bytes]]) -> None:
        """Events the transport can never carry (it logged why, one ERROR line each)."""
        self.dropped += len(dropped)
        if dropped and self.on_dropped is not None:
            self.on_dropped(dropped)
