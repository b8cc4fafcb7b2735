"""The channel benchmark's report: its targets, its section of docs/performance.md and the summary
it prints, all from the raw results alone (bench/results/channels.json), so that a stored run can
be re-rendered.
"""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.channels_fanout import BASELINE_KIND, CEILING_KIND, KINDS, TARGET_KIND
from bench.graphql_report import GENERATOR_SATURATED_POINTS, SERVER_BOUND_PERCENT

SECTION = "## Channels: publish across three nodes, memory per subscription, presence count"
# Issue 17's targets: publish / send time at most; bytes a subscription at most; count p50 below.
TARGETS = {"publish_ratio": 1.3, "bytes_per_subscription": 200.0, "presence_p50_ms": 50.0}
GENERATOR_WANTED = 2.0  # the generator's ceiling / a figure, for "not the bottleneck" (bench.run)


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    """Each target met or not; presence only when it was measured."""
    out = {
        "publish_ratio": publish_ratio(r) <= TARGETS["publish_ratio"],
        "bytes_per_subscription": r["memory"]["bytes_per_subscription"]
        <= TARGETS["bytes_per_subscription"],
    }
    if "skipped" not in r["presence"]:
        out["presence_p50_ms"] = r["presence"]["count"]["p50_ms"] < TARGETS["presence_p50_ms"]
    return out


def publish_ratio(r: dict[str, Any]) -> float:
    fanout = r["fanout"]
    return float(fanout[TARGET_KIND]["p50_ms"] / fanout[BASELINE_KIND]["p50_ms"])


