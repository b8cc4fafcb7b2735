"""One quick run of a benchmark for a whole test module, as `make bench` would start it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "performance.md"


def quick_run(module: str, raw: Path, timeout: float) -> dict[str, Any]:
    """`python -m module --quick --json raw`: its raw results, its stdout, and the digest of
    docs/performance.md before and after (a quick run must leave it alone). The benchmarks run
    this way (bench.aws, bench.handshakes, bench.graphql) all take `--json`."""
    before = _digest()
    result = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"raw": json.loads(raw.read_text()), "stdout": result.stdout, "doc": (before, _digest())}


def _digest() -> str:
    return hashlib.sha256(DOC.read_bytes()).hexdigest() if DOC.exists() else ""
