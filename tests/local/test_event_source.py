"""The local stand-in for Lambda's SQS event source: batches in, partial failures kept."""

from __future__ import annotations

import json
from typing import Any

from runtime.local.event_source import SqsEventSource
from tests.aws import MotoEndpoint


def queue(moto_endpoint: MotoEndpoint, name: str) -> tuple[Any, str]:
    sqs = moto_endpoint.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    for index in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": index}))
    return sqs, url


def remaining(sqs: Any, url: str) -> list[int]:
    """What comes back once the visibility timeout has passed."""
    bodies: list[int] = []
    for _ in range(5):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        for message in messages.get("Messages", []):
            bodies.append(json.loads(message["Body"])["n"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if bodies:
            break
    return sorted(bodies)


def test_only_reported_failures_come_back(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs, url = queue(moto_endpoint, f"{environment_name}-partial")
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.extend(event["Records"])
        failed = [r["messageId"] for r in event["Records"] if json.loads(r["body"])["n"] % 2]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    source = SqsEventSource(sqs, url, handler, region=moto_endpoint.region, wait_seconds=1)
    while len(seen) < 5:
        source.poll_once()
    record = seen[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(f"{environment_name}-partial")
    assert {"messageId", "receiptHandle", "body", "attributes", "awsRegion"} <= set(record)
    assert remaining(sqs, url) == [1, 3]


def test_a_raising_handler_gets_the_whole_batch_again(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs, url = queue(moto_endpoint, f"{environment_name}-raising")

    def handler(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("origin bug")

    source = SqsEventSource(sqs, url, handler, region=moto_endpoint.region, wait_seconds=1)
    handled = 0
    while handled < 5:
        handled += source.poll_once()
    assert source.stats["failed"] == handled
    assert remaining(sqs, url) == [0, 1, 2, 3, 4]
