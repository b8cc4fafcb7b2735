"""What origin tests need around the moto server: regions, queues read back, Lambda runs, faults.

Everything here talks to moto through real boto3 clients; the fault injection hooks botocore's own
event system, so the client under test is a real one that sees a flaky service.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3

from runtime.local.provision import Resources, provision
from runtime.names import ResourceNames
from runtime.origin.client import BOTO_CONFIG, ClientFactory
from runtime.origin.events import LambdaHandler
from runtime.wire.commands import parse_body
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from tests.aws import MotoEndpoint

MAX_PAYLOAD = 1 << 20  # the node's default --send-buffer-bytes


def issuer(region: str, host: str = "10.0.0.1") -> ConnectionIdIssuer:
    return ConnectionIdIssuer(region, NodeAddress(host, 9100))


def client(endpoint: MotoEndpoint, service: str, region: str) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=endpoint.url)


def provision_region(
    endpoint: MotoEndpoint, environment: str, region: str, *, events_topic: bool = False
) -> Resources:
    """One environment's resources in one region of the shared moto server."""
    return provision(
        client(endpoint, "sqs", region),
        client(endpoint, "sns", region),
        ResourceNames(environment),
        events_topic=events_topic,
    )


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now on a queue (moto delivers SNS to SQS before Publish returns)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)


def commands_on(sqs: Any, queue_url: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Bodies on a commands queue and their commands, each body checked as the node checks it."""
    bodies = [message["Body"] for message in drain(sqs, queue_url)]
    commands: list[dict[str, Any]] = []
    for body in bodies:
        parsed, rejections = parse_body(body, max_payload_bytes=MAX_PAYLOAD)
        assert rejections == [], rejections
        assert len(parsed) == len(json.loads(body)["commands"])
        commands.extend(json.loads(body)["commands"])
    return bodies, commands


@dataclass
class CallCounter:
    """Counts a client's calls per operation, through botocore's event hooks."""

    calls: dict[str, int] = field(default_factory=dict)

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1


@dataclass
class FlakyEntries:
    """Makes PublishBatch fail chosen entries, as SNS does with a server-side entry error.

    The entries are taken out of the request before it is sent, so they really are not published,
    and reported back in `Failed` with SenderFault false, for `failing_calls` calls.
    """

    failing_calls: int
    entry_ids: tuple[str, ...] = ("0",)
    calls: int = 0

    def take_out(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        if self.calls > self.failing_calls:
            return
        entries = params["PublishBatchRequestEntries"]
        dropped = [entry["Id"] for entry in entries if entry["Id"] in self.entry_ids]
        params["PublishBatchRequestEntries"] = [e for e in entries if e["Id"] not in dropped]
        context["dropped"] = dropped

    def report(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        for entry_id in context.get("dropped", []):
            parsed.setdefault("Failed", []).append(
                {
                    "Id": entry_id,
                    "Code": "InternalError",
                    "Message": "injected",
                    "SenderFault": False,
                }
            )


def client_factory(
    endpoint: MotoEndpoint, counter: CallCounter | None = None, flaky: FlakyEntries | None = None
) -> ClientFactory:
    """Real clients on the moto server, with the SDK's retry config and optional hooks."""

    def make(service: str, region: str) -> Any:
        made = boto3.client(
            service, region_name=region, endpoint_url=endpoint.url, config=BOTO_CONFIG
        )
        if counter is not None:
            made.meta.events.register(f"before-call.{service}", counter)
        if flaky is not None and service == "sns":
            made.meta.events.register("provide-client-params.sns.PublishBatch", flaky.take_out)
            made.meta.events.register("after-call.sns.PublishBatch", flaky.report)
        return made

    return make


@dataclass
class EventsQueue:
    """The events queue as Lambda's SQS event source mapping sees it: batches in, failures back."""

    sqs: Any
    url: str
    arn: str
    region: str

    def put(self, events: Iterable[bytes | str | Mapping[str, Any]]) -> None:
        for event in events:
            body = event if isinstance(event, str) else _text(event)
            context = json.loads(body).get("requestContext", {})
            group = context.get("connectionId") or "node"
            self.sqs.send_message(
                QueueUrl=self.url,
                MessageBody=body,
                MessageGroupId=group,
                MessageDeduplicationId=context.get("messageId") or str(hash(body)),
            )

    def run(self, handler: LambdaHandler) -> list[dict[str, Any]]:
        """Invoke the handler until the queue is empty; its partial batch responses."""
        responses = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return responses
            response = handler(self.lambda_event(messages), None)
            responses.append(response)
            failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
            assert not failed, f"records failed: {failed}"
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def lambda_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": message.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": message["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.arn,
                    "awsRegion": self.region,
                }
                for message in messages
            ]
        }


def _text(event: bytes | Mapping[str, Any]) -> str:
    return event.decode() if isinstance(event, bytes) else json.dumps(event)