def _result(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def target_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """metric, measured, baseline, ratio, target, result."""
    plan, fanout, memory, presence = r["plan"], r["fanout"], r["memory"], r["presence"]
    n, nodes = plan["subscribers"], plan["cluster_nodes"]
    targets = r["targets"]
    rows: list[tuple[str, ...]] = [
        (
            f"`publish` to {n:,} subscribers over {nodes} nodes vs one node's `send` to {n:,} of "
            "its own, p50 to the last client (ms)",
            f"{fanout[TARGET_KIND]['p50_ms']:.1f}",
            f"{fanout[BASELINE_KIND]['p50_ms']:.1f}",
            f"{publish_ratio(r):.2f}",
            f"<= {TARGETS['publish_ratio']}x",
            _result(targets["publish_ratio"]),
        ),
        (
            f"memory per subscription, {memory['connections']:,} connections x "
            f"{memory['channels_each']} channels (bytes; baseline: per connection)",
            f"{memory['bytes_per_subscription']:.0f}",
            f"{memory['bytes_per_connection']:,.0f}",
            "-",
            f"<= {TARGETS['bytes_per_subscription']:.0f} B",
            _result(targets["bytes_per_subscription"]),
        ),
    ]
    if "skipped" in presence:
        rows.append(
            (
                f"presence count over {plan['presence_members']:,} members, p50 (ms)",
                presence["skipped"],
                "-",
                "-",
                f"< {TARGETS['presence_p50_ms']:.0f} ms",
                "-",
            )
        )
    else:
        count, stats = presence["count"], presence["stats"]
        rows.append(
            (
                f"presence count over {presence['members']:,} members on {presence['nodes']} "
                "nodes, p50 (ms; baseline: GET /stats on the same node)",
                f"{count['p50_ms']:.2f}",
                f"{stats['p50_ms']:.2f}",
                f"{count['p50_ms'] / stats['p50_ms']:.2f}",
                f"< {TARGETS['presence_p50_ms']:.0f} ms",
                _result(targets.get("presence_p50_ms")),
            )
        )
    return rows


def fanout_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for kind in KINDS:
        f = r["fanout"][kind]
        answered = f["answered_p50_ms"]
        rows.append(
            (
                kind,
                f"{f['p50_ms']:.1f}",
                f"{f['min_ms']:.1f}",
                f"{f['max_ms']:.1f}",
                "-" if answered is None else f"{answered:.1f}",
                f"{f['deliveries_per_second']:,.0f}",
                f"{f['server_cpu_us_per_delivery']:.2f}",
                f"{f['server_busy_percent']:.0f}%",
                f"{f['receiver_busy_percent']:.0f}%",
                f"{f['receiver_cpu_us_per_delivery']:.2f}",
                f"{f['complete']}/{f['rounds']}",
            )
        )
    return rows


FANOUT_HEADER = (
    "fan-out",
    "p50 ms",
    "min",
    "max",
    "POST answered p50",
    "deliveries/s",
    "server CPU us/delivery",
    "server busy",
    "receiver busy",
    "receiver CPU us/delivery",
    "rounds",
)


def generator_verdict(r: dict[str, Any]) -> tuple[str, str]:
    """Is the generator the bottleneck? A figure is in doubt only if it is over half the
    generator's ceiling (the picows broadcast), the servers had time to spare, and the receiving
    process was about as busy as at its ceiling (as in bench.graphql)."""
    fanout = r["fanout"]
    ceiling = fanout[CEILING_KIND]
    share = {
        kind: fanout[kind]["deliveries_per_second"] / ceiling["deliveries_per_second"]
        for kind in (TARGET_KIND, BASELINE_KIND)
    }
    saturated = ceiling["receiver_busy_percent"] - GENERATOR_SATURATED_POINTS
    doubtful = [
        kind
        for kind in share
        if share[kind] > 1 / GENERATOR_WANTED
        and fanout[kind]["server_busy_percent"] < SERVER_BOUND_PERCENT
        and fanout[kind]["receiver_busy_percent"] >= saturated
    ]
    facts = (
        f"A picows server broadcasting to {r['plan']['subscribers']:,} more clients of the "
        f"same generator reached them all in {ceiling['p50_ms']:.1f} ms (p50): about the most "
        f"the generator can receive. The cluster's publish ran at {share[TARGET_KIND]:.0%} of "
        f"that rate, the single node's send at {share[BASELINE_KIND]:.0%}. From each POST to "
        f"its last delivery the servers were busy {fanout[TARGET_KIND]['server_busy_percent']:.0f}"
        f"% (the three nodes together, one core) and "
        f"{fanout[BASELINE_KIND]['server_busy_percent']:.0f}%; the receiving process "
        f"{fanout[TARGET_KIND]['receiver_busy_percent']:.0f}% and "
        f"{fanout[BASELINE_KIND]['receiver_busy_percent']:.0f}%, against "
        f"{ceiling['receiver_busy_percent']:.0f}% at its ceiling."
    )
    if not doubtful:
        return "No", facts + " The nodes set the pace."
    return f"Possibly, for {' and '.join(doubtful)}", (
        facts + f" For {' and '.join(doubtful)} the servers had time to spare while the "
        "receiving process was about as busy as at its ceiling: read the ratio with care."
    )


def memory_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    m = r["memory"]
    mib = 1 << 20
    return [
        ("connections", f"{m['connections']:,}"),
        ("subscriptions (connections x channels each)", f"{m['subscriptions']:,}"),
        ("channels held", f"{m['node_channels']:,}"),
        ("members per channel", f"{m['subscriptions'] / max(1, m['node_channels']):,.0f}"),
        ("RSS, no connections (after 50 opened and closed)", f"{m['rss_empty'] / mib:.1f} MiB"),
        ("RSS with the connections", f"{m['rss_connections'] / mib:.1f} MiB"),
        ("RSS with the subscriptions too", f"{m['rss_subscriptions'] / mib:.1f} MiB"),
        ("per connection", f"{m['bytes_per_connection']:,.0f} bytes"),
        ("per subscription", f"{m['bytes_per_subscription']:.1f} bytes"),
    ]


def presence_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    p = r["presence"]
    return [
        (
            label,
            f"{p[what]['p50_ms']:.2f}",
            f"{p[what]['p99_ms']:.2f}",
            f"{p[what]['max_ms']:.2f}",
        )
        for what, label in (
            ("count", f"GET /channels/{{channel}} ({p['members']:,} members)"),
            ("stats", "GET /stats (baseline)"),
        )
    ]


def print_summary(r: dict[str, Any]) -> None:
    header = ("metric", "measured", "baseline", "ratio", "target", "result")
    print(report.markdown_table(header, target_rows(r)))
    print()
    print(report.markdown_table(FANOUT_HEADER, fanout_rows(r)))
    print("is the load generator the bottleneck? " + " - ".join(generator_verdict(r)))
    for row in report.check_rows(r["checks"]):
        if row[-1] != "PASS":
            print("FAIL " + " | ".join(row))


def markdown(r: dict[str, Any]) -> str:
    plan, machine = r["plan"], r["machine"]
    n, nodes = plan["subscribers"], plan["cluster_nodes"]
    memory, presence = r["memory"], r["presence"]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r["finished"]))
    pinning = (
        f"pinned with `taskset`: every server (the {nodes} cluster nodes, the single node, the "
        f"picows server) on CPU {machine['server_cpu']}, the generator (the harness, the "
        f"receiver processes, the origin) on CPU {machine['load_cpu']}"
        if machine["pinned"]
        else "NOT pinned (--no-pin, one core or no taskset): figures are less trustworthy"
    )
    header = ("metric", "measured", "baseline", "ratio", "target", "result")
    verdict, reason = generator_verdict(r)
    parts = [
        SECTION,
        # The command on a line of its own, whole, to be copied.
        f"Generated by `{r['command']}` on {date} in {r['seconds']:.0f} s.\n"
        + report.fill(
            f"{machine['nproc']} CPUs ({machine['cpu_model']}), Python {machine['python']}; "
            f"{pinning}. Issue 17's targets, each against a baseline of the same run:"
        ),
        report.markdown_table(header, target_rows(r)),
        "### Fan-out: one publish to subscribers on three nodes",
        report.fill(
            f"{nodes} node processes clustered over UDP on 127.0.0.1 (`--peers`, every other "
            "setting at its default), all on one core, so that the cluster cannot win by using "
            f"more cores than the single node: {n:,} WebSocket clients spread evenly over them "
            f"({', '.join(f'{s:,}' for s in r['shares'])}), each subscribed through its own node "
            f"to one channel. A `publish` to that channel is posted to the first node, which "
            "writes to its subscribers and forwards the publish once to each of the others. The "
            f"baseline is a node alone (`--local-only true`) holding {n:,} connections of its "
            f"own, sent one `send` command naming all {n:,} IDs (as in the Results above). "
            "Every client is a picows client in a receiver process (`python -m bench.receivers`"
            ", one per set of clients: a process may open at most 20,000 files here), and each "
            "fan-out is timed from just before its `POST /commands` until the receiving process "
            "has it on the last connection (CLOCK_MONOTONIC, one clock for all processes). "
            f"{plan['warmup']} warm-up rounds, then {plan['rounds']} measured; each round runs "
            f"every kind below once, the order rotating, {plan['gap']} s apart; "
            f"{plan['payload_bytes']}-byte text messages. Diagnostics beside them: the single "
            "node's `broadcast` and its `publish` to the same clients subscribed to a channel "
            "(what the channel lookup costs without a cluster), the cluster's `broadcast` "
            "(forwarded to every node, no channel), and the generator's ceiling. Server CPU is "
            "read from each process's CPU-time clock before and after each fan-out; 'busy' is "
            "that CPU over the time until the last client had the message and the POST was "
            "answered, whichever came later (a cluster's publish is answered once its peers "
            "acknowledged it)."
        ),
        report.markdown_table(FANOUT_HEADER, fanout_rows(r)),
        report.fill(
            f"Over the rounds other processes used {r['machine_noise']['others_percent']}% of a "
            f"CPU and the hypervisor took {r['machine_noise']['steal_percent']}% (steal). Every "
            "round's time: bench/results/channels.json. Node log lines at WARNING or above: "
            f"{sum(r['node_log_lines'].values())}."
        ),
        f"### Is the load generator the bottleneck? {verdict}",
        report.fill(reason),
        "### Memory per subscription",
        report.fill(
            f"The single node, fresh, before its fan-out rounds: RSS (psutil, once two samples "
            f"0.25 s apart agree) with no connections, with {memory['connections']:,} idle "
            f"connections, and after subscribing each to {memory['channels_each']} channels of "
            f"a pool of {memory['channel_pool']:,} (connection i takes the channels of block i "
            f"mod {memory['channel_pool'] // memory['channels_each']}), in bodies of 10 "
            "`subscribe` commands. Per subscription: the growth over the subscriptions; the "
            "connection's own figure, for scale, is the growth over the connections (its "
            "registry entry, ID, buffers and handler). The in-process figure of "
            "tests/core/test_channel_table.py (tracemalloc, the table alone) is 48 to 77 bytes."
        ),
        report.markdown_table(("memory", "value"), memory_rows(r)),
        "### Presence count",
    ]
    if "skipped" in presence:
        parts.append(
            report.fill(
                f"Not measured in this run ({presence['skipped']}). The fan-out phase asks the "
                "first cluster node `GET /channels/{channel}` once its subscribers are in; when "
                f"presence answers, this phase opens {plan['presence_members']:,} connections "
                f"over {plan['presence_nodes']} clustered nodes (one process holds at most 20,000 "
                "files), subscribes them all to one channel and times the count against `GET "
                "/stats` on the same node."
            )
        )
    else:
        parts += [
            report.fill(
                f"{presence['members']:,} connections over {presence['nodes']} clustered nodes "
                f"({', '.join(f'{s:,}' for s in presence['shares'])}; opened in "
                f"{presence['connect_seconds']} s), one receiver process each, all subscribed to "
                "one channel. The first node is asked `GET /channels/{channel}` (it asks the "
                "others) and, alternately, `GET /stats` (no peer involved), one request at a time "
                f"on one kept-alive connection: {presence['samples']} samples each after a "
                f"warm-up. An answer: `{presence['example_answer']}`."
            ),
            report.markdown_table(("request", "p50 ms", "p99 ms", "max ms"), presence_rows(r)),
        ]
    parts += [
        "### Checks",
        report.fill(
            "From the clients' own counts and the nodes' `GET /stats`; a wrong count fails the "
            "run, which then writes no report."
        ),
        report.markdown_table(
            ("check", "measured", "expected", "result"),
            report.check_rows(r["checks"]),
            ["---", "---:", "---:", "---"],
        ),
    ]
    return "\n\n".join(parts) + "\n"
