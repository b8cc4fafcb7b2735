"""The AWS-path benchmark (`python -m bench.aws`) must keep running and keep checking what it
claims: every event reaches its receiver, every delivery its client, every message its reply;
billed requests add up to what the stand-in billed; a wrong count fails the run; and the report
replaces its own section only."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest

from bench import aws, prices
from bench.aws_standin import AwsStandIn
from bench.common import BenchFailure, write_section
from runtime.origin.client import GatewayClient
from runtime.wire.commands import parse_body
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from tests.bench.quick import DOC, quick_run


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run for the whole module: its raw results, stdout and the doc's digest."""
    return quick_run("bench.aws", tmp_path_factory.mktemp("aws") / "raw.json", 90)


def test_quick_run_counts_every_event_delivery_and_reply(quick: dict[str, Any]) -> None:
    r, plan = quick["raw"], aws.QUICK
    assert quick["doc"][0] == quick["doc"][1], "a quick run must not write docs/performance.md"
    assert "events/s" in quick["stdout"] and "FAIL" not in quick["stdout"]
    assert all(check["ok"] for check in r["checks"]), [c for c in r["checks"] if not c["ok"]]
    assert set(r["events"]) == {mode.key for mode in aws.EVENT_MODES}
    for key, figures in r["events"].items():
        assert figures["sent"] == figures["acknowledged"] == figures["received"] > 0, key
        assert figures["rate"] > 0 and figures["cpu_us"]["server"] > 0, key
    # Packing puts many events in a message; one event a message puts one.
    assert r["events"]["sqs"]["received"] > 2 * r["events"]["sqs"]["receiver_messages"]
    single = r["events"]["sqs-single"]
    assert single["receiver_messages"] >= single["received"]  # CONNECT/DISCONNECT ride too
    for key, figures in r["deliveries"].items():
        assert figures["delivered"] == figures["expected"] > 0, key
        assert figures["node_cpu_us"] > 0, key
    for pipeline in aws.PIPELINES:
        figures = r["pipelines"][pipeline.key]
        assert ("billing" in figures) == pipeline.billing, pipeline.key
        assert ("latency" in figures) == pipeline.latency, pipeline.key
        if pipeline.billing:
            billing = figures["billing"]
            assert billing["replies"] == billing["sent"] == plan.billed_messages
            assert billing["lambda"]["events"]["MESSAGE"] == plan.billed_messages
            bill = billing["billed"]
            counts = billing["standin"]["billed"]
            assert bill["total"] == counts["sqs"] + counts["sns"] + counts["snsDeliveries"]
            assert billing["per_1000_total"] == pytest.approx(
                bill["total"] * 1000 / plan.billed_messages
            )
        if pipeline.latency:
            latency = figures["latency"]
            assert latency["replies"] == plan.latency_messages
            assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert set(r["billed_per_1000"]) == {"fifo", "standard"}  # what bench/cost.py reads
    assert all(value > 0 for value in r["billed_per_1000"].values())
    assert set(r["round_trips_per_second"]) == {"fifo", "standard"}
    assert set(r["targets"]) == {"events", "deliveries", "billed-fifo", "billed-standard"}
    mapping = r["event_source_mapping"]
    assert r["pipelines"]["fifo"]["batch_size"] == mapping["fifo_batch_size"]
    assert r["pipelines"]["fifo"]["window"] == 0
    assert r["pipelines"]["standard"]["window"] == mapping["standard_window"]


def test_a_lost_event_or_a_missing_reply_fails_the_checks(quick: dict[str, Any]) -> None:
    r = quick["raw"]
    plan = aws.Plan(**r["plan"])

    def failed(change: Any) -> set[str]:
        broken = copy.deepcopy(r)
        change(broken)
        return {check["name"] for check in aws.check_counts(broken, plan) if not check["ok"]}

    assert failed(lambda b: None) == set()

    def event_lost(b: dict[str, Any]) -> None:  # SQS took it, but the queue does not hold it
        b["events"]["sqs"]["received"] -= 1

    assert failed(event_lost) == {"sqs: MESSAGE events the receiver got"}

    def never_taken(b: dict[str, Any]) -> None:
        b["events"]["http"]["acknowledged"] -= 1
        b["events"]["http"]["received"] -= 1

    assert failed(never_taken) == {
        "http: messages taken (node eventsDelivered)",
        "http: MESSAGE events the receiver got",
    }

    def delivery_missing(b: dict[str, Any]) -> None:
        b["deliveries"]["sqs-packed"]["delivered"] -= 1
        b["deliveries"]["sqs-packed"]["uneven_rounds"] = 1

    assert failed(delivery_missing) == {
        "sqs-packed: deliveries at the clients",
        "sqs-packed: rounds with a client given too many or too few",
    }

    def reply_missing(b: dict[str, Any]) -> None:
        billing = b["pipelines"]["standard"]["billing"]
        billing["replies"] -= 1
        billing["clients_short"] = 1

    assert failed(reply_missing) == {"standard: replies", "standard: clients short of a reply"}

    def handled_twice(b: dict[str, Any]) -> None:  # a record redelivered and handled again
        b["pipelines"]["fifo"]["billing"]["lambda"]["events"]["MESSAGE"] += 1

    assert failed(handled_twice) == {"fifo: MESSAGE events the Lambda handled"}

    def publish_unseen(b: dict[str, Any]) -> None:
        b["pipelines"]["fifo-single"]["billing"]["lambda"]["publishCalls"] += 1

    assert failed(publish_unseen) == {"fifo-single: PublishBatch calls the stand-in saw"}

    def left_behind(b: dict[str, Any]) -> None:
        b["deliveries"]["sqs-single"]["left_in_queue"] = 3

    assert failed(left_behind) == {"sqs-single: commands left in the queue"}

    def latency_short(b: dict[str, Any]) -> None:
        b["pipelines"]["fifo-linger-0"]["latency"]["replies"] -= 1

    assert failed(latency_short) == {"fifo-linger-0: latency replies"}


def test_billed_items_are_calls_plus_extra_chunks() -> None:
    """Each item bills its calls; the Lambda's receives their own extra 64 KiB chunks; what the
    SQS bill holds beyond that is the node's, counted as sends; the total is the stand-in's."""
    figures = {
        "sent": 1000,
        "standin": {
            "requests": {
                "sqs.SendMessageBatch": 50,
                "sqs.ReceiveMessage": 70,  # 40 Lambda, 30 node
                "sqs.DeleteMessageBatch": 35,  # 10 Lambda, 25 node
                "sns.PublishBatch": 10,
            },
            "billed": {"sqs": 50 + 70 + 35 + 4 + 2, "sns": 12, "snsDeliveries": 12},
        },
        "lambda": {
            "receives": 40,
            "receiveBilled": 44,
            "deleteCalls": 10,
            "invocations": 10,
            "publishMessages": 10,
            "messages": 100,
        },
    }
    bill = aws.billed(figures)
    assert bill["items"] == {
        "node send": 52,
        "Lambda receive": 44,
        "Lambda delete": 10,
        "SDK publish": 12,
        "SNS delivery": 12,
        "node receive": 30,
        "node delete": 25,
    }
    assert bill["unattributed"] == 2
    assert bill["total"] == 161 + 12 + 12
    assert bill["events_per_message"] == 10
    # $ per million client messages: per 1,000 x price per million requests / 1,000.
    fifo = aws.dollars_per_million({"node send": 100.0, "SDK publish": 10.0}, fifo=True)
    assert fifo == pytest.approx(
        (100 * prices.SQS_FIFO_MILLION.usd + 10 * prices.SNS_STANDARD_PUBLISH_MILLION.usd) / 1000
    )
    standard = aws.dollars_per_million({"node send": 100.0, "node receive": 100.0}, fifo=False)
    assert standard == pytest.approx(200 * prices.SQS_STANDARD_MILLION.usd / 1000)


def test_lambda_settings_come_from_infra(tmp_path: Path) -> None:
    mapping = aws.event_source_mapping()
    assert mapping.batch(True) == (mapping.fifo_batch_size, 0.0)
    assert mapping.batch(False) == (mapping.standard_batch_size, mapping.standard_window)
    source = tmp_path / "origin.py"
    source.write_text(
        "FIFO_BATCH_SIZE = 7\nSTANDARD_BATCH_SIZE = 100\n"
        "STANDARD_BATCHING_WINDOW = cdk.Duration.millis(500)\n"
    )
    assert aws.event_source_mapping(source) == aws.EventSourceMapping(7, 100, 0.5)
    source.write_text("FIFO_BATCH_SIZE = 7\n")
    with pytest.raises(BenchFailure, match="STANDARD_BATCH_SIZE, STANDARD_BATCHING_WINDOW"):
        aws.event_source_mapping(source)


