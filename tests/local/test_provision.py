"""The environment's resources on moto: created as the stack creates them, and wired."""

from __future__ import annotations

import json

from runtime.local.provision import provision
from runtime.names import MAX_MESSAGE_BYTES, ResourceNames
from tests.aws import MotoEndpoint


def test_commands_published_to_the_topic_reach_the_queue_raw(
    moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    sqs, sns = (moto_endpoint.client(s) for s in ("sqs", "sns"))
    names = ResourceNames(environment_name)
    resources = provision(sqs, sns, names, events_topic=True)
    again = provision(sqs, sns, names, events_topic=True)  # idempotent
    assert again.commands_queue_url == resources.commands_queue_url
    assert resources.events_queue_url.endswith(names.events_queue)

    body = json.dumps({"commands": [{"action": "broadcast", "data": "x"}]})
    sns.publish(TopicArn=resources.commands_topic_arn, Message=body)
    received = sqs.receive_message(
        QueueUrl=resources.commands_queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10
    )["Messages"]
    assert [message["Body"] for message in received] == [body]  # raw: no SNS envelope

    attributes = sqs.get_queue_attributes(
        QueueUrl=resources.events_queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attributes["FifoQueue"] == "true"
    assert int(attributes["MaximumMessageSize"]) == MAX_MESSAGE_BYTES
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(names.events_dlq)
