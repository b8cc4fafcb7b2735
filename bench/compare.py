"""Before and after a change: `python -m bench.compare --before REV` (issue 15's check that a
refactor cost no speed).

Each benchmark already measures the node against a baseline in the same run; what moves between
two runs of the same code on these shared machines is mostly noise. So this runs the benchmarks of
REV (in a temporary git worktree sharing this tree's .venv) and of the working tree interleaved,
before then after, as many times as asked, and tables each same-run ratio as the median and range
over the runs of each side. A ratio whose ranges overlap moved by noise; one that moved outside
both ranges is worth a profile.

    python -m bench.compare --before 7ceabd2 --benches run:3,cluster,graphql:4,handshakes:4,aws:2
    python -m bench.compare --table-only            # the table again, from the logs of the last run

Logs go to bench/results/compare/<side>-<bench>-<run>.log; the table to stdout and, unless
--no-report, to the "Before and after a change" section of docs/performance.md. The benchmarks
rewrite docs/performance.md as they run (bench.run the whole file), so it is put back as it was
before the section is written: `make bench` records the full report.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import COMPARE_TITLE, REPO, progress, write_section

OUT = REPO / "bench" / "results" / "compare"
SIDES = ("before", "after")
BENCH_TIMEOUT = 1800  # seconds; bench.aws takes about 4 minutes
say = progress("compare")


@dataclass(frozen=True)
class Figure:
    """One ratio a benchmark prints: the line it starts with and which column holds it."""

    bench: str
    label: str
    column: int
    meaning: str


# Same-run ratios (and two billed-request counts) from the benchmarks' summary tables on stdout.
# bench.run prints columns split by two or more spaces; the others print markdown rows.
FIGURES = (
    Figure(
        "run",
        "echo throughput, 100 conn x 10 in flight",
        4,
        "bench.run: echo throughput, node / bare websockets (higher is better)",
    ),
    Figure(
        "run",
        "round trip p50, 1 conn x 1 in flight",
        4,
        "bench.run: round trip p50, node / bare websockets (lower)",
    ),
    Figure(
        "run",
        "RSS per idle connection at 10000",
        4,
        "bench.run: RSS per idle connection, node / bare websockets (lower)",
    ),
    Figure(
        "run",
        "send to all 10000 (median of 9)",
        4,
        "bench.run: send to all 10,000, node / bare websockets (lower)",
    ),
    Figure(
        "run",
        "diagnostic: throughput, node with built-in echo origin",
        4,
        "bench.run: echo-origin throughput, node / bare websockets (higher)",
    ),
    Figure(
        "cluster",
        "forwarded sends/s, 100 connections",
        3,
        "bench.cluster: forwarded / local sends/s (higher)",
    ),
    Figure(
        "cluster", "one hop added, p50 (ms)", 3, "bench.cluster: one hop added, p50 in ms (lower)"
    ),
    Figure(
        "cluster",
        "forwarded sends/s at 10% loss",
        3,
        "bench.cluster: at 10% loss / lossless (higher)",
    ),
    Figure(
        "graphql",
        "A: deliveries/s",
        3,
        "bench.graphql A: publish / broadcast deliveries/s (higher)",
    ),
    Figure(
        "graphql",
        "A: node CPU per delivery (us)",
        3,
        "bench.graphql A: node CPU per delivery, publish / broadcast (lower)",
    ),
    Figure(
        "graphql",
        "B: deliveries/s",
        3,
        "bench.graphql B: publish / broadcast deliveries/s (higher)",
    ),
    Figure(
        "graphql",
        "B: node CPU per delivery (us)",
        3,
        "bench.graphql B: node CPU per delivery, publish / broadcast (lower)",
    ),
    Figure(
        "handshakes",
        "bare websockets server",
        2,
        "bench.handshakes: bare websockets / node handshakes/s, no authorizer (lower)",
    ),
    Figure(
        "handshakes",
        "JWT, a different token each handshake",
        3,
        "bench.handshakes: JWT, new token / no authorizer (higher)",
    ),
    Figure(
        "handshakes",
        "Lambda REQUEST authorizer, cached",
        3,
        "bench.handshakes: cached Lambda authorizer / none (higher)",
    ),
    Figure(
        "aws",
        "SQS FIFO, packed (default)",
        2,
        "bench.aws: FIFO packed events/s / HTTP origin (higher)",
    ),
    Figure(
        "aws",
        "SQS standard, packed (default)",
        2,
        "bench.aws: standard packed events/s / HTTP origin (higher)",
    ),
    Figure(
        "aws",
        "SQS commands queue, 100 sends a message",
        3,
        "bench.aws: commands queue CPU per delivery / POST (lower)",
    ),
    Figure(
        "aws",
        "FIFO events queue, packed (default)",
        8,
        "bench.aws: FIFO billed requests per 1,000 messages",
    ),
    Figure(
        "aws",
        "standard events queue, packed (default)",
        8,
        "bench.aws: standard billed requests per 1,000 messages",
    ),
)


def cells(line: str) -> list[str]:
    """The cells of a summary row: pipes, or bench.run's columns of two spaces or more."""
    if "|" in line:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]
    return re.split(r"\s{2,}", line.strip())


def number(cell: str) -> float:
    """1,234.5 / +0.170 ms / 1.43x / 0.59 as a float."""
    match = re.search(r"[-+]?\d[\d,]*(\.\d+)?", cell)
    if match is None:
        raise ValueError(f"no number in {cell!r}")
    return float(match.group(0).replace(",", ""))


def read_figure(text: str, figure: Figure) -> float | None:
    """The figure from one run's stdout, or None if that run did not print it."""
    for line in text.splitlines():
        row = cells(line)
        if row and row[0].startswith(figure.label):
            return number(row[figure.column]) if len(row) > figure.column else None
    return None


def logs(side: str, bench: str, out: Path) -> list[Path]:
    return sorted(out.glob(f"{side}-{bench}-*.log"))


def summary(values: Sequence[float]) -> str:
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.2f}"
    return f"{middle:.2f} ({min(values):.2f}-{max(values):.2f}, {len(values)} runs)"


def table(out: Path, before: str) -> str:
    rows = [
        f"| figure | before ({before}): median (range) | after | after / before |",
        "| --- | ---: | ---: | ---: |",
    ]
    for figure in FIGURES:
        sides = []
        for side in SIDES:
            found = (
                read_figure(path.read_text(), figure) for path in logs(side, figure.bench, out)
            )
            sides.append([value for value in found if value is not None])
        if not any(sides):
            continue
        was, now = sides
        change = (
            f"{statistics.median(now) / statistics.median(was):.2f}"
            if was and now and statistics.median(was)
            else "-"
        )
        rows.append(f"| {figure.meaning} | {summary(was)} | {summary(now)} | {change} |")
    return "\n".join(rows)


def parse_benches(text: str) -> list[tuple[str, int]]:
    """ "run:3,cluster" -> [("run", 3), ("cluster", 1)]."""
    plan = []
    for item in text.split(","):
        name, _, runs = item.strip().partition(":")
        if not re.fullmatch(r"[a-z_]+", name) or not (REPO / "bench" / f"{name}.py").is_file():
            raise argparse.ArgumentTypeError(f"no benchmark bench/{name}.py")
        count = int(runs) if runs else 1
        if not 1 <= count <= 10:
            raise argparse.ArgumentTypeError(f"{name}: runs must be 1 to 10 (got {count})")
        plan.append((name, count))
    return plan


def worktree(rev: str) -> Path:
    """REV checked out beside this tree, sharing its .venv (the dependencies may not differ)."""
    path = Path(tempfile.mkdtemp(prefix="wsgw-before-"))
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), rev],
        check=True,
        capture_output=True,
    )
    (path / ".venv").symlink_to(REPO / ".venv")
    return path


def run_interleaved(
    plan: Sequence[tuple[str, int]], trees: dict[str, Path], out: Path, log: Callable[[str], None]
) -> None:
    most = max(runs for _, runs in plan)
    for index in range(1, most + 1):
        for bench, runs in plan:
            if index > runs:
                continue
            for side in SIDES:
                target = out / f"{side}-{bench}-{index}.log"
                log(f"{side} {bench} run {index}/{runs}")
                with target.open("w") as stdout:
                    done = subprocess.run(
                        [str(REPO / ".venv" / "bin" / "python"), "-m", f"bench.{bench}"],
                        cwd=trees[side],
                        stdout=stdout,
                        stderr=subprocess.STDOUT,
                        timeout=BENCH_TIMEOUT,
                        check=False,
                    )
                if done.returncode != 0:
                    log(f"{side} {bench} run {index} exited {done.returncode}: see {target}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--before", default="HEAD", help="the revision to compare with (HEAD)")
    parser.add_argument(
        "--benches",
        type=parse_benches,
        default=parse_benches("run:3,cluster,graphql:3,handshakes:3,aws:2"),
        help="benchmarks with runs per side, as run:3,cluster (default %(default)s)",
    )
    parser.add_argument("--table-only", action="store_true", help="only table the last logs")
    parser.add_argument("--no-report", action="store_true", help="leave docs/performance.md")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    revision_file = OUT / "before.txt"
    if not args.table_only:
        for old in OUT.glob("*.log"):
            old.unlink()
        before = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", args.before],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        revision_file.write_text(before)
        tree = worktree(before)
        report = REPO / "docs" / "performance.md"
        recorded = report.read_text() if report.exists() else None
        try:
            run_interleaved(args.benches, {"before": tree, "after": REPO}, OUT, say)
        finally:
            if recorded is not None:
                report.write_text(recorded)
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
            shutil.rmtree(tree, ignore_errors=True)
    before = revision_file.read_text().strip() if revision_file.exists() else "before"
    text = table(OUT, before)
    print(text)
    if not args.no_report:
        write_section(REPO / "docs" / "performance.md", section(text, before))
    return 0


def section(text: str, before: str) -> str:
    return (
        f"{COMPARE_TITLE}\n\n"
        f"Generated by `.venv/bin/python -m bench.compare --before {before}` (see its docstring): "
        f"the benchmarks of {before} and of the working tree, run interleaved on the same "
        "machine, each figure a same-run ratio (the median over the runs of each side, with the "
        "range). Raw logs: bench/results/compare/.\n\n" + text + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
