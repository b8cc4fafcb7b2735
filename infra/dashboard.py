"""The dashboard of one region: connections and capacity, client messages, the origin, peer
traffic and drains, the load balancer, and the queues, from the nodes' own metrics
(runtime/node/metrics.py, one EMF line a minute, dimension ServiceName) and AWS's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from infra.messaging import GatewayMessaging
from infra.service import GatewayService
from runtime.names import (
    DRAINS_METRIC,
    EVENTS_SENT_METRIC,
    MESSAGES_IN_METRIC,
    MESSAGES_OUT_METRIC,
    METRICS_NAMESPACE,
    ORIGIN_ERRORS_METRIC,
    ORIGIN_LATENCY_METRIC,
    PEER_IN_METRIC,
    PEER_OUT_METRIC,
)

ONE_MINUTE = cdk.Duration.minutes(1)


def gateway_dashboard(
    scope: Construct,
    *,
    name: str,
    messaging: GatewayMessaging,
    service: GatewayService,
    function_metrics: Sequence[cloudwatch.IMetric],
) -> cloudwatch.Dashboard:
    """The region's dashboard; `function_metrics`: the Lambda functions' errors and throttles."""
    load_balancer = service.load_balancer.metrics
    target_group = service.target_group.metrics
    node = _node_metrics(service.node_name)
    return cloudwatch.Dashboard(
        scope,
        "Dashboard",
        dashboard_name=name,  # dashboards are global: the name carries the region
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
                        service.running_tasks_metric,
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
                    "Client messages in and out (per minute, all nodes)",
                    [node[MESSAGES_IN_METRIC], node[MESSAGES_OUT_METRIC]],
                ),
                _graph(
                    "Origin: events sent, errors; send latency (ms)",
                    [node[EVENTS_SENT_METRIC], node[ORIGIN_ERRORS_METRIC], *function_metrics],
                    [node[ORIGIN_LATENCY_METRIC]],
                ),
                _graph(
                    "Peer datagrams in and out; drains",
                    [node[PEER_IN_METRIC], node[PEER_OUT_METRIC]],
                    [node[DRAINS_METRIC]],
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
            ],
            [
                _graph(
                    "Commands",
                    [
                        messaging.commands_queue.metric_number_of_messages_sent(),
                        messaging.commands_queue.metric_approximate_number_of_messages_visible(),
                    ],
                    [messaging.commands_queue.metric_approximate_age_of_oldest_message()],
                ),
            ],
        ],
    )


def _node_metrics(node_name: str) -> Mapping[str, cloudwatch.Metric]:
    """The nodes' own per-minute metrics over every task of the service: counts summed, the
    origin's delivery latency averaged."""
    counts = (
        MESSAGES_IN_METRIC,
        MESSAGES_OUT_METRIC,
        EVENTS_SENT_METRIC,
        ORIGIN_ERRORS_METRIC,
        PEER_IN_METRIC,
        PEER_OUT_METRIC,
        DRAINS_METRIC,
    )
    statistics = {name: cloudwatch.Stats.SUM for name in counts}
    statistics[ORIGIN_LATENCY_METRIC] = cloudwatch.Stats.AVERAGE
    return {
        name: cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=name,
            dimensions_map={"ServiceName": node_name},
            statistic=statistic,
            period=ONE_MINUTE,
        )
        for name, statistic in statistics.items()
    }


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    right: Sequence[cloudwatch.IMetric] = (),
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=list(left), right=list(right), width=8)