async def test_command_bodies_are_what_the_sdk_publishes() -> None:
    """The bodies fed to the commands queue are byte for byte what a GatewayClient publishes for
    as many `send` calls (through the stand-in's topic into its queue), and the node reads them
    as that many sends, one connection each."""
    issuer = ConnectionIdIssuer("us-east-1", NodeAddress("127.0.0.1", 9100))
    node_ids = [issuer.issue() for _ in range(3)]
    standin = AwsStandIn()
    await standin.start()
    try:
        topic = standin.create_topic("commands")
        queue = standin.create_queue("commands")
        standin.subscribe(topic, queue)

        def publish() -> list[str]:
            def factory(service: str, region: str) -> Any:
                return boto3.client(
                    service,
                    region_name=region,
                    endpoint_url=standin.url,
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",
                )

            gateway = GatewayClient(topic_arns={"us-east-1": topic}, client_factory=factory)
            for index in range(7):
                gateway.send(node_ids[index % 3], "hello")
            gateway.flush()
            sqs = factory("sqs", "us-east-1")
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
            return [message["Body"] for message in messages]

        published = await asyncio.to_thread(publish)
    finally:
        await standin.stop()
    assert published == aws.send_bodies(node_ids, "hello", 7, 1)
    commands, rejections = parse_body(published[0], max_payload_bytes=1 << 20)
    assert rejections == [] and len(commands) == 7
    assert [command.connection_ids for command in commands] == [  # type: ignore[attr-defined]
        (node_ids[index % 3],) for index in range(7)
    ]
    two = aws.send_bodies(node_ids, "x", 2, 2, first=1)
    assert [json.loads(body)["commands"][0]["connectionIds"] for body in two] == [
        [node_ids[1]],
        [node_ids[0]],
    ]


def test_generator_verdict_says_when_the_generator_may_be_the_limit(
    quick: dict[str, Any],
) -> None:
    r = copy.deepcopy(quick["raw"])
    for figures in r["events"].values():
        figures.update(rate=1000.0, cpu_us={"server": 30.0, "generator": 5.0})
        figures["busy_percent"] = {"server": 100.0, "generator": 20.0}
    r["events"]["picows"]["rate"] = 2500.0
    aws.summarize(r)
    assert aws.generator_verdict(r)[0] == "No"
    r["events"]["picows"]["rate"] = 1500.0  # short of 2x, but the generator had time to spare
    aws.summarize(r)
    assert aws.generator_verdict(r)[0] == "No"
    r["events"]["sqs"]["cpu_us"]["generator"] = 20.0  # nearly as costly as the node
    verdict, reason = aws.generator_verdict(r)
    assert verdict == "Possibly" and "CPU per event" in reason
    r["events"]["sqs"]["cpu_us"]["generator"] = 5.0
    r["events"]["http"]["busy_percent"]["generator"] = 80.0  # busy: it may have held a row back
    assert aws.generator_verdict(r)[0] == "Possibly"


def test_report_replaces_only_its_section(quick: dict[str, Any], tmp_path: Path) -> None:
    r = quick["raw"]
    section = aws.markdown(r)
    assert section.startswith(aws.SECTION + "\n")
    words = " ".join(section.split())  # paragraphs are wrapped at 100 columns
    assert f"`{r['command']}`" in words and r["machine"]["date"] in words
    assert "The Lambda poller is a model" in words
    for rows in (aws.events_rows(r), aws.deliveries_rows(r), aws.billed_rows(r)):
        for row in rows:
            assert f"| {' | '.join(row)} |" in section
    assert "### Is the load generator the bottleneck?" in section
    assert "FAIL" not in section
    doc = tmp_path / "performance.md"
    if DOC.exists():
        shutil.copy(DOC, doc)
    before = doc.read_text() if doc.exists() else "# Performance\n"
    others = [line for line in before.splitlines() if line.startswith("## ")]
    for _ in range(2):  # a second run replaces the section rather than appending another
        write_section(doc, section)
        text = doc.read_text()
        assert text.count(aws.SECTION + "\n") == 1
        assert [line for line in text.splitlines() if line.startswith("## ")] == others + (
            [] if aws.SECTION in others else [aws.SECTION]
        )
