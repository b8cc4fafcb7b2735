"""The handshake benchmark (`python -m bench.handshakes`) must keep running, and keep checking
what it claims: every handshake accepted, each door asked as often as it should be (a token
verified per handshake, one Lambda invoke per TTL, one $connect call per handshake), a refused
handshake or a wrong count failing the run, and a report that replaces its own section only."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.utils import accept_key

from bench import handshakes
from bench.common import write_section
from runtime.transports.base import Allow
from runtime.transports.http1 import Request as HttpRequest
from runtime.wire.request_authorizer import parse_answer
from tests.bench.quick import DOC, quick_run


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run for the whole module: its raw results, stdout and the doc's digest."""
    return quick_run("bench.handshakes", tmp_path_factory.mktemp("handshakes") / "raw.json", 60)


def test_quick_run_accepts_every_handshake_and_counts_each_door(quick: dict[str, Any]) -> None:
    r, plan = quick["raw"], handshakes.QUICK
    assert quick["doc"][0] == quick["doc"][1], "a quick run must not write docs/performance.md"
    assert "handshakes/s" in quick["stdout"] and "FAIL" not in quick["stdout"]
    assert set(r["configurations"]) == {c.key for c in handshakes.CONFIGURATIONS}
    for key, figures in r["configurations"].items():
        assert figures["handshakes"] == plan.handshakes, key
        assert figures["failures"] == {}, key
        assert figures["per_second"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"], key
        assert figures["server_cpu_us"] > 0, key
    assert all(check["ok"] for check in r["checks"]), r["checks"]
    counts, total = r["counts"], plan.warmup + plan.handshakes
    assert counts["node"]["jwt"]["authorizer.verified"] == total  # no cache hit: all different
    assert counts["node"]["jwt"].get("authorizer.cacheHits", 0) == 0
    assert counts["node"]["jwt-cached"]["authorizer.cacheHits"] >= total - 1
    assert counts["standIns"]["invokes"] == counts["node"]["lambda"]["authorizer.calls"] == 1
    assert counts["standIns"]["connect"] == total
    for key in ("none", "jwt", "jwt-cached", "lambda", "connect"):
        assert counts["node"][key]["connectionsOpened"] == total, key
        assert counts["node"][key].get("handshakesRefused", 0) == 0, key
    assert set(r["targets"]) == {"jwt", "lambda"}
    costs = r["jwt_costs"]
    assert costs["tokens"] == total  # the quick run has fewer than JWT_COST_TOKENS
    assert 0 < costs["rsa_verify_us"] < costs["authorize_us"]
    assert costs["rsa_verify_us"] < costs["pyjwt_decode_us"]  # PyJWT's decode checks one too
    assert costs["read_us"] > 0 and costs["claims_us"] > 0


def test_a_refused_handshake_or_a_wrong_count_fails_the_checks(quick: dict[str, Any]) -> None:
    r = quick["raw"]
    plan = handshakes.Plan(**r["plan"])

    def failed(change: Any) -> set[str]:
        broken = copy.deepcopy(r)
        change(broken)
        checks = handshakes.check_counts(broken, plan, r["seconds"])
        return {check["name"] for check in checks if not check["ok"]}

    assert failed(lambda b: None) == set()

    def refused(b: dict[str, Any]) -> None:
        b["configurations"]["lambda"]["failures"] = {"HTTP 401": 1}
        b["configurations"]["lambda"]["handshakes"] -= 1

    assert failed(refused) == {"lambda: handshakes failed", "lambda: handshakes measured"}

    def cache_answered(b: dict[str, Any]) -> None:  # a verification the cache did instead
        b["counts"]["node"]["jwt"]["authorizer.verified"] -= 1
        b["counts"]["node"]["jwt"]["authorizer.cacheHits"] = 1

    assert failed(cache_answered) == {"jwt: tokens verified", "jwt: verified-token cache hits"}

    def invoked_twice(b: dict[str, Any]) -> None:  # the Lambda answer was not cached
        b["counts"]["node"]["lambda"]["authorizer.calls"] = 2
        b["counts"]["standIns"]["invokes"] = 2
        b["counts"]["node"]["lambda"]["authorizer.cacheHits"] -= 1

    assert failed(invoked_twice) == {"lambda: invokes (one per TTL)"}

    def node_refused(b: dict[str, Any]) -> None:
        b["counts"]["node"]["none"]["handshakesRefused"] = 1

    assert failed(node_refused) == {"none: node handshakes refused"}

    def handler_skipped(b: dict[str, Any]) -> None:
        b["counts"]["standIns"]["connect"] -= 1

    assert failed(handler_skipped) == {"connect: calls the stand-in saw"}


def test_targets_are_ratios_to_the_baseline_of_the_same_run(quick: dict[str, Any]) -> None:
    r = copy.deepcopy(quick["raw"])
    figures = r["configurations"]
    figures["none"]["per_second"] = 1000.0
    figures["jwt"]["per_second"] = 699.0
    figures["lambda"]["per_second"] = 900.0
    assert handshakes.verdicts(r) == {"jwt": False, "lambda": True}
    rows = {row[0]: row for row in handshakes.rows(r)}
    assert rows["JWT, a different token each handshake"][3] == "0.70"  # 0.699, rounded
    assert rows["JWT, a different token each handshake"][-1] == "MISS"
    assert rows["Lambda REQUEST authorizer, cached (TTL 300)"][-1] == "PASS"
    assert rows["no authorizer (baseline)"][-1] == "-"


def test_generator_verdict_says_when_the_generator_may_be_the_limit(
    quick: dict[str, Any],
) -> None:
    r = copy.deepcopy(quick["raw"])
    figures = r["configurations"]
    for key in ("none", "jwt", "jwt-cached", "lambda", "connect"):
        figures[key]["per_second"] = 1000.0
    base = figures["none"]
    base.update(server_cpu_us=500.0, generator_cpu_us=100.0, generator_busy_percent=30.0)
    figures["picows"]["per_second"] = 2500.0
    assert handshakes.generator_verdict(r)[0] == "No"
    figures["picows"]["per_second"] = 1500.0  # short of 2x, but the generator had time to spare
    assert handshakes.generator_verdict(r)[0] == "No"
    base.update(generator_cpu_us=400.0, generator_busy_percent=90.0)  # as costly as the node
    verdict, reason = handshakes.generator_verdict(r)
    assert verdict == "Possibly" and "CPU per handshake" in reason


def test_report_replaces_only_its_section(quick: dict[str, Any], tmp_path: Path) -> None:
    r = quick["raw"]
    section = handshakes.markdown(r)
    assert section.startswith(handshakes.SECTION + "\n")
    words = " ".join(section.split())  # paragraphs are wrapped at 100 columns
    assert f"`{r['command']}`" in words and r["machine"]["date"] in words
    for row in handshakes.rows(r):
        assert f"| {' | '.join(row)} |" in section
    assert "FAIL" not in section
    assert "### Where a JWT handshake's time goes" in section
    assert "### Is the load generator the bottleneck?" in section
    doc = tmp_path / "performance.md"
    if DOC.exists():
        shutil.copy(DOC, doc)
    before = doc.read_text() if doc.exists() else "# Performance\n"
    others = [line for line in before.splitlines() if line.startswith("## ")]
    for _ in range(2):  # a second run replaces the section rather than appending another
        write_section(doc, section)
        text = doc.read_text()
        assert text.count(handshakes.SECTION) == 1
        assert [line for line in text.splitlines() if line.startswith("## ")] == others + (
            [] if handshakes.SECTION in others else [handshakes.SECTION]
        )


def test_answer_problem_checks_status_and_accept_key() -> None:
    accept = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: "
    assert handshakes.answer_problem(good + accept, accept) == ""
    assert handshakes.answer_problem(good.lower() + accept, accept) == "not an HTTP/1.1 answer"
    lower = b"HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept:" + accept + b"  "
    assert handshakes.answer_problem(lower, accept) == ""
    assert handshakes.answer_problem(good + b"x" + accept, accept) == "wrong Sec-WebSocket-Accept"
    assert handshakes.answer_problem(b"HTTP/1.1 101 OK\r\nUpgrade: websocket", accept) == (
        "no Sec-WebSocket-Accept"
    )
    assert handshakes.answer_problem(b"HTTP/1.1 401 Unauthorized", accept) == "HTTP 401"
    assert handshakes.answer_problem(b"HTTP/1.1 429", accept) == "HTTP 429"
    assert handshakes.answer_problem(b"SSH-2.0-OpenSSH", accept) == "not an HTTP/1.1 answer"
    assert handshakes.answer_problem(b"", accept) == "not an HTTP/1.1 answer"


async def test_generator_counts_refusals_and_clean_handshakes_against_a_real_server() -> None:
    """The hand-written client against a websockets server that refuses requests without the
    bench's token: each refusal is counted by its status, each accepted handshake closes
    cleanly, and the server saw every header the generator was told to send."""
    seen: list[str | None] = []

    def gate(connection: ServerConnection, request: Request) -> Response | None:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer good":
            return connection.respond(401, "no\n")
        return None

    async def handler(connection: ServerConnection) -> None:
        await connection.wait_closed()

    def headers(index: int) -> bytes:
        return handshakes.bearer("good" if index % 3 else "bad")

    async with serve(handler, "127.0.0.1", 0, process_request=gate) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        run = await handshakes.handshake_run(url, 30, 8, headers, first=0)
        clean = await handshakes.handshake_run(url, 20, 5, lambda _: handshakes.bearer("good"))
    assert run.failures == {"HTTP 401": 10}
    assert run.handshakes == len(run.latencies) == 20
    assert sorted(seen[:30]) == sorted(["Bearer bad"] * 10 + ["Bearer good"] * 20)
    assert clean.failures == {} and clean.handshakes == 20
    assert all(0 < latency < handshakes.HANDSHAKE_TIMEOUT for latency in clean.latencies)
    assert clean.seconds > 0 and clean.generator_cpu > 0


async def test_generator_counts_a_server_that_never_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that answers 101 and then ignores the close frame: the handshake is lost, not
    counted, and the run still ends (bounded by the close timeout)."""
    monkeypatch.setattr(handshakes, "HANDSHAKE_TIMEOUT", 0.3)
    monkeypatch.setattr(handshakes, "CLOSE_TIMEOUT", 0.2)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head.decode().split("\r\n"))
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(request['sec-websocket-key'])}\r\n\r\n".encode()
        )
        await reader.read()  # the close frame arrives; no close frame goes back
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        run = await handshakes.handshake_run(f"ws://127.0.0.1:{port}/", 3, 3, handshakes.no_headers)
    assert run.failures == {"timed out after 101": 3}
    assert run.handshakes == 0


def test_stand_in_lambda_allows_the_method_arn_it_was_asked_about() -> None:
    """The stand-in answers as a REQUEST authorizer that allows: the node's own parser reads an
    Allow for the event's methodArn, with the context."""
    stand_ins = handshakes.StandIns(b'{"keys": []}')
    arn = "arn:aws:execute-api:local:000000000000:abc/local/$connect"
    body = json.dumps({"type": "REQUEST", "methodArn": arn}).encode()
    answer = asyncio.run(stand_ins.route(HttpRequest("POST", handshakes.INVOKE_PATH, "", {}, body)))
    verdict = parse_answer(answer.body, arn)
    assert isinstance(verdict, Allow)
    assert verdict.context == {"principalId": "bench-user", "tier": "bench"}
    other = asyncio.run(stand_ins.route(HttpRequest("GET", "/nowhere", "", {}, b"")))
    assert other.status == 404 and stand_ins.errors == ["GET /nowhere"]
    assert stand_ins.counts == {"invokes": 1}
