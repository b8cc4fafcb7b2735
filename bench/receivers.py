"""WebSocket clients in a child process of their own, counting every message they receive.

One process may hold at most its open-files limit of sockets (20,000 on the machines we run on, a
hard limit an unprivileged process cannot lift), so a benchmark that needs more clients than
that, or several sets of 10,000 open at once, puts each set in a `python -m bench.receivers`
child: picows clients (the load generator's client, bench.client) pinned to the generator's core.

The child counts each distinct message payload across all of its connections and, the moment one
payload has reached every connection, reports `{"done": payload, "at": t}` on its control
connection, `t` being `time.monotonic()` (CLOCK_MONOTONIC on Linux: one clock for every process of
the machine, so the harness subtracts its own `time.monotonic()` of the POST from it). What
arrived, payload by payload, is reported on request, so that a message received twice, or not
at all, or one nobody sent, fails the run.

Control: the harness connects to `--control` (TCP on 127.0.0.1) and sends JSON lines, each
answered by one line: `{"op": "open"}` opens the connections (spread evenly over `--urls`),
`{"op": "counts"}` tells what arrived, `{"op": "close"}` closes the connections. `Receivers` is the
harness's side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

from picows import WSListener, WSMsgType, WSTransport

from bench import client as load
from bench.common import BenchFailure, raise_nofile_limit, run
from bench.procs import Child, Fleet, free_port, wait_listening

ANSWER_TIMEOUT = 30.0  # seconds for an answer other than to "open"


# The child


class Tally:
    """Arrivals per payload over every connection of this process."""

    def __init__(self) -> None:
        self.target = 0  # connections open: a payload that reached this many is done
        self.counts: dict[bytes, int] = {}
        self.other_frames = 0  # not text or binary, nor close
        self.disconnected = 0
        self.report: asyncio.StreamWriter | None = None

    def count(self, payload: bytes) -> None:
        arrived = self.counts.get(payload, 0) + 1
        self.counts[payload] = arrived
        if arrived == self.target and self.report is not None:
            at = time.monotonic()
            line = {"done": payload.decode(errors="replace"), "at": at}
            self.report.write(json.dumps(line).encode() + b"\n")


class _Counting(WSListener):
    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            self.tally.count(frame.get_payload_as_bytes())
        elif kind is WSMsgType.CLOSE:
            load.close_back(transport, frame)
        else:
            self.tally.other_frames += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.tally.disconnected += 1


class ReceiverProcess:
    def __init__(self, urls: list[str], connections: int, time_limit: float) -> None:
        self.urls = urls
        self.connections = connections
        self.time_limit = time_limit
        self.tally = Tally()
        self.opened: list[tuple[WSTransport, WSListener]] = []

    async def open(self) -> dict[str, Any]:
        started = time.monotonic()
        failures = 0
        per_url = spread(self.connections, len(self.urls))
        for url, count in zip(self.urls, per_url, strict=True):
            opened, failed = await load.open_many(
                url, count, lambda _: _Counting(self.tally), time_limit=self.time_limit
            )
            self.opened += opened
            failures += failed
        self.tally.target = len(self.opened)
        return {
            "opened": len(self.opened),
            "failures": failures,
            "seconds": round(time.monotonic() - started, 2),
        }

    def counts(self) -> dict[str, Any]:
        tally = self.tally
        return {
            "counts": {payload.decode(errors="replace"): n for payload, n in tally.counts.items()},
            "other_frames": tally.other_frames,
            "disconnected": tally.disconnected,
        }

    def close(self) -> dict[str, Any]:
        closing = len(self.opened)
        load.close_all(self.opened)
        self.opened = []
        return {"closed": closing}

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One control connection (the harness's; `wait_listening` probes with an empty one)."""
        self.tally.report = writer
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                op = json.loads(line)["op"]
                if op == "open":
                    answer = await self.open()
                elif op == "counts":
                    answer = self.counts()
                elif op == "close":
                    answer = self.close()
                else:
                    answer = {"error": f"no such op: {op!r}"}
                writer.write(json.dumps(answer).encode() + b"\n")
        if self.tally.report is writer:
            self.tally.report = None
        writer.close()


def spread(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as can be, the larger shares first."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


async def serve(args: argparse.Namespace) -> None:
    process = ReceiverProcess(args.urls.split(","), args.connections, args.time_limit)
    server = await asyncio.start_server(process.control, "127.0.0.1", args.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        process.close()
        server.close()


# The harness's side


class Receivers:
    """A receiver child: started pinned, connected to, asked, and told when a payload is in."""

    def __init__(
        self,
        fleet: Fleet,
        name: str,
        urls: list[str],
        connections: int,
        cpu: int | None,
        *,
        open_time_limit: float = 60.0,
    ) -> None:
        self.fleet = fleet
        self.name = name
        self.urls = urls
        self.connections = connections
        self.cpu = cpu
        self.open_time_limit = open_time_limit
        self.child: Child | None = None
        self.opened = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[float]] = {}

    async def start(self) -> None:
        port = free_port()
        self.child = self.fleet.python(
            self.name,
            [
                "-m", "bench.receivers",
                "--urls", ",".join(self.urls),
                "--connections", str(self.connections),
                "--control", str(port),
                "--time-limit", str(self.open_time_limit),
            ],
            self.cpu,
        )  # fmt: skip
        await wait_listening(self.child, port)
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                message = json.loads(line)
                if "done" in message:
                    waiter = self._waiting.pop(message["done"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(message["at"])
                else:
                    self._answers.put_nowait(message)
        self._answers.put_nowait({"error": "the control connection closed"})

    async def _ask(self, op: str, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        assert self._writer is not None and self.child is not None, "ask before start()"
        self._writer.write(json.dumps({"op": op}).encode() + b"\n")
        try:
            answer = await asyncio.wait_for(self._answers.get(), timeout)
        except TimeoutError:
            answer = {"error": f"no answer to {op!r} within {timeout:g} s"}
        if "error" in answer:
            raise BenchFailure(f"{self.name}: {answer['error']}\n{self.child.log_tail()}")
        return answer

    async def open(self) -> dict[str, Any]:
        """Open every connection; a connection that failed fails the run."""
        answer = await self._ask("open", self.open_time_limit + 30)
        self.opened = answer["opened"]
        if answer["failures"] or self.opened != self.connections:
            raise BenchFailure(
                f"{self.name}: {answer['failures']} of {self.connections} connections failed"
            )
        return answer

    def expect(self, payload: str) -> asyncio.Future[float]:
        """Resolves to the `time.monotonic()` at which every connection had `payload`; ask
        before the payload is sent."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[payload] = waiter
        return waiter

    def forget(self, payload: str) -> None:
        """A fan-out given up on: a late report of it is dropped."""
        self._waiting.pop(payload, None)

    async def counts(self) -> dict[str, Any]:
        return await self._ask("counts")

    async def close_connections(self) -> None:
        await self._ask("close")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self.child is not None:
            self.fleet.stop(self.child)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receivers", description=__doc__)
    parser.add_argument("--urls", required=True, help="ws:// URLs, comma-separated")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--control", type=int, required=True, help="control port on 127.0.0.1")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds to open them")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
