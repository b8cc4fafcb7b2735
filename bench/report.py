"""Turning raw benchmark results into ratios, a table and docs/performance.md; and the pieces of
report text every benchmark writes the same way (paragraphs, markdown tables, check rows)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

MAKE_COMMAND = "make bench"
RAW_COMMAND = ".venv/bin/python -m bench.run"

# Targets, each a ratio of the node's figure to the bare websockets figure of the same run.
THROUGHPUT_MIN = 0.70
LATENCY_P50_MAX = 3.0
MEMORY_MAX = 1.25
BROADCAST_MAX = 1.2
# The load generator must reach this multiple of the fastest server under test against picows.
GENERATOR_HEADROOM = 2.0


def machine(pin: bool, server_cpu: int | None, load_cpu: int | None) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("websockets", "httptools", "uvloop", "picows", "psutil"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "packages": versions,
        "pinned": pin,
        "server_cpu": server_cpu,
        "load_cpu": load_cpu,
    }


# Report text shared by the benchmarks, so that their sections of the docs read alike.


def fill(text: str) -> str:
    """A paragraph wrapped at 100 columns, never inside a word, a hyphenated name or a URL."""
    return textwrap.fill(text, 100, break_on_hyphens=False, break_long_words=False)


def markdown_table(
    header: Sequence[str], body: Sequence[Sequence[str]], align: Sequence[str] | None = None
) -> str:
    """A markdown table; by default the first column is left-aligned and the figures right."""
    if align is None:
        align = ["---"] + ["---:"] * (len(header) - 1)
    lines = [f"| {' | '.join(header)} |", f"| {' | '.join(align)} |"]
    lines += [f"| {' | '.join(row)} |" for row in body]
    return "\n".join(lines)


def check_rows(checks: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """A benchmark's count checks as table rows: name, measured, expected, PASS or FAIL."""
    return [
        (c["name"], f"{c['measured']}", f"{c['expected']}", "PASS" if c["ok"] else "FAIL")
        for c in checks
    ]


def _ratio(node: float | None, base: float | None) -> float | None:
    if node is None or not base:
        return None
    return node / base


def _row(
    name: str,
    unit: str,
    node: float | None,
    base: float | None,
    target: str,
    passed: bool | None,
    base_name: str = "bare websockets",
) -> dict[str, Any]:
    return {
        "metric": name,
        "unit": unit,
        "node": node,
        "baseline": base,
        "baseline_name": base_name,
        "ratio": _ratio(node, base),
        "target": target,
        "pass": passed,
    }


def summarize(raw: dict[str, Any], quick: bool) -> dict[str, Any]:
    node, base, fast = raw["node"], raw["websockets"], raw["picows"]
    n_idle = base["idle"]["connections"]
    tp = _ratio(node["throughput"]["rate"], base["throughput"]["rate"])
    p50 = _ratio(node["latency"]["p50_us"], base["latency"]["p50_us"])
    mem = _ratio(node["idle"]["bytes_per_connection"], base["idle"]["bytes_per_connection"])
    bc = _ratio(
        node["idle"]["broadcast"]["median_seconds"], base["idle"]["broadcast"]["median_seconds"]
    )
    targets = [
        _row(
            f"echo throughput, {node['throughput']['connections']} conn x "
            f"{node['throughput']['in_flight']} in flight",
            "msg/s",
            node["throughput"]["rate"],
            base["throughput"]["rate"],
            f">= {THROUGHPUT_MIN:.2f}",
            None if tp is None else tp >= THROUGHPUT_MIN,
        ),
        _row(
            "round trip p50, 1 conn x 1 in flight",
            "us",
            node["latency"]["p50_us"],
            base["latency"]["p50_us"],
            f"<= {LATENCY_P50_MAX:g}x",
            None if p50 is None else p50 <= LATENCY_P50_MAX,
        ),
        _row(
            f"RSS per idle connection at {n_idle}",
            "KiB",
            _kib(node["idle"]["bytes_per_connection"]),
            _kib(base["idle"]["bytes_per_connection"]),
            f"<= {MEMORY_MAX:g}x",
            None if mem is None else mem <= MEMORY_MAX,
        ),
        _row(
            f"send to all {n_idle} (median of {len(base['idle']['broadcast']['rounds'])})",
            "ms",
            _ms(node["idle"]["broadcast"]["median_seconds"]),
            _ms(base["idle"]["broadcast"]["median_seconds"]),
            f"<= {BROADCAST_MAX:g}x",
            None if bc is None else bc <= BROADCAST_MAX,
        ),
    ]
    if quick:
        for row in targets:
            row["pass"] = None
    info = [
        _row(
            "round trip p99, 1 conn x 1 in flight",
            "us",
            node["latency"]["p99_us"],
            base["latency"]["p99_us"],
            "-",
            None,
        )
    ]
    echo = raw.get("node-echo")
    if echo:
        info += [
            _row(
                "diagnostic: throughput, node with built-in echo origin (no HTTP)",
                "msg/s",
                echo["throughput"]["rate"],
                base["throughput"]["rate"],
                "-",
                None,
            ),
            _row(
                "diagnostic: p50, node with built-in echo origin (no HTTP)",
                "us",
                echo["latency"]["p50_us"],
                base["latency"]["p50_us"],
                "-",
                None,
            ),
        ]
    fastest = max(node["throughput"]["rate"], base["throughput"]["rate"])
    headroom = fast["throughput"]["rate"] / fastest if fastest else None
    generator = [
        _row(
            "generator check: echo throughput (picows server / faster of the two)",
            "msg/s",
            fast["throughput"]["rate"],
            fastest,
            f">= {GENERATOR_HEADROOM:g}x",
            None if headroom is None else headroom >= GENERATOR_HEADROOM,
            base_name="max(node, websockets)",
        ),
        _row(
            f"generator check: all {n_idle} received (picows server / bare websockets)",
            "ms",
            _ms(fast["idle"]["broadcast"]["median_seconds"]),
            _ms(base["idle"]["broadcast"]["median_seconds"]),
            "< 1x",
            None,
        ),
    ]
    return {"targets": targets, "info": info, "generator": generator}


