"""The gateway nodes: a Fargate service behind an internet-facing ALB, found by peers via DNS.

Clients reach only the load balancer, the load balancer reaches nodes only on the WebSocket
port, and nodes reach each other only on the UDP peer port. Every task registers in a Cloud
Map private DNS namespace; a node resolves that name to find its peers. Capacity follows CPU
and the connections each task holds, which the nodes report as a CloudWatch metric.

Long-lived WebSockets shape the timings. The ALB idle timeout is well above the nodes' ping
interval. A stopping task's target turns `draining` first; the node sees that within its
polling interval (DescribeTargetHealth) and drains, and the deregistration delay outlasts both,
so every client gets its 1001 close before the ALB cuts what is left. The container's stop
timeout leaves time to finish a drain begun on SIGTERM alone.

Physical names are generated wherever CloudFormation may have to replace a resource (cluster,
service, load balancer): a fixed name would make the replacement fail.

With a GraphQL origin (a Lambda function), nodes invoke it synchronously and may invoke that
function (or that alias or version) and nothing else; a GraphQL-only node sends no events.
The door (infra/door.py) adds the functions a handshake meets (a $connect handler, a Lambda
authorizer), with the same exact grants, and the @connections API: the command listener,
reachable from one named security group only, and its token in Secrets Manager.

Longer than 400 lines because it is one construct whose parts must agree on ports, timings and
grants (task, service, load balancer, scaling); split, each part would restate the others'.
"""

from __future__ import annotations

import math
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk.aws_ecr_assets import Platform
from constructs import Construct

