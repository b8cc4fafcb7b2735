"""bench.compare reads each benchmark's summary lines and tables the same-run ratios of both
sides; what it reads is the benchmarks' own stdout, so the samples here are lines they print."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import common, compare

RUN = """\
metric                                                                  unit     node  baseline  ratio    target  result
---------------------------------------------------------------------  -----  -------  --------  -----  --------  ------
echo throughput, 100 conn x 10 in flight                               msg/s   30,370    57,507   0.53   >= 0.70    FAIL
round trip p50, 1 conn x 1 in flight                                      us      360      96.8   3.72     <= 3x    FAIL
"""  # noqa: E501
CLUSTER = "one hop added, p50 (ms) | 0.305 | 0.135 | +0.170 ms | <= 0.3 ms PASS\n"
HANDSHAKES = """\
| configuration | handshakes | handshakes/s | vs no authorizer | p50 (ms) | p99 (ms) | node CPU (us/handshake) | target | result |
| JWT, a different token each handshake | 3,000 | 1,603 | 0.75 | 29.82 | 53.37 | 613 | >= 0.70 | PASS |
| bare websockets server | 3,234 | 1.51 | 307 | 99% | 50% | 153 |
"""  # noqa: E501
AWS = "| SQS commands queue, 100 sends a message (SDK-packed) | 60,304 | 16.0 | 1.19x | <= 2x | PASS |\n"  # noqa: E501


def figure(bench: str, label: str) -> compare.Figure:
    return next(f for f in compare.FIGURES if f.bench == bench and f.label.startswith(label))


@pytest.mark.parametrize(
    ("text", "bench", "label", "value"),
    [
        (RUN, "run", "echo throughput", 0.53),
        (RUN, "run", "round trip p50", 3.72),
        (CLUSTER, "cluster", "one hop added", 0.170),
        (HANDSHAKES, "handshakes", "JWT", 0.75),
        (HANDSHAKES, "handshakes", "bare websockets", 1.51),
        (AWS, "aws", "SQS commands queue", 1.19),
    ],
)
def test_each_figure_is_read_from_the_line_its_benchmark_prints(
    text: str, bench: str, label: str, value: float
) -> None:
    assert compare.read_figure(text, figure(bench, label)) == pytest.approx(value)


def test_a_figure_a_run_did_not_print_is_none() -> None:
    assert compare.read_figure("nothing here\n", figure("run", "echo throughput")) is None


def test_the_table_gives_median_and_range_per_side(tmp_path: Path) -> None:
    for side, values in (("before", ("0.53", "0.61", "0.58")), ("after", ("0.63", "0.59"))):
        for index, value in enumerate(values, 1):
            line = RUN.splitlines()[2].replace("0.53", value)
            (tmp_path / f"{side}-run-{index}.log").write_text(line + "\n")
    rows = compare.table(tmp_path, "abc1234").splitlines()
    assert rows[0].startswith("| figure | before (abc1234)")
    assert len(rows) == 3  # only the figure the logs hold
    assert rows[2] == (
        "| bench.run: echo throughput, node / bare websockets (higher is better) "
        "| 0.58 (0.53-0.61, 3 runs) | 0.61 (0.59-0.63, 2 runs) | 1.05 |"
    )


def test_benches_are_named_with_their_runs() -> None:
    assert compare.parse_benches("run:3, cluster") == [("run", 3), ("cluster", 1)]
    with pytest.raises(argparse.ArgumentTypeError, match="no benchmark"):
        compare.parse_benches("nosuch")
    with pytest.raises(argparse.ArgumentTypeError, match="runs must be 1 to 10"):
        compare.parse_benches("run:0")


def test_bench_run_keeps_the_comparison_when_it_rewrites_the_report() -> None:
    report = "# Performance\n\n## Results\n\nold\n\n## Before and after a change\n\n| t |\n\n## X\n"
    kept = common.section_of(report, common.COMPARE_TITLE)
    assert kept == "## Before and after a change\n\n| t |\n"
    assert common.section_of("# Performance\n", common.COMPARE_TITLE) is None
