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

The parts: bench.graphql_origin (the origin), bench.graphql_clients (the counting clients and the
messages they expect), bench.graphql_stage (the child processes, the connections, one timed
fan-out), bench.graphql_results (figures and checks), bench.graphql_report (the section and the
summary); this module runs the scenarios and is the entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from picows import WSTransport

from bench import report
from bench.common import REPO, BenchFailure, raise_nofile_limit, run, run_harness, write_section
from bench.graphql_clients import KEY_A, KEY_B, Watch, close
from bench.graphql_origin import serve_origin
from bench.graphql_report import inputs_label, print_summary
from bench.graphql_report import markdown as section
from bench.graphql_results import Fanout, check_executions, summarize, unexpected_check
from bench.graphql_stage import KINDS, ROUND_TIMEOUT, GraphqlStage
from bench.procs import Fleet, MachineWindow, pick_cpus

log = logging.getLogger("bench.graphql")

COMMAND = ".venv/bin/python -m bench.graphql"
MAX_INCOMPLETE = 3  # incomplete rounds before the run gives up
RECIPIENTS = {
    "publish": "node's GraphQL clients",
    "broadcast": "node's plain clients",
    "picows": "picows server's clients",
}


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


class GraphqlBench:
    """Scenario A (one input) and B (distinct inputs) on one stage: rounds of fan-outs, then the
    checks that the origin ran each input once per publish and every client got only its own."""

    def __init__(self, plan: Plan, fleet: Fleet, cpus: dict[str, int | None]) -> None:
        self.plan = plan
        self.stage = GraphqlStage(
            fleet, cpus, subscribers=plan.subscribers, message_bytes=plan.message_bytes
        )
        self._before: dict[str, Any] = {}  # counters once the warm-up rounds are done

    async def rounds(self, key: str, count: int, kinds: tuple[str, ...]) -> dict[str, list[Fanout]]:
        """`warmup` + `count` rounds of one fan-out of each kind, the order rotating, so that a
        slow spell of the machine hits every kind alike."""
        out: dict[str, list[Fanout]] = {kind: [] for kind in kinds}
        incomplete = 0
        for number in range(self.plan.warmup + count):
            shift = number % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                result = await self.stage.fan_out(kind, key)
                await asyncio.sleep(self.plan.gap)
                if result.seconds is None:
                    incomplete += 1
                    if incomplete >= MAX_INCOMPLETE:
                        watch = self.stage.watches[kind]
                        raise BenchFailure(
                            f"{incomplete} fan-outs did not reach all {self.plan.subscribers} "
                            f"clients within {ROUND_TIMEOUT:g} s (last: {kind}, "
                            f"{watch.count} received; errors {watch.errors[:3]}; unexpected "
                            f"frames {self.stage.unexpected()})"
                        )
                if number >= self.plan.warmup:
                    out[kind].append(result)
            if number == self.plan.warmup - 1:
                # Counting starts here: the warm-up's executions are not in the check.
                self._before = await self.stage.counters()
        return out

    async def scenario(
        self, name: str, digests: list[str], key: str, count: int, ceiling: bool
    ) -> dict[str, Any]:
        """Subscribe N clients over `digests`, open N plain ones, run the rounds, check the
        origin's executions and that every client got only its own kind's frames.

        `ceiling`: N more clients on the picows server, whose broadcast joins the rounds.
        """
        n, stage = self.plan.subscribers, self.stage
        log.info(
            "%s: %d subscribers over %s, %d plain clients", name, n, inputs_label(len(digests)), n
        )
        stage.watches = {kind: Watch() for kind in KINDS}
        opened = await stage.subscribe(digests, key)
        plain: list[WSTransport] = []
        picows: list[WSTransport] = []
        try:
            kinds: tuple[str, ...] = ("publish", "broadcast")
            plain = await stage.open_plain()
            if ceiling:
                picows = await stage.open_picows()
                kinds += ("picows",)
            started = time.perf_counter()
            machine = MachineWindow(stage.children())
            rounds = await self.rounds(key, count, kinds)
            noise = machine.result()
            seconds = time.perf_counter() - started
            after = await stage.counters()
            await asyncio.sleep(0.1)  # time for a late frame that should not come at all
            # Before ours: the clients leave next.
            disconnected = {kind: w.disconnected for kind, w in stage.watches.items()}
            unexpected = stage.unexpected()
        except BaseException:
            close(opened + plain + picows)
            raise
        close(picows)
        stage.close_trigger()
        await stage.unsubscribe(opened + plain)
        graphql, broadcast = stage.watches["publish"], stage.watches["broadcast"]
        checks = check_executions(self._before, after, digests, count, self.plan.subscribers)
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
                failed.append(f"{frames} at the {RECIPIENTS[kind]}: {stage.watches[kind].samples}")
        if sum(disconnected.values()):
            failed.append(f"clients disconnected during the rounds: {disconnected}")
        if failed:
            raise BenchFailure(f"{name}: " + "; ".join(failed) + f"\n{json.dumps(result)[:2000]}")
        return result

    async def measure(self) -> dict[str, Any]:
        plan, stage = self.plan, self.stage
        await stage.start()
        try:
            fan_out = await self.scenario("A (fan-out)", ["a"], KEY_A, plan.publishes, True)
            digests = [f"b{i}" for i in range(plan.inputs)]
            distinct = await self.scenario(
                "B (distinct inputs)", digests, KEY_B, plan.distinct_publishes, False
            )
            assert stage.node is not None
            warnings = stage.node.log_lines()
        finally:
            await stage.stop()
        generator = fan_out.pop("picows")
        return {"A": fan_out, "B": distinct, "generator": generator, "node_log_lines": warnings}


# Entry points


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
    # Node, generator and origin on different cores when there are three; else origin beside
    # the generator (as in bench.run).
    pin, cpus = pick_cpus(args.no_pin, ("node", "generator", "origin"))
    if pin:
        os.sched_setaffinity(0, {cpus["generator"]})  # type: ignore[arg-type]
    else:
        log.info("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")
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
    name = "graphql-quick.json" if plan.quick else "graphql.json"
    out = args.json or REPO / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"({results['seconds']:.0f} s; raw results in {out})")
    if not plan.quick:
        write_section(REPO / "docs" / "performance.md", section(results))
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
    parser.add_argument("--json", type=Path, help="raw results (default bench/results/...)")
    parser.add_argument("--serve-origin", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # recorded with the results
    if args.serve_origin:
        raise_nofile_limit()
        with contextlib.suppress(KeyboardInterrupt):
            run(serve_origin(args.serve_origin))
        return 0
    return run_harness(log, "graphql", main_async(args))


if __name__ == "__main__":
    sys.exit(main())
