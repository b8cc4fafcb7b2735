"""Alarms on what needs a person, sent to an SNS topic, and one dashboard per region.

Every alarm notifies the environment's alarm topic (one per region: created here, with the
`alarmEmail` subscribed, or an existing one named by `alarmTopicArn`), when it fires and when it
clears. docs/architecture.md's runbook says what to do for each. The dashboard is
infra/dashboard.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.dashboard import gateway_dashboard
from infra.messaging import GatewayMessaging
from infra.service import GatewayService
from runtime.names import MAX_RECEIVE_COUNT

ONE_MINUTE = cdk.Duration.minutes(1)
FIVE_MINUTES = cdk.Duration.minutes(5)
ORIGIN_QUEUE_AGE_LIMIT = cdk.Duration.minutes(5)
# Nodes poll the commands queue continuously: a command waiting a minute means none is polling.
COMMANDS_QUEUE_AGE_LIMIT = cdk.Duration.minutes(1)
ALB_5XX_PER_5_MINUTES = 10
NODE_5XX_PER_5_MINUTES = 10  # 503s: a node full (maxConnectionsPerTask) or refusing while draining
TASKS_AT_MAX_MINUTES = 15


@dataclass(frozen=True)
class WatchedFunction:
    """A Lambda function the gateway depends on: its errors and throttles page someone."""

    label: str  # in alarm IDs and names: ExampleOrigin, GraphqlOrigin, ConnectHandler, ...
    function_name: str


class GatewayObservability(Construct):
    """The alarm topic, the alarms, and the dashboard of one regional deployment."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        messaging: GatewayMessaging,
        service: GatewayService,
        functions: Sequence[WatchedFunction],
        environment_name: str,
        region: str,
        min_tasks: int,
        max_tasks: int,
        alarm_email: str | None,
        alarm_topic_arn: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = f"wsgw-{environment_name}"
        self.alarm_topic = self._alarm_topic(alarm_email, alarm_topic_arn)
        self.alarms: list[cloudwatch.Alarm] = []
        self._alarm_service(messaging, service, min_tasks, max_tasks)
        for function in functions:
            self._alarm_function(function)
        self.dashboard = gateway_dashboard(
            self,
            name=f"{self.prefix}-{region}",
            messaging=messaging,
            service=service,
            function_metrics=[
                lambda_metric(function.function_name, name)
                for function in functions
                for name in ("Errors", "Throttles")
            ],
        )

    def _alarm_topic(self, email: str | None, existing_arn: str | None) -> sns.ITopic:
        if existing_arn is not None:
            return sns.Topic.from_topic_arn(self, "AlarmTopic", existing_arn)
        # CloudWatch cannot publish to a topic under the AWS managed SNS key: this key lets it.
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"{self.prefix} alarm topic: CloudWatch alarms publish through it",
            enable_key_rotation=True,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{self.prefix} gateway alarms",
            master_key=key,
            enforce_ssl=True,
        )
        # The topic's policy (TLS only) replaces SNS's default one, which would have let
        # CloudWatch publish: say so again, for this account's alarms of this environment only.
        stack = cdk.Stack.of(self)
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=f"{self.prefix}-*",
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                },
            )
        )
        if email is not None:
            topic.add_subscription(subscriptions.EmailSubscription(email))
        return topic

    def _alarm_service(
        self,
        messaging: GatewayMessaging,
        service: GatewayService,
        min_tasks: int,
        max_tasks: int,
    ) -> None:
        load_balancer = service.load_balancer.metrics
        target_group = service.target_group.metrics
        dlqs = (
            ("events", messaging.events_dlq, messaging.names.events_dlq),
            ("commands", messaging.commands_dlq, messaging.names.commands_dlq),
        )
        for label, dlq, dlq_name in dlqs:
            self._alarm(
                f"{label.capitalize()}DlqNotEmpty",
                f"{label}-dlq-not-empty",
                f"{label.capitalize()} failed {MAX_RECEIVE_COUNT} deliveries and wait in "
                f"{dlq_name}",
                dlq.metric_approximate_number_of_messages_visible(
                    period=FIVE_MINUTES, statistic=cloudwatch.Stats.MAXIMUM
                ),
                threshold=0,
            )
        self._alarm(
            "OriginQueueAge",
            "origin-queue-age",
            "Events wait more than five minutes for the origin: is it failing or too slow?",
            messaging.events_queue.metric_approximate_age_of_oldest_message(
                period=ONE_MINUTE, statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=ORIGIN_QUEUE_AGE_LIMIT.to_seconds(),
            evaluation_periods=5,
        )
        self._alarm(
            "CommandsQueueAge",
            "commands-queue-age",
            "Commands wait more than a minute: no node is polling the commands queue",
            messaging.commands_queue.metric_approximate_age_of_oldest_message(
                period=ONE_MINUTE, statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=COMMANDS_QUEUE_AGE_LIMIT.to_seconds(),
            evaluation_periods=3,
        )
        self._alarm(
            "UnhealthyTargets",
            "unhealthy-targets",
            "The ALB finds gateway nodes unhealthy (GET /healthz is not answering 200)",
            target_group.unhealthy_host_count(
                period=ONE_MINUTE, statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            evaluation_periods=3,
        )
        self._alarm(
            "LoadBalancer5xx",
            "alb-5xx",
            "The ALB answers clients with 5xx itself (no healthy node, or none reachable)",
            load_balancer.http_code_elb(
                elbv2.HttpCodeElb.ELB_5XX_COUNT, period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM
            ),
            threshold=ALB_5XX_PER_5_MINUTES,
        )
        self._alarm(
            "Node5xx",
            "node-5xx",
            "Nodes answer handshakes with 5xx: full (maxConnectionsPerTask), draining, or failing",
            target_group.http_code_target(
                elbv2.HttpCodeTarget.TARGET_5XX_COUNT,
                period=FIVE_MINUTES,
                statistic=cloudwatch.Stats.SUM,
            ),
            threshold=NODE_5XX_PER_5_MINUTES,
        )
        self._alarm(
            "ConnectionsMetricMissing",
            "connections-metric-missing",
            "No node has reported ConnectionsPerTask for five minutes: scaling on connections "
            "is blind (nodes down, or their logs not reaching CloudWatch)",
            service.connections_metric.with_(statistic=cloudwatch.Stats.SAMPLE_COUNT),
            threshold=1,
            evaluation_periods=5,
            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            missing=cloudwatch.TreatMissingData.BREACHING,
        )
        if min_tasks == max_tasks:
            return  # a fixed size is always at its maximum: nothing to tell anyone
        self._alarm(
            "TasksAtMaximum",
            "tasks-at-maximum",
            f"The service has run at maxTasks ({max_tasks}) for {TASKS_AT_MAX_MINUTES} minutes: "
            "scaling can add no more capacity",
            service.running_tasks_metric.with_(period=FIVE_MINUTES),
            threshold=max_tasks,
            evaluation_periods=TASKS_AT_MAX_MINUTES // 5,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        )

    def _alarm_function(self, function: WatchedFunction) -> None:
        for metric_name, what in (("Errors", "fails"), ("Throttles", "is throttled")):
            self._alarm(
                f"{function.label}{metric_name}",
                f"{_kebab(function.label)}-{metric_name.lower()}",
                f"The {function.label} function ({function.function_name}) {what}",
                lambda_metric(function.function_name, metric_name),
                threshold=0,
            )

    def _alarm(
        self,
        construct_id: str,
        name: str,
        description: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        evaluation_periods: int = 1,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        ),
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=f"{self.prefix}-{name}",
            alarm_description=f"{description}. Runbook: docs/architecture.md#{name}",
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=comparison,
            treat_missing_data=missing,
        )
        action = actions.SnsAction(self.alarm_topic)
        alarm.add_alarm_action(action)
        alarm.add_ok_action(action)
        self.alarms.append(alarm)


def lambda_metric(function_name: str, metric_name: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/Lambda",
        metric_name=metric_name,
        dimensions_map={"FunctionName": function_name},
        statistic=cloudwatch.Stats.SUM,
        period=FIVE_MINUTES,
    )


def _kebab(label: str) -> str:
    return "".join(f"-{char.lower()}" if char.isupper() else char for char in label).lstrip("-")
