"""The GraphQL publish benchmark: `python -m bench.graphql` (`--quick`: a smoke run, no report).

GraphQL mode (docs/protocol.md, "GraphQL mode") promises that a `publish` command runs each
distinct subscription input once, through the GraphQL origin, and sends that one result to every
local subscriber of the input. This measures, in one run and on one node:

A. fan-out: N subscribers (half `graphql-transport-ws`, half `graphql-ws`) of ONE input; P
   publishes, one at a time, each timed from the `POST /commands` until the last subscriber has
   the result. Interleaved with them, as the baseline, P `broadcast` commands carrying a message of
   the same size to N other, plain connections to the same node (no subprotocol: a broadcast skips
   GraphQL connections, whose clients would take a bare message for a bad frame; the plain command
   path: no origin, one frame for all). The origin must see exactly P `subscription_query`
   requests, or the run fails.
B. distinct inputs: N subscribers spread over K inputs sharing one key, and N plain connections
   for the broadcasts; every publish must cost exactly K origin executions (each input once), or
   the run fails.

Every client counts what it gets: a GraphQL client must get only its own protocol's messages (a
broadcast reaching one, or any other unexpected frame, fails the run), a plain client only the
broadcasts. The node runs with the echo event origin so that it accepts plain connections (with
`--origin-transport none` it refuses them); the plain clients send nothing, so it stays idle.

The node runs on one core; the load generator (this process, picows clients) on another; the
minimal GraphQL origin (`python -m bench.graphql --serve-origin HOST:PORT`, the node's own HTTP/1.1
server) on a third core when there is one, else beside the generator. To show whether the
generator is the limit, each round of A also times a picows server (on the node's core) broadcasting
the same frame to N more connections of the same generator: about the most it can receive.
Nothing here has a target (no issue sets one): the figures are informational, the execution
counts are checked. Writes bench/results/graphql[-quick].json; a full run also writes the
"GraphQL publish fan-out" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import sys
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import psutil
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from bench import client as load
from bench import report
from bench.common import (
    progress,
    raise_nofile_limit,
    run,
    serve_until_signal,
    write_section,
)
from bench.procs import REPO, Child, Fleet, free_port, wait_listening
from bench.stats import percentile
from runtime.transports.http1 import HttpClient, Request, Response, json_response
from runtime.wire.graphql_ws import LEGACY, MODERN

SECTION = "## GraphQL publish fan-out"
COMMAND = ".venv/bin/python -m bench.graphql"
QUERY = "subscription Tick($digest: String!, $key: String!) { tick }"
KEY_A, KEY_B = "tick:a", "tick:b"
TEXT = WSMsgType.TEXT
ROUND_TIMEOUT = 10.0  # seconds one fan-out may take before it counts as incomplete
MAX_INCOMPLETE = 3  # incomplete rounds before the run gives up
SETUP_TIMEOUT = 60.0  # connecting and subscribing N clients
GENERATOR_WANTED = 2.0  # the generator's ceiling / a figure, for "not the bottleneck" (bench.run)


# Who receives each kind of fan-out: GraphQL subscribers of the node (publish), plain clients of
# the node (broadcast), plain clients of the picows server (picows: the generator's ceiling).
KINDS = ("publish", "broadcast", "picows")
RECIPIENTS = {
    "publish": "node's GraphQL clients",
    "broadcast": "node's plain clients",
    "picows": "picows server's clients",
}


class BenchFailure(Exception):
    """A check failed: the figures would be wrong or meaningless, so no report is written."""


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    subscribers: int = 1000
    publishes: int = 200  # scenario A, measured (each with a broadcast and a picows broadcast)
    warmup: int = 10  # rounds before measuring, in both scenarios
    inputs: int = 10  # scenario B
    distinct_publishes: int = 50  # scenario B, measured
    message_bytes: int = 128  # each client's frame, GraphQL result and broadcast alike
    gap: float = 0.01  # seconds between fan-outs, so that each is timed alone


QUICK = Plan(
    quick=True,
    subscribers=100,
    publishes=20,
    warmup=3,
    distinct_publishes=5,
)


# The GraphQL origin (a child process)


class TickOrigin:
    """Subscribes every operation to the input its variables name; echoes publishes as results.

    Counts each request by type and each `subscription_query` by input digest (`GET /stats`).
    """

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()

    async def route(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/stats":
            return json_response({"requests": self.requests, "queries": self.queries})
        if request.method != "POST" or request.path != "/":
            return json_response({"error": "POST / or GET /stats"}, 404)
        document = json.loads(request.body)
        kind = str(document.get("type"))
        self.requests[kind] += 1
        if kind == "connection_init":
            return json_response({"accept": True})
        if kind == "start":
            variables = document.get("variables") or {}
            subscription = {
                "inputDigest": variables["digest"],
                "inputContext": None,
                "keys": [variables["key"]],
            }
            return json_response({"subscription": subscription})
        if kind == "subscription_query":
            self.queries[document["inputDigest"]] += 1
            return json_response({"result": {"data": {"tick": document["publishContext"]}}})
        return json_response({})  # subscription_keepalive: any object


async def serve_origin(listen: str) -> None:
    await serve_until_signal(TickOrigin().route, listen, name="graphql-origin")


# Messages


def tick_context(seq: int, message_bytes: int) -> dict[str, Any]:
    """A publish context padded so that the result frame a client gets is `message_bytes` long."""
    bare = len(result_text(seq, ""))
    return {"n": seq, "pad": "x" * max(0, message_bytes - bare)}


def result_text(seq: int, pad: str) -> str:
    """The `next` message a graphql-transport-ws client gets (graphql-ws: `data`, as long)."""
    context = json.dumps({"n": seq, "pad": pad}, separators=(",", ":"))
    return '{"id":"1","type":"next","payload":{"data":{"tick":' + context + "}}}"


def marker(seq: int) -> bytes:
    """What identifies round `seq` in any frame of it (the pad follows, hence the comma)."""
    return f'"n":{seq},'.encode()


def subscribe_message(protocol: str, digest: str, key: str) -> bytes:
    kind = "subscribe" if protocol == MODERN else "start"
    payload = {"query": QUERY, "variables": {"digest": digest, "key": key}}
    return json.dumps({"id": "1", "type": kind, "payload": payload}).encode()


# The load generator's side


@dataclass
class Watch:
    """What the clients of one kind wait for: frames carrying the current round's marker.

    One per kind of fan-out (its clients receive nothing else), armed only for that kind's rounds:
    a frame of another round, such as a broadcast reaching a GraphQL client, is unexpected.
    """

    marker: bytes = b""
    target: int = 0
    count: int = 0
    finished: asyncio.Future[float] | None = None
    acked: int = 0
    sizes: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # error / complete / connection_error frames
    unexpected: int = 0
    samples: list[str] = field(default_factory=list)  # the first few unexpected frames
    disconnected: int = 0

    def arm(self, mark: bytes, target: int) -> asyncio.Future[float]:
        self.marker, self.target, self.count = mark, target, 0
        self.finished = asyncio.get_running_loop().create_future()
        return self.finished

    def received(self, payload: bytes) -> None:
        """A frame of the current round (the caller checked the marker)."""
        self.count += 1
        self.sizes.add(len(payload))
        if self.count == self.target and self.finished and not self.finished.done():
            self.finished.set_result(time.perf_counter())

    def stray(self, payload: bytes) -> None:
        self.unexpected += 1
        if len(self.samples) < 3:
            self.samples.append(payload[:200].decode("utf-8", "replace"))


class Subscriber(WSListener):  # type: ignore[misc]
    """A GraphQL client: init, one subscription once acknowledged, then counts the results.

    A result counts only if it is its protocol's message for its operation and carries the
    current publish's marker; anything else but an ack or a keep-alive is unexpected.
    """

    def __init__(self, watch: Watch, protocol: str, digest: str, key: str) -> None:
        self.watch = watch
        self.subscribe = subscribe_message(protocol, digest, key)
        kind = "next" if protocol == MODERN else "data"
        self.result_prefix = f'{{"id":"1","type":"{kind}","payload":'.encode()

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(TEXT, b'{"type":"connection_init","payload":{}}')

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is TEXT:
            payload = frame.get_payload_as_bytes()
            watch = self.watch
            if watch.marker and watch.marker in payload and payload.startswith(self.result_prefix):
                watch.received(payload)
            elif payload.startswith(b'{"type":"connection_ack"'):
                watch.acked += 1
                transport.send(TEXT, self.subscribe)
            elif payload == b'{"type":"ka"}':
                pass
            elif b'"type":"error"' in payload or b'"type":"co' in payload:  # complete, conn. error
                watch.errors.append(payload[:200].decode("utf-8", "replace"))
            else:  # a broadcast, another round's result, the other protocol's message
                watch.stray(payload)
        elif kind is WSMsgType.BINARY:
            self.watch.stray(b"<binary frame>")
        elif kind is WSMsgType.CLOSE:  # the node closing: counted as a disconnection
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.watch.disconnected += 1


class Receiver(WSListener):  # type: ignore[misc]
    """A plain client (no subprotocol), of the node or of the picows server: counts the frames of
    the current round; any other frame is unexpected."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        watch = self.watch
        if kind is TEXT:
            payload = frame.get_payload_as_bytes()
            if watch.marker and watch.marker in payload:
                watch.received(payload)
            else:
                watch.stray(payload)
        elif kind is WSMsgType.BINARY:
            watch.stray(b"<binary frame>")
        elif kind is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.watch.disconnected += 1


