"""The channel benchmark must keep running, and keep checking what it claims to measure: every
fan-out reaching each client once, a publish forwarded only where it is needed, the subscriptions
it measures really held; the presence count read by its contract (and skipped, saying so, where
the node does not serve it); a report that replaces its own section only."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench import channels_report
from bench.channels import QUICK
from bench.channels_fanout import KINDS
from bench.channels_presence import CHANNEL, NOT_BUILT, PresencePhase, count_check, probe
from bench.channels_stage import Node, Stage
from bench.common import write_section
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_client import HttpClient
from runtime.transports.http1_server import HttpServer
from runtime.wire.connection_id import NodeAddress
from tests.bench.quick import quick_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run (a few seconds) for the tests of this module."""
    return quick_run("bench.channels", tmp_path_factory.mktemp("channels") / "raw.json", 120)


def test_quick_run_checks_every_delivery_and_writes_no_report(quick: dict[str, Any]) -> None:
    raw = quick["raw"]
    before, after = quick["doc"]
    assert before == after, "a quick run must leave docs/performance.md alone"
    assert "cluster publish" in quick["stdout"]
    failed = [check for check in raw["checks"] if not check["ok"]]
    assert raw["checks"] and not failed, failed
    names = " ".join(check["name"] for check in raw["checks"])
    for part in ("cluster clients", "single clients", "picows clients", "forwarded", "memory"):
        assert part in names
    plan = raw["plan"]
    for kind in KINDS:
        figures = raw["fanout"][kind]
        assert figures["complete"] == figures["rounds"] == plan["rounds"], kind
        assert figures["p50_ms"] > 0 and figures["server_cpu_us_per_delivery"] > 0, kind
    memory = raw["memory"]
    assert memory["subscriptions"] == plan["subscribers"] * plan["memory_channels_each"]
    assert memory["node_subscriptions"] == memory["subscriptions"]
    assert memory["bytes_per_connection"] > 0
    presence = raw["presence"]
    if presence["probe"]["status"] == 404:  # presence is built apart: skipped, with the reason
        assert presence["skipped"] == NOT_BUILT
        assert "presence_p50_ms" not in raw["targets"]
    else:
        assert presence["count"]["p50_ms"] > 0 and "presence: counts" in names
        assert "presence_p50_ms" in raw["targets"]


def _stand_in(answers: dict[str, Any]) -> Any:
    """A command listener answering the presence contract with fixed documents (others 404)."""

    async def route(request: Request) -> Response:
        document = answers.get(request.path)
        if request.method != "GET" or document is None:
            return json_response({"error": f"no such path: {request.path}"}, 404)
        return json_response(document)

    return route


async def _with_stand_in(answers: dict[str, Any], work: Any) -> Any:
    server = HttpServer(_stand_in(answers), max_body_bytes=1 << 16, name="presence-stand-in")
    await server.start("127.0.0.1", 0)
    client = HttpClient(f"http://127.0.0.1:{server.port}/commands")
    node = Node("stand-in", None, "", NodeAddress("127.0.0.1", 9), client)  # type: ignore[arg-type]
    stage = Stage(None, "test", {})  # type: ignore[arg-type]
    try:
        return await work(stage, node)
    finally:
        await client.close()
        await server.stop(timeout=0.5)


def test_presence_is_skipped_where_the_node_answers_404() -> None:
    async def work(stage: Stage, node: Node) -> dict[str, Any]:
        return await probe(stage, node, 5, "bench:fanout")

    answer = asyncio.run(_with_stand_in({}, work))
    assert answer["skipped"] == NOT_BUILT and answer["status"] == 404


def test_presence_count_is_measured_and_checked_by_its_contract() -> None:
    members = 100_000
    count = {"channel": CHANNEL, "count": members}
    answers = {f"/channels/{CHANNEL}": count, "/stats": {"connections": 0}}
    plan = replace(QUICK, presence_warmup=2, presence_samples=8)

    async def work(stage: Stage, node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
        probed = await probe(stage, node, members, CHANNEL)
        return probed, await PresencePhase(plan, None, {}).measure(node)  # type: ignore[arg-type]

    probed, measured = asyncio.run(_with_stand_in(answers, work))
    assert probed["answer"] == count and "skipped" not in probed
    assert len(measured["answers"]) == plan.presence_samples
    for what in ("count", "stats"):
        assert 0 < measured[what]["p50_ms"] <= measured[what]["max_ms"]
    assert count_check("counts", measured["answers"], members)["ok"]
    # A partial answer (a peer left out) or a wrong count fails the check.
    assert not count_check("counts", [{"count": members, "partial": True}], members)["ok"]
    assert not count_check("counts", [count, {"count": members - 1}], members)["ok"]


def test_report_from_quick_results_replaces_only_its_section(
    quick: dict[str, Any], tmp_path: Path
) -> None:
    """Rendered from a quick run's raw results, with presence both skipped and measured."""
    results = quick["raw"]
    measured = {
        "members": 600,
        "nodes": 2,
        "shares": [300, 300],
        "connect_seconds": 0.5,
        "samples": 10,
        "count": {"p50_ms": 1.5, "p99_ms": 2.0, "max_ms": 3.0},
        "stats": {"p50_ms": 0.5, "p99_ms": 0.7, "max_ms": 1.0},
        "example_answer": {"channel": CHANNEL, "count": 600},
        "node_log_lines": {},
    }
    doc = tmp_path / "performance.md"
    shutil.copy(ROOT / "docs" / "performance.md", doc)
    others = [line for line in doc.read_text().splitlines() if line.startswith("## ")]
    for presence in ({"skipped": NOT_BUILT}, measured):
        results = {**results, "presence": presence}
        results["targets"] = channels_report.verdicts(results)
        assert ("presence_p50_ms" in results["targets"]) == ("skipped" not in presence)
        section = channels_report.markdown(results)
        assert section.startswith(channels_report.SECTION + "\n")
        assert f"`{results['command']}`" in section
        for row in channels_report.target_rows(results):
            assert f"| {' | '.join(row)} |" in section
        json.dumps(results)  # what finish() stores must stay JSON
        for _ in range(2):  # a second run replaces the section rather than appending another
            write_section(doc, section)
            text = doc.read_text()
            assert text.count(channels_report.SECTION) == 1
            headings = [line for line in text.splitlines() if line.startswith("## ")]
            assert headings == others + (
                [] if channels_report.SECTION in others else [channels_report.SECTION]
            )
