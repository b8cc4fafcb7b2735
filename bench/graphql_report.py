"""The GraphQL benchmark's report: its section of docs/performance.md and the summary it prints,
both from the raw results alone (bench/results/graphql.json), so a stored run can be re-rendered.

The figures carry no target (no issue sets one for GraphQL mode); the checks are the execution
counts, and the section says whether the load generator may have set the pace.
"""

from __future__ import annotations

from typing import Any

from bench import report
from bench.graphql_clients import KEY_A, KEY_B

SECTION = "## GraphQL publish fan-out"
GENERATOR_WANTED = 2.0  # the generator's ceiling / a figure, for "not the bottleneck" (bench.run)


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """metric, GraphQL publish, broadcast baseline, ratio (publish / broadcast)."""
    n = r["plan"]["subscribers"]
    out = []
    for name, label in (
        ("A", inputs_label(r["A"]["inputs"])),
        ("B", inputs_label(r["B"]["inputs"])),
    ):
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
        scenario = f"{name} ({s['publishes']} publishes, {inputs_label(s['inputs'])})"
        for check in s["checks"]:
            out.append(
                (
                    f"{scenario}: {check['name']}",
                    _figure(check["measured"]),
                    _figure(check["expected"]),
                    "PASS" if check["ok"] else "FAIL",
                )
            )
    return out


def inputs_label(count: int) -> str:
    """`1 input`, `10 inputs`."""
    return f"{count} input" + ("" if count == 1 else "s")


def _figure(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(f"{v:,}" for v in value)
    return f"{value:,}"


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
    text = "\n\n".join(report.fill(p) for p in paragraphs)
    results = report.markdown_table(
        ("metric", "GraphQL publish", "broadcast (baseline)", "ratio"), rows(r)
    )
    checks = report.markdown_table(
        ("check (measured rounds only)", "measured", "expected", "result"),
        check_rows(r),
        align=("---", "---:", "---:", "---"),
    )
    g = r["generator"]
    verdict, reason = generator_verdict(r)
    generator_text = report.fill(
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
    generator = report.markdown_table(
        (
            "fan-out received by the generator",
            "deliveries/s",
            "ceiling / this",
            "sender busy",
            "generator busy",
            "generator us/delivery",
        ),
        generator_rows(r),
    )
    notes = report.fill(
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
    lead = report.fill(
        "Executions, from the origin's own counts and the node's `GET /stats`; unexpected "
        "frames, from the clients' own counts:"
    )
    return (
        f"{SECTION}\n\n{text}\n\n{results}\n\n{notes}\n\n{lead}\n\n{checks}\n\n"
        f"### Is the load generator the bottleneck? {verdict}\n\n{generator_text}\n\n"
        f"{generator}\n"
    )


def print_summary(r: dict[str, Any]) -> None:
    for row in (*rows(r), *check_rows(r), *generator_rows(r)):
        print(" | ".join(row))
    print("is the load generator the bottleneck? " + " - ".join(generator_verdict(r)))
