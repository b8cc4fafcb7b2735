"""Events to an SQS queue (SendMessageBatch), or to an SNS topic in front of queues (PublishBatch):
each service's own calls and limits. How batches are delivered, resent and refused is the same for
both, in `batch_origin.py`.
"""

from __future__ import annotations

from typing import Any

from runtime.core.sqs_batches import (
    MAX_ENTRIES_PER_CALL,
    SNS_DEFAULT_MESSAGE_BYTES,
    SQS_DEFAULT_MESSAGE_BYTES,
    SQS_MAX_CALL_BYTES,
    STRING,
    Entry,
    deduplication_id,
)
from runtime.transports.batch_origin import (
    DEFAULT_FIFO_GROUPS,
    DEFAULT_KEEPALIVE_GROUP,
    DEFAULT_PACK_BYTES,
    SDK_ATTEMPTS,
    BatchOrigin,
    EntryFailure,
    Limits,
)


class SqsOrigin(BatchOrigin):
    """Events to the origin's SQS queue; on a FIFO queue each connection is a message group."""

    service = "sqs"
    operation = "SendMessageBatch"

    def __init__(
        self,
        queue_url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        concurrency: int = 4,
        timeout: float = 10.0,
        keepalive_group: str = DEFAULT_KEEPALIVE_GROUP,
        max_batch_events: int = MAX_ENTRIES_PER_CALL,
        max_batch_bytes: int | None = None,
        attempts: int = SDK_ATTEMPTS,
        events_per_message: int = 1,
        message_bytes: int = DEFAULT_PACK_BYTES,
        linger: float = 0.0,
        fifo_groups: int = DEFAULT_FIFO_GROUPS,
        group_prefix: str = "b",
    ) -> None:
        self.queue_url = queue_url
        super().__init__(
            queue_url,
            region=region,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            timeout=timeout,
            keepalive_group=keepalive_group,
            max_batch_events=max_batch_events,
            max_batch_bytes=max_batch_bytes,
            attempts=attempts,
            events_per_message=events_per_message,
            message_bytes=message_bytes,
            linger=linger,
            fifo_groups=fifo_groups,
            group_prefix=group_prefix,
        )

    def _assumed_limits(self) -> Limits:
        return Limits(SQS_DEFAULT_MESSAGE_BYTES, SQS_MAX_CALL_BYTES)

    def _read_limits(self) -> Limits:
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"]
        )["Attributes"]
        size = int(attributes.get("MaximumMessageSize", SQS_DEFAULT_MESSAGE_BYTES))
        return Limits(size, max(size, SQS_MAX_CALL_BYTES))

    def _call(self, entries: list[Entry]) -> list[EntryFailure]:
        response = self.client.send_message_batch(
            QueueUrl=self.queue_url, Entries=_batch_entries(entries, "MessageBody", fifo=self.fifo)
        )
        return _failures(entries, response)


class SnsOrigin(BatchOrigin):
    """Events to an SNS topic in front of one or more queues, filterable by their attributes."""

    service = "sns"
    operation = "PublishBatch"

    def __init__(
        self,
        topic_arn: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        concurrency: int = 4,
        timeout: float = 10.0,
        keepalive_group: str = DEFAULT_KEEPALIVE_GROUP,
        max_batch_events: int = MAX_ENTRIES_PER_CALL,
        max_batch_bytes: int | None = None,
        max_message_bytes: int | None = None,
        attempts: int = SDK_ATTEMPTS,
        events_per_message: int = 1,
        message_bytes: int = DEFAULT_PACK_BYTES,
        linger: float = 0.0,
        fifo_groups: int = DEFAULT_FIFO_GROUPS,
        group_prefix: str = "b",
    ) -> None:
        self.topic_arn = topic_arn
        self._max_message_bytes = max_message_bytes
        super().__init__(
            topic_arn,
            region=region,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            timeout=timeout,
            keepalive_group=keepalive_group,
            max_batch_events=max_batch_events,
            max_batch_bytes=max_batch_bytes,
            attempts=attempts,
            events_per_message=events_per_message,
            message_bytes=message_bytes,
            linger=linger,
            fifo_groups=fifo_groups,
            group_prefix=group_prefix,
        )

    def _assumed_limits(self) -> Limits:
        size = self._max_message_bytes or SNS_DEFAULT_MESSAGE_BYTES
        return Limits(size, size)

    def _read_limits(self) -> Limits:
        """A topic's MaximumMessageSize bounds each message and the sum of a batch alike."""
        if self._max_message_bytes:  # given: no need to read it (nor the permission to)
            return self._assumed_limits()
        attributes = self.client.get_topic_attributes(TopicArn=self.topic_arn)["Attributes"]
        size = int(attributes.get("MaximumMessageSize", SNS_DEFAULT_MESSAGE_BYTES))
        return Limits(size, size)

    def _call(self, entries: list[Entry]) -> list[EntryFailure]:
        response = self.client.publish_batch(
            TopicArn=self.topic_arn,
            PublishBatchRequestEntries=_batch_entries(entries, "Message", fifo=self.fifo),
        )
        return _failures(entries, response)


def _batch_entries(entries: list[Entry], body_key: str, *, fifo: bool) -> list[dict[str, Any]]:
    """SQS and SNS batch entries differ only in the name of the body field."""
    return [
        {
            "Id": str(position),
            body_key: entry.body,
            "MessageAttributes": {
                name: {"DataType": STRING, "StringValue": value}
                for name, value in entry.attributes().items()
            },
            **_fifo_fields(entry, fifo),
        }
        for position, entry in enumerate(entries)
    ]


def _fifo_fields(entry: Entry, fifo: bool) -> dict[str, str]:
    if not fifo:
        return {}
    return {
        "MessageGroupId": entry.group,
        "MessageDeduplicationId": deduplication_id(entry.message_id),
    }


def _failures(entries: list[Entry], response: dict[str, Any]) -> list[EntryFailure]:
    failures = []
    for failed in response.get("Failed", ()):
        position = int(failed["Id"])
        failures.append(
            EntryFailure(
                entries[position],
                str(failed.get("Code", "")),
                str(failed.get("Message", "")),
                bool(failed.get("SenderFault", False)),
            )
        )
    failures.sort(key=lambda failure: failure.entry.index)
    return failures
