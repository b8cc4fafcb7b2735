"""Create one environment's queues and topics, as the CDK stack does, on any endpoint.

The local system runs this against its embedded moto server and the tests against theirs, so
both exercise the same wiring as production: events queue with a DLQ, commands topic delivering
raw to the commands queue (with a DLQ), and an optional events topic in front of the events
queue. Idempotent: creating what exists returns it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runtime.names import MAX_MESSAGE_BYTES, MAX_RECEIVE_COUNT, ResourceNames


@dataclass(frozen=True)
class Resources:
    names: ResourceNames
    events_queue_url: str
    events_queue_arn: str
    events_topic_arn: str | None
    commands_topic_arn: str
    commands_queue_url: str
    commands_dlq_url: str
    events_dlq_url: str


def provision(
    sqs: Any,
    sns: Any,
    names: ResourceNames,
    *,
    events_topic: bool = False,
    visibility_timeout: int = 30,
) -> Resources:
    events_dlq_url, events_dlq_arn = _queue(sqs, names.events_dlq, names.fifo, None, 60)
    events_url, events_arn = _queue(
        sqs, names.events_queue, names.fifo, events_dlq_arn, visibility_timeout
    )
    commands_dlq_url, commands_dlq_arn = _queue(sqs, names.commands_dlq, False, None, 60)
    commands_url, commands_arn = _queue(
        sqs, names.commands_queue, False, commands_dlq_arn, visibility_timeout
    )
    commands_topic = sns.create_topic(Name=names.commands_topic)["TopicArn"]
    _subscribe(sqs, sns, commands_topic, commands_url, commands_arn)
    events_topic_arn = None
    if events_topic:
        attributes = {"MaximumMessageSize": str(MAX_MESSAGE_BYTES)}
        if names.fifo:
            attributes.update({"FifoTopic": "true", "ContentBasedDeduplication": "false"})
        events_topic_arn = sns.create_topic(Name=names.events_topic, Attributes=attributes)[
            "TopicArn"
        ]
        _subscribe(sqs, sns, events_topic_arn, events_url, events_arn)
    return Resources(
        names=names,
        events_queue_url=events_url,
        events_queue_arn=events_arn,
        events_topic_arn=events_topic_arn,
        commands_topic_arn=commands_topic,
        commands_queue_url=commands_url,
        commands_dlq_url=commands_dlq_url,
        events_dlq_url=events_dlq_url,
    )


def _queue(
    sqs: Any, name: str, fifo: bool, dlq_arn: str | None, visibility_timeout: int
) -> tuple[str, str]:
    attributes = {
        "MaximumMessageSize": str(MAX_MESSAGE_BYTES),
        "VisibilityTimeout": str(visibility_timeout),
        "ReceiveMessageWaitTimeSeconds": "20",
    }
    if fifo:
        attributes.update({"FifoQueue": "true", "ContentBasedDeduplication": "false"})
    if dlq_arn is not None:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
        )
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def _subscribe(sqs: Any, sns: Any, topic_arn: str, queue_url: str, queue_arn: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )
