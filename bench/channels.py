"""The channel benchmark: `python -m bench.channels` (`make bench`; `--quick`: a smoke run, no
report). Issue 17's three figures, each against a baseline of the same run:

1. fan-out: a `publish` to N (10,000) subscribers spread over three clustered nodes, from the POST
   until the last client has it, against one node alone taking a `send` naming N connections of
   its own (target: at most 1.3x, p50 of the rounds); bench.channels_fanout;
2. memory per subscription: RSS of that single node with its N connections, before and after
   subscribing each to K (10) channels (target: at most 200 bytes a subscription); measured
   first, on the fresh node; bench.channels_memory;
3. presence: a member count (`GET /channels/{channel}`) over M (100,000) members on a cluster,
   against `GET /stats` on the same node (target: p50 below 50 ms); skipped, saying so, when the
   node answers that path 404 (presence is built apart); bench.channels_presence.

Servers on one core, the generator (the harness, the receiver processes, the origin) on another
(`pick_cpus`); a picows server broadcasting to N more clients of the generator shows whether the
generator could keep up. Every client counts what it gets and the nodes' counters are checked: a
wrong count fails the run, which then writes no report. Writes bench/results/channels[-quick].json
and, for a full run, the "Channels" section of docs/performance.md. The parts: bench.receivers
(the clients' processes), bench.channels_stage (the nodes), the three phases above, and
bench.channels_report (the section and the summary).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import report
from bench.channels_fanout import FanoutPhase
from bench.channels_presence import PresencePhase, count_check
from bench.channels_report import markdown, print_summary, verdicts
from bench.common import REPO, BenchFailure, finish, raise_nofile_limit, run_harness
from bench.procs import Fleet, pick_cpus

log = logging.getLogger("bench.channels")
COMMAND = ".venv/bin/python -m bench.channels"
FILES_SPARE = 500  # open files a process needs beside its connections


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    subscribers: int = 10_000
    cluster_nodes: int = 3
    warmup: int = 3
    rounds: int = 15
    gap: float = 0.1  # seconds between fan-outs, so that each is timed alone
    payload_bytes: int = 64
    memory_channels_each: int = 10
    memory_channel_pool: int = 1_000
    presence_members: int = 100_000
    presence_nodes: int = 6
    presence_warmup: int = 20
    presence_samples: int = 200
    open_time_limit: float = 180.0  # seconds for one receiver process to open its connections


QUICK = Plan(
    quick=True,
    subscribers=300,
    warmup=1,
    rounds=3,
    gap=0.05,
    presence_members=600,
    presence_nodes=2,
    presence_warmup=3,
    presence_samples=10,
    open_time_limit=30.0,
)


def memory_checks(memory: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": "memory: subscriptions and channels the node holds",
            "measured": [memory["node_subscriptions"], memory["node_channels"]],
            "expected": [memory["subscriptions"], memory["expected_channels"]],
            "ok": [memory["node_subscriptions"], memory["node_channels"]]
            == [memory["subscriptions"], memory["expected_channels"]],
        }
    ]


async def measure(plan: Plan, fleet: Fleet, cpus: dict[str, int | None], presence: bool) -> Any:
    fanout = await FanoutPhase(plan, fleet, cpus).run()
    checks = fanout.pop("checks") + memory_checks(fanout["memory"])
    probe = fanout.pop("presence_probe")
    if "skipped" in probe:
        log.warning("presence count %s", probe["skipped"])
        fanout["presence"] = {"skipped": probe["skipped"], "probe": probe}
    else:
        name = f"presence probe: count over the fan-out's {plan.subscribers} members"
        checks.append(count_check(name, [probe["answer"]], plan.subscribers))
        if presence:
            members, nodes = plan.presence_members, plan.presence_nodes
            log.info("presence: %d members over %d nodes", members, nodes)
            result = await PresencePhase(plan, fleet, cpus).run()
            checks += result.pop("checks")
            fanout["presence"] = {**result, "probe": probe}
        else:
            fanout["presence"] = {"skipped": "skipped: --no-presence", "probe": probe}
    fanout["checks"] = checks
    return fanout


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else Plan()
    overrides = {
        name: value
        for name, value in (
            ("subscribers", args.subscribers),
            ("rounds", args.rounds),
            ("presence_members", args.presence_members),
            ("presence_nodes", args.presence_nodes),
        )
        if value is not None
    }
    plan = replace(plan, **overrides)
    if plan.subscribers < plan.cluster_nodes or plan.rounds < 1 or plan.presence_nodes < 2:
        print("error: need a subscriber per node, 1 round and 2 presence nodes", file=sys.stderr)
        return 2
    limit = raise_nofile_limit()
    per_process = max(plan.subscribers, math.ceil(plan.presence_members / plan.presence_nodes))
    if limit < per_process + FILES_SPARE:
        print(
            f"error: open-files limit {limit} is too low for {per_process} connections in one "
            "process (more --presence-nodes spread the members thinner)",
            file=sys.stderr,
        )
        return 2
    pin, cpus = pick_cpus(args.no_pin, ("nodes", "generator"))
    if pin:
        os.sched_setaffinity(0, {cpus["generator"]})  # type: ignore[arg-type]
    else:
        log.warning("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin)
    pin = fleet.pin  # False without taskset: then reported as not pinned
    started = time.monotonic()
    try:
        results = await measure(plan, fleet, cpus, not args.no_presence)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.close()
    results.update(
        {
            "plan": asdict(plan),
            "machine": report.machine(pin, cpus["nodes"], cpus["generator"]),
            "seconds": round(time.monotonic() - started, 1),
            "finished": time.time(),
            "command": " ".join([COMMAND, *args.argv]),
        }
    )
    results["targets"] = verdicts(results)
    print_summary(results)
    return finish(
        results,
        name="channels",
        quick=plan.quick,
        out=args.json,
        section=markdown,
        strict=args.strict,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.channels", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--subscribers", type=int, help="fan-out subscribers (10000; quick 300)")
    parser.add_argument("--rounds", type=int, help="measured fan-out rounds (15; quick 3)")
    parser.add_argument("--presence-members", type=int, help="presence members (100000)")
    parser.add_argument("--presence-nodes", type=int, help="nodes they are spread over (6)")
    parser.add_argument("--no-presence", action="store_true", help="skip the presence phase")
    parser.add_argument("--json", type=Path, help="raw results (default bench/results/...)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # recorded with the results
    return run_harness(log, "channels", main_async(args))


if __name__ == "__main__":
    sys.exit(main())
