"""One environment in one region: network, messaging, nodes, the optional example origin, and
their alarms, with the outputs an origin needs.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.messaging import GatewayMessaging
from infra.network import GatewayNetwork
from infra.observability import GatewayObservability
from infra.origin import ExampleOrigin
from infra.service import GatewayService


def stack_name(environment: str, region: str) -> str:
    """Deterministic, so `cdk deploy wsgw-prod-eu-west-1` names one region's stack."""
    return f"wsgw-{environment}-{region}"


class GatewayStack(cdk.Stack):
    """The gateway of one environment in one region, composed of one construct per concern."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: EnvironmentConfig,
        region: str,
        account: str | None,
        **kwargs: Any,
    ) -> None:
        self._az_count = config.az_count
        super().__init__(
            scope,
            stack_name(config.name, region),
            env=cdk.Environment(account=account, region=region),
            description=f"WebSocket gateway, environment {config.name}, region {region}",
            **kwargs,
        )
        cdk.Tags.of(self).add("Project", "wsgw")
        cdk.Tags.of(self).add("Environment", config.name)

        self.network = GatewayNetwork(
            self,
            "Network",
            availability_zones=self.availability_zones,
            egress=config.egress,
            nat_gateways=config.nat_gateways,
            log_retention_days=config.log_retention_days,
        )
        graphql_function = config.graphql_origin_function(region)
        if graphql_function or config.door.functions(region):
            self.network.add_lambda_endpoint()
        self.messaging = GatewayMessaging(
            self, "Messaging", names=config.names, events_via_topic=config.events_via == "sns"
        )
        self.service = GatewayService(
            self,
            "Gateway",
            network=self.network,
            messaging=self.messaging,
            environment_name=config.name,
            region=region,
            task_cpu=config.task_cpu,
            task_memory=config.task_memory,
            architecture=config.architecture,
            desired_tasks=config.desired_tasks,
            min_tasks=config.min_tasks,
            max_tasks=config.max_tasks,
            certificate_arn=config.certificate_arn(region),
            domain_name=config.domain_name(region),
            drain_seconds=config.drain_seconds,
            stop_timeout_seconds=config.stop_timeout_seconds,
            keepalive_seconds=config.keepalive_seconds,
            max_connections_per_task=config.max_connections_per_task,
            connections_per_task_target=config.connections_per_task_target,
            cpu_target_percent=config.cpu_target_percent,
            log_retention_days=config.log_retention_days,
            graphql_origin_function=graphql_function,
            graphql_only=config.graphql_only,
            door=config.door,
            event_packing=config.event_packing,
        )
        self.origin: ExampleOrigin | None = None
        if config.example_origin:
            self.origin = ExampleOrigin(
                self,
                "ExampleOrigin",
                messaging=self.messaging,
                environment_name=config.name,
                architecture=config.architecture,
                keepalive_seconds=config.keepalive_seconds,
                log_retention_days=config.log_retention_days,
            )
        self.observability = GatewayObservability(
            self,
            "Observability",
            messaging=self.messaging,
            service=self.service,
            origin_function=self.origin.function if self.origin else None,
            environment_name=config.name,
            region=region,
        )

        self._output("WebSocketUrl", self.service.websocket_url, "Where clients connect")
        self._output(
            "LoadBalancerDnsName",
            self.service.load_balancer.load_balancer_dns_name,
            "Point the domain's DNS record (CNAME or alias) here",
        )
        self._output(
            "OriginQueueUrl", self.messaging.events_queue.queue_url, "Events for the origin"
        )
        self._output("OriginQueueArn", self.messaging.events_queue.queue_arn, "Events queue ARN")
        self._output(
            "CommandsTopicArn",
            self.messaging.commands_topic.topic_arn,
            "Where origins publish commands",
        )
        if self.service.command_token is not None:
            self._output(
                "ConnectionsTokenSecretArn",
                self.service.command_token.secret_arn,
                "The nodes' command token: WSGW_CONNECTIONS_TOKEN of an origin using @connections",
            )
            self._output("VpcId", self.network.vpc.vpc_id, "An origin using @connections runs here")
            subnets = self.network.vpc.select_subnets(
                subnet_type=self.network.node_subnets.subnet_type
            )
            self._output(
                "NodeSubnetIds",
                cdk.Fn.join(",", subnets.subnet_ids),
                "Private subnets for an origin using @connections",
            )
        if self.messaging.events_topic is not None:
            self._output(
                "EventsTopicArn",
                self.messaging.events_topic.topic_arn,
                "Nodes publish events here; subscribe more consumers (filter on routeKey)",
            )

    @property
    def availability_zones(self) -> list[str]:
        """The first AZs of the region, resolved at deploy time (Fn::GetAZs).

        Without this, a stack with an explicit region but no account synthesizes dummy AZ
        names, and one with both would need a context lookup (credentials) to synthesize.
        """
        return [cdk.Fn.select(index, cdk.Fn.get_azs()) for index in range(self._az_count)]

    def _output(self, name: str, value: str, description: str) -> None:
        cdk.CfnOutput(self, name, value=value, description=description)