async def open_subscribers(
    url: str, specs: list[tuple[str, str, str]], watch: Watch, time_limit: float = SETUP_TIMEOUT
) -> list[WSTransport]:
    """One connection per (protocol, digest, key), 64 handshakes at a time, 3 tries each."""
    opened: list[WSTransport] = []
    failures = 0
    deadline = time.monotonic() + time_limit
    slots = asyncio.Semaphore(64)

    async def one(protocol: str, digest: str, key: str) -> None:
        nonlocal failures
        async with slots:
            for attempt in range(3):
                if time.monotonic() > deadline:
                    break
                try:
                    transport, _ = await asyncio.wait_for(
                        ws_connect(
                            lambda: Subscriber(watch, protocol, digest, key),
                            url,
                            extra_headers={"Sec-WebSocket-Protocol": protocol},
                        ),
                        load.CONNECT_TIMEOUT,
                    )
                except Exception:  # refused, reset, handshake error or timeout: retry
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                opened.append(transport)
                return
            failures += 1

    await asyncio.gather(*(one(*spec) for spec in specs))
    if failures:
        close(opened)
        raise BenchFailure(f"{failures} of {len(specs)} GraphQL connections failed to open")
    return opened


def close(transports: list[WSTransport]) -> None:
    for transport in transports:
        transport.disconnect(graceful=False)


