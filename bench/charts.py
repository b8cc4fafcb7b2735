"""Charts of the benchmark results: `python -m bench.charts` (after `make bench`).

Reads bench/results/full.json (`bench.run`) and bench/results/cluster.json (`bench.cluster`), draws
PNG charts into docs/performance/ (matplotlib, Agg canvas, no display; 800x450 px at 100 dpi) and
writes the "Charts" section of docs/performance.md, which links them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from bench.common import REPO, write_section

RESULTS_DIR = REPO / "bench" / "results"
OUT_DIR = REPO / "docs" / "performance"
DOC = REPO / "docs" / "performance.md"

WIDTH_IN = 8.0
HEIGHT_IN = 4.5
DPI = 100
SIZE_PX = (round(WIDTH_IN * DPI), round(HEIGHT_IN * DPI))

# Which command writes which results file, for the error when one is missing.
PRODUCERS = {
    "full.json": ".venv/bin/python -m bench.run",
    "cluster.json": ".venv/bin/python -m bench.cluster",
}

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")
SECTION_TITLE = "## Charts"
MAKE_HINT = "make bench"


class ResultsError(Exception):
    """A results file is missing, unreadable or lacks a figure a chart needs."""


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        producer = PRODUCERS.get(path.name, "make bench")
        raise ResultsError(
            f"benchmark results not found: {path} (write it with `{producer}` or `make bench`)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ResultsError(f"cannot read benchmark results {path}: {error}") from error
    if not isinstance(data, dict):
        raise ResultsError(f"benchmark results {path}: expected a JSON object")
    return data


def figure(data: dict[str, Any], path: Path, *keys: str) -> Any:
    """`data[k1][k2]...`, or a ResultsError naming the file and the missing key."""
    value: Any = data
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            missing = ".".join(keys[: depth + 1])
            raise ResultsError(f"benchmark results {path}: no `{missing}`")
        value = value[key]
    return value


def _new_figure(title: str, ylabel: str, caption: str, bottom: float = 0.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=bottom)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.01, 0.02, caption, fontsize=8, color="#444444", ha="left", va="bottom")
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": the size stays exactly SIZE_PX. No Software key: same bytes on rerun.
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _bars(ax: Axes, labels: Sequence[str], values: Sequence[float], fmt: str) -> None:
    bars = ax.bar(labels, values, color=COLORS[: len(values)], width=0.6)
    ax.bar_label(bars, fmt=fmt, padding=3, fontsize=9)
    ax.set_ylim(0, max(values) * 1.15)


def throughput_chart(full: dict[str, Any], path: Path, out: Path) -> Path:
    servers = (("node", "node"), ("websockets", "bare websockets"), ("picows", "picows"))
    rates = [float(figure(full, path, "raw", key, "throughput", "rate")) for key, _ in servers]
    plan = figure(full, path, "meta", "plan")
    date = figure(full, path, "meta", "date")
    tp = figure(full, path, "raw", "node", "throughput")
    fig, ax = _new_figure(
        f"Echo throughput, {tp['connections']} connections x {tp['in_flight']} in flight",
        "throughput (msg/s)",
        f"Median of {plan.get('load_rounds', '?')} rounds of {plan.get('tp_seconds', '?')} s, "
        f"{plan.get('payload_bytes', '?')}-byte messages; picows is the load generator's ceiling.\n"
        f"Run {date}, bench/results/full.json ({MAKE_HINT}).",
    )
    _bars(ax, [label for _, label in servers], rates, "{:,.0f}")
    ax.set_xlabel("server")
    return _save(fig, out / "throughput.png")


def latency_chart(full: dict[str, Any], path: Path, out: Path) -> Path:
    servers = (
        ("node", "node (HTTP origin)"),
        ("websockets", "bare websockets"),
        ("node-echo", "node (echo origin)"),
    )
    p50 = [float(figure(full, path, "raw", key, "latency", "p50_us")) for key, _ in servers]
    p99 = [float(figure(full, path, "raw", key, "latency", "p99_us")) for key, _ in servers]
    samples = figure(full, path, "raw", "node", "latency").get("samples", "?")
    rounds = figure(full, path, "meta", "plan").get("load_rounds", "?")
    date = figure(full, path, "meta", "date")
    fig, ax = _new_figure(
        "Round-trip latency, 1 connection x 1 in flight",
        "round trip (µs)",
        f"Each percentile the median of {rounds} rounds; {samples} samples per server in all.\n"
        f"Run {date}, bench/results/full.json ({MAKE_HINT}).",
    )
    positions = range(len(servers))
    width = 0.38
    for offset, values, name, color in (
        (-width / 2, p50, "p50", COLORS[0]),
        (width / 2, p99, "p99", COLORS[1]),
    ):
        bars = ax.bar([x + offset for x in positions], values, width, label=name, color=color)
        ax.bar_label(bars, fmt="{:,.0f}", padding=3, fontsize=9)
    ax.set_xticks(list(positions), [label for _, label in servers])
    ax.set_xlabel("server")
    ax.set_ylim(0, max(p99) * 1.15)
    ax.legend(loc="upper right", frameon=False)
    return _save(fig, out / "latency.png")


def cluster_date(cluster: dict[str, Any], doc: Path | None) -> str:
    """cluster.json records no date: take the one `bench.cluster` wrote into its doc section."""
    for found in (cluster.get("date"), cluster.get("machine", {}).get("date")):
        if isinstance(found, str):
            return found
    if doc is not None and doc.is_file():
        match = re.search(
            r"^## Cluster\b.*?\nGenerated by .*? on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)",
            doc.read_text(),
            re.DOTALL | re.MULTILINE,
        )
        if match:
            return match.group(1)
    return "date not recorded"


def cluster_chart(cluster: dict[str, Any], path: Path, out: Path, date: str) -> Path:
    rows = (
        ("local_rate", "local\n(posted to B)"),
        ("forwarded_rate", "forwarded\n(A -> B over UDP)"),
        ("lossy_rate", "forwarded, {loss} loss\n(via proxy)"),
    )
    rates = [float(figure(cluster, path, key)) for key, _ in rows]
    plan = figure(cluster, path, "plan")
    loss = f"{float(plan.get('loss', 0)):.0%}"
    fig, ax = _new_figure(
        f"Cluster: send commands delivered, {plan.get('connections', '?')} connections on node B",
        "throughput (sends/s)",
        f"Median of {plan.get('rounds', '?')} rounds of {plan.get('seconds', '?')} s, "
        f"{plan.get('posters', '?')} HTTP posters; the lossy run drops {loss} of peer datagrams.\n"
        f"Run {date}, bench/results/cluster.json (python -m bench.cluster).",
        bottom=0.27,
    )
    _bars(ax, [label.format(loss=loss) for _, label in rows], rates, "{:,.0f}")
    ax.set_xlabel("delivery path")
    return _save(fig, out / "cluster.png")


def draw(results_dir: Path, out_dir: Path, doc: Path | None) -> list[Path]:
    """Draw every chart; load both files first so a missing one fails before anything is written."""
    full_path = results_dir / "full.json"
    cluster_path = results_dir / "cluster.json"
    full = load(full_path)
    cluster = load(cluster_path)
    return [
        throughput_chart(full, full_path, out_dir),
        latency_chart(full, full_path, out_dir),
        cluster_chart(cluster, cluster_path, out_dir, cluster_date(cluster, doc)),
    ]


def section(charts: Sequence[Path], doc: Path) -> str:
    alts = {
        "throughput.png": "Echo throughput: node, bare websockets, picows (msg/s)",
        "latency.png": "Round-trip latency p50 and p99: node, bare websockets, node-echo (µs)",
        "cluster.png": "Cluster sends/s: local, forwarded over UDP, forwarded at 10% loss",
    }
    lines = [
        SECTION_TITLE,
        "",
        "Drawn by `.venv/bin/python -m bench.charts` from bench/results/full.json and",
        "bench/results/cluster.json: the figures of the tables above.",
        "",
    ]
    for chart in charts:
        link = Path(os.path.relpath(chart, doc.resolve().parent)).as_posix()
        lines += [f"![{alts.get(chart.name, chart.stem)}]({link})", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.charts", description="Draw the benchmark charts."
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="directory of the JSON")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory for the PNG files")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown file to link the charts")
    args = parser.parse_args(argv)
    try:
        charts = draw(args.results, args.out.resolve(), args.doc)
    except ResultsError as error:
        print(f"bench.charts: {error}", file=sys.stderr)
        return 2
    for chart in charts:
        print(chart)
    write_section(args.doc, section(charts, args.doc))
    print(f"{args.doc}: section {SECTION_TITLE[3:]!r} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
