"""The GraphQL publish benchmark must keep running, and keep checking what it claims to measure:
one origin execution per distinct input per publish, frames the size it says, no frame a client
should not get (a broadcast at a GraphQL client), a report that replaces its own section only."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from picows import WSMsgType

from bench import graphql_clients as clients
from bench import graphql_origin, graphql_report, graphql_results
from bench.common import write_section
from runtime.transports.http1 import Request
from runtime.wire import graphql_contract as contract
from runtime.wire import graphql_ws as gql
from tests.bench.quick import quick_run

ROOT = Path(__file__).resolve().parents[2]
# Results of a real run, kept with the tests: bench/results/ is not committed.
STORED = Path(__file__).with_name("data") / "graphql.json"


def test_quick_run_executes_each_input_once_per_publish(tmp_path: Path) -> None:
    quick = quick_run("bench.graphql", tmp_path / "raw.json", 120)
    assert "deliveries/s" in quick["stdout"]
    raw = quick["raw"]
    plan = raw["plan"]
    for name, inputs, publishes in (
        ("A", 1, plan["publishes"]),
        ("B", plan["inputs"], plan["distinct_publishes"]),
    ):
        checks = {check["name"]: check for check in raw[name]["checks"]}
        assert all(check["ok"] for check in checks.values()), checks
        assert checks["origin subscription_query requests"]["measured"] == inputs * publishes
        assert checks["executions of each input (fewest, most)"]["measured"] == [publishes] * 2
        for kind in ("publish", "broadcast"):
            figures = raw[name][kind]
            assert figures["complete"] == figures["rounds"] == publishes
            assert figures["deliveries_per_second"] > 0 and figures["p99_ms"] > 0
        # The broadcasts went to the plain clients only, the same size as the results.
        assert raw[name]["frame_bytes"] == [plan["message_bytes"]]
        assert raw[name]["broadcast_frame_bytes"] == [plan["message_bytes"]]
        assert checks["unexpected frames at the clients, warm-up included (GraphQL, plain)"][
            "measured"
        ] == [0, 0]
    assert raw["generator"]["deliveries_per_second"] > 0


def test_result_frames_have_the_planned_size_in_both_protocols() -> None:
    """What the node sends (its own encoders) is as long as the broadcast baseline's frame."""
    for seq in (1, 99, 123_456):
        context = clients.tick_context(seq, 128)
        result = gql.encode_json({"data": {"tick": context}})
        broadcast = clients.result_text(seq, context["pad"])
        assert len(broadcast) == 128
        for protocol in gql.PROTOCOLS:
            frame = gql.result_message(protocol, "1", result)
            assert len(frame) == 128
            assert clients.marker(seq) in frame.encode()
        assert clients.marker(seq) in broadcast.encode()
    assert clients.marker(1) not in clients.result_text(12, "x").encode()


class Frame:
    """What a picows listener reads of a frame."""

    def __init__(self, payload: str, msg_type: WSMsgType = WSMsgType.TEXT) -> None:
        self.msg_type = msg_type
        self.payload = payload.encode()

    def get_payload_as_bytes(self) -> bytes:
        return self.payload


def test_a_broadcast_reaching_a_graphql_client_is_unexpected() -> None:
    """GraphQL clients count only their protocol's result of the current publish: a broadcast
    (the node must skip them) or the other protocol's message is unexpected and fails the run."""

    async def feed() -> None:
        for protocol in gql.PROTOCOLS:
            publish, plain = clients.Watch(), clients.Watch()
            client = clients.Subscriber(publish, protocol, "a", clients.KEY_A)
            receiver = clients.Receiver(plain)
            context = clients.tick_context(7, 128)
            result = gql.result_message(protocol, "1", gql.encode_json({"data": {"tick": context}}))
            finished = publish.arm(clients.marker(7), 1)
            client.on_ws_frame(None, Frame(result))
            assert finished.done() and publish.count == 1 and publish.unexpected == 0
            broadcast = clients.result_text(8, clients.tick_context(8, 128)["pad"])
            plain.arm(clients.marker(8), 1)
            client.on_ws_frame(None, Frame(broadcast))  # the publish watch is not armed for it
            receiver.on_ws_frame(None, Frame(broadcast))
            receiver.on_ws_frame(None, Frame(result))  # a result at a plain client
            assert (publish.count, publish.unexpected) == (1, 1)
            assert (plain.count, plain.unexpected) == (1, 1)
            assert publish.samples == [broadcast[:200]]
            other = gql.LEGACY if protocol == gql.MODERN else gql.MODERN
            wrong = gql.result_message(other, "1", gql.encode_json({"data": {"tick": context}}))
            publish.arm(clients.marker(7), 1)
            client.on_ws_frame(None, Frame(wrong))
            assert (publish.count, publish.unexpected) == (0, 2)
            check = graphql_results.unexpected_check({"publish": 2, "broadcast": 1, "picows": 0})
            assert not check["ok"] and check["measured"] == (2, 1)
        assert graphql_results.unexpected_check({"publish": 0, "broadcast": 0, "picows": 0})["ok"]

    asyncio.run(feed())