def specs_for(count: int, digests: list[str], key: str) -> list[tuple[str, str, str]]:
    """Protocols alternate, and so do inputs, so every input has subscribers of both protocols."""
    protocols = (MODERN, LEGACY)
    return [(protocols[i % 2], digests[(i // 2) % len(digests)], key) for i in range(count)]


# The harness


@dataclass
class Fanout:
    """One fan-out: a publish or a broadcast, from the POST until the last client had it."""

    kind: str
    seconds: float | None
    node_cpu: float
    origin_cpu: float
    generator_cpu: float


class GraphqlBench:
    def __init__(self, plan: Plan, fleet: Fleet, cpus: dict[str, int | None]) -> None:
        self.plan = plan
        self.fleet = fleet
        self.cpus = cpus
        self.token = secrets.token_hex(16)
        self.seq = 0
        self.watches = {kind: Watch() for kind in KINDS}  # each kind's clients; new per scenario
        self.node: Child | None = None
        self.origin: Child | None = None
        self.picows: Child | None = None  # the generator's ceiling: picows' broadcast
        self.trigger: WSTransport | None = None  # its control connection, while open
        self.ws_url = ""
        self.picows_url = ""
        self._clients: list[HttpClient] = []
        self._before: dict[str, Any] = {}  # counters once the warm-up rounds are done

    def _client(self, url: str, *, auth: bool = True) -> HttpClient:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        client = HttpClient(url, headers=headers, timeout=30)
        self._clients.append(client)
        return client

    async def start(self) -> None:
        ws_port, command_port, origin_port = free_port(), free_port(), free_port()
        self.origin = self.fleet.python(
            "graphql-origin",
            ["-m", "bench.graphql", "--serve-origin", f"127.0.0.1:{origin_port}"],
            self.cpus["origin"],
        )
        await wait_listening(self.origin, origin_port)
        self.node = self.fleet.python(
            "graphql-node",
            [
                "-m", "runtime", "serve",
                "--listen", f"127.0.0.1:{ws_port}",
                "--command-listen", f"127.0.0.1:{command_port}",
                "--command-token", self.token,
                "--origin-transport", "echo",  # to accept the plain clients; they send nothing
                "--graphql-origin-url", f"http://127.0.0.1:{origin_port}/",
                "--graphql-ka-interval", "0",
                "--keepalive-interval", "0",
                "--local-only", "true",
                "--log-level", "WARNING",
                "--log-format", "json",
            ],
            self.cpus["node"],
        )  # fmt: skip
        picows_port = free_port()
        self.picows = self.fleet.python(
            "graphql-picows",
            ["-m", "bench.servers", "picows", "--listen", f"127.0.0.1:{picows_port}"],
            self.cpus["node"],
        )
        await wait_listening(self.node, ws_port)
        await wait_listening(self.node, command_port)
        await wait_listening(self.picows, picows_port)
        self.ws_url = f"ws://127.0.0.1:{ws_port}/"
        self.picows_url = f"ws://127.0.0.1:{picows_port}/"
        self.commands = self._client(f"http://127.0.0.1:{command_port}/commands")
        self.node_stats_client = self._client(f"http://127.0.0.1:{command_port}/stats")
        self.origin_stats_client = self._client(f"http://127.0.0.1:{origin_port}/stats", auth=False)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()

    async def node_stats(self) -> dict[str, Any]:
        return (await self.node_stats_client.request("GET")).json()  # type: ignore[no-any-return]

    async def origin_stats(self) -> dict[str, Any]:
        return (await self.origin_stats_client.request("GET")).json()  # type: ignore[no-any-return]

    async def subscribe(self, digests: list[str], key: str) -> list[WSTransport]:
        """N subscribers over `digests`; returns once the node holds every subscription."""
        n = self.plan.subscribers
        watch = self.watches["publish"]
        opened = await open_subscribers(self.ws_url, specs_for(n, digests, key), watch)
        deadline = time.monotonic() + SETUP_TIMEOUT
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await self.node_stats()
            if (
                stats.get("graphqlSubscriptions") == n
                and stats.get("graphqlDistinctInputs") == len(digests)
                and stats.get("graphqlConnections") == n
            ):
                return opened
            await asyncio.sleep(0.1)
        close(opened)
        raise BenchFailure(
            f"the node did not register {n} subscriptions over {len(digests)} inputs: "
            f"{_graphql_counters(stats)}; client errors {watch.errors[:3]}"
        )

    async def open_plain(self) -> list[WSTransport]:
        """N plain clients of the node (no subprotocol), the broadcasts' recipients; returns once
        the node holds them and the echo origin has had their CONNECT events."""
        n, watch = self.plan.subscribers, self.watches["broadcast"]
        opened, failures = await load.open_many(self.ws_url, n, lambda: Receiver(watch))
        transports = [transport for transport, _ in opened]
        if failures:
            close(transports)
            raise BenchFailure(f"{failures} of {n} plain connections to the node failed to open")
        deadline = time.monotonic() + SETUP_TIMEOUT
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await self.node_stats()
            if (
                stats.get("connections") == 2 * n
                and stats.get("graphqlConnections") == n
                and stats.get("bufferedEvents") == 0
            ):
                return transports
            await asyncio.sleep(0.1)
        close(transports)
        raise BenchFailure(
            f"the node did not settle with {n} plain and {n} GraphQL connections: "
            f"{_graphql_counters(stats)}, bufferedEvents {stats.get('bufferedEvents')}"
        )

    async def unsubscribe(self, opened: list[WSTransport]) -> None:
        close(opened)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = await self.node_stats()
            if (
                stats["connections"] == 0
                and stats.get("graphqlSubscriptions") == 0
                and stats.get("bufferedEvents") == 0  # the plain clients' DISCONNECT events
            ):
                return
            await asyncio.sleep(0.1)
        raise BenchFailure(f"connections did not go away: {_graphql_counters(stats)}")

    async def fan_out(self, kind: str, key: str) -> Fanout:
        """One fan-out to N clients, timed to the last one: a `publish` command to the node (its
        N GraphQL subscribers), a `broadcast` command to the node (its N plain clients: it skips
        GraphQL ones), or (`picows`) a broadcast by the picows server to its own N clients."""
        assert self.origin is not None
        self.seq += 1
        seq, size = self.seq, self.plan.message_bytes
        context = tick_context(seq, size)
        if kind == "publish":
            command: dict[str, Any] = {"action": "publish", "keys": [key], "context": context}
        else:
            command = {"action": "broadcast", "data": result_text(seq, context["pad"])}
        body = json.dumps({"commands": [command]}, separators=(",", ":")).encode()
        server = self.picows if kind == "picows" else self.node
        assert server is not None
        finished = self.watches[kind].arm(marker(seq), self.plan.subscribers)
        node0, origin0, mine0 = _cpu(server), _cpu(self.origin), _own_cpu()
        started = time.perf_counter()
        if kind == "picows":
            assert self.trigger is not None
            self.trigger.send(TEXT, result_text(seq, context["pad"]).encode())
        else:
            response = await self.commands.request("POST", body)
            if response.status != 200:
                raise BenchFailure(f"/commands answered {response.status}: {response.body[:300]!r}")
        try:
            seconds: float | None = await asyncio.wait_for(finished, ROUND_TIMEOUT) - started
        except TimeoutError:
            seconds = None
        return Fanout(
            kind,
            seconds,
            _cpu(server) - node0,
            _cpu(self.origin) - origin0,
            _own_cpu() - mine0,
        )

    async def rounds(self, key: str, count: int, kinds: tuple[str, ...]) -> dict[str, list[Fanout]]:
        """`warmup` + `count` rounds of one fan-out of each kind, the order rotating, so that a
        slow spell of the machine hits every kind alike."""
        out: dict[str, list[Fanout]] = {kind: [] for kind in kinds}
        incomplete = 0
        for number in range(self.plan.warmup + count):
            shift = number % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                result = await self.fan_out(kind, key)
                await asyncio.sleep(self.plan.gap)
                if result.seconds is None:
                    incomplete += 1
                    if incomplete >= MAX_INCOMPLETE:
                        watch = self.watches[kind]
                        raise BenchFailure(
                            f"{incomplete} fan-outs did not reach all {self.plan.subscribers} "
                            f"clients within {ROUND_TIMEOUT:g} s (last: {kind}, "
                            f"{watch.count} received; errors {watch.errors[:3]}; unexpected "
                            f"frames {self._unexpected()})"
                        )
                if number >= self.plan.warmup:
                    out[kind].append(result)
            if number == self.plan.warmup - 1:
                # Counting starts here: the warm-up's executions are not in the check.
                self._before = await self._counters()
        return out

    async def _counters(self) -> dict[str, Any]:
        return {"node": await self.node_stats(), "origin": await self.origin_stats()}

    async def scenario(
        self, name: str, digests: list[str], key: str, count: int, ceiling: bool
    ) -> dict[str, Any]:
        """Subscribe N clients over `digests`, open N plain ones, run the rounds, check the
        origin's executions and that every client got only its own kind's frames.

        `ceiling`: N more clients on the picows server, whose broadcast joins the rounds.
        """
        n = self.plan.subscribers
        _say(f"{name}: {n} subscribers over {_inputs(len(digests))}, {n} plain clients")
        self.watches = {kind: Watch() for kind in KINDS}
        opened = await self.subscribe(digests, key)
        plain: list[WSTransport] = []
        picows: list[WSTransport] = []
        try:
            kinds: tuple[str, ...] = ("publish", "broadcast")
            plain = await self.open_plain()
            if ceiling:
                picows = await self.open_picows()
                kinds += ("picows",)
            started = time.perf_counter()
            machine = MachineWindow([c for c in (self.node, self.origin, self.picows) if c])
            rounds = await self.rounds(key, count, kinds)
            noise = machine.result()
            seconds = time.perf_counter() - started
            after = await self._counters()
            await asyncio.sleep(0.1)  # time for a late frame that should not come at all
            # Before ours: the clients leave next.
            disconnected = {kind: w.disconnected for kind, w in self.watches.items()}
            unexpected = self._unexpected()
        except BaseException:
            close(opened + plain + picows)
            raise
        close(picows)
        if self.trigger is not None:
            self.trigger.disconnect()
            self.trigger = None
        await self.unsubscribe(opened + plain)
        graphql, broadcast = self.watches["publish"], self.watches["broadcast"]
        checks = check_executions(self._before, after, digests, count, self.plan)
        checks.append(unexpected_check(unexpected))
        result = summarize(rounds, n)
        result.update(
            {
                "inputs": len(digests),
                "publishes": count,
                "seconds": round(seconds, 2),
                "machine_noise": noise,
                "frame_bytes": sorted(graphql.sizes),
                "broadcast_frame_bytes": sorted(broadcast.sizes),
                "checks": checks,
                "client_errors": graphql.errors[:5],
                "client_unexpected_frames": unexpected,
                "client_disconnects": disconnected,
            }
        )
        failed = [c["name"] for c in result["checks"] if not c["ok"]]
        for kind in kinds:
            if result[kind]["complete"] < result[kind]["rounds"]:
                failed.append(f"{kind}: only {result[kind]['complete']} rounds complete")
        if graphql.errors:
            failed.append(f"client errors: {graphql.errors[:3]}")
        for kind, frames in unexpected.items():
            if frames:
                failed.append(f"{frames} at the {RECIPIENTS[kind]}: {self.watches[kind].samples}")
        if sum(disconnected.values()):
            failed.append(f"clients disconnected during the rounds: {disconnected}")
        if failed:
            raise BenchFailure(f"{name}: " + "; ".join(failed) + f"\n{json.dumps(result)[:2000]}")
        return result

    def _unexpected(self) -> dict[str, int]:
        return {kind: watch.unexpected for kind, watch in self.watches.items()}

    async def open_picows(self) -> list[WSTransport]:
        """N plain clients of the picows server, and its trigger."""
        n, watch = self.plan.subscribers, self.watches["picows"]
        opened, failures = await load.open_many(self.picows_url, n, lambda: Receiver(watch))
        transports = [transport for transport, _ in opened]
        if failures:
            close(transports)
            raise BenchFailure(f"{failures} connections to the picows server failed")
        self.trigger, _ = await asyncio.wait_for(
            ws_connect(load.quiet_listener, self.picows_url + "control"), load.CONNECT_TIMEOUT
        )
        await asyncio.sleep(0.3)
        return transports

    async def measure(self) -> dict[str, Any]:
        plan = self.plan
        await self.start()
        try:
            fan_out = await self.scenario("A (fan-out)", ["a"], KEY_A, plan.publishes, True)
            digests = [f"b{i}" for i in range(plan.inputs)]
            distinct = await self.scenario(
                "B (distinct inputs)", digests, KEY_B, plan.distinct_publishes, False
            )
            assert self.node is not None
            warnings = self.node.log_lines()
        finally:
            await self.close()
            for child in (self.node, self.origin, self.picows):
                if child is not None:
                    self.fleet.stop(child)
        generator = fan_out.pop("picows")
        return {"A": fan_out, "B": distinct, "generator": generator, "node_log_lines": warnings}


class MachineWindow:
    """How much of the machine's CPU went to processes other than ours, and to the hypervisor
    (steal), over a phase: a busy neighbour makes that phase's figures less trustworthy."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float, float, float]:
        cpu = psutil.cpu_times()
        idle = cpu.idle + getattr(cpu, "iowait", 0.0) + getattr(cpu, "steal", 0.0)
        irq = getattr(cpu, "irq", 0.0) + getattr(cpu, "softirq", 0.0)
        ours = sum(_cpu(child) for child in self.children) + _own_cpu()
        steal = getattr(cpu, "steal", 0.0)
        return sum(cpu) - idle, steal, irq, ours, time.perf_counter()

    def result(self) -> dict[str, float]:
        end = self._snapshot()
        busy, steal, irq, ours, wall = (b - a for a, b in zip(self._start, end, strict=True))
        wall = wall or 1e-9
        return {
            "others_percent": round(max(0.0, 100 * (busy - irq - ours) / wall), 1),
            "steal_percent": round(100 * steal / wall, 1),
            "interrupts_percent": round(100 * irq / wall, 1),
        }


def summarize(rounds: dict[str, list[Fanout]], n: int) -> dict[str, Any]:
    """Per kind: median-round rate, p50/p99 to the last client, CPU per delivery."""
    out: dict[str, Any] = {}
    for kind, results in rounds.items():
        times = sorted(r.seconds for r in results if r.seconds is not None)
        deliveries = n * len(times)
        wall = sum(times) or 1e-9
        out[kind] = {
            "rounds": len(results),
            "complete": len(times),
            "deliveries_per_second": n / statistics.median(times) if times else 0.0,
            "p50_ms": 1000 * percentile(times, 0.50) if times else None,
            "p99_ms": 1000 * percentile(times, 0.99) if times else None,
            "max_ms": 1000 * times[-1] if times else None,
            "node_cpu_us_per_delivery": 1e6 * sum(r.node_cpu for r in results) / max(1, deliveries),
            "origin_cpu_ms_per_publish": 1000 * sum(r.origin_cpu for r in results) / len(results),
            "generator_cpu_us_per_delivery": 1e6
            * sum(r.generator_cpu for r in results)
            / max(1, deliveries),
            "generator_busy_percent": 100 * sum(r.generator_cpu for r in results) / wall,
            "node_busy_percent": 100 * sum(r.node_cpu for r in results) / wall,
            "times_ms": [round(1000 * t, 3) for t in times],
        }
    publish, broadcast = out["publish"], out["broadcast"]
    out["rate_ratio"] = publish["deliveries_per_second"] / (broadcast["deliveries_per_second"] or 1)
    return out


def check_executions(
    before: dict[str, Any], after: dict[str, Any], digests: list[str], publishes: int, plan: Plan
) -> list[dict[str, Any]]:
    """Once per distinct input per publish, at the origin and by the node's own counters."""

    def delta(side: str, *path: str) -> int:
        def get(document: dict[str, Any]) -> int:
            for name in path[:-1]:
                document = document.get(name, {})
            return int(document.get(path[-1], 0))

        return get(after[side]) - get(before[side])

    per_input = {digest: delta("origin", "queries", digest) for digest in digests}
    total = delta("origin", "requests", "subscription_query")
    expected = publishes * len(digests)
    checks = [
        ("origin subscription_query requests", total, expected),
        (
            "executions of each input (fewest, most)",
            (min(per_input.values()), max(per_input.values())),
            (publishes, publishes),
        ),
        ("node graphqlSubscriptionQueries", delta("node", "graphqlSubscriptionQueries"), expected),
        (
            "node graphqlSubscriptionResultsSent",
            delta("node", "graphqlSubscriptionResultsSent"),
            publishes * plan.subscribers,
        ),
        (
            "node graphqlSubscriptionQueryFailures",
            delta("node", "graphqlSubscriptionQueryFailures"),
            0,
        ),
        ("node graphqlExecutionsDropped", delta("node", "graphqlExecutionsDropped"), 0),
        ("origin start requests meanwhile", delta("origin", "requests", "start"), 0),
    ]
    return [
        {"name": name, "measured": measured, "expected": wanted, "ok": measured == wanted}
        for name, measured, wanted in checks
    ]


def unexpected_check(unexpected: dict[str, int]) -> dict[str, Any]:
    """Frames no client should have got: at the GraphQL clients (a broadcast, another round's or
    protocol's result), at the plain ones (node's and picows server's), over warm-up and rounds."""
    measured = (unexpected["publish"], unexpected["broadcast"] + unexpected["picows"])
    return {
        "name": "unexpected frames at the clients, warm-up included (GraphQL, plain)",
        "measured": measured,
        "expected": (0, 0),
        "ok": measured == (0, 0),
    }


def _graphql_counters(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k.startswith("graphql") or k == "connections"}


def _own_cpu() -> float:
    """This process's CPU seconds, to the nanosecond."""
    return time.process_time()


def _cpu(child: Child) -> float:
    """A child's CPU seconds (all threads) from its process CPU-time clock, to the nanosecond;
    /proc and psutil count in 10 ms ticks, too coarse for one fan-out."""
    try:
        return time.clock_gettime((~child.pid << 3) | 2)  # Linux MAKE_PROCESS_CPUCLOCK, SCHED
    except OSError:
        return child.cpu_seconds()


_say = progress("graphql")


# Report


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """metric, GraphQL publish, broadcast baseline, ratio (publish / broadcast)."""
    n = r["plan"]["subscribers"]
    out = []
    for name, label in (("A", _inputs(r["A"]["inputs"])), ("B", _inputs(r["B"]["inputs"]))):
        s = r[name]
        pub, base = s["publish"], s["broadcast"]
        out += [
            (
                f"{name}: deliveries/s, {n} subscribers of {label} (median round)",
                f"{pub['deliveries_per_second']:,.0f}",
                f"{base['deliveries_per_second']:,.0f}",
                f"{s['rate_ratio']:.2f}",
            ),
            (
                f"{name}: POST to last delivery, p50 (ms)",
                f"{pub['p50_ms']:.2f}",
                f"{base['p50_ms']:.2f}",
                _ratio(pub["p50_ms"], base["p50_ms"]),
            ),
            (
                f"{name}: POST to last delivery, p99 (ms)",
                f"{pub['p99_ms']:.2f}",
                f"{base['p99_ms']:.2f}",
                _ratio(pub["p99_ms"], base["p99_ms"]),
            ),
            (
                f"{name}: node CPU per delivery (us)",
                f"{pub['node_cpu_us_per_delivery']:.2f}",
                f"{base['node_cpu_us_per_delivery']:.2f}",
                _ratio(pub["node_cpu_us_per_delivery"], base["node_cpu_us_per_delivery"]),
            ),
            (
                f"{name}: deliveries per second of node CPU (1 / the above)",
                f"{1e6 / pub['node_cpu_us_per_delivery']:,.0f}",
                f"{1e6 / base['node_cpu_us_per_delivery']:,.0f}",
                _ratio(base["node_cpu_us_per_delivery"], pub["node_cpu_us_per_delivery"]),
            ),
        ]
    return out


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "-"


def generator_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """What the generator received, how busy the sender and the generator were, at what cost:
    at the generator's ceiling (picows server) and during the node's fan-outs in A."""
    g, a = r["generator"], r["A"]
    ceiling = g["deliveries_per_second"]
    loads = [
        ("picows server broadcast (the generator's ceiling)", g),
        ("node broadcast (baseline)", a["broadcast"]),
        ("node GraphQL publish", a["publish"]),
    ]
    return [
        (
            label,
            f"{figures['deliveries_per_second']:,.0f}",
            "-" if figures is g else f"{ceiling / figures['deliveries_per_second']:.2f}",
            f"{figures['node_busy_percent']:.0f}%",
            f"{figures['generator_busy_percent']:.0f}%",
            f"{figures['generator_cpu_us_per_delivery']:.1f}",
        )
        for label, figures in loads
    ]


# A sender busy this much of the time from the POST to the last delivery set the pace itself;
# a generator this close (in points) to how busy it was at its ceiling may have set it instead.
SERVER_BOUND_PERCENT = 85
GENERATOR_SATURATED_POINTS = 10


def generator_verdict(r: dict[str, Any]) -> tuple[str, str]:
    """Is the generator the bottleneck? A short answer and its reason.

    A figure is in doubt only if it is over half the generator's ceiling (the picows broadcast),
    the node had time to spare, and the generator was about as busy as at its ceiling.
    """
    a, g = r["A"], r["generator"]
    kinds = ("publish", "broadcast")
    share = {kind: a[kind]["deliveries_per_second"] / g["deliveries_per_second"] for kind in kinds}
    node = {kind: a[kind]["node_busy_percent"] for kind in share}
    mine = {kind: a[kind]["generator_busy_percent"] for kind in share}
    saturated = g["generator_busy_percent"] - GENERATOR_SATURATED_POINTS
    doubtful = [
        kind
        for kind in share
        if share[kind] > 1 / GENERATOR_WANTED
        and node[kind] < SERVER_BOUND_PERCENT
        and mine[kind] >= saturated
    ]
    facts = (
        f"The broadcast baseline reached {share['broadcast']:.0%} of what the generator can "
        f"receive, GraphQL publish {share['publish']:.0%}. From each POST to its last delivery "
        f"the node was busy {node['broadcast']:.0f}% of the time during broadcasts and "
        f"{node['publish']:.0f}% during publishes (a publish also waits for the origin); the "
        f"generator {mine['broadcast']:.0f}% and {mine['publish']:.0f}%, against "
        f"{g['generator_busy_percent']:.0f}% at its ceiling."
    )
    if not doubtful:
        return "No", (facts + " The node set the pace.")
    names = " and ".join("GraphQL publish" if k == "publish" else "broadcast" for k in doubtful)
    return f"Possibly, for {names}", (
        facts + f" For {names} the node had time to spare while the generator was about as busy "
        "as at its ceiling, so the generator may have held it down: read the rate ratio with "
        "care; the node's CPU per delivery (and deliveries per second of node CPU) does not "
        "depend on the generator."
    )


def check_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for name in ("A", "B"):
        s = r[name]
        for check in s["checks"]:
            out.append(
                (
                    f"{name} ({s['publishes']} publishes, {_inputs(s['inputs'])}): {check['name']}",
                    _figure(check["measured"]),
                    _figure(check["expected"]),
                    "PASS" if check["ok"] else "FAIL",
                )
            )
    return out


def _inputs(count: int) -> str:
    return f"{count} input" + ("" if count == 1 else "s")


def _figure(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(f"{v:,}" for v in value)
    return f"{value:,}"


def _fill(text: str) -> str:
    return textwrap.fill(text, 100, break_on_hyphens=False, break_long_words=False)


def _table(header: tuple[str, ...], align: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    lines = [f"| {' | '.join(header)} |", f"| {' | '.join(align)} |"]
    lines += [f"| {' | '.join(row)} |" for row in body]
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    plan, meta = r["plan"], r["machine"]
    a, b = r["A"], r["B"]
    n = plan["subscribers"]
    pin = (
        f"pinned with `taskset`: the node on CPU {meta['cpus']['node']}, the load generator "
        f"(the harness, picows clients) on CPU {meta['cpus']['generator']}, the GraphQL origin "
        f"on CPU {meta['cpus']['origin']}"
        + (" (beside the generator: the machine has two)" if meta["nproc"] < 3 else "")
        if meta["pinned"]
        else "not pinned"
    )
    paragraphs = [
        f"Generated by `{r['command']}` on {meta['date']} in {r['seconds']:.0f} s; "
        f"{meta['nproc']} CPUs ({meta['cpu_model']}), Python {meta['python']}; {pin}. "
        "Informational: no issue sets a target for GraphQL mode, so the figures "
        "have none; the execution counts below are checked, and a wrong count fails the run "
        "(it writes no report).",
        "One node (`python -m runtime serve --origin-transport echo --graphql-origin-url ... "
        "--graphql-ka-interval 0 --keepalive-interval 0 --local-only true`, the rest default) and "
        "a minimal GraphQL origin over HTTP (`python -m bench.graphql --serve-origin`, on the "
        "node's own HTTP/1.1 server): it accepts every `connection_init`, answers each `start` "
        "with a subscription to the input its variables name, and each `subscription_query` "
        'with `{"result": {"data": {"tick": <publishContext>}}}`, counting them. The echo event '
        "origin is there only so that the node accepts plain connections (with `none` it refuses "
        "them); it answers MESSAGE events alone, and the plain clients send none. "
        f"{n} GraphQL subscribers, half `graphql-transport-ws` and half `graphql-ws`, each one "
        f"subscription, and {n} plain clients (no subprotocol); every client frame is "
        f"{plan['message_bytes']} bytes (measured: GraphQL results "
        f"{', '.join(map(str, a['frame_bytes']))}, broadcasts "
        f"{', '.join(map(str, a['broadcast_frame_bytes']))}).",
        f"A, fan-out: all {n} subscribers subscribe to one input (key `{KEY_A}`). Each round "
        f"posts one `publish` command, which reaches the {n} GraphQL clients, and, as the "
        f"baseline, one `broadcast` of a frame of the same size, which reaches the {n} plain "
        "clients: the plain command path, no origin, one frame for all. A broadcast skips "
        "GraphQL connections (their clients would take a bare message for a bad frame), so the "
        f"two fan-outs go to different connections: the node holds {2 * n}, and either fan-out "
        f"is {n} deliveries from it to the same generator. The order rotates every round; each "
        "fan-out is timed from just before its `POST /commands` until the last client has the "
        f"frame, then {plan['gap'] * 1000:g} ms pass. {plan['warmup']} warm-up rounds, then "
        f"{plan['publishes']} measured. Deliveries/s is {n} / the median round's time. B, "
        f"distinct inputs: {n} fresh subscribers over {b['inputs']} inputs sharing key "
        f"`{KEY_B}` and {n} fresh plain clients, {plan['distinct_publishes']} measured rounds "
        f"the same way: each publish must run each input once ({b['inputs']} origin requests) "
        f"and reach all {n} subscribers.",
        "Every client checks what it gets: a GraphQL client counts only its own protocol's "
        "result for its operation (`next` or `data`) carrying the current publish's number, a "
        "plain client only the current broadcast; any other frame, such as a broadcast reaching "
        "a GraphQL client, is unexpected and fails the run (the checks below).",
        "What the ratio shows: a publish costs one origin round trip (node -> origin -> node, "
        "another process on another core) before the first frame leaves, and per subscriber an "
        "encoded message of its own protocol and operation ID, where a broadcast writes one "
        "ready frame to every plain connection.",
    ]
    text = "\n\n".join(_fill(p) for p in paragraphs)
    results = _table(
        ("metric", "GraphQL publish", "broadcast (baseline)", "ratio"),
        ("---", "---:", "---:", "---:"),
        rows(r),
    )
    checks = _table(
        ("check (measured rounds only)", "measured", "expected", "result"),
        ("---", "---:", "---:", "---"),
        check_rows(r),
    )
    g = r["generator"]
    verdict, reason = generator_verdict(r)
    generator_text = _fill(
        "Each round of A has a third fan-out: a picows server (C frame parser, `python -m "
        "bench.servers picows`, on the node's core, idle otherwise) broadcasting a frame of the "
        f"same size to {n} more plain connections of the same generator (which holds {3 * n} "
        f"in A), triggered from a control connection (p50 {g['p50_ms']:.2f} ms, p99 "
        f"{g['p99_ms']:.2f} ms): about the most the "
        "generator can receive. A fan-out costs the receiving side about as much as the sending "
        "side (a socket wake-up and a read per client per message), so one generator core "
        "cannot outrun one server core by much here, unlike in the echo benchmark; "
        + (
            "the machine has no spare core for a second generator process. "
            if meta["nproc"] < 4
            else ""
        )
        + "'busy' is a process's CPU time over the timed fan-outs' wall time (the generator's "
        "POSTs included). " + reason,
    )
    generator = _table(
        (
            "fan-out received by the generator",
            "deliveries/s",
            "ceiling / this",
            "sender busy",
            "generator busy",
            "generator us/delivery",
        ),
        ("---", "---:", "---:", "---:", "---:", "---:"),
        generator_rows(r),
    )
    notes = _fill(
        f"With {b['inputs']} inputs instead of one, a publish took p50 "
        f"{b['publish']['p50_ms']:.2f} ms against {a['publish']['p50_ms']:.2f} ms "
        f"({_ratio(b['publish']['p50_ms'], a['publish']['p50_ms'])}x): {b['inputs']} origin "
        "requests in flight at once instead of one. Node, origin and generator CPU are read "
        "from each process's CPU-time clock (`clock_gettime`, nanoseconds) just before and after "
        "each fan-out and summed over the rounds; the origin "
        f"used {a['publish']['origin_cpu_ms_per_publish']:.2f} ms per publish in A and "
        f"{b['publish']['origin_cpu_ms_per_publish']:.2f} ms in B. Node log lines at WARNING or "
        f"above: {r['node_log_lines']}. Over A's rounds, other processes used "
        f"{a['machine_noise']['others_percent']:.0f}% of a CPU and the hypervisor took "
        f"{a['machine_noise']['steal_percent']:.0f}% (steal); over B's, "
        f"{b['machine_noise']['others_percent']:.0f}% and "
        f"{b['machine_noise']['steal_percent']:.0f}%. Every round's time: "
        "bench/results/graphql.json.",
    )
    lead = _fill(
        "Executions, from the origin's own counts and the node's `GET /stats`; unexpected "
        "frames, from the clients' own counts:"
    )
    return (
        f"{SECTION}\n\n{text}\n\n{results}\n\n{notes}\n\n{lead}\n\n{checks}\n\n"
        f"### Is the load generator the bottleneck? {verdict}\n\n{generator_text}\n\n"
        f"{generator}\n"
    )


def print_summary(r: dict[str, Any]) -> None:
    for row in rows(r):
        print(" | ".join(row))
    for row in check_rows(r):
        print(" | ".join(row))
    for row in generator_rows(r):
        print(" | ".join(row))
    print("is the load generator the bottleneck? " + " - ".join(generator_verdict(r)))


# Entry points


def pick_cpus(no_pin: bool) -> tuple[bool, dict[str, int | None]]:
    """Node, generator and origin on different cores when there are three; else origin beside
    the generator (as in bench.run)."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return False, {"node": None, "generator": None, "origin": None}
    origin = cpus[2] if len(cpus) >= 3 else cpus[1]
    return True, {"node": cpus[0], "generator": cpus[1], "origin": origin}


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else Plan()
    overrides = {
        name: value
        for name, value in (
            ("subscribers", args.subscribers),
            ("publishes", args.publishes),
            ("inputs", args.inputs),
        )
        if value is not None
    }
    plan = replace(plan, **overrides)
    if plan.subscribers < 2 or plan.inputs < 1 or plan.publishes < 1 or plan.warmup < 1:
        print("error: need at least 2 subscribers, 1 input, 1 publish", file=sys.stderr)
        return 2
    limit = raise_nofile_limit()
    if limit < 3 * plan.subscribers + 200:  # GraphQL, plain, picows
        print(f"error: open-files limit {limit} is too low", file=sys.stderr)
        return 2
    pin, cpus = pick_cpus(args.no_pin)
    if pin:
        os.sched_setaffinity(0, {cpus["generator"]})  # type: ignore[arg-type]
    else:
        _say("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin)
    pin = fleet.pin  # False without taskset: then reported as not pinned
    started = time.monotonic()
    try:
        results = await GraphqlBench(plan, fleet, cpus).measure()
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.close()
    meta = report.machine(pin, cpus["node"], cpus["generator"])
    meta["cpus"] = cpus
    results.update(
        {
            "plan": asdict(plan),
            "machine": meta,
            "seconds": round(time.monotonic() - started, 1),
            "command": " ".join([COMMAND, *args.argv]),
        }
    )
    print_summary(results)
    out = REPO / "bench" / "results" / ("graphql-quick.json" if plan.quick else "graphql.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"({results['seconds']:.0f} s; raw results in {out})")
    if not plan.quick:
        write_section(REPO / "docs" / "performance.md", markdown(results))
        print("section written to docs/performance.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.graphql", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--subscribers", type=int, help="subscribers (default 1000; quick 100)")
    parser.add_argument("--publishes", type=int, help="measured publishes in A (default 200)")
    parser.add_argument("--inputs", type=int, help="distinct inputs in B (default 10)")
    parser.add_argument("--serve-origin", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # recorded with the results
    raise_nofile_limit()
    if args.serve_origin:
        with contextlib.suppress(KeyboardInterrupt):
            run(serve_origin(args.serve_origin))
        return 0
    # SIGTERM (timeout, make) unwinds through `finally`, so the children are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return int(run(main_async(args)))


if __name__ == "__main__":
    sys.exit(main())
