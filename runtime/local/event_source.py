"""Lambda's SQS event source, for running an origin locally: poll a queue, call the handler with
batches shaped like the events Lambda delivers, delete what it did not report as failed.

Semantics follow Lambda's event source mapping with ReportBatchItemFailures: a handler that
returns `{"batchItemFailures": [...]}` has every other record deleted; a handler that raises has
none deleted, so the whole batch comes back after the visibility timeout (and, after the queue's
maxReceiveCount, goes to its DLQ).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("runtime.local")

LambdaHandler = Callable[[dict[str, Any], Any], Any]


class SqsEventSource:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: LambdaHandler,
        *,
        region: str,
        batch_size: int = 10,
        wait_seconds: int = 1,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.region = region
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.stats = {"batches": 0, "records": 0, "failed": 0, "errors": 0}

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; meant for a thread of its own."""
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                self.stats["errors"] += 1
                log.exception("event source poll failed; retrying")
                stop.wait(1.0)

    def poll_once(self) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(message) for message in messages]}
        self.stats["batches"] += 1
        self.stats["records"] += len(messages)
        try:
            result = self.handler(event, None)
        except Exception:
            self.stats["failed"] += len(messages)
            log.exception("origin handler raised; the whole batch will be redelivered")
            return len(messages)
        failed = {
            failure["itemIdentifier"]
            for failure in (result or {}).get("batchItemFailures", [])
            if isinstance(failure, dict) and "itemIdentifier" in failure
        }
        self.stats["failed"] += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
        return len(messages)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = {
            key: value
            for key, value in message.get("Attributes", {}).items()
            if key
            in (
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "SequenceNumber",
                "MessageGroupId",
                "MessageDeduplicationId",
            )
        }
        message_attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "dataType": value.get("DataType", "String"),
            }
            for name, value in message.get("MessageAttributes", {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }
