"""One environment in one region: network, messaging, nodes, the way in (names, TLS, WAF), the
optional example origin, and their alarms, with the outputs an origin needs.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.entry import GatewayDns, imported_zone, regional_certificate
from infra.firewall import GatewayFirewall
from infra.messaging import GatewayMessaging
from infra.network import GatewayNetwork
from infra.observability import GatewayObservability, WatchedFunction
from infra.origin import ExampleOrigin
from infra.service import GatewayService


def function_name(function: str) -> str:
    """A Lambda function's name from its name or its ARN (with or without a version or alias)."""
    if not function.startswith("arn:"):
        return function
    return function.split(":")[6]


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
            termination_protection=config.entry.deletion_protection,
            **kwargs,
        )
        entry = config.entry
        cdk.Tags.of(self).add("Project", "wsgw")
        cdk.Tags.of(self).add("Environment", config.name)

        self.network = GatewayNetwork(
            self,
            "Network",
            availability_zones=self.availability_zones,
            cidr=config.network.vpc_cidrs[region],
            flow_log_traffic=config.network.flow_log_traffic,
            egress=config.egress,
            nat_gateways=config.nat_gateways,
            log_retention_days=config.log_retention_days,
        )
        graphql_function = config.graphql_origin_function(region)
        if graphql_function or config.door.functions(region):
            self.network.add_lambda_endpoint()
        self.messaging = GatewayMessaging(
            self,
            "Messaging",
            names=config.names,
            events_via_topic=config.events_via == "sns",
            commands_retention=cdk.Duration.minutes(config.commands_retention_minutes),
        )
        zone = imported_zone(self, entry.hosted_zone) if entry.hosted_zone else None
        domain_name = config.domain_name(region)
        certificate: acm.ICertificate | None = None
        certificate_arn = config.certificate_arn(region)
        if certificate_arn is not None:
            certificate = acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
        elif zone is not None:
            assert domain_name is not None and entry.global_name is not None
            certificate = regional_certificate(self, zone, domain_name, entry.global_name)
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
            certificate=certificate,
            domain_name=domain_name,
            allowed_origins=entry.allowed_origins,
            deletion_protection=entry.deletion_protection,
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
                regions=config.regions,
                architecture=config.architecture,
                log_retention_days=config.log_retention_days,
            )
        self.firewall: GatewayFirewall | None = None
        if entry.waf:
            self.firewall = GatewayFirewall(
                self,
                "Firewall",
                load_balancer=self.service.load_balancer,
                rate_limit=entry.waf_rate_limit,
                log_retention_days=config.log_retention_days,
            )
        self.dns: GatewayDns | None = None
        if zone is not None:
            assert domain_name is not None and entry.global_name is not None
            self.dns = GatewayDns(
                self,
                "Dns",
                zone=zone,
                region=region,
                regional_name=domain_name,
                global_name=entry.global_name,
                load_balancer=self.service.load_balancer,
            )
        self.observability = GatewayObservability(
            self,
            "Observability",
            messaging=self.messaging,
            service=self.service,
            functions=self._watched_functions(config, region),
            environment_name=config.name,
            region=region,
            min_tasks=config.min_tasks,
            max_tasks=config.max_tasks,
            alarm_email=config.alarm_email,
            alarm_topic_arn=config.alarm_topic_arns.get(region),
        )

        if config.alarm_email is None and region not in config.alarm_topic_arns:
            cdk.Annotations.of(self).add_warning_v2(
                "wsgw:alarmsReachNobody",
                "No alarmEmail or alarmTopicArn: alarms notify a topic nobody is subscribed to. "
                "Subscribe the on-call to the AlarmTopicArn output, or set one of them.",
            )
        if entry.global_name is not None:
            self._output(
                "GlobalWebSocketUrl",
                f"wss://{entry.global_name}",
                "Where clients connect: the nearest healthy region",
            )
        self._output("WebSocketUrl", self.service.websocket_url, "This region's own address")
        self._output(
            "AlarmTopicArn",
            self.observability.alarm_topic.topic_arn,
            "Every alarm of this region notifies this topic: subscribe the on-call here",
        )
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

    def _watched_functions(self, config: EnvironmentConfig, region: str) -> list[WatchedFunction]:
        """Every Lambda function the gateway of this region depends on, by name."""
        named = {
            "GraphqlOrigin": config.graphql_origin_function(region),
            "ConnectHandler": (
                config.door.connect_handler.functions[region]
                if config.door.connect_handler
                else None
            ),
            "Authorizer": (
                config.door.authorizer.functions[region] if config.door.authorizer else None
            ),
        }
        watched = [
            WatchedFunction(label, function_name(function))
            for label, function in named.items()
            if function
        ]
        if self.origin is not None:
            watched.append(WatchedFunction("ExampleOrigin", self.origin.function.function_name))
        return watched

    @property
    def availability_zones(self) -> list[str]:
        """The first AZs of the region, resolved at deploy time (Fn::GetAZs).

        Without this, a stack with an explicit region but no account synthesizes dummy AZ
        names, and one with both would need a context lookup (credentials) to synthesize.
        """
        return [cdk.Fn.select(index, cdk.Fn.get_azs()) for index in range(self._az_count)]

    def _output(self, name: str, value: str, description: str) -> None:
        cdk.CfnOutput(self, name, value=value, description=description)
