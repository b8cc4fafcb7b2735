"""The fault benchmark of issue 12 (`python -m bench.attacks`) must keep running, and keep
failing what it should: its quick mode end to end on two cheap attacks against real node
processes, and the verdicts it draws from its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import attacks

ROOT = Path(__file__).resolve().parents[2]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed table's rows by attack number, cell by cell."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines[0] == "| " + " | ".join(attacks.HEADER) + " |", lines[:1]
    cells = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    return {row[0]: row for row in cells}


def test_quick_run_of_three_attacks_holds_every_bound(tmp_path: Path) -> None:
    raw_path = tmp_path / "attacks.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.attacks", "--quick", "--only", "1,2,4", "--json", raw_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = table_rows(result.stdout)
    # 2 reads the SQS queue as an origin would: packed events and all (it once broke on them).
    assert set(rows) == {"1", "2", "4"}
    for row in rows.values():
        assert row[-1] == "PASS", row
        assert row[6].endswith("(100%)"), row  # honest delivered / expected
    outcomes = {o["item"]: o for o in json.loads(raw_path.read_text())["outcomes"]}
    for outcome in outcomes.values():
        assert all(check["ok"] for check in outcome["checks"]), outcome["checks"]
        assert outcome["delivered"] == outcome["expected"] > 0
        assert outcome["rss_peak"] >= outcome["rss_before"] > 0
    flood = outcomes[1]
    assert 0 < flood["buffered_peak"] <= flood["buffered_bound"]
    assert flood["refusals"]["503"] > 0  # the flood reached the bound and was refused
    forged = outcomes[4]
    assert forged["notes"]["datagramsCaught"] == forged["notes"]["datagramsSent"] == 0
    assert forged["refusals"]["GONE"] == forged["notes"]["forgedIds"] > 0


def test_a_loss_or_a_bound_exceeded_fails_the_row() -> None:
    outcome = attacks.Outcome(1, "a flood", size="1 x 56 KB", buffered_bound=100)
    outcome.delivered, outcome.expected = 9, 10
    outcome.check("honest clients: delivered / expected", "9 / 10", "100%", ok=False)
    outcome.check("buffered event bytes", 99, "<= 100", ok=True)
    assert not outcome.ok
    assert attacks.row(outcome)[-1] == "FAIL"
    assert attacks.row(outcome)[6] == "9 / 10 (90%)"
    assert attacks.failures([outcome]) == [
        "item 1: honest clients: delivered / expected: measured 9 / 10, wanted 100%"
    ]


def test_a_message_lost_or_overtaken_is_not_delivered() -> None:
    sent = ["a:0", "a:1", "a:2", "a:3"]
    assert attacks.in_order(sent, sent) == 4
    assert attacks.in_order(["a:0", "a:2", "a:1", "a:3"], sent) == 3  # a:1 overtaken
    assert attacks.in_order(["a:0", "a:1", "a:3"], sent) == 3  # a:2 lost
    assert attacks.in_order(["a:3", "a:2", "a:1", "a:0"], sent) == 1
    assert attacks.in_order(["a:0", "a:0", "x", "a:1", "a:2", "a:3"], sent) == 4  # a repeat


def test_only_takes_attack_numbers() -> None:
    assert attacks.parse_items(None) == [1, 2, 3, 4, 5, 6]
    assert attacks.parse_items("4, 1,4") == [1, 4]
    for wrong in ("0", "7", "1;2", "x"):
        with pytest.raises(ValueError, match="from 1 to 6"):
            attacks.parse_items(wrong)
