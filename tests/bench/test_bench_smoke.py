"""The benchmark must keep running: its quick mode, end to end, with every figure present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_reports_every_metric() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for metric in ("echo throughput", "round trip p50", "RSS per idle connection", "send to all"):
        assert metric in result.stdout
    raw = json.loads((ROOT / "bench" / "results" / "quick.json").read_text())
    assert raw


def test_quick_cluster_and_local_benchmarks_run() -> None:
    for module, metric in (("bench.cluster", "forwarded sends/s"), ("bench.local", "chat latency")):
        result = subprocess.run(
            [sys.executable, "-m", module, "--quick"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert metric in result.stdout, result.stdout[-2000:]
