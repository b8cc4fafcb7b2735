"""The local system benchmark: `python -m bench.local` (informational; moto is not AWS).

Measures, in one run, what the system of `python -m runtime local` (what `make run` starts) does:

1. chat latency end to end: two clients in one room, one on each node; client A sends one
   message at a time and the time until client B has it is one sample. The path is client ->
   node 1 -> SQS events queue -> chat origin (polled as Lambda would) -> SNS -> SQS commands
   queue -> either node -> (UDP to node 2, a channel publish) -> client B. The same with both
   clients on node 1, for comparison.
2. events per second one node's pump gets into SQS: the node's own OriginPump and SqsOrigin,
   fed MESSAGE events of many connections, against the same embedded moto server alone in a
   child process. moto slows as a queue grows (tests/aws.py): each round has a fresh queue,
   purged every PURGE_INTERVAL to stay shallow; one more round per kind lets it fill, to show
   by how much.

moto is one Python process emulating SQS and SNS, so these figures say what the local
system carries on this machine, not what AWS would do: there are no targets. The system (or the
moto server) runs on CPU 0, this process (the clients, the pump) on CPU 1. Writes
bench/results/local.json and, for a full run, the "Local system" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any

import boto3
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from bench import report
from bench.client import CONNECT_TIMEOUT
from bench.common import progress, raise_nofile_limit, run, write_section
from bench.procs import REPO, Child, Fleet, free_port, wait_listening
from bench.stats import percentile
from runtime.config import Settings
from runtime.core.outbox import EventOutbox
from runtime.local.provision import provision
from runtime.names import ResourceNames
from runtime.node.origin_pump import OriginPump
from runtime.transports.sqs_origin import SqsOrigin
from runtime.wire import events
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress

SECTION = "## Local system (moto): chat latency and events to SQS"
COMMAND = ".venv/bin/python -m bench.local"
SYSTEM_CPU, HARNESS_CPU = 0, 1
REGION = "us-east-1"
# The local system's own embedded AWS (runtime.local.system.start_aws), alone in a child process.
MOTO_CHILD = (
    "import sys, threading\n"
    "from runtime.local.system import start_aws\n"
    "start_aws('127.0.0.1', int(sys.argv[1]))\n"
    "threading.Event().wait()\n"
)
PURGE_INTERVAL = 0.05  # seconds between purges of a queue kept shallow


@dataclass(frozen=True)
class Plan:
    samples: int = 200
    warmup: int = 20
    latency_seconds: float = 20.0  # the most one latency phase may take
    receive_timeout: float = 5.0  # a message not received by then counts as lost
    text_bytes: int = 100  # a chat line
    connections: int = 100  # connections whose events the pump interleaves
    backlog: int = 2000  # events kept waiting in the pump's outbox
    rounds: int = 3
    warmup_seconds: float = 0.5
    seconds: float = 2.0
    slices: int = 4  # the window cut in equal parts, to show a slowdown as the queue fills


QUICK = Plan(samples=40, warmup=5, latency_seconds=6.0, rounds=1, warmup_seconds=0.3, seconds=1.0)


class ChatClient(WSListener):  # type: ignore[misc]
    """One member of a chat room: learns its ID and who joined, times the text it waits for."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.me: asyncio.Future[str] = loop.create_future()
        self.joined: set[str] = set()
        self.changed = asyncio.Event()
        self.awaited = ""
        self.arrival: asyncio.Future[float] | None = None
        self.stray = 0

    def expect(self, text: str) -> asyncio.Future[float]:
        self.awaited = text
        self.arrival = asyncio.get_running_loop().create_future()
        return self.arrival

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        if frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()
            return
        if frame.msg_type is not WSMsgType.TEXT:
            return
        at = time.perf_counter()
        message = json.loads(frame.get_payload_as_bytes())
        if "you" in message:
            if not self.me.done():
                self.me.set_result(message["you"])
        elif message.get("system"):
            if isinstance(message.get("joined"), str):
                self.joined.add(message["joined"])
                self.changed.set()
        elif message.get("text") == self.awaited and self.arrival and not self.arrival.done():
            self.arrival.set_result(at)
        else:
            self.stray += 1

    async def until_joined(self, member: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while member not in self.joined:
                self.changed.clear()
                await self.changed.wait()


async def join(url: str, room: str) -> tuple[WSTransport, ChatClient]:
    """A client in `room`, once the origin has told it its ID (and subscribed it)."""
    transport, client = await asyncio.wait_for(
        ws_connect(ChatClient, f"{url}?room={room}"), CONNECT_TIMEOUT
    )
    await asyncio.wait_for(client.me, 15)
    return transport, client


async def chat_latency(plan: Plan, sender_url: str, receiver_url: str, room: str) -> dict[str, Any]:
    """Send-to-receipt times of one message at a time from A to B, in ms, and what was lost."""
    a_transport, a = await join(sender_url, room)
    b_transport, b = await join(receiver_url, room)
    try:
        b_id = await b.me
        # Both have seen B's join notice: no system message competes with the first samples.
        await a.until_joined(b_id, 15)
        await b.until_joined(b_id, 15)
        samples: list[float] = []
        lost = sent = 0
        deadline = time.monotonic() + plan.latency_seconds
        for index in range(plan.warmup + plan.samples):
            if time.monotonic() > deadline:
                break
            text = f"{index} ".ljust(plan.text_bytes, "x")
            arrival = b.expect(text)
            started = time.perf_counter()
            a_transport.send(WSMsgType.TEXT, json.dumps({"room": room, "text": text}).encode())
            sent += 1
            try:
                received = await asyncio.wait_for(arrival, plan.receive_timeout)
            except TimeoutError:
                lost += 1
                continue
            if index >= plan.warmup:
                samples.append((received - started) * 1000)
    finally:
        a_transport.disconnect()
        b_transport.disconnect()
    return {"sent": sent, "lost": lost, "stray": b.stray, **_summary(samples)}


def _summary(ms: list[float]) -> dict[str, Any]:
    if len(ms) < 2:
        return {"samples": len(ms), "p50_ms": None, "p99_ms": None, "mean_ms": None}
    return {
        "samples": len(ms),
        "p50_ms": percentile(ms, 0.50),
        "p99_ms": percentile(ms, 0.99),
        "mean_ms": statistics.fmean(ms),
        "max_ms": max(ms),
    }


async def wait_for_lines(child: Child, prefix: str, count: int, timeout: float) -> list[str]:
    """The child's first `count` log lines starting with `prefix` (its stdout goes to its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        lines = [
            line.removeprefix(prefix).strip()
            for line in child.log_path.read_text(errors="replace").splitlines()
            if line.startswith(prefix)
        ]
        if len(lines) >= count:
            return lines[:count]
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{child.name} printed no {prefix!r} within {timeout:g} s")


async def measure_chat(plan: Plan, fleet: Fleet) -> dict[str, Any]:
    ports = [free_port() for _ in range(6)]
    system = fleet.python(
        "local-system",
        [
            "-m", "runtime", "local",
            "--aws-port", str(ports[0]),
            "--page-port", str(ports[1]),
            "--node-ports", f"{ports[2]},{ports[3]}",
            "--peer-ports", f"{ports[4]},{ports[5]}",
        ],
        SYSTEM_CPU,
    )  # fmt: skip
    try:
        started = time.monotonic()
        await wait_for_lines(system, "aws: ", 1, 60)  # printed last, once all is up
        nodes = await wait_for_lines(system, "node: ", 2, 1)
        results: dict[str, Any] = {"startup_seconds": time.monotonic() - started}
        _say(f"system up in {results['startup_seconds']:.1f} s; latency across nodes")
        results["across"] = await chat_latency(plan, nodes[0], nodes[1], "bench")
        _say("latency on one node")
        results["one_node"] = await chat_latency(plan, nodes[0], nodes[0], "bench-one-node")
        return results
    finally:
        fleet.stop(system)


class EventSource:
    """MESSAGE events of many connections, encoded as the node encodes them."""

    def __init__(self, connections: int, text_bytes: int) -> None:
        issuer = ConnectionIdIssuer(REGION, NodeAddress("127.0.0.1", 9101))
        details = events.HandshakeDetails(
            path="/", headers=[("host", "127.0.0.1"), ("user-agent", "bench")], query=[],
            source_ip="127.0.0.1", subprotocol=None,
        )  # fmt: skip
        context = events.NodeContext(stage="bench", region=REGION)
        now = int(time.time() * 1000)
        self.connections = [
            (connection_id, events.connection_fragment(context, connection_id, now, details))
            for connection_id in (issuer.issue() for _ in range(connections))
        ]
        self.sequences = [1] * connections  # 0 was the CONNECT
        self.text = "x" * text_bytes
        self.next = 0

    def fill(self, pump: OriginPump, backlog: int) -> None:
        now_ms = int(time.time() * 1000)
        while len(pump.outbox) < backlog:
            index = self.next = (self.next + 1) % len(self.connections)
            connection_id, fragment = self.connections[index]
            sequence = self.sequences[index]
            self.sequences[index] += 1
            event = events.message_event(
                fragment, sequence, now_ms, events.DEFAULT_ROUTE, self.text
            )
            pump.add(connection_id, event)


async def pump_round(
    plan: Plan, endpoint: str, moto: Child, environment: str, fifo: bool, purge: bool
) -> dict[str, Any]:
    """Events per second the pump gets into a fresh queue, in slices of the window.

    `purge`: empty the queue every PURGE_INTERVAL, as a consumer would, so that it stays
    shallow; otherwise it fills, and each call costs moto more (it scans the queue per message).
    """
    sqs, sns = (
        boto3.client(name, region_name=REGION, endpoint_url=endpoint) for name in ("sqs", "sns")
    )
    resources = await asyncio.to_thread(provision, sqs, sns, ResourceNames(environment, fifo=fifo))
    url = resources.events_queue_url
    origin = SqsOrigin(
        url,
        region=REGION,
        endpoint_url=endpoint,
        concurrency=Settings.origin_concurrency,
        keepalive_group="keepalive-bench",
    )
    await origin.start()
    pump = OriginPump(
        EventOutbox(max_bytes=Settings.event_buffer_bytes, max_events=Settings.event_buffer_events),
        origin,
    )
    source = EventSource(plan.connections, plan.text_bytes)
    source.fill(pump, plan.backlog)
    pump.start()

    async def feed() -> None:
        while True:
            source.fill(pump, plan.backlog)
            await asyncio.sleep(0.002)

    async def empty() -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            await asyncio.to_thread(sqs.purge_queue, QueueUrl=url)

    helpers = [asyncio.create_task(feed())]
    if purge:
        helpers.append(asyncio.create_task(empty()))

    def mark() -> tuple[float, int, float, float]:
        return time.perf_counter(), pump.delivered, moto.cpu_seconds(), time.process_time()

    try:
        await asyncio.sleep(plan.warmup_seconds)
        marks = [mark()]
        for _ in range(plan.slices):
            await asyncio.sleep(plan.seconds / plan.slices)
            marks.append(mark())
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await pump.stop()
        await origin.close()
    depth = await asyncio.to_thread(
        sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    (t0, n0, moto0, own0), (t1, n1, moto1, own1) = marks[0], marks[-1]
    return {
        "purge": purge,
        "rate": (n1 - n0) / (t1 - t0),
        "slice_rates": [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(marks)],
        "moto_cpu": (moto1 - moto0) / (t1 - t0),
        "harness_cpu": (own1 - own0) / (t1 - t0),
        "queue_depth": int(depth["Attributes"]["ApproximateNumberOfMessages"]),
        "failures": pump.failures,
        "calls": origin.counters["calls"],
        "delivered": pump.delivered,
    }


async def measure_pump(plan: Plan, fleet: Fleet) -> dict[str, Any]:
    port = free_port()
    moto = fleet.python("local-moto", ["-c", MOTO_CHILD, str(port)], SYSTEM_CPU)
    try:
        await wait_listening(moto, port)
        endpoint = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {}
        for kind, fifo in (("fifo", True), ("standard", False)):
            rounds = []
            for index in range(plan.rounds):
                _say(f"events to SQS, {kind} queue kept shallow, round {index + 1}/{plan.rounds}")
                environment = f"bench-{kind[0]}{index}"
                rounds.append(await pump_round(plan, endpoint, moto, environment, fifo, True))
            _say(f"events to SQS, {kind} queue filling")
            filling = await pump_round(plan, endpoint, moto, f"bench-{kind[0]}-fill", fifo, False)
            results[kind] = {
                "rate": statistics.median(r["rate"] for r in rounds),
                "rounds": rounds,
                "filling": filling,
            }
        return results
    finally:
        fleet.stop(moto)


_say = progress("local")


def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Metric and measured figure, for the console and the report."""
    out: list[tuple[str, str]] = []
    for key, label in (("across", "two nodes"), ("one_node", "one node")):
        lat = r["chat"][key]
        figures = (
            f"p50 {lat['p50_ms']:.1f}, p99 {lat['p99_ms']:.1f}, mean {lat['mean_ms']:.1f}"
            if lat["p50_ms"] is not None
            else "no samples"
        )
        out.append(
            (
                f"chat latency A -> B, {label} (ms; {lat['samples']} samples, {lat['lost']} lost)",
                figures,
            )
        )
    for kind in ("fifo", "standard"):
        pump = r["pump"][kind]
        filling = pump["filling"]
        out.append(
            (
                f"events/s into a {kind} queue kept shallow (purged every "
                f"{PURGE_INTERVAL:g} s; median of {len(pump['rounds'])} rounds)",
                f"{pump['rate']:,.0f}",
            )
        )
        out.append(
            (
                f"events/s into a {kind} queue left to fill (to {filling['queue_depth']:,}), "
                f"by quarter of the window",
                ", ".join(f"{rate:,.0f}" for rate in filling["slice_rates"]),
            )
        )
    return out


def markdown(r: dict[str, Any], seconds: float) -> str:
    plan, meta = r["plan"], r["machine"]
    table = "\n".join(f"| {metric.strip()} | {figure} |" for metric, figure in rows(r))
    pin = (
        f"the system (or moto alone) on CPU {SYSTEM_CPU}, this process on CPU {HARNESS_CPU}"
        if meta["pinned"]
        else "not pinned"
    )
    cpu = "; ".join(
        f"{kind}: moto {_mean(p['rounds'], 'moto_cpu'):.0%} of a core, "
        f"pump {_mean(p['rounds'], 'harness_cpu'):.0%}"
        for kind, p in r["pump"].items()
    )
    paragraphs = [
        f"Generated by `{COMMAND}` on {meta['date']} in {seconds:.0f} s; {meta['nproc']} CPUs "
        f"({meta['cpu_model']}), Python {meta['python']}, moto {r['moto_version']}; {pin}. "
        "Informational: moto is one Python process standing in for SQS and SNS, so "
        "there are no targets.",
        "Chat latency: `python -m runtime local` (embedded moto, two nodes, the chat origin "
        "polled as Lambda would, all in one process) with two picows clients in one room, on "
        f"different nodes, then both on node 1; one {plan['text_bytes']}-byte message at a time "
        f"from A, timed until B has it; {plan['samples']} samples after {plan['warmup']} warm-up. "
        "Either node may receive the command from the commands queue, so a message may take one "
        "UDP hop more in either case. About four moto calls lie on the path (SendMessageBatch, "
        "ReceiveMessage, PublishBatch, ReceiveMessage), sharing one core with the nodes and the "
        "origin.",
        "Events to SQS: the node's own `OriginPump` and `SqsOrigin` (concurrency "
        f"{Settings.origin_concurrency}, 10 events per SendMessageBatch), fed "
        f"{plan['text_bytes']}-byte MESSAGE events of {plan['connections']} connections, sent "
        "into a fresh queue per round on the local system's moto, alone in a child process; "
        f"{plan['rounds']} rounds of {plan['seconds']:g} s with the queue purged every "
        f"{PURGE_INTERVAL:g} s (as if a consumer kept up), then one round leaving it to fill. "
        "moto's FIFO queues recompute every queue attribute, scans of the whole queue among "
        "them, for each message they take, so they cost milliseconds of moto CPU per message "
        "even when nearly empty; and every queue slows as it grows. CPU while kept shallow: "
        f"{cpu}.",
    ]
    text = "\n\n".join(textwrap.fill(paragraph, 100) for paragraph in paragraphs)
    return f"{SECTION}\n\n{text}\n\n| metric | measured |\n| --- | --- |\n{table}\n"


def _mean(rounds: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(r[key] for r in rounds)


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else Plan()
    pin = not args.no_pin and {SYSTEM_CPU, HARNESS_CPU} <= os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {HARNESS_CPU})
    # Fake credentials for boto3 here and in the children: everything talks to moto.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    os.environ["AWS_DEFAULT_REGION"] = REGION
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin=pin)
    started = time.monotonic()
    try:
        chat = await measure_chat(plan, fleet)
        pump = await measure_pump(plan, fleet)
    finally:
        fleet.close()
    seconds = time.monotonic() - started
    results = {
        "plan": asdict(plan),
        "machine": report.machine(pin, SYSTEM_CPU if pin else None, HARNESS_CPU if pin else None),
        "moto_version": version("moto"),
        "seconds": seconds,
        "chat": chat,
        "pump": pump,
    }
    for metric, figure in rows(results):
        print(f"{metric} | {figure}")
    out = REPO / "bench" / "results" / ("local-quick.json" if args.quick else "local.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"({seconds:.0f} s; raw results in {out})")
    if not args.quick:
        write_section(REPO / "docs" / "performance.md", markdown(results, seconds))
        print("section written to docs/performance.md")
    lost = sum(chat[key]["lost"] for key in ("across", "one_node"))
    failures = sum(
        r["failures"] for kind in pump.values() for r in [*kind["rounds"], kind["filling"]]
    )
    if lost or failures:
        print(f"warning: {lost} chat messages lost, {failures} failed batches to SQS")
    return 1 if args.strict and (lost or failures) else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.local", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if a message was lost or a batch failed"
    )
    args = parser.parse_args()
    raise_nofile_limit()
    # SIGTERM (timeout, make) unwinds through `finally`, so the children are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(run(main_async(args)))


if __name__ == "__main__":
    main()