def _kib(value: float | None) -> float | None:
    return None if value is None else value / 1024


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "msg/s":
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _verdict(row: dict[str, Any]) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[row["pass"]]


def _rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return summary["targets"] + summary["info"] + summary["generator"]


def table(summary: dict[str, Any]) -> str:
    header = ("metric", "unit", "node", "baseline", "ratio", "target", "result")
    lines = [
        (
            row["metric"],
            row["unit"],
            _fmt(row["node"], row["unit"]),
            _fmt(row["baseline"], row["unit"]),
            "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}",
            row["target"],
            _verdict(row),
        )
        for row in _rows(summary)
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    out = [render(header), "  ".join("-" * width for width in widths)]
    out += [render(line) for line in lines]
    out.append("(generator rows: 'node' column = picows echo server, the generator's ceiling)")
    return "\n".join(out)


def markdown(document: dict[str, Any]) -> str:
    meta, summary, raw = document["meta"], document["summary"], document["raw"]
    plan = meta["plan"]
    node, base, fast = raw["node"], raw["websockets"], raw["picows"]
    pin = (
        f"servers (node, bare websockets, picows) on CPU {meta['server_cpu']}; load generator "
        f"and the node's origin on CPU {meta['load_cpu']} (`taskset`)"
        if meta["pinned"]
        else "not pinned (fewer than 2 CPUs, or --no-pin)"
    )
    packages = ", ".join(f"{name} {version}" for name, version in meta["packages"].items())
    lines = [
        "# Performance",
        "",
        f"Generated by `{MAKE_COMMAND}` (= `{RAW_COMMAND}`) on {meta['date']}; the run took "
        f"{meta['seconds']:.0f} s. Every figure of the node sits beside its baseline measured in "
        "the same run, on the same machine, with the same load generator. Regenerate with the same "
        "command; `python -m bench.run --quick` is a short smoke run that writes no report.",
        "",
        "## Machine",
        "",
        f"- nproc: {meta['nproc']}; CPU: {meta['cpu_model']}",
        f"- Python {meta['python']}, Linux {meta['kernel']}",
        f"- {packages}",
        f"- Pinning: {pin}",
        "",
        "## Results",
        "",
        "| metric | unit | node | bare websockets | ratio | target | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in summary["targets"] + summary["info"]:
        lines.append(_md_row(row))
    lines += [
        "",
        "Ratios are node / baseline. Throughput must be at least the target; the others at most.",
        "",
        "## Is the load generator the bottleneck? No",
        "",
        "The same generator, on the same core, against a `picows` echo server (C frame parser) on "
        "the server core:",
        "",
        "| check | unit | picows server | compared with | ratio | wanted | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in summary["generator"]:
        lines.append(_md_row(row, show_base_name=True))
    lines += [
        "",
        "CPU during the throughput window, in percent of one core and in microseconds per "
        f"message (the generator shares CPU {meta['load_cpu']} with the origin; 'others' is every "
        "other process on the machine, which should be near 0):",
        "",
        "| server | msg/s | server | server us/msg | origin | origin us/msg | generator | others |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("picows", fast), ("bare websockets", base), ("node", node)]
    if "node-echo" in raw:
        rows.append(("node, echo origin (no HTTP)", raw["node-echo"]))
    for name, entry in rows:
        tp = entry["throughput"]
        pct, per = tp["cpu"]["percent"], tp["cpu_us_per_message"]
        lines.append(
            f"| {name} | {tp['rate']:,.0f} | {pct['server']:.0f}% | {per['server']:.1f} "
            f"| {_pct(pct.get('origin'))} | {_num(per.get('origin'))} "
            f"| {pct['generator']:.0f}% | {tp['cpu']['others_percent']:.0f}% |"
        )
    lines += ["", "## Details", ""]
    lines += _details(raw, plan)
    lines += ["", "## Method", "", *METHOD.format(**plan, ack=meta["ack"]).strip().splitlines()]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def noise(raw: dict[str, Any], limit: float = 10.0) -> list[str]:
    """Phases during which other processes used a noticeable share of the CPUs."""
    out = []
    for name in ("picows", "websockets", "node", "node-echo"):
        for phase in ("throughput", "latency"):
            if name not in raw:
                continue
            cpu = raw[name][phase]["cpu"]
            others = cpu["others_percent"]
            # CPU times tick every 10 ms: a short window cannot tell.
            if others > limit and cpu["wall_seconds"] >= 1.0:
                out.append(f"{name} {phase}: other processes used {others:.0f}% of a core")
    return out


def _md_row(row: dict[str, Any], show_base_name: bool = False) -> str:
    ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
    base = _fmt(row["baseline"], row["unit"])
    if show_base_name:
        base = f"{base} ({row['baseline_name']})"
    return (
        f"| {row['metric']} | {row['unit']} | {_fmt(row['node'], row['unit'])} | {base} "
        f"| {ratio} | {row['target']} | {_verdict(row)} |"
    )


def _details(raw: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    out = [
        "Latency (microseconds, after a warm-up), and CPU microseconds per round trip:",
        "",
        "| server | samples | p50 | p90 | p99 | mean | max | server CPU/rt | origin CPU/rt "
        "| others |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("picows", "websockets", "node", "node-echo"):
        if name not in raw:
            continue
        lat = raw[name]["latency"]
        per = lat["cpu_us_per_round_trip"]
        out.append(
            f"| {name} | {lat['samples']} | {lat['p50_us']:.0f} | {lat['p90_us']:.0f} "
            f"| {lat['p99_us']:.0f} | {lat['mean_us']:.0f} | {lat['max_us']:.0f} "
            f"| {per['server']:.0f} | {_num(per.get('origin'), 0)} "
            f"| {lat['cpu']['others_percent']:.0f}% |"
        )
    out += [
        "",
        "At light load every message costs the node one HTTP request to the origin and one "
        "`/commands` request back, so its CPU per round trip, not the wire, sets its latency. "
        "`node-echo` is the node with `--origin-transport echo` (every message sent back by the "
        "node itself, no HTTP): the difference to `node` is what the two HTTP hops and the origin "
        "cost. A message through the origin wakes a sleeping process four times on its way "
        "(node, origin, node, client) against twice for the bare echo; on this virtual machine a "
        "wake-up across cores goes through the hypervisor, so the p50 ratio grows when the host "
        "is busy (compare the generator check above with earlier runs before reading it).",
    ]
    rounds = []
    for name in ("picows", "websockets", "node", "node-echo"):
        if name in raw and len(raw[name]["throughput"].get("rates", [])) > 1:
            rates = " / ".join(f"{rate:,.0f}" for rate in raw[name]["throughput"]["rates"])
            p50s = " / ".join(f"{p50:.0f}" for p50 in raw[name]["latency"]["p50s"])
            rounds.append(f"| {name} | {rates} | {p50s} |")
    if rounds:
        out += [
            "",
            "Every round (the tables above show medians):",
            "",
            "| server | msg/s per round | p50 us per round |",
            "| --- | --- | --- |",
            *rounds,
        ]
    noisy = noise(raw)
    if noisy:
        out += ["", "**Noise warning**: " + "; ".join(noisy) + "."]
    out += ["", "Idle connections and broadcast (fresh server processes):", ""]
    out += [
        "| server | connections | opened in | server CPU per handshake | RSS before | RSS after "
        "| per connection | all received: median | min | rounds complete |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("picows", "websockets", "node"):
        idle = raw[name]["idle"]
        bc = idle["broadcast"]
        out.append(
            f"| {name} | {idle['connections']} | {idle['connect_seconds']:.1f} s "
            f"| {idle['server_cpu_us_per_connection']:.0f} us "
            f"| {idle['rss_before'] / 2**20:.1f} MiB | {idle['rss_after'] / 2**20:.1f} MiB "
            f"| {idle['bytes_per_connection'] / 1024:.1f} KiB "
            f"| {_fmt(_ms(bc['median_seconds']))} ms | {_fmt(_ms(bc['min_seconds']))} ms "
            f"| {bc['complete_rounds']}/{len(bc['rounds'])} |"
        )
    answered = [
        r["command_answered_seconds"]
        for r in raw["node"]["idle"]["broadcast"]["rounds"]
        if r["command_answered_seconds"] is not None
    ]
    if answered:
        out += [
            "",
            "The node answered the `/commands` POST (its writes to all connections done) after "
            + ", ".join(f"{s * 1000:.0f}" for s in answered)
            + " ms in the rounds above.",
        ]
    counters = raw["node"]["throughput"].get("counters", {})
    requests = counters.get("origin.requests", 0)
    if requests:
        out += [
            "",
            "During the node's throughput phase (warm-up included): "
            f"{counters.get('origin.events', 0):,} events in {requests:,} origin requests "
            f"({counters.get('origin.events', 0) / requests:.1f} events per request), "
            f"{counters.get('origin.commandPosts', 0):,} command POSTs "
            f"({counters.get('origin.commandFailures', 0)} failed), "
            f"{counters.get('node.messagesSent', 0):,} messages sent by the node, "
            f"{raw['node']['throughput']['unanswered']} messages left unanswered after the run.",
        ]
    warnings = raw["node"].get("node_log_warnings", 0)
    out += ["", f"Node log lines at WARNING or above during the idle phase: {warnings}."]
    return out


METHOD = """
- **Baseline**: `python -m bench.servers websockets`, a bare `websockets` asyncio server on uvloop,
  `compression=None`, default limits and ping interval; its handler echoes every message
  (`async for m in ws: await ws.send(m)`). A connection to `/control` instead has its messages
  passed to `websockets.asyncio.server.broadcast(server.connections - {{control}}, m)`.
- **Node**: `python -m runtime serve --listen ... --origin-url http://127.0.0.1:P/events
  --command-listen ... --command-token ... --log-level WARNING --log-format json --local-only
  true`, every other
  setting at its default, on uvloop.
- **Origin** (`python -m bench.origin`, its own process, on uvloop and the node's own HTTP/1.1
  layer, `runtime/transports/http1.py`): for each event batch it turns every MESSAGE into one
  `send` command to its connection and posts all of the batch's commands as one
  `POST /commands` over a keep-alive connection. Ack mode of this run: `{ack}`.
  `first` (default) answers the event POST at once and posts the commands right after, as the
  production SQS -> origin -> SNS path is decoupled; `after` (`--ack after`) answers only once the
  node accepted the commands.
- **Node, echo origin** (diagnostic, not a target): the same node with `--origin-transport echo`,
  its built-in origin that turns each MESSAGE into a `send` in-process. Against `node`, it shows
  what the HTTP round trips to and from the origin cost.
- **Load generator**: picows clients (C frame parser) on uvloop in the harness process.
  Messages are {payload_bytes}-byte JSON text frames.
- **Rounds**: for the throughput and latency phases all four servers (picows, websockets, node
  with its origin, node-echo) run at once, idle unless loaded, and {load_rounds} rounds go
  round-robin over them, so that a slow spell of this (virtual) machine hits all alike. Reported:
  the median round for throughput and for each latency percentile; CPU figures over all rounds.
  Ratios are of these medians.
- **Throughput**: {tp_connections} connections, each keeping {tp_in_flight} messages in flight (a
  new message for every echo received), fresh connections each round: {tp_warmup:g} s warm-up,
  then round trips counted over {tp_seconds:g} s. After the window the generator waits (at most
  5 s) for every message it sent to come back, and reports any that did not.
- **Latency**: one connection, one message in flight, {lat_warmup} warm-up round trips then up to
  {lat_count} (at most {lat_seconds:g} s) per round; p50/p99 of `perf_counter_ns` round trips.
- **Memory**: a fresh server process; 50 connections opened and closed to warm code paths;
  RSS (psutil) once stable; {idle_connections} idle connections opened (64 handshakes at a time);
  for the node, wait until it reports them all and has delivered every CONNECT event to the
  origin; RSS once stable. (after - before) / connections. The node's figure includes its
  per-connection state (registry entry, connection ID, encoded event fragment, handler coroutine).
- **Broadcast**: on the same {idle_connections} connections, {broadcast_rounds} rounds. Node: the
  harness takes the connection IDs from the origin (from its CONNECT events), builds the body of
  one `send` command naming them all, then times from just before the `POST /commands` until the
  last client received the message. Baseline: times from the control connection's trigger message
  until the last client received the broadcast. Median of the rounds.
- The idle phases (memory, broadcast) use fresh server processes, one server at a time. All
  children are killed at the end, also on error. Every phase is bounded in time.
- Child logs: `bench/results/logs/`; raw figures: `bench/results/full.json`.
"""
