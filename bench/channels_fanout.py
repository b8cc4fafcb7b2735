"""The fan-out phase of the channel benchmark: one `publish` reaching N subscribers spread over a
cluster, against a single node's `send` to N of its own connections, in the same rounds.

Processes: three clustered nodes and one node alone (`--local-only`), and a picows server, on the
nodes' core; the origin and three receiver children (bench.receivers: the cluster's N clients,
spread evenly over its nodes; the single node's N; the picows server's N) on the generator's core.
The single node is measured for memory per subscription first (bench.channels_memory), while it
is fresh.

Each round runs one fan-out of every kind, the order rotating, so that a slow spell of the
machine hits every kind alike; each is timed from just before its `POST /commands` (for picows,
its trigger) until the last of the N clients has the message, then `gap` seconds pass. Every
client counts what it gets, and the nodes' counters are read before and after: a message
received twice, or missing, or a publish forwarded where it was not needed, fails the run.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from picows import WSMsgType, WSTransport, ws_connect

from bench import channels_memory, channels_presence
from bench import client as load
from bench.channels_stage import Node, Stage, port_of
from bench.common import BenchFailure
from bench.procs import Child, Fleet, MachineWindow, wait_listening
from bench.receivers import Receivers, spread
from bench.run import payload_text
from bench.stats import percentile

CHANNEL = "bench:fanout"
ROUND_TIMEOUT = 10.0  # seconds one fan-out may take before it counts as incomplete
MAX_INCOMPLETE = 3  # incomplete fan-outs before the run gives up
# The kinds, in the order of the tables: the measured one, its baseline, diagnostics, ceiling.
KINDS = (
    "cluster publish",
    "single send",
    "single broadcast",
    "single publish",
    "cluster broadcast",
    "picows broadcast",
)
TARGET_KIND, BASELINE_KIND, CEILING_KIND = "cluster publish", "single send", "picows broadcast"


@dataclass
class Kind:
    name: str
    receivers: Receivers
    servers: list[Child]  # whose CPU it costs
    node: Node | None  # where its command goes; None: the picows server's control connection
    command: Callable[[str], dict[str, Any]] | None = None


@dataclass
class Fanout:
    """One fan-out, from the POST (or trigger) until the last client had it."""

    kind: str
    payload: str
    warmup: bool
    seconds: float | None
    answered: float | None  # when the POST was answered (None for picows)
    server_cpu: float
    receiver_cpu: float


class FanoutPhase:
    def __init__(self, plan: Any, fleet: Fleet, cpus: dict[str, int | None]) -> None:
        self.plan = plan
        self.fleet = fleet
        self.cpus = cpus
        self.stage = Stage(fleet, "fanout", cpus)
        self.receivers: list[Receivers] = []
        self.trigger: WSTransport | None = None
        self.seq = 0

    def _receivers(self, name: str, urls: list[str]) -> Receivers:
        receivers = Receivers(
            self.fleet,
            f"channels-receivers-{name}",
            urls,
            self.plan.subscribers,
            self.cpus["generator"],
            open_time_limit=self.plan.open_time_limit,
        )
        self.receivers.append(receivers)
        return receivers

    async def run(self) -> dict[str, Any]:
        """The whole phase, the memory measurement and the presence probe included (the probe
        runs once the cluster's N clients are subscribed)."""
        plan, stage = self.plan, self.stage
        try:
            await stage.start_origin()
            cluster = stage.spawn_nodes(plan.cluster_nodes, clustered=True, prefix="cluster")
            [single] = stage.spawn_nodes(1, clustered=False, prefix="single")
            picows, picows_url = stage.spawn_picows()
            await stage.wait_listening_nodes([*cluster, single])
            await wait_listening(picows, port_of(picows_url))
            on_single = self._receivers("single", [single.ws_url])
            on_cluster = self._receivers("cluster", [node.ws_url for node in cluster])
            on_picows = self._receivers("picows", [picows_url])
            for receivers in self.receivers:
                await receivers.start()
            await stage.wait_peers(cluster)

            memory = await channels_memory.measure(
                stage,
                single,
                on_single,
                each=plan.memory_channels_each,
                pool=plan.memory_channel_pool,
            )
            await stage.subscribe(single, single.ids, [CHANNEL])
            opened = await on_cluster.open()
            shares = spread(plan.subscribers, len(cluster))
            await stage.settle(cluster, shares)
            for node in cluster:
                await stage.subscribe(node, node.ids, [CHANNEL])
            await on_picows.open()
            self.trigger, _ = await asyncio.wait_for(
                ws_connect(load.quiet_listener, picows_url + "control"), load.CONNECT_TIMEOUT
            )
            members = plan.subscribers
            presence_probe = await channels_presence.probe(stage, cluster[0], members, CHANNEL)

            kinds = self._kinds(cluster, single, picows, on_cluster, on_single, on_picows)
            before = [await stage.stats(node) for node in (*cluster, single)]
            window = MachineWindow(stage.children + [r.child for r in self.receivers if r.child])
            started = time.monotonic()
            fanouts = await self._rounds(kinds)
            seconds = time.monotonic() - started
            noise = window.result()
            await asyncio.sleep(0.2)  # time for a late, duplicate message to arrive and count
            after = [await stage.stats(node) for node in (*cluster, single)]
            counts = {r.name: await r.counts() for r in self.receivers}
            checks = check_fanouts(fanouts, counts, kinds, cluster, before, after, plan.subscribers)
            checks += check_subscriptions(after, cluster, shares, memory)
            return {
                "memory": memory,
                "cluster_connect_seconds": opened["seconds"],
                "shares": shares,
                "fanout": summarize(fanouts, plan.subscribers),
                "rounds_seconds": round(seconds, 2),
                "machine_noise": noise,
                "checks": checks,
                "presence_probe": presence_probe,
                "node_log_lines": {n.name: n.child.log_lines() for n in (*cluster, single)},
            }
        finally:
            if self.trigger is not None:
                self.trigger.disconnect()
            for receivers in self.receivers:
                await receivers.stop()
            await stage.close()

    def _kinds(
        self,
        cluster: list[Node],
        single: Node,
        picows: Child,
        on_cluster: Receivers,
        on_single: Receivers,
        on_picows: Receivers,
    ) -> dict[str, Kind]:
        servers = [node.child for node in cluster]
        entry = cluster[0]  # the node that takes the cluster's commands

        def publish(payload: str) -> dict[str, Any]:
            return {"action": "publish", "channel": CHANNEL, "data": payload}

        def broadcast(payload: str) -> dict[str, Any]:
            return {"action": "broadcast", "data": payload}

        def send(payload: str) -> dict[str, Any]:
            return {"action": "send", "connectionIds": single.ids, "data": payload}

        listed = [
            Kind("cluster publish", on_cluster, servers, entry, publish),
            Kind("single send", on_single, [single.child], single, send),
            Kind("single broadcast", on_single, [single.child], single, broadcast),
            Kind("single publish", on_single, [single.child], single, publish),
            Kind("cluster broadcast", on_cluster, servers, entry, broadcast),
            Kind("picows broadcast", on_picows, [picows], None),
        ]
        return {kind.name: kind for kind in listed}

    async def _rounds(self, kinds: dict[str, Kind]) -> list[Fanout]:
        plan = self.plan
        order = list(kinds.values())
        out: list[Fanout] = []
        incomplete = 0
        for number in range(plan.warmup + plan.rounds):
            shift = number % len(order)
            for kind in order[shift:] + order[:shift]:
                result = await self._fan_out(kind, warmup=number < plan.warmup)
                out.append(result)
                await asyncio.sleep(plan.gap)
                if result.seconds is None:
                    incomplete += 1
                    if incomplete >= MAX_INCOMPLETE:
                        raise BenchFailure(
                            f"{incomplete} fan-outs did not reach all {plan.subscribers} clients "
                            f"within {ROUND_TIMEOUT:g} s (last: {kind.name})"
                        )
        return out

    async def _fan_out(self, kind: Kind, *, warmup: bool) -> Fanout:
        self.seq += 1
        tag = f"{kind.name.replace(' ', '-')}-{self.seq}"
        payload = payload_text(self.plan.payload_bytes, tag).decode()
        body = b""
        if kind.command is not None:
            body = json.dumps({"commands": [kind.command(payload)]}).encode()
        assert kind.receivers.child is not None
        done = kind.receivers.expect(payload)
        server0 = sum(child.exact_cpu_seconds() for child in kind.servers)
        receiver0 = kind.receivers.child.exact_cpu_seconds()
        answered: float | None = None
        started = time.monotonic()
        if kind.node is None:
            assert self.trigger is not None
            self.trigger.send(WSMsgType.TEXT, payload.encode())
        else:
            response = await kind.node.client.request("POST", body)
            answered = time.monotonic() - started
            if response.status != 200:
                raise BenchFailure(f"{kind.name}: /commands answered {response.status}")
        try:
            seconds: float | None = await asyncio.wait_for(done, ROUND_TIMEOUT) - started
        except TimeoutError:
            seconds = None
            kind.receivers.forget(payload)
        return Fanout(
            kind.name,
            payload,
            warmup,
            seconds,
            answered,
            sum(child.exact_cpu_seconds() for child in kind.servers) - server0,
            kind.receivers.child.exact_cpu_seconds() - receiver0,
        )


def summarize(fanouts: list[Fanout], n: int) -> dict[str, Any]:
    """Per kind, over the measured rounds: time to the last client (p50, min, max), CPU."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        results = [f for f in fanouts if f.kind == kind and not f.warmup]
        times = sorted(f.seconds for f in results if f.seconds is not None)
        # CPU is read once the last client had it and the POST was answered, whichever is later
        # (a cluster's publish is answered once the peers acknowledged it).
        wall = sum(max(f.seconds, f.answered or 0.0) for f in results if f.seconds) or 1e-9
        answered = [f.answered for f in results if f.answered is not None]
        out[kind] = {
            "rounds": len(results),
            "complete": len(times),
            "p50_ms": 1000 * percentile(times, 0.5) if times else None,
            "min_ms": 1000 * times[0] if times else None,
            "max_ms": 1000 * times[-1] if times else None,
            "answered_p50_ms": 1000 * statistics.median(answered) if answered else None,
            "deliveries_per_second": n / statistics.median(times) if times else 0.0,
            "server_cpu_us_per_delivery": 1e6
            * sum(f.server_cpu for f in results)
            / max(1, n * len(results)),
            "server_busy_percent": 100 * sum(f.server_cpu for f in results) / wall,
            "receiver_busy_percent": 100 * sum(f.receiver_cpu for f in results) / wall,
            "receiver_cpu_us_per_delivery": 1e6
            * sum(f.receiver_cpu for f in results)
            / max(1, n * len(results)),
            "times_ms": [round(1000 * t, 3) for t in times],
        }
    return out


def _check(name: str, measured: Any, expected: Any) -> dict[str, Any]:
    return {"name": name, "measured": measured, "expected": expected, "ok": measured == expected}


def check_fanouts(
    fanouts: list[Fanout],
    counts: dict[str, dict[str, Any]],
    kinds: dict[str, Kind],
    cluster: list[Node],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    n: int,
) -> list[dict[str, Any]]:
    """Every client got every fan-out of its kind once, and nothing else; the cluster's entry
    node forwarded each publish once to each peer (all hold subscribers), the others nothing."""
    checks = []
    for receivers in {kind.receivers.name: kind.receivers for kind in kinds.values()}.values():
        mine = [f for f in fanouts if kinds[f.kind].receivers is receivers]
        got = counts[receivers.name]
        arrived = [got["counts"].get(f.payload, 0) for f in mine]
        sent = {f.payload for f in mine}
        strays = sum(1 for payload in got["counts"] if payload not in sent)
        label = receivers.name.removeprefix("channels-receivers-")
        checks += [
            _check(
                f"{label} clients: arrivals of each of {len(mine)} fan-outs (warm-up included), "
                "fewest and most",
                [min(arrived), max(arrived)],
                [n, n],
            ),
            _check(
                f"{label} clients: messages nobody sent, other frames, disconnects",
                [strays, got["other_frames"], got["disconnected"]],
                [0, 0, 0],
            ),
        ]

    def delta(index: int, key: str) -> int:
        return int(after[index].get(key, 0)) - int(before[index].get(key, 0))

    publishes = {kind: sum(1 for f in fanouts if f.kind == kind) for kind in KINDS}
    peers = len(cluster) - 1
    checks += [
        _check(
            f"cluster: publishes forwarded by the entry node ({peers} per publish)",
            delta(0, "channelPublishesForwarded"),
            peers * publishes["cluster publish"],
        ),
        _check(
            "cluster: publishes forwarded by the other nodes",
            sum(delta(i, "channelPublishesForwarded") for i in range(1, len(cluster))),
            0,
        ),
        _check(
            "cluster: channel messages written, all nodes",
            sum(delta(i, "channelMessagesSent") for i in range(len(cluster))),
            n * publishes["cluster publish"],
        ),
        _check(
            "single node: channel messages written",
            delta(len(cluster), "channelMessagesSent"),
            n * publishes["single publish"],
        ),
    ]
    return checks


def check_subscriptions(
    after: list[dict[str, Any]],
    cluster: list[Node],
    shares: list[int],
    memory: dict[str, Any],
) -> list[dict[str, Any]]:
    """What the nodes hold: each cluster node its share of the channel; the single node the
    memory phase's subscriptions and the fan-out channel."""
    extra = memory["connections"]
    return [
        _check(
            "cluster: subscriptions held by each node",
            [stats.get("channelSubscriptions", 0) for stats in after[: len(cluster)]],
            shares,
        ),
        _check(
            "single node: subscriptions held (memory phase + fan-out channel)",
            after[len(cluster)].get("channelSubscriptions", 0),
            memory["subscriptions"] + extra,
        ),
        _check(
            "single node: channels held (memory phase + fan-out channel)",
            after[len(cluster)].get("channels", 0),
            memory["expected_channels"] + 1,
        ),
    ]
