"""Moves events from the outbox to the origin transport: batching, retries, backpressure.

A batch leaves as soon as a request slot is free and carries whatever arrived meanwhile, so light
load adds no waiting and heavy load gets large batches. After a failure the pump backs off (with
jitter) and retries the same events first; it never drops them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from runtime.core.outbox import Batch, EventOutbox
from runtime.transports.base import OriginTransport

log = logging.getLogger("runtime.origin")

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0


class OriginPump:
    def __init__(self, outbox: EventOutbox, transport: OriginTransport) -> None:
        self.outbox = outbox
        self.transport = transport
        self.delivered = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._slots = asyncio.Semaphore(transport.concurrency)
        self._consecutive_failures = 0
        self._retry_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    def add(self, key: str, event: bytes) -> None:
        """Queue an event; callers that read clients then check `has_room`."""
        self.outbox.add(key, event, time.monotonic())
        self._empty.clear()
        if self.outbox.full:
            self._room.clear()
        self._wake.set()

    @property
    def has_room(self) -> bool:
        return self._room.is_set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

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

    async def _send(self, batch: Batch) -> None:
        try:
            await self.transport.deliver(batch.events)
        except asyncio.CancelledError:
            self.outbox.retry(batch)
            raise
        except Exception as exc:  # any failure: keep the events, back off, retry
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
            if not self.outbox.full:
                self._room.set()
            if not len(self.outbox):
                self._empty.set()
        finally:
            self._slots.release()
            self._wake.set()