from infra.config import EventPacking
from infra.door import Door
from infra.findings import acknowledge
from infra.messaging import GatewayMessaging
from infra.network import GatewayNetwork
from infra.retention import log_retention
from runtime.config import event_buffer_for
from runtime.names import (
    CONNECTIONS_METRIC,
    HEALTH_PATH,
    METRICS_NAMESPACE,
    PEER_PORT,
    WEBSOCKET_PORT,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "runtime/Dockerfile"  # relative to PROJECT_ROOT, the build context

CONTAINER_NAME = "node"
PEERS_SERVICE_NAME = "nodes"
NOFILE_LIMIT = 262_144  # one descriptor per connection, with room for sockets to AWS
# Nodes ping clients every 20 s (PING_INTERVAL), so a live connection is never idle this long;
# a connection that stops answering is closed by the node's ping timeout first.
ALB_IDLE_TIMEOUT = cdk.Duration.minutes(10)
PEER_DNS_TTL = cdk.Duration.seconds(10)  # the nodes re-resolve every PEERS_REFRESH_SECONDS (10)
# How often a node asks Elastic Load Balancing for its target's state. Describe calls share one
# throttling bucket per account and region (refilled at about 10 a second), so the interval
# grows with the fleet to keep the whole service under TARGET_HEALTH_CALLS_PER_SECOND.
TARGET_HEALTH_INTERVAL_SECONDS = 5
TARGET_HEALTH_CALLS_PER_SECOND = 4
# The node waits between 0.5 and 1.5 intervals (jitter): the delay covers two such waits (one
# answer may fail), the node's drain, and a margin, before the ALB cuts connections.
DEREGISTRATION_MARGIN_SECONDS = 5


def target_health_interval_seconds(max_tasks: int) -> int:
    return max(
        TARGET_HEALTH_INTERVAL_SECONDS, math.ceil(max_tasks / TARGET_HEALTH_CALLS_PER_SECOND)
    )


def deregistration_delay_seconds(drain_seconds: int, max_tasks: int) -> int:
    """How long the ALB keeps a deregistered target's connections: past the node's own drain."""
    interval = target_health_interval_seconds(max_tasks)
    return drain_seconds + 3 * interval + DEREGISTRATION_MARGIN_SECONDS


SCALE_OUT_COOLDOWN = cdk.Duration.minutes(1)
# Scaling in closes every connection of the stopped tasks: do it slowly.
SCALE_IN_COOLDOWN = cdk.Duration.minutes(10)

ARCHITECTURES = {
    "ARM64": (ecs.CpuArchitecture.ARM64, Platform.LINUX_ARM64),
    "X86_64": (ecs.CpuArchitecture.X86_64, Platform.LINUX_AMD64),
}


class GatewayService(Construct):
    """ECS cluster, the nodes' task and service, ALB, peer discovery, secret and scaling."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: GatewayNetwork,
        messaging: GatewayMessaging,
        environment_name: str,
        region: str,
        task_cpu: int,
        task_memory: int,
        architecture: str,
        desired_tasks: int | None,
        min_tasks: int,
        max_tasks: int,
        certificate: acm.ICertificate | None,
        domain_name: str | None,
        allowed_origins: tuple[str, ...] = (),
        deletion_protection: bool = False,
        drain_seconds: int,
        stop_timeout_seconds: int,
        keepalive_seconds: int,
        max_connections_per_task: int,
        connections_per_task_target: int,
        cpu_target_percent: int,
        log_retention_days: int,
        graphql_origin_function: str | None = None,
        graphql_only: bool = False,
        door: Door | None = None,
        event_packing: EventPacking | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        door = door or Door()
        base = f"wsgw-{environment_name}"
        # The nodes' metric dimension and task family; the ECS service's own name is generated.
        self.node_name = f"{base}-nodes"
        vpc = network.vpc

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.namespace = servicediscovery.PrivateDnsNamespace(
            self,
            "PeerNamespace",
            name=f"{base}.internal",
            vpc=vpc,
            description="Gateway nodes find their peers here",
        )
        self.peer_secret = secretsmanager.Secret(
            self,
            "PeerSecret",
            description=f"HMAC key of UDP traffic between the {base} gateway nodes",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
        )
        acknowledge(
            self.peer_secret.node.default_child,
            "AwsSolutions-SMG4",
            (
                "Nodes read the peer key at start and accept only that key, so any "
                "rotation splits the cluster until every task has restarted: nodes started "
                "before it drop the datagrams of nodes started after. Until nodes accept a "
                "previous key during a rollover, rotate deliberately (update the secret, "
                "force a new deployment) at a quiet time, never on a schedule."
            ),
        )

        # Security groups: written out, with no default egress, so each path is deliberate.
        self.load_balancer_security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="Gateway ALB: WebSocket clients from the internet",
            allow_all_outbound=False,
        )
        acknowledge(
            self.load_balancer_security_group.node.default_child,
            "AwsSolutions-EC23",
            (
                "The public WebSocket endpoint: clients connect from anywhere, to the "
                "listener ports only (443, and 80 which redirects to it; 80 alone only "
                "when the environment says allowPlaintext). A WAF web ACL (waf, on by "
                "default) limits handshakes per source address."
            ),
        )
        self.node_security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=vpc,
            description="Gateway nodes: WebSocket from the ALB, UDP peer traffic between nodes",
            allow_all_outbound=False,
        )
        self.node_security_group.connections.allow_internally(
            ec2.Port.udp(PEER_PORT), "Peer traffic between gateway nodes"
        )
        self.node_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(),
            ec2.Port.tcp(443),
            "AWS APIs (SQS, SNS, ECR, S3 image layers, CloudWatch Logs, Secrets Manager)",
        )
        network.allow_endpoint_access_from(self.node_security_group)

        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_group=self.load_balancer_security_group,
            idle_timeout=ALB_IDLE_TIMEOUT,
            drop_invalid_header_fields=True,
            deletion_protection=deletion_protection,
        )
        self.load_balancer.log_access_logs(network.log_bucket, prefix="alb")
        public_name = domain_name or self.load_balancer.load_balancer_dns_name
        self.websocket_url = f"{'wss' if certificate else 'ws'}://{public_name}"

        cpu_architecture, platform = ARCHITECTURES[architecture]
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            family=self.node_name,
            cpu=task_cpu,
            memory_limit_mib=task_memory,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=cpu_architecture,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        # A GraphQL-only node sends no events: no events queue or topic, nor rights to them.
        messaging.grant_node(self.task_definition.task_role, sends_events=not graphql_only)
        self.log_group = logs.LogGroup(
            self, "NodeLogs", retention=log_retention(log_retention_days)
        )
        event_bytes, event_count = event_buffer_for(max_connections_per_task)
        self.environment = {
            **messaging.node_environment(sends_events=not graphql_only),
            "LISTEN": f"0.0.0.0:{WEBSOCKET_PORT}",
            "COMMAND_LISTEN": "",  # commands arrive through the commands queue only
            "PEER_LISTEN": f"0.0.0.0:{PEER_PORT}",
            "PEERS_DNS": f"{PEERS_SERVICE_NAME}.{self.namespace.namespace_name}:{PEER_PORT}",
            "REGION": region,
            "AWS_REGION": region,
            "STAGE": environment_name,
            "DOMAIN_NAME": public_name,
            "TRUST_FORWARDED_FOR": "true",  # the ALB appends the client's address
            "DRAIN_SECONDS": str(drain_seconds),
            "KEEPALIVE_INTERVAL": str(keepalive_seconds),
            "MAX_CONNECTIONS": str(max_connections_per_task),
            "EVENT_BUFFER_BYTES": str(event_bytes),
            "EVENT_BUFFER_EVENTS": str(event_count),
            "LOG_FORMAT": "json",
            "SERVICE_NAME": self.node_name,  # dimension of the node's metrics
            "TARGET_HEALTH_INTERVAL": str(target_health_interval_seconds(max_tasks)),
            **(event_packing or EventPacking()).node_environment(),
        }
        self.graphql_function_arn: str | None = None
        if graphql_origin_function:
            self.graphql_function_arn = self._function_arn(graphql_origin_function)
            self.environment["GRAPHQL_ORIGIN_FUNCTION"] = self.graphql_function_arn
        if allowed_origins:
            self.environment["ALLOWED_ORIGINS"] = ",".join(allowed_origins)
        self.environment.update(door.node_environment(region, self._function_arn))
        # One function may serve several roles (say, the authorizer and the $connect handler).
        candidates = [graphql_origin_function, *door.functions(region)]
        invoked = [function for function in dict.fromkeys(candidates) if function]
        if invoked:
            # The exact ARNs the node invokes: a grant on a function's ARN does not cover its
            # aliases or versions, nor the other way round, so no wildcard is needed.
            iam.Grant.add_to_principal(
                grantee=self.task_definition.task_role,
                actions=["lambda:InvokeFunction"],
                resource_arns=[self._function_arn(function) for function in invoked],
            )
        secrets = {"PEER_SECRET": ecs.Secret.from_secrets_manager(self.peer_secret)}
        port_mappings = [
            ecs.PortMapping(
                name="websocket", container_port=WEBSOCKET_PORT, protocol=ecs.Protocol.TCP
            ),
            ecs.PortMapping(name="peer", container_port=PEER_PORT, protocol=ecs.Protocol.UDP),
        ]
        self.command_token: secretsmanager.Secret | None = None
        connections_api = door.connections_api
        if connections_api is not None:
            # The command listener answers @connections (and /commands, /stats), which only the
            # origin's security group may reach; its token guards /commands and /stats always,
            # and @connections too in mode "token".
            self.command_token = secretsmanager.Secret(
                self,
                "CommandToken",
                description=f"Token of the {base} gateway nodes' command listener (@connections)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=64, exclude_punctuation=True
                ),
            )
            acknowledge(
                self.command_token.node.default_child,
                "AwsSolutions-SMG4",
                (
                    "Nodes read the command token at start, and origins using @connections "
                    "hold a copy, so a scheduled rotation would refuse their calls until both "
                    "restart. Rotate deliberately: update the secret, force a new deployment "
                    "of the nodes, then refresh the origins."
                ),
            )
            secrets["COMMAND_TOKEN"] = ecs.Secret.from_secrets_manager(self.command_token)
            port_mappings.append(
                ecs.PortMapping(
                    name="commands",
                    container_port=connections_api.port,
                    protocol=ecs.Protocol.TCP,
                )
            )
            self.node_security_group.add_ingress_rule(
                ec2.Peer.security_group_id(connections_api.security_group_id),
                ec2.Port.tcp(connections_api.port),
                "The origin's @connections calls, from its security group only",
            )
        self.container = self.task_definition.add_container(
            "Node",
            container_name=CONTAINER_NAME,
            image=ecs.ContainerImage.from_asset(
                str(PROJECT_ROOT), file=DOCKERFILE, platform=platform
            ),
            environment=self.environment,
            secrets=secrets,
            port_mappings=port_mappings,
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    "import urllib.request; urllib.request.urlopen("
                    f"'http://127.0.0.1:{WEBSOCKET_PORT}{HEALTH_PATH}', timeout=3)",
                ],
                interval=cdk.Duration.seconds(10),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=cdk.Duration.seconds(20),
            ),
            ulimits=[
                ecs.Ulimit(
                    name=ecs.UlimitName.NOFILE, soft_limit=NOFILE_LIMIT, hard_limit=NOFILE_LIMIT
                )
            ],
            stop_timeout=cdk.Duration.seconds(stop_timeout_seconds),
            readonly_root_filesystem=True,
            # An init process as PID 1 forwards SIGTERM to the node and reaps zombies.
            linux_parameters=ecs.LinuxParameters(
                self, "LinuxParameters", init_process_enabled=True
            ),
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=CONTAINER_NAME,
                log_group=self.log_group,
                # A slow log API must not stall the event loop that serves every connection.
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=cdk.Size.mebibytes(25),
            ),
        )
        execution_role = self.task_definition.execution_role
        assert execution_role is not None  # created for the image asset, logs and secret
        acknowledge(
            execution_role.node.find_child("DefaultPolicy").node.default_child,
            "AwsSolutions-IAM5[Resource::*]",
            (
                "ecr:GetAuthorizationToken, which ECS needs to pull the image, has no "
                "resource-level permissions; pulling itself is limited to the asset "
                "repository, logs to the node log group, secrets to the peer secret."
            ),
        )
        acknowledge(
            self.task_definition.node.default_child,
            "AwsSolutions-ECS2",
            (
                "The environment holds only non-secret settings (ports, queue URLs, topic "
                "ARNs, region, timings), which the node reads from its environment by "
                "design; the secrets, the peer key and (with connectionsApi) the command "
                "token, are injected from Secrets Manager."
            ),
        )

        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            # Unset, a deploy keeps the count autoscaling chose; set, every deploy resets it.
            desired_count=desired_tasks,
            min_healthy_percent=100,  # start new tasks before stopping old ones
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            security_groups=[self.node_security_group],
            vpc_subnets=network.node_subnets,
            assign_public_ip=False,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            health_check_grace_period=cdk.Duration.seconds(60),
            cloud_map_options=ecs.CloudMapOptions(
                name=PEERS_SERVICE_NAME,
                cloud_map_namespace=self.namespace,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=PEER_DNS_TTL,
            ),
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )

        self.running_tasks_metric = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": self.cluster.cluster_name,
                "ServiceName": self.service.service_name,
            },
            statistic=cloudwatch.Stats.AVERAGE,
            period=cdk.Duration.minutes(1),
        )

        self.target_group = elbv2.ApplicationTargetGroup(
            self,
            "Nodes",
            vpc=vpc,
            port=WEBSOCKET_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[
                self.service.load_balancer_target(
                    container_name=CONTAINER_NAME, container_port=WEBSOCKET_PORT
                )
            ],
            health_check=elbv2.HealthCheck(
                path=HEALTH_PATH,
                healthy_http_codes="200",
                interval=cdk.Duration.seconds(10),
                timeout=cdk.Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=2,
            ),
            deregistration_delay=cdk.Duration.seconds(
                deregistration_delay_seconds(drain_seconds, max_tasks)
            ),
        )
        # The node watches its own target's state: draining means ECS is stopping the task.
        self.container.add_environment("TARGET_GROUP_ARN", self.target_group.target_group_arn)
        self.task_definition.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["elasticloadbalancing:DescribeTargetHealth"], resources=["*"]
            )
        )
        task_policy = self.task_definition.task_role.node.find_child("DefaultPolicy")
        acknowledge(
            task_policy.node.default_child,
            "AwsSolutions-IAM5[Resource::*]",
            (
                "elasticloadbalancing:DescribeTargetHealth, by which a node learns that its "
                "target is draining, supports no resource-level permissions; it is the only "
                "action granted on all resources, and it reads target states only."
            ),
        )
        if certificate is not None:
            self.load_balancer.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)],
                ssl_policy=elbv2.SslPolicy.TLS13_12_RES_PQ,
                default_target_groups=[self.target_group],
                open=True,
            )
            self.load_balancer.add_redirect(source_port=80, target_port=443)
        else:
            self.load_balancer.add_listener(
                "Http",
                port=80,
                protocol=elbv2.ApplicationProtocol.HTTP,
                default_target_groups=[self.target_group],
                open=True,
            )

        self.connections_metric = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=CONNECTIONS_METRIC,
            dimensions_map={"ServiceName": self.node_name},
            statistic=cloudwatch.Stats.AVERAGE,
            period=cdk.Duration.minutes(1),
        )
        self.scaling = self.service.auto_scale_task_count(
            min_capacity=min_tasks, max_capacity=max_tasks
        )
        self.scaling.scale_on_cpu_utilization(
            "CpuScaling",
            target_utilization_percent=cpu_target_percent,
            scale_in_cooldown=SCALE_IN_COOLDOWN,
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
        )
        self.scaling.scale_to_track_custom_metric(
            "ConnectionScaling",
            metric=self.connections_metric,
            target_value=connections_per_task_target,
            scale_in_cooldown=SCALE_IN_COOLDOWN,
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
        )

    def _function_arn(self, function: str) -> str:
        """An ARN as given; a name is the function of that name in this stack's region."""
        if function.startswith("arn:"):
            return function
        return cdk.Stack.of(self).format_arn(
            service="lambda",
            resource="function",
            resource_name=function,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
