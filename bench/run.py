"""The benchmark: `python -m bench.run` (`make bench`); `--quick` makes it a short smoke run.

One run measures, on this machine and each against a baseline measured in the same run:

1. echo throughput with 100 connections x 10 messages in flight: the node (client -> node -> HTTP
   origin -> /commands -> node -> client) vs a bare `websockets` echo server;
2. round-trip latency at light load (1 connection, 1 message in flight), p50 and p99;
3. RSS per idle connection at 10,000 connections (fresh server processes);
4. time until all 10,000 clients have one message: one `send` command naming them all vs
   `websockets.asyncio.server.broadcast` in the bare server.

Servers run on one core (`taskset -c 0`); the load generator (this process) and the node's origin
on the other. A picows echo server, far faster than either, shows the generator is not the limit.
Results: a table on stdout, bench/results/<full|quick>.json, and docs/performance.md (full runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

try:
    from picows import WSMsgType, ws_connect
except ImportError:  # the load generator's client; not in the node's requirements
    sys.exit("bench needs picows (the load generator's client): .venv/bin/pip install picows")

from bench import client, report
from bench.common import COMPARE_TITLE, progress, raise_nofile_limit, run, section_of
from bench.procs import REPO, Child, Fleet, MachineWindow, free_port, pick_cpus, wait_listening


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    tp_connections: int = 100
    tp_in_flight: int = 10
    tp_warmup: float = 1.5
    tp_seconds: float = 3.0
    lat_count: int = 2000
    lat_warmup: int = 200
    lat_seconds: float = 3.0
    idle_connections: int = 10_000
    broadcast_rounds: int = 9
    load_rounds: int = 3
    payload_bytes: int = 64


QUICK = Plan(
    quick=True,
    tp_connections=10,
    tp_in_flight=2,
    tp_warmup=0.3,
    tp_seconds=1.0,
    lat_count=200,
    lat_warmup=20,
    lat_seconds=1.0,
    idle_connections=200,
    broadcast_rounds=2,
    load_rounds=1,
)


@dataclass
class Target:
    """A server under test: a baseline process, or a node with its origin."""

    name: str
    url: str
    server: Child
    control_url: str | None = None  # baselines: broadcast trigger
    origin: Child | None = None
    origin_url: str = ""
    command_url: str = ""
    token: str = ""


class CpuWindow:
    """CPU used by each of our processes over a window, and by everything else on the machine.

    "others" is the busy time of all CPUs minus our processes and minus interrupt time (the kernel's
    loopback network work lands there): another workload on the machine during a measurement makes
    its figures less trustworthy, so it is reported (`procs.MachineWindow` measures it).
    """

    def __init__(self, target: Target) -> None:
        self.children = {"server": target.server}
        if target.origin is not None:
            self.children["origin"] = target.origin
        self._start: dict[str, float] = {}
        self._end: dict[str, float] = {}
        self._machine: MachineWindow | None = None
        self._noise: dict[str, float] = {}

    def _snapshot(self) -> dict[str, float]:
        snap = {name: child.cpu_seconds() for name, child in self.children.items()}
        mine = os.times()
        snap["generator"] = mine.user + mine.system
        snap["_wall"] = time.perf_counter()
        return snap

    def start(self) -> None:
        # Children may be added after construction (bench.aws adds its stand-in), not after this.
        self._machine = MachineWindow(list(self.children.values()))
        self._start = self._snapshot()

    def stop(self) -> None:
        self._end = self._snapshot()
        assert self._machine is not None, "stop() before start()"
        self._noise = self._machine.result()

    def result(self) -> dict[str, Any]:
        delta = {key: self._end[key] - self._start[key] for key in self._start}
        wall = delta.pop("_wall") or 1e-9
        return {
            "wall_seconds": round(wall, 3),
            "seconds": {name: round(value, 4) for name, value in delta.items()},
            "percent": {name: round(100 * value / wall, 1) for name, value in delta.items()},
            "others_percent": self._noise["others_percent"],
            "interrupts_percent": self._noise["interrupts_percent"],
            "steal_percent": self._noise["steal_percent"],
        }


def combine_throughput(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median rate of the rounds; CPU figures over all of them together."""
    out = dict(rounds[len(rounds) // 2])
    out["rate"] = statistics.median(r["rate"] for r in rounds)
    out["rates"] = [r["rate"] for r in rounds]
    out["messages"] = sum(r["messages"] for r in rounds)
    out["seconds"] = sum(r["seconds"] for r in rounds)
    out["unanswered"] = sum(r["unanswered"] for r in rounds)
    out["connect_failures"] = sum(r["connect_failures"] for r in rounds)
    out["cpu"] = _combine_cpu([r["cpu"] for r in rounds])
    out["cpu_us_per_message"] = {
        name: round(1e6 * seconds / max(1, out["messages"]), 2)
        for name, seconds in out["cpu"]["seconds"].items()
    }
    if "counters" in rounds[0]:
        out["counters"] = {
            key: sum(r["counters"].get(key, 0) for r in rounds) for key in rounds[0]["counters"]
        }
    return out


def combine_latency(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each round's percentiles; CPU per round trip over all of them together."""
    out: dict[str, Any] = {
        key: statistics.median(r[key] for r in rounds)
        for key in ("p50_us", "p90_us", "p99_us", "mean_us")
    }
    out["max_us"] = max(r["max_us"] for r in rounds)
    out["p50s"] = [r["p50_us"] for r in rounds]
    out["samples"] = sum(r["samples"] for r in rounds)
    out["round_trips"] = sum(r["round_trips"] for r in rounds)
    out["cpu"] = _combine_cpu([r["cpu"] for r in rounds])
    out["cpu_us_per_round_trip"] = {
        name: round(1e6 * seconds / max(1, out["round_trips"]), 1)
        for name, seconds in out["cpu"]["seconds"].items()
    }
    return out


def _combine_cpu(windows: list[dict[str, Any]]) -> dict[str, Any]:
    wall = sum(w["wall_seconds"] for w in windows) or 1e-9
    seconds = {name: sum(w["seconds"][name] for w in windows) for name in windows[0]["seconds"]}

    def weighted(key: str) -> float:
        return round(sum(w[key] * w["wall_seconds"] for w in windows) / wall, 1)

    return {
        "wall_seconds": round(wall, 3),
        "seconds": seconds,
        "percent": {name: round(100 * value / wall, 1) for name, value in seconds.items()},
        "others_percent": weighted("others_percent"),
        "interrupts_percent": weighted("interrupts_percent"),
        "steal_percent": weighted("steal_percent"),
    }


def payload_text(size: int, tag: str = "echo") -> bytes:
    head = f'{{"action":"{tag}","pad":"'
    tail = '"}'
    return (head + "x" * max(0, size - len(head) - len(tail)) + tail).encode()


class Bench:
    def __init__(self, plan: Plan, fleet: Fleet, server_cpu: int, load_cpu: int, ack: str):
        self.plan = plan
        self.fleet = fleet
        self.server_cpu = server_cpu
        self.load_cpu = load_cpu
        self.ack = ack
        self.session: aiohttp.ClientSession | None = None

    # Servers

    async def start_baseline(self, kind: str, label: str) -> Target:
        port = free_port()
        child = self.fleet.python(
            f"{kind}-{label}",
            ["-m", "bench.servers", kind, "--listen", f"127.0.0.1:{port}"],
            self.server_cpu,
        )
        await wait_listening(child, port)
        return Target(
            kind,
            f"ws://127.0.0.1:{port}/",
            child,
            control_url=f"ws://127.0.0.1:{port}/control",
        )

    async def start_node(self, label: str) -> Target:
        ws_port, command_port, origin_port = free_port(), free_port(), free_port()
        token = secrets.token_hex(16)  # hex: a flag value never starting with "-"
        command_url = f"http://127.0.0.1:{command_port}/commands"
        origin = self.fleet.python(
            f"origin-{label}",
            [
                "-m",
                "bench.origin",
                "--listen",
                f"127.0.0.1:{origin_port}",
                "--commands-url",
                command_url,
                "--token",
                token,
                "--ack",
                self.ack,
            ],
            self.load_cpu,
        )
        await wait_listening(origin, origin_port)
        node = self.fleet.python(
            f"node-{label}",
            [
                "-m",
                "runtime",
                *_node_flags(ws_port, command_port, token),
                "--origin-url",
                f"http://127.0.0.1:{origin_port}/events",
            ],
            self.server_cpu,
        )
        await wait_listening(node, ws_port)
        await wait_listening(node, command_port)
        return Target(
            "node",
            f"ws://127.0.0.1:{ws_port}/",
            node,
            origin=origin,
            origin_url=f"http://127.0.0.1:{origin_port}",
            command_url=command_url,
            token=token,
        )

    async def start_node_echo(self, label: str) -> Target:
        """The node with its built-in echo origin: its own path without HTTP (a diagnostic)."""
        ws_port, command_port = free_port(), free_port()
        token = secrets.token_hex(16)
        node = self.fleet.python(
            f"node-echo-{label}",
            [
                "-m",
                "runtime",
                *_node_flags(ws_port, command_port, token),
                "--origin-transport",
                "echo",
            ],
            self.server_cpu,
        )
        await wait_listening(node, ws_port)
        return Target("node-echo", f"ws://127.0.0.1:{ws_port}/", node)

    def stop(self, target: Target) -> None:
        self.fleet.stop(target.server)
        if target.origin is not None:
            self.fleet.stop(target.origin)

    async def _get_json(self, url: str, token: str = "") -> Any:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(url, headers=headers) as response:
            response.raise_for_status()
            return await response.json()

    async def node_stats(self, target: Target) -> dict[str, Any]:
        return await self._get_json(target.command_url.rsplit("/", 1)[0] + "/stats", target.token)

    async def origin_stats(self, target: Target) -> dict[str, Any]:
        return await self._get_json(target.origin_url + "/stats")

    # Phases

    async def throughput(self, target: Target) -> dict[str, Any]:
        plan = self.plan
        window = CpuWindow(target)
        before = await self._counters(target)
        result = await client.throughput(
            target.url,
            connections=plan.tp_connections,
            in_flight=plan.tp_in_flight,
            warmup=plan.tp_warmup,
            seconds=plan.tp_seconds,
            payload=payload_text(plan.payload_bytes),
            on_window=lambda edge: window.start() if edge == "start" else window.stop(),
        )
        after = await self._counters(target)
        out: dict[str, Any] = asdict(result)
        out["cpu"] = window.result()
        out["cpu_us_per_message"] = {
            name: round(1e6 * seconds / max(1, result.messages), 2)
            for name, seconds in out["cpu"]["seconds"].items()
        }
        if after:
            out["counters"] = {key: after[key] - before.get(key, 0) for key in after}
        return out

    async def _counters(self, target: Target) -> dict[str, int]:
        if target.origin is None:
            return {}
        origin = await self.origin_stats(target)
        node = await self.node_stats(target)
        counters = {f"origin.{k}": v for k, v in origin.items() if isinstance(v, int)}
        counters.update(
            {
                f"node.{k}": v
                for k, v in node.items()
                if isinstance(v, int) and not isinstance(v, bool)
            }
        )
        return counters

    async def latency(self, target: Target) -> dict[str, Any]:
        plan = self.plan
        window = CpuWindow(target)
        window.start()
        result = await client.latency(
            target.url,
            count=plan.lat_count,
            warmup=plan.lat_warmup,
            max_seconds=plan.lat_seconds,
            payload=payload_text(plan.payload_bytes),
        )
        window.stop()
        out: dict[str, Any] = asdict(result)
        out["cpu"] = window.result()
        round_trips = max(1, result.round_trips)
        out["cpu_us_per_round_trip"] = {
            name: round(1e6 * seconds / round_trips, 1)
            for name, seconds in out["cpu"]["seconds"].items()
        }
        return out

    async def idle_and_broadcast(self, target: Target) -> dict[str, Any]:
        """RSS per idle connection, then broadcast rounds to all of them."""
        plan = self.plan
        n = plan.idle_connections
        # Warm the server's code paths (lazy imports, first origin request), then let it settle.
        warm, _ = await client.open_many(target.url, 50, lambda _: client.quiet_listener())
        client.close_all(warm)
        await self._settled(target, 0)
        rss_before = await target.server.stable_rss()

        watch = client.BroadcastWatch()
        started = time.perf_counter()
        cpu_before = target.server.cpu_seconds()
        opened, failures = await client.open_many(
            target.url, n, client.idle_listener(watch), time_limit=60.0
        )
        connect_seconds = time.perf_counter() - started
        try:
            await self._settled(target, len(opened))
            cpu_per_connection = (target.server.cpu_seconds() - cpu_before) / max(1, len(opened))
            rss_after = await target.server.stable_rss()
            out: dict[str, Any] = {
                "connections": len(opened),
                "connect_failures": failures,
                "connect_seconds": round(connect_seconds, 2),
                "server_cpu_us_per_connection": round(1e6 * cpu_per_connection, 1),
                "rss_before": rss_before,
                "rss_after": rss_after,
                "bytes_per_connection": (rss_after - rss_before) / max(1, len(opened)),
            }
            out["broadcast"] = await self._broadcast_rounds(target, watch, len(opened))
        finally:
            client.close_all(opened)
        return out

    async def _settled(self, target: Target, connections: int, timeout: float = 20.0) -> None:
        """Node: until it holds `connections` and delivered every event. Baselines: 0.5 s."""
        if target.origin is None:
            await asyncio.sleep(0.5)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = await self.node_stats(target)
            if stats["connections"] == connections and stats["bufferedEvents"] == 0:
                await asyncio.sleep(0.3)
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"node did not settle at {connections} connections: {stats}")

    async def _broadcast_rounds(
        self, target: Target, watch: client.BroadcastWatch, count: int
    ) -> dict[str, Any]:
        plan = self.plan
        rounds: list[dict[str, float | int | None]] = []
        if target.origin is not None:
            ids = await self._origin_ids(target, count)
            trigger = None
        else:
            ids = []
            assert target.control_url is not None
            trigger, _ = await asyncio.wait_for(
                ws_connect(client.quiet_listener, target.control_url), client.CONNECT_TIMEOUT
            )
        try:
            for number in range(plan.broadcast_rounds):
                payload = payload_text(plan.payload_bytes, f"broadcast-{number}")
                finished = watch.arm(payload, count)
                acked: float | None = None
                if trigger is None:
                    body = json.dumps(
                        {
                            "commands": [
                                {
                                    "action": "send",
                                    "connectionIds": ids,
                                    "data": payload.decode(),
                                    "isBase64Encoded": False,
                                }
                            ]
                        }
                    ).encode()
                    started = time.perf_counter()
                    await self._post_commands(target, body)
                    acked = time.perf_counter() - started
                else:
                    started = time.perf_counter()
                    trigger.send(WSMsgType.TEXT, payload)
                try:
                    done_at = await asyncio.wait_for(finished, 15.0)
                    seconds: float | None = done_at - started
                except TimeoutError:
                    seconds = None
                rounds.append(
                    {
                        "seconds": seconds,
                        "received": watch.count,
                        "command_answered_seconds": acked,
                    }
                )
                await asyncio.sleep(0.3)
        finally:
            if trigger is not None:
                trigger.disconnect()
        times = [r["seconds"] for r in rounds if r["seconds"] is not None]
        return {
            "rounds": rounds,
            "median_seconds": statistics.median(times) if times else None,
            "min_seconds": min(times) if times else None,
            "complete_rounds": len(times),
            "stray_messages": watch.stray,
        }

    async def _origin_ids(self, target: Target, count: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        ids: list[str] = []
        while time.monotonic() < deadline:
            ids = await self._get_json(target.origin_url + "/ids")
            if len(ids) >= count:
                return ids
            await asyncio.sleep(0.1)
        raise RuntimeError(f"origin knows {len(ids)} connections; expected {count}")

    async def _post_commands(self, target: Target, body: bytes) -> None:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}
        async with self.session.post(target.command_url, data=body, headers=headers) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"/commands answered {response.status}: {text[:200]}")

    # The whole run

    async def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            # Load phases: every server runs at once (idle unless loaded) and the rounds go
            # round-robin over them, so a slow spell of the machine hits every server alike.
            kinds = ("picows", "websockets", "node", "node-echo")
            step = time.perf_counter()
            targets: dict[str, Target] = {}
            try:
                for kind in kinds:
                    targets[kind] = await self._start(kind, "load")
                    results[kind] = {"throughput_rounds": [], "latency_rounds": []}
                for number in range(self.plan.load_rounds):
                    _say(f"throughput round {number + 1}/{self.plan.load_rounds}")
                    for kind in kinds:
                        result = await self.throughput(targets[kind])
                        results[kind]["throughput_rounds"].append(result)
                for number in range(self.plan.load_rounds):
                    _say(f"latency round {number + 1}/{self.plan.load_rounds}")
                    for kind in kinds:
                        result = await self.latency(targets[kind])
                        results[kind]["latency_rounds"].append(result)
            finally:
                for target in targets.values():
                    self.stop(target)
            for entry in results.values():
                entry["throughput"] = combine_throughput(entry["throughput_rounds"])
                entry["latency"] = combine_latency(entry["latency_rounds"])
            _say(f"load phases took {time.perf_counter() - step:.1f} s")
            for kind in ("picows", "websockets", "node"):
                step = time.perf_counter()
                target = await self._start(kind, "idle")
                try:
                    _say(f"{kind}: {self.plan.idle_connections} idle connections and broadcast")
                    results[kind]["idle"] = await self.idle_and_broadcast(target)
                    if target.origin is not None:
                        results[kind]["node_log_warnings"] = target.server.log_lines()
                finally:
                    self.stop(target)
                _say(f"{kind}: idle phases took {time.perf_counter() - step:.1f} s")
        finally:
            await self.session.close()
        return results

    async def _start(self, kind: str, label: str) -> Target:
        if kind == "node":
            return await self.start_node(label)
        if kind == "node-echo":
            return await self.start_node_echo(label)
        return await self.start_baseline(kind, label)


_say = progress("bench")


def _node_flags(ws_port: int, command_port: int, token: str) -> list[str]:
    """`serve` and the flags every benchmarked node shares."""
    return [
        "serve",
        "--listen",
        f"127.0.0.1:{ws_port}",
        "--command-listen",
        f"127.0.0.1:{command_port}",
        "--command-token",
        token,
        "--log-level",
        "WARNING",
        "--log-format",
        "json",
        "--local-only",
        "true",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run with small counts")
    parser.add_argument(
        "--output",
        type=Path,
        help="markdown report path (default: docs/performance.md for a full run; none for --quick)",
    )
    parser.add_argument("--json", type=Path, help="raw results (default bench/results/<mode>.json)")
    parser.add_argument("--ack", choices=("first", "after"), default="first", help="origin mode")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--connections", type=int, help="idle connections (default 10000)")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (full runs)"
    )
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else Plan()
    if args.connections:
        plan = replace(plan, idle_connections=args.connections)
    limit = raise_nofile_limit()
    if limit < plan.idle_connections + 1000:
        print(
            f"error: open-files limit {limit} is too low for {plan.idle_connections} connections",
            file=sys.stderr,
        )
        return 2
    pin, cpus = pick_cpus(args.no_pin, ("server", "load"))
    server_cpu, load_cpu = cpus["server"], cpus["load"]
    if pin:
        os.sched_setaffinity(0, {load_cpu})
    else:
        _say("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")

    mode = "quick" if plan.quick else "full"
    results_dir = REPO / "bench" / "results"
    fleet = Fleet(results_dir / "logs", pin)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    try:
        raw = run(Bench(plan, fleet, server_cpu, load_cpu, args.ack).run())  # type: ignore[arg-type]
    finally:
        fleet.close()
    elapsed = time.perf_counter() - started

    meta = report.machine(pin, server_cpu, load_cpu)
    meta.update({"mode": mode, "seconds": round(elapsed, 1), "ack": args.ack, "plan": asdict(plan)})
    summary = report.summarize(raw, plan.quick)
    document = {"meta": meta, "summary": summary, "raw": raw}
    json_path = args.json or results_dir / f"{mode}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2))
    print(report.table(summary))
    for line in report.noise(raw):
        print(f"warning: {line}; figures of that phase are less trustworthy")
    print(f"\n({mode} run, {elapsed:.0f} s; raw results in {json_path})")
    output = args.output or (None if plan.quick else REPO / "docs" / "performance.md")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        # The other benchmarks write their sections after this one; bench.compare's is not
        # rewritten by `make bench`, so it is kept.
        kept = section_of(output.read_text(), COMPARE_TITLE) if output.exists() else None
        output.write_text(report.markdown(document) + ("\n" + kept if kept else ""))
        print(f"report written to {output}")
    if args.strict and not plan.quick and not all(row["pass"] for row in summary["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
