"""The cluster benchmark: `python -m bench.cluster` (run by `make bench` after `bench.run`).

Commands forwarded over UDP from node A to node B, against local delivery on B, in one run:

1. throughput: 100 connections on B; four posters send bodies of 100 single-connection `send`
   commands, either to B (local delivery) or to A (each body forwarded to B as one message);
2. the latency one hop adds at light load: one connection, one command at a time, posted to B
   or to A; post-to-receipt p50 and p99, the hop being forwarded minus local;
3. throughput through a UDP proxy that loses 10% of datagrams both ways, against the same
   proxy losing none.

Both nodes run on CPU 0 (so forwarding cannot win by using a second core); the generator, the
origin and the proxy run on CPU 1. Writes bench/results/cluster.json and the "Cluster" section
of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from dataclasses import dataclass
from typing import Any

from picows import WSMsgType, WSTransport

from bench import client as load
from bench.common import progress, raise_nofile_limit, run, write_section
from bench.procs import REPO, Child, Fleet, free_port, wait_listening
from bench.stats import percentile
from runtime.transports.http1_client import HttpClient
from tests.udp_proxy import FaultyUdpProxy

# Hex: passed as flag values, where a URL-safe token starting with "-" reads as a flag.
SECRET = secrets.token_hex(24)
TOKEN = secrets.token_hex(16)
NODE_CPU, GENERATOR_CPU = 0, 1
SECTION = "## Cluster: commands forwarded over UDP"

TARGETS = {
    "forwarded_ratio": 0.50,  # forwarded rate / local rate, at least
    "hop_p50_ms": 0.3,  # at most
    "hop_p99_ms": 2.0,  # at most
    "lossy_ratio": 0.30,  # rate at 10% loss / lossless rate, at least
}


@dataclass(frozen=True)
class Plan:
    connections: int = 100
    posters: int = 4
    warmup: float = 1.0
    seconds: float = 3.0
    rounds: int = 3
    latency_samples: int = 1000
    loss: float = 0.10


QUICK = Plan(posters=2, warmup=0.3, seconds=0.7, rounds=1, latency_samples=100)


class Counting(load.WSListener):  # type: ignore[misc]
    """Counts the messages a connection receives; wakes whoever waits for the next one."""

    def __init__(self, tally: dict[str, Any]) -> None:
        self.tally = tally

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        if frame.msg_type is WSMsgType.TEXT:
            self.tally["received"] += 1
            waiter = self.tally.get("waiter")
            if waiter is not None and not waiter.done():
                waiter.set_result(time.perf_counter())


@dataclass
class Pair:
    a_commands: str
    b_commands: str
    b_ws: str
    origin: str
    children: list[Child]


class ClusterBench:
    def __init__(self, plan: Plan, fleet: Fleet) -> None:
        self.plan = plan
        self.fleet = fleet

    async def start_pair(
        self,
        label: str,
        udp: tuple[int, int] | None = None,
        advertise: tuple[int, int] | None = None,
    ) -> Pair:
        """Nodes A and B, and one origin that learns B's connection IDs from CONNECT events.

        `udp`: the nodes' peer ports; `advertise`: the ports they tell peers (a proxy's).
        """
        origin_port = free_port()
        udp = udp or (free_port(), free_port())
        ports = {
            name: (free_port(), free_port(), port) for name, port in zip("ab", udp, strict=True)
        }
        advertise = advertise or udp
        peer_ports = {"a": advertise[0], "b": advertise[1]}
        children = []
        origin = self.fleet.python(
            f"cluster-origin-{label}",
            [
                "-m", "bench.origin",
                "--listen", f"127.0.0.1:{origin_port}",
                "--commands-url", f"http://127.0.0.1:{ports['b'][1]}/commands",
                "--token", TOKEN,
            ],
            GENERATOR_CPU,
        )  # fmt: skip
        children.append(origin)
        for name, other in (("a", "b"), ("b", "a")):
            ws, cmd, udp = ports[name]
            node = self.fleet.python(
                f"cluster-node-{name}-{label}",
                [
                    "-m", "runtime", "serve",
                    "--listen", f"127.0.0.1:{ws}",
                    "--command-listen", f"127.0.0.1:{cmd}",
                    "--command-token", TOKEN,
                    "--origin-url", f"http://127.0.0.1:{origin_port}/events",
                    "--peer-listen", f"127.0.0.1:{udp}",
                    "--peer-advertise", f"127.0.0.1:{peer_ports[name]}",
                    "--peers", f"127.0.0.1:{peer_ports[other]}",
                    "--peer-secret", SECRET,
                    "--peer-metrics-interval", "0",
                    "--keepalive-interval", "0",
                    "--log-level", "WARNING",
                    "--log-format", "json",
                ],
                NODE_CPU,
            )  # fmt: skip
            children.append(node)
            await wait_listening(node, cmd)
        await wait_listening(origin, origin_port)
        return Pair(
            a_commands=f"http://127.0.0.1:{ports['a'][1]}/commands",
            b_commands=f"http://127.0.0.1:{ports['b'][1]}/commands",
            b_ws=f"ws://127.0.0.1:{ports['b'][0]}/",
            origin=f"http://127.0.0.1:{origin_port}",
            children=children,
        )

    async def connect(self, pair: Pair, tally: dict[str, Any]) -> tuple[list[Any], list[str]]:
        opened, failures = await load.open_many(
            pair.b_ws, self.plan.connections, lambda _: Counting(tally)
        )
        if failures:
            raise RuntimeError(f"{failures} connections to node B failed")
        ids_client = HttpClient(f"{pair.origin}/ids")
        deadline = time.monotonic() + 10
        ids: list[str] = []
        while len(ids) < self.plan.connections and time.monotonic() < deadline:
            ids = (await ids_client.request("GET")).json()
            await asyncio.sleep(0.05)
        await ids_client.close()
        if len(ids) < self.plan.connections:
            raise RuntimeError(f"the origin saw {len(ids)} of {self.plan.connections} CONNECTs")
        return opened, ids

    async def wait_peers_up(self, url: str) -> None:
        stats = HttpClient(
            url.rsplit("/", 1)[0] + "/stats", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        deadline = time.monotonic() + 10
        try:
            while (await stats.request("GET")).json()["peers"]["peers_up"] < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the two nodes never saw each other")
                await asyncio.sleep(0.05)
        finally:
            await stats.close()

    async def rate(self, url: str, ids: list[str], tally: dict[str, Any]) -> float:
        """Messages delivered per second while posters keep bodies of single-ID sends coming."""
        body = json.dumps(
            {
                "commands": [
                    {"action": "send", "connectionIds": [cid], "data": "x" * 16} for cid in ids
                ]
            }
        ).encode()
        poster = HttpClient(
            url,
            max_connections=self.plan.posters,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            timeout=30,
        )
        stop = time.monotonic() + self.plan.warmup + self.plan.seconds

        async def post_until_stop() -> None:
            while time.monotonic() < stop:
                response = await poster.request("POST", body)
                if response.status != 200:
                    raise RuntimeError(f"/commands answered {response.status}: {response.body!r}")

        posters = [asyncio.create_task(post_until_stop()) for _ in range(self.plan.posters)]
        await asyncio.sleep(self.plan.warmup)
        start, count = time.perf_counter(), tally["received"]
        await asyncio.sleep(self.plan.seconds)
        elapsed, delivered = time.perf_counter() - start, tally["received"] - count
        await asyncio.gather(*posters)
        await poster.close()
        await asyncio.sleep(0.3)  # let the tail arrive before the next phase counts
        return delivered / elapsed

    async def latency(self, url: str, cid: str, tally: dict[str, Any]) -> list[float]:
        """Post-to-receipt times (seconds) of one command at a time to one connection."""
        body = json.dumps(
            {"commands": [{"action": "send", "connectionIds": [cid], "data": "ping"}]}
        ).encode()
        poster = HttpClient(url, headers={"Authorization": f"Bearer {TOKEN}"})
        loop = asyncio.get_running_loop()
        samples = []
        for index in range(self.plan.latency_samples + 50):
            waiter = tally["waiter"] = loop.create_future()
            started = time.perf_counter()
            await poster.request("POST", body)
            received = await asyncio.wait_for(waiter, 5)
            if index >= 50:  # warm-up
                samples.append(received - started)
        tally["waiter"] = None
        await poster.close()
        return samples

    def stop_pair(self, pair: Pair) -> None:
        for child in pair.children:
            self.fleet.stop(child)

    async def measure(self) -> dict[str, Any]:
        plan = self.plan
        results: dict[str, Any] = {"plan": plan.__dict__}
        tally: dict[str, Any] = {"received": 0, "waiter": None}
        _say("direct pair: local vs forwarded throughput and latency")
        pair = await self.start_pair("direct")
        opened, ids = await self.connect(pair, tally)
        await self.wait_peers_up(pair.a_commands)
        local, forwarded = [], []
        for round_ in range(plan.rounds):
            _say(f"throughput round {round_ + 1}/{plan.rounds}")
            local.append(await self.rate(pair.b_commands, ids, tally))
            forwarded.append(await self.rate(pair.a_commands, ids, tally))
        results["local_rate"] = statistics.median(local)
        results["forwarded_rate"] = statistics.median(forwarded)
        results["local_rates"], results["forwarded_rates"] = local, forwarded
        _say("latency")
        local_lat = sorted(await self.latency(pair.b_commands, ids[0], tally))
        forwarded_lat = sorted(await self.latency(pair.a_commands, ids[0], tally))
        for name, samples in (("local", local_lat), ("forwarded", forwarded_lat)):
            results[f"{name}_p50_ms"] = percentile(samples, 0.50) * 1000
            results[f"{name}_p99_ms"] = percentile(samples, 0.99) * 1000
        load.close_all(opened)
        self.stop_pair(pair)

        _say(f"proxied pair: lossless vs {plan.loss:.0%} loss")
        udp = free_port(), free_port()
        proxies = [await FaultyUdpProxy(("127.0.0.1", port), seed=port).start() for port in udp]
        pair = await self.start_pair("proxied", udp, (proxies[0].port, proxies[1].port))
        opened, ids = await self.connect(pair, tally)
        await self.wait_peers_up(pair.a_commands)
        lossless, lossy = [], []
        for round_ in range(plan.rounds):
            _say(f"loss round {round_ + 1}/{plan.rounds}")
            for proxy in proxies:
                proxy.loss = 0.0
            lossless.append(await self.rate(pair.a_commands, ids, tally))
            for proxy in proxies:
                proxy.loss = plan.loss
            lossy.append(await self.rate(pair.a_commands, ids, tally))
        results["lossless_rate"] = statistics.median(lossless)
        results["lossy_rate"] = statistics.median(lossy)
        results["lossless_rates"], results["lossy_rates"] = lossless, lossy
        results["proxy_counts"] = [proxy.counts for proxy in proxies]
        load.close_all(opened)
        self.stop_pair(pair)
        for proxy in proxies:
            proxy.close()
        return results


_say = progress("cluster")


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows: metric, measured, baseline, ratio or value, target and result."""
    forwarded_ratio = r["forwarded_rate"] / r["local_rate"]
    hop50 = r["forwarded_p50_ms"] - r["local_p50_ms"]
    hop99 = r["forwarded_p99_ms"] - r["local_p99_ms"]
    lossy_ratio = r["lossy_rate"] / r["lossless_rate"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    return [
        (
            "forwarded sends/s, 100 connections (A -> B over UDP vs local on B)",
            f"{r['forwarded_rate']:,.0f}",
            f"{r['local_rate']:,.0f}",
            f"{forwarded_ratio:.2f}",
            f">= {TARGETS['forwarded_ratio']:.2f} {verdict(forwarded_ratio >= 0.5)}",
        ),
        (
            "one hop added, p50 (ms)",
            f"{r['forwarded_p50_ms']:.3f}",
            f"{r['local_p50_ms']:.3f}",
            f"+{hop50:.3f} ms",
            f"<= {TARGETS['hop_p50_ms']} ms {verdict(hop50 <= TARGETS['hop_p50_ms'])}",
        ),
        (
            "one hop added, p99 (ms)",
            f"{r['forwarded_p99_ms']:.3f}",
            f"{r['local_p99_ms']:.3f}",
            f"+{hop99:.3f} ms",
            f"<= {TARGETS['hop_p99_ms']} ms {verdict(hop99 <= TARGETS['hop_p99_ms'])}",
        ),
        (
            f"forwarded sends/s at {r['plan']['loss']:.0%} loss vs lossless (both via proxy)",
            f"{r['lossy_rate']:,.0f}",
            f"{r['lossless_rate']:,.0f}",
            f"{lossy_ratio:.2f}",
            f">= {TARGETS['lossy_ratio']:.2f} {verdict(lossy_ratio >= TARGETS['lossy_ratio'])}",
        ),
    ]


def markdown(r: dict[str, Any], command: str, seconds: float) -> str:
    rows = "\n".join(f"| {' | '.join(row)} |" for row in verdicts(r))
    counts = r["proxy_counts"]
    return f"""{SECTION}

Generated by `{command}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} in {seconds:.0f} s.
Two node processes, both pinned to CPU 0, joined by `--peers` over UDP on 127.0.0.1; the
generator (picows clients, HTTP posters), the origin and the fault proxy share CPU 1. One hundred
connections live on node B. Throughput: four posters keep bodies of 100 single-connection `send`
commands coming, posted to B (local delivery) or to A (forwarded to B, each body one peer message);
medians of {r["plan"]["rounds"]} rounds of {r["plan"]["seconds"]} s. Latency: one command at a time
to one connection, from the POST until the client has the message, {r["plan"]["latency_samples"]}
samples each. Loss: the same forwarding through a proxy (`tests/udp_proxy.py`) in front of each
node's peer port, first losing nothing, then {r["plan"]["loss"]:.0%} of datagrams both ways.

| metric | forwarded | baseline | ratio / hop | target |
| --- | ---: | ---: | ---: | --- |
{rows}

Rounds: local {_rates(r["local_rates"])}; forwarded {_rates(r["forwarded_rates"])}; lossless
{_rates(r["lossless_rates"])}; lossy {_rates(r["lossy_rates"])} (sends/s). Proxy counts (to A,
to B): {counts[0]}, {counts[1]}.
"""


def _rates(values: list[float]) -> str:
    return ", ".join(f"{value:,.0f}" for value in values)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else Plan()
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin=not args.no_pin)
    started = time.monotonic()
    try:
        results = await ClusterBench(plan, fleet).measure()
    finally:
        fleet.close()
    seconds = time.monotonic() - started
    rows = verdicts(results)
    for row in rows:
        print(" | ".join(row))
    out = REPO / "bench" / "results" / ("cluster-quick.json" if args.quick else "cluster.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if not args.quick:
        command = ".venv/bin/python -m bench.cluster"
        write_section(REPO / "docs" / "performance.md", markdown(results, command, seconds))
        print("section written to docs/performance.md")
    failed = any("FAIL" in row[-1] for row in rows)
    return 1 if failed and args.strict else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    raise_nofile_limit()
    raise SystemExit(run(main_async(args)))


if __name__ == "__main__":
    main()
