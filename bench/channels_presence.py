"""The presence phase of the channel benchmark: how long a member count of one channel takes to
answer over M members (100,000) spread over a cluster, `GET /channels/{channel}` on one node's
command listener, answered as `{"channel", "count", "partial"?, "missingNodes"?}`.

Presence is built apart from this benchmark: the fan-out phase probes the endpoint first (its
answer over the fan-out's N subscribers must count N), and when the node answers 404 this phase is
skipped with that reason instead of failing. A node holds at most its open-files limit of
connections, so the M members live on `nodes` nodes (100,000 over 6: 16,667 each), each with a
receiver child of its own. The baseline, in the same rounds: `GET /stats` on the same node, an
HTTP round trip to the command listener that asks no peer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.channels_stage import Node, Stage
from bench.common import BenchFailure
from bench.procs import Fleet
from bench.receivers import Receivers, spread
from bench.stats import percentile

CHANNEL = "bench:presence"
NOT_BUILT = "skipped: GET /channels/{channel} answered 404 (presence is not built on this node)"


async def probe(stage: Stage, node: Node, members: int, channel: str) -> dict[str, Any]:
    """Ask `node` for `channel`'s count once: {"status", "answer", "seconds"}, or "skipped"."""
    started = time.perf_counter()
    response = await node.client.request("GET", target=f"/channels/{channel}")
    seconds = time.perf_counter() - started
    if response.status == 404:
        return {"skipped": NOT_BUILT, "status": 404, "body": response.body[:200].decode()}
    if response.status != 200:
        raise BenchFailure(f"GET /channels/{channel} answered {response.status}: {response.body!r}")
    answer = response.json()
    return {"status": 200, "answer": answer, "seconds": seconds, "expected": members}


def count_check(name: str, answers: list[dict[str, Any]], members: int) -> dict[str, Any]:
    """Every answer counted every member, from every node (none partial)."""
    counts = sorted({answer.get("count") for answer in answers}, key=str)
    partial = sum(1 for answer in answers if answer.get("partial"))
    measured = [counts, partial]
    expected = [[members], 0]
    return {"name": name, "measured": measured, "expected": expected, "ok": measured == expected}


class PresencePhase:
    def __init__(self, plan: Any, fleet: Fleet, cpus: dict[str, int | None]) -> None:
        self.plan = plan
        self.fleet = fleet
        self.cpus = cpus
        self.stage = Stage(fleet, "presence", cpus)

    async def run(self) -> dict[str, Any]:
        plan, stage = self.plan, self.stage
        members = plan.presence_members
        shares = spread(members, plan.presence_nodes)
        receivers: list[Receivers] = []
        try:
            await stage.start_origin()
            nodes = stage.spawn_nodes(plan.presence_nodes, clustered=True, prefix="presence")
            await stage.wait_listening_nodes(nodes)
            for index, (node, share) in enumerate(zip(nodes, shares, strict=True)):
                receivers.append(
                    Receivers(
                        self.fleet,
                        f"channels-receivers-presence{index}",
                        [node.ws_url],
                        share,
                        self.cpus["generator"],
                        open_time_limit=plan.open_time_limit,
                    )
                )
                await receivers[-1].start()
            await stage.wait_peers(nodes)
            started = time.monotonic()
            await asyncio.gather(*(r.open() for r in receivers))
            connect_seconds = time.monotonic() - started
            await stage.settle(nodes, shares)
            for node in nodes:
                await stage.subscribe(node, node.ids, [CHANNEL])
            held = [(await stage.stats(node)).get("channelSubscriptions", 0) for node in nodes]
            result = await self.measure(nodes[0])
            result.update(
                {
                    "members": members,
                    "nodes": plan.presence_nodes,
                    "shares": shares,
                    "connect_seconds": round(connect_seconds, 1),
                    "node_log_lines": {n.name: n.child.log_lines() for n in nodes},
                }
            )
            checks = [
                {
                    "name": "presence: subscriptions held by each node",
                    "measured": held,
                    "expected": shares,
                    "ok": held == shares,
                },
                count_check(
                    f"presence: counts answered over {members} members, and partial answers",
                    result.pop("answers"),
                    members,
                ),
            ]
            result["checks"] = checks
            return result
        finally:
            for r in receivers:
                await r.stop()
            await stage.close()

    async def measure(self, node: Node) -> dict[str, Any]:
        """`warmup` + `samples` rounds, each a count and a GET /stats (the order alternating),
        one request at a time over one kept-alive connection."""
        plan = self.plan
        times: dict[str, list[float]] = {"count": [], "stats": []}
        answers = []
        targets = {"count": f"/channels/{CHANNEL}", "stats": "/stats"}
        for number in range(plan.presence_warmup + plan.presence_samples):
            order = ("count", "stats") if number % 2 == 0 else ("stats", "count")
            for what in order:
                started = time.perf_counter()
                response = await node.client.request("GET", target=targets[what])
                seconds = time.perf_counter() - started
                if response.status != 200:
                    raise BenchFailure(f"GET {targets[what]} answered {response.status}")
                if number >= plan.presence_warmup:
                    times[what].append(seconds)
                    if what == "count":
                        answers.append(response.json())
        out: dict[str, Any] = {"answers": answers, "samples": plan.presence_samples}
        for what, samples in times.items():
            out[what] = {
                "p50_ms": 1000 * percentile(samples, 0.5),
                "p99_ms": 1000 * percentile(samples, 0.99),
                "max_ms": 1000 * max(samples),
            }
        out["example_answer"] = answers[0]
        return out
