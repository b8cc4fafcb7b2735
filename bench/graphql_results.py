"""The GraphQL benchmark's results: timed fan-outs summed into figures per kind, and the checks
that fail the run when a count is wrong.

Kept apart from the harness so that what a result means (a median round, CPU per delivery, one
execution per distinct input per publish) is plain functions of plain data, testable without a
node.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.stats import percentile


@dataclass
class Fanout:
    """One fan-out: a publish or a broadcast, from the POST until the last client had it."""

    kind: str
    seconds: float | None
    node_cpu: float
    origin_cpu: float
    generator_cpu: float


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
    before: dict[str, Any],
    after: dict[str, Any],
    digests: list[str],
    publishes: int,
    subscribers: int,
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
    checks: list[tuple[str, int | tuple[int, int], int | tuple[int, int]]] = [
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
            publishes * subscribers,
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


def graphql_counters(stats: dict[str, Any]) -> dict[str, Any]:
    """The node's GraphQL counters and its connection count, for a failure's message."""
    return {k: v for k, v in stats.items() if k.startswith("graphql") or k == "connections"}