def test_origin_answers_the_contract_and_counts_executions() -> None:
    origin = graphql_origin.TickOrigin()

    def ask(document: dict[str, object]) -> dict[str, object]:
        request = Request("POST", "/", "", {}, json.dumps(document).encode())
        return json.loads(asyncio.run(origin.route(request)).body)  # type: ignore[no-any-return]

    assert contract.parse_init_answer(ask({"type": "connection_init"})).accept
    start = {"type": "start", "variables": {"digest": "b3", "key": "tick:b"}}
    subscription = contract.parse_start_answer(ask(start)).subscription
    assert subscription is not None
    assert (subscription.digest, subscription.keys) == ("b3", ("tick:b",))
    for _ in range(2):
        query = {"type": "subscription_query", "inputDigest": "b3", "publishContext": {"n": 1}}
        answer = contract.parse_query_answer(ask(query))
        assert answer.result == {"data": {"tick": {"n": 1}}}
    stats = asyncio.run(origin.route(Request("GET", "/stats", "", {}, b"")))
    assert json.loads(stats.body) == {
        "requests": {"connection_init": 1, "start": 1, "subscription_query": 2},
        "queries": {"b3": 2},
    }


def test_report_from_stored_results_replaces_only_its_section(tmp_path: Path) -> None:
    results = json.loads(STORED.read_text())
    section = graphql_report.markdown(results)
    assert section.startswith(graphql_report.SECTION + "\n")
    assert f"`{results['command']}`" in section
    assert "FAIL" not in section
    for row in graphql_report.rows(results):
        assert f"| {' | '.join(row)} |" in section
    doc = tmp_path / "performance.md"
    shutil.copy(ROOT / "docs" / "performance.md", doc)
    before = doc.read_text()
    others = [line for line in before.splitlines() if line.startswith("## ")]
    for _ in range(2):  # a second run replaces the section rather than appending another
        write_section(doc, section)
        text = doc.read_text()
        assert text.count(graphql_report.SECTION) == 1
        assert [line for line in text.splitlines() if line.startswith("## ")] == others + (
            [] if graphql_report.SECTION in others else [graphql_report.SECTION]
        )


def test_an_execution_per_subscriber_fails_the_check() -> None:
    """Had the node run the input once per subscriber, the run must fail, not report figures."""
    subscribers = 4
    before = {"node": {}, "origin": {"requests": {}, "queries": {}}}
    once = {
        "node": {"graphqlSubscriptionQueries": 3, "graphqlSubscriptionResultsSent": 12},
        "origin": {"requests": {"subscription_query": 3}, "queries": {"a": 3}},
    }
    checks = graphql_results.check_executions(before, once, ["a"], 3, subscribers)
    assert all(check["ok"] for check in checks)
    per_subscriber = {
        "node": {"graphqlSubscriptionQueries": 12, "graphqlSubscriptionResultsSent": 12},
        "origin": {"requests": {"subscription_query": 12}, "queries": {"a": 12}},
    }
    failed = {
        c["name"]
        for c in graphql_results.check_executions(before, per_subscriber, ["a"], 3, subscribers)
        if not c["ok"]
    }
    assert failed == {
        "origin subscription_query requests",
        "executions of each input (fewest, most)",
        "node graphqlSubscriptionQueries",
    }
