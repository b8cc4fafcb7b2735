"""Alarms on what needs a person, and one dashboard for how the region's gateway is doing.

Alarms: a message in a DLQ (an event or command that could not be handled five times), events
waiting too long for the origin, targets the ALB finds unhealthy, and errors the ALB itself
returns. They have no actions here: subscribe them (e.g. to an SNS topic paging the on-call)
where the organisation's alerting lives. The dashboard shows connections, capacity, the
queues' depth and age, and the load balancer's traffic.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.messaging import GatewayMessaging
from infra.service import GatewayService
from runtime.names import MAX_RECEIVE_COUNT

FIVE_MINUTES = cdk.Duration.minutes(5)
ORIGIN_QUEUE_AGE_LIMIT = cdk.Duration.minutes(5)
ALB_5XX_PER_5_MINUTES = 10


class GatewayObservability(Construct):
    """CloudWatch alarms and dashboard of one regional deployment."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        messaging: GatewayMessaging,
        service: GatewayService,
        origin_function: lambda_.IFunction | None,
        environment_name: str,
        region: str,
    ) -> None:
        super().__init__(scope, construct_id)
        prefix = f"wsgw-{environment_name}"
        load_balancer = service.load_balancer.metrics
        target_group = service.target_group.metrics
        self.alarms: list[cloudwatch.Alarm] = []

        dlqs = (
            ("events", messaging.events_dlq, messaging.names.events_dlq),
            ("commands", messaging.commands_dlq, messaging.names.commands_dlq),
        )
        for label, dlq, dlq_name in dlqs:
            self._alarm(
                f"{label.capitalize()}DlqNotEmpty",
                f"{prefix}-{label}-dlq-not-empty",
                f"{label.capitalize()} failed {MAX_RECEIVE_COUNT} deliveries and wait in "
                f"{dlq_name}",
                dlq.metric_approximate_number_of_messages_visible(
                    period=FIVE_MINUTES, statistic=cloudwatch.Stats.MAXIMUM
                ),
                threshold=0,
            )
        self._alarm(
            "OriginQueueAge",
            f"{prefix}-origin-queue-age",
            "Events wait more than five minutes for the origin: is it failing or too slow?",
            messaging.events_queue.metric_approximate_age_of_oldest_message(
                period=cdk.Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=ORIGIN_QUEUE_AGE_LIMIT.to_seconds(),
            evaluation_periods=5,
        )
        self._alarm(
            "UnhealthyTargets",
            f"{prefix}-unhealthy-targets",
            "The ALB finds gateway nodes unhealthy (GET /healthz is not answering 200)",
            target_group.unhealthy_host_count(
                period=cdk.Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            evaluation_periods=3,
        )
        self._alarm(
            "LoadBalancer5xx",
            f"{prefix}-alb-5xx",
            "The ALB answers clients with 5xx (no healthy node, or nodes failing handshakes)",
            load_balancer.http_code_elb(
                elbv2.HttpCodeElb.ELB_5XX_COUNT, period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM
            ),
            threshold=ALB_5XX_PER_5_MINUTES,
        )

        queue_widgets: list[cloudwatch.IWidget] = [
            _graph(
                "Events waiting for the origin",
                [messaging.events_queue.metric_approximate_number_of_messages_visible()],
                [messaging.events_queue.metric_approximate_age_of_oldest_message()],
            ),
            _graph(
                "Dead-letter queues",
                [
                    messaging.events_dlq.metric_approximate_number_of_messages_visible(),
                    messaging.commands_dlq.metric_approximate_number_of_messages_visible(),
                ],
            ),
            _graph(
                "Commands",
                [
                    messaging.commands_queue.metric_number_of_messages_sent(),
                    messaging.commands_queue.metric_approximate_number_of_messages_visible(),
                ],
            ),
        ]
        if origin_function is not None:
            queue_widgets.append(
                _graph(
                    "Example origin",
                    [origin_function.metric_invocations(), origin_function.metric_errors()],
                    [origin_function.metric_duration()],
                )
            )
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{prefix}-{region}",  # dashboards are global: the region tells apart
            default_interval=cdk.Duration.hours(3),
            widgets=[
                [
                    _graph(
                        "Connections per task (average, what scaling tracks)",
                        [service.connections_metric],
                        [service.connections_metric.with_(statistic=cloudwatch.Stats.MAXIMUM)],
                    ),
                    _graph(
                        "Tasks",
                        [
                            cloudwatch.Metric(
                                namespace="ECS/ContainerInsights",
                                metric_name="RunningTaskCount",
                                dimensions_map={
                                    "ClusterName": service.cluster.cluster_name,
                                    "ServiceName": service.service_name,
                                },
                                statistic=cloudwatch.Stats.AVERAGE,
                            ),
                            target_group.healthy_host_count(),
                            target_group.unhealthy_host_count(),
                        ],
                    ),
                    _graph(
                        "CPU and memory (%)",
                        [
                            service.service.metric_cpu_utilization(),
                            service.service.metric_memory_utilization(),
                        ],
                    ),
                ],
                [
                    _graph(
                        "Load balancer",
                        [
                            load_balancer.active_connection_count(),
                            load_balancer.new_connection_count(),
                        ],
                        [
                            load_balancer.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT),
                            target_group.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT),
                        ],
                    ),
                    *queue_widgets[:2],
                ],
                queue_widgets[2:],
            ],
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
    ) -> None:
        self.alarms.append(
            cloudwatch.Alarm(
                self,
                construct_id,
                alarm_name=name,
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                evaluation_periods=evaluation_periods,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        )


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    right: Sequence[cloudwatch.IMetric] = (),
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=list(left), right=list(right), width=8)
