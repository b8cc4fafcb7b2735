"""Events to the origin and commands back: the queues and topics of one region.

The wiring mirrors runtime/local/provision.py, which builds the same on the local system, so both
run the same paths: the events (origin) queue with its DLQ, optionally behind an events topic; the
commands topic delivering raw messages to the commands queue every node polls, with its DLQ.
Names come from `runtime.names.ResourceNames`, which the origin SDK derives too. Every queue
and topic takes 1 MiB messages, is encrypted, and refuses requests without TLS.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runtime.names import MAX_MESSAGE_BYTES, MAX_RECEIVE_COUNT, ResourceNames

# Long enough for a Lambda consumer with a timeout of up to 30 s (AWS advises six times the
# function timeout, so that retries of a throttled batch stay invisible to other pollers).
EVENTS_VISIBILITY_TIMEOUT = cdk.Duration.minutes(3)
# A node deletes a command once delivered or acknowledged by a peer, within seconds.
COMMANDS_VISIBILITY_TIMEOUT = cdk.Duration.seconds(30)
DLQ_RETENTION = cdk.Duration.days(14)  # the most SQS keeps: time to look and redrive


class GatewayMessaging(Construct):
    """Queues and topics between nodes and the origin; grants for each side of them."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: ResourceNames,
        events_via_topic: bool,
        commands_retention: cdk.Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        self.names = names
        topic_key = kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns")

        self.events_dlq = self._queue("EventsDlq", names.events_dlq, fifo=names.fifo)
        self.events_queue = self._queue(
            "EventsQueue",
            names.events_queue,
            fifo=names.fifo,
            dead_letter=self.events_dlq,
            visibility_timeout=EVENTS_VISIBILITY_TIMEOUT,
        )
        self.commands_dlq = self._queue("CommandsDlq", names.commands_dlq, fifo=False)
        self.commands_queue = self._queue(
            "CommandsQueue",
            names.commands_queue,
            fifo=False,
            dead_letter=self.commands_dlq,
            visibility_timeout=COMMANDS_VISIBILITY_TIMEOUT,
            # A command outliving its connection is useless; after an outage, an old one would
            # replay to clients that have moved on (commandsRetentionMinutes).
            retention_period=commands_retention,
        )
        # Standard: commands for different nodes have no order to keep.
        self.commands_topic = self._topic("CommandsTopic", names.commands_topic, topic_key)
        self.commands_topic.add_subscription(
            subscriptions.SqsSubscription(
                self.commands_queue, raw_message_delivery=True, dead_letter_queue=self.commands_dlq
            )
        )
        self.events_topic: sns.Topic | None = None
        if events_via_topic:
            self.events_topic = self._topic(
                "EventsTopic", names.events_topic, topic_key, fifo=names.fifo
            )
            self.events_topic.add_subscription(
                subscriptions.SqsSubscription(
                    self.events_queue, raw_message_delivery=True, dead_letter_queue=self.events_dlq
                )
            )

    def node_environment(self, *, sends_events: bool = True) -> dict[str, str]:
        """The node settings (environment variables) that point it at these resources.

        A GraphQL-only node (`sends_events=False`) sends no events, only takes commands.
        """
        environment = {"COMMANDS_QUEUE_URL": self.commands_queue.queue_url}
        if not sends_events:
            environment["ORIGIN_TRANSPORT"] = "none"
        elif self.events_topic is not None:
            environment.update(ORIGIN_TRANSPORT="sns", EVENTS_TOPIC_ARN=self.events_topic.topic_arn)
        else:
            environment.update(ORIGIN_TRANSPORT="sqs", EVENTS_QUEUE_URL=self.events_queue.queue_url)
        return environment

    def grant_node(self, grantee: iam.IGrantable, *, sends_events: bool = True) -> None:
        """What a node does and nothing more: send events, and poll and settle commands.

        GetQueueAttributes/GetTopicAttributes let it read MaximumMessageSize at start.
        """
        if not sends_events:
            pass
        elif self.events_topic is not None:
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=["sns:Publish", "sns:GetTopicAttributes"],
                resource_arns=[self.events_topic.topic_arn],
            )
        else:
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=["sqs:SendMessage", "sqs:GetQueueAttributes"],
                resource_arns=[self.events_queue.queue_arn],
            )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
            ],
            resource_arns=[self.commands_queue.queue_arn],
        )

    def grant_publish_commands(self, grantee: iam.IGrantable) -> None:
        """For origins: PublishBatch is authorised by sns:Publish.

        The topic's key is the AWS managed one, whose key policy already lets this account's
        principals use it through SNS, so no KMS permission is needed.
        """
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["sns:Publish"], resource_arns=[self.commands_topic.topic_arn]
        )

    def _queue(
        self,
        construct_id: str,
        name: str,
        *,
        fifo: bool,
        dead_letter: sqs.IQueue | None = None,
        visibility_timeout: cdk.Duration | None = None,
        retention_period: cdk.Duration | None = None,
    ) -> sqs.Queue:
        # High-throughput FIFO: order is per connection (the message group), not global. A
        # standard queue leaves every FIFO property out (None).
        return sqs.Queue(
            self,
            construct_id,
            queue_name=name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            max_message_size_bytes=MAX_MESSAGE_BYTES,
            receive_message_wait_time=cdk.Duration.seconds(20),
            visibility_timeout=visibility_timeout,
            retention_period=DLQ_RETENTION if dead_letter is None else retention_period,
            dead_letter_queue=(
                sqs.DeadLetterQueue(queue=dead_letter, max_receive_count=MAX_RECEIVE_COUNT)
                if dead_letter is not None
                else None
            ),
            fifo=True if fifo else None,
            content_based_deduplication=False if fifo else None,
            deduplication_scope=sqs.DeduplicationScope.MESSAGE_GROUP if fifo else None,
            fifo_throughput_limit=sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID if fifo else None,
        )

    def _topic(
        self, construct_id: str, name: str, key: kms.IAlias, *, fifo: bool = False
    ) -> sns.Topic:
        topic = sns.Topic(
            self,
            construct_id,
            topic_name=name,
            master_key=key,
            enforce_ssl=True,
            fifo=fifo or None,
            content_based_deduplication=False if fifo else None,
            fifo_throughput_scope=sns.FifoThroughputScope.MESSAGE_GROUP if fifo else None,
        )
        # The L2 construct has no property for it yet; SNS defaults to 256 KiB.
        cfn_topic = topic.node.default_child
        assert isinstance(cfn_topic, sns.CfnTopic)
        cfn_topic.maximum_message_size = MAX_MESSAGE_BYTES
        return topic
