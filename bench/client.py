"""The load generator: picows clients (a C WebSocket parser on uvloop), run inside the harness.

Every loop here is bounded in count and in time; a server that stops answering makes a phase end
with what it measured, never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from picows import WSListener, WSMsgType, WSTransport, ws_connect

from bench.stats import percentile

TEXT = WSMsgType.TEXT
CLOSE = WSMsgType.CLOSE
CONNECT_TIMEOUT = 10.0


def close_back(transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
    """Answer a server's close frame (unless ours went first), then drop the connection."""
    if not transport.is_close_frame_sent:
        transport.send_close(frame.get_close_code(), frame.get_close_message())
    transport.disconnect()


# Throughput: N connections, each keeping K messages in flight.


class _Load:
    __slots__ = ("drained", "received", "running", "sent")

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.running = True
        self.drained = asyncio.Event()  # set once stopped and every message came back


class _EchoLoad(WSListener):
    def __init__(self, load: _Load, payload: bytes) -> None:
        self.load = load
        self.payload = payload

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is TEXT:
            load = self.load
            load.received += 1
            if load.running:
                load.sent += 1
                transport.send(TEXT, self.payload)
            elif load.received >= load.sent:
                load.drained.set()
        elif kind is CLOSE:
            close_back(transport, frame)


@dataclass
class ThroughputResult:
    connections: int
    in_flight: int
    seconds: float
    messages: int
    rate: float
    unanswered: int  # sent but not echoed back within the drain time after the window
    connect_failures: int


async def throughput(
    url: str,
    *,
    connections: int,
    in_flight: int,
    warmup: float,
    seconds: float,
    payload: bytes,
    on_window: Callable[[str], None] = lambda _: None,
) -> ThroughputResult:
    load = _Load()
    opened, failures = await open_many(url, connections, lambda _: _EchoLoad(load, payload))
    try:
        for transport, _ in opened:
            for _ in range(in_flight):
                load.sent += 1
                transport.send(TEXT, payload)
        await asyncio.sleep(warmup)
        on_window("start")
        start_count, start = load.received, time.perf_counter()
        await asyncio.sleep(seconds)
        end_count, end = load.received, time.perf_counter()
        on_window("end")
        load.running = False
        if load.received < load.sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load.drained.wait(), 5.0)
    finally:
        close_all(opened)
    messages = end_count - start_count
    return ThroughputResult(
        connections=len(opened),
        in_flight=in_flight,
        seconds=end - start,
        messages=messages,
        rate=messages / (end - start),
        unanswered=load.sent - load.received,
        connect_failures=failures,
    )


# Latency: one connection, one message in flight.


class _Pinger(WSListener):
    def __init__(self, payload: bytes, total: int, deadline: float) -> None:
        self.payload = payload
        self.total = total
        self.deadline = deadline
        self.samples: list[int] = []
        self.sent_at = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: WSTransport | None = None

    def ping(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter_ns()
        self.transport.send(TEXT, self.payload)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is TEXT:
            self.samples.append(time.perf_counter_ns() - self.sent_at)
            if len(self.samples) < self.total and time.monotonic() < self.deadline:
                self.ping()
            elif not self.done.done():
                self.done.set_result(None)
        elif kind is CLOSE:
            close_back(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass
class LatencyResult:
    round_trips: int  # warm-up included
    samples: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float


async def latency(
    url: str, *, count: int, warmup: int, max_seconds: float, payload: bytes
) -> LatencyResult:
    pinger = _Pinger(payload, warmup + count, time.monotonic() + max_seconds)
    transport, _ = await asyncio.wait_for(ws_connect(lambda: pinger, url), CONNECT_TIMEOUT)
    try:
        pinger.ping()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pinger.done, max_seconds + 5.0)
    finally:
        transport.disconnect()
    samples = sorted(pinger.samples[warmup:]) or [0]
    us = [sample / 1000 for sample in samples]
    return LatencyResult(
        round_trips=len(pinger.samples),
        samples=len(samples),
        p50_us=percentile(us, 0.50),
        p90_us=percentile(us, 0.90),
        p99_us=percentile(us, 0.99),
        mean_us=statistics.fmean(us),
        max_us=us[-1],
    )


# Many idle connections, and a broadcast that every one of them must receive.


@dataclass
class BroadcastWatch:
    """What the idle connections wait for; counts arrivals of the current payload."""

    expected: bytes = b""
    target: int = 0
    count: int = 0
    stray: int = 0
    finished: asyncio.Future[float] | None = None

    def arm(self, payload: bytes, target: int) -> asyncio.Future[float]:
        self.expected = payload
        self.target = target
        self.count = 0
        self.finished = asyncio.get_running_loop().create_future()
        return self.finished


class _Idle(WSListener):
    def __init__(self, watch: BroadcastWatch) -> None:
        self.watch = watch

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is TEXT:
            watch = self.watch
            if frame.get_payload_as_bytes() == watch.expected:
                watch.count += 1
                if watch.count == watch.target and watch.finished and not watch.finished.done():
                    watch.finished.set_result(time.perf_counter())
            else:
                watch.stray += 1
        elif kind is CLOSE:
            close_back(transport, frame)


def idle_listener(watch: BroadcastWatch) -> Callable[[int], WSListener]:
    return lambda _: _Idle(watch)


class _Quiet(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        if frame.msg_type is CLOSE:
            close_back(transport, frame)


def quiet_listener() -> WSListener:
    return _Quiet()


async def open_many(
    url: str,
    count: int,
    factory: Callable[[int], WSListener],
    *,
    subprotocols: Sequence[str] | None = None,
    concurrency: int = 64,
    time_limit: float = 60.0,
) -> tuple[list[tuple[WSTransport, WSListener]], int]:
    """Open `count` connections, `concurrency` handshakes at a time (the listen backlog is ~100).

    Connection i gets `factory(i)` as its listener and, with `subprotocols`, asks for
    `subprotocols[i]`: GraphQL clients of either protocol, each with its own operation.
    Returns the open ones and how many failed after retries; stops at `time_limit`.
    """
    if subprotocols is not None and len(subprotocols) != count:
        raise ValueError(f"{len(subprotocols)} subprotocols for {count} connections")
    opened: list[tuple[WSTransport, WSListener]] = []
    failures = 0
    deadline = time.monotonic() + time_limit
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        nonlocal failures
        headers = None if subprotocols is None else {"Sec-WebSocket-Protocol": subprotocols[number]}
        async with slots:
            for attempt in range(3):
                if time.monotonic() > deadline:
                    break
                try:
                    pair = await asyncio.wait_for(
                        ws_connect(lambda: factory(number), url, extra_headers=headers),
                        CONNECT_TIMEOUT,
                    )
                except Exception:  # refused, reset, handshake error or timeout: retry
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                opened.append(pair)
                return
            failures += 1

    await asyncio.gather(*(one(number) for number in range(count)))
    return opened, failures


def close_all(pairs: list[tuple[WSTransport, WSListener]]) -> None:
    for transport, _ in pairs:
        transport.disconnect(graceful=False)
