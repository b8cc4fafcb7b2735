"""What each synthesized stack deploys, resource by resource, for dev, prod (both regions) and
edge (every switch the other way). The session synthesizes once; these only read templates.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra.config import EnvironmentConfig, parse_environment
from infra.config_network import default_cidr
from infra.service import deregistration_delay_seconds, target_health_interval_seconds
from runtime.names import MAX_MESSAGE_BYTES, MAX_RECEIVE_COUNT, ResourceNames
from tests.infra.synth import SynthesizedStack, stack_names

ALL = stack_names()
ENDPOINTS = stack_names(egress="vpc-endpoints")
NAT = stack_names(egress="nat-gateways")
ORIGIN = stack_names(exampleOrigin=True)
NO_ORIGIN = stack_names(exampleOrigin=False)
SNS_EVENTS = stack_names(eventsVia="sns")
SQS_EVENTS = stack_names(eventsVia="sqs")
TLS = stack_names(allowPlaintext=False)
PLAIN = stack_names(allowPlaintext=True)


def each(names: list[str]) -> Any:
    """Parametrize a test over the named stacks (the `stack` fixture looks them up)."""
    return pytest.mark.parametrize("stack", names, indirect=True)


def config_of(stack: SynthesizedStack) -> EnvironmentConfig:
    return parse_environment(stack.environment, stack.settings)


def names_of(stack: SynthesizedStack) -> ResourceNames:
    return ResourceNames(stack.environment, fifo=stack.settings.get("fifo", True))


def environment_of(stack: SynthesizedStack) -> dict[str, Any]:
    container = stack.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    return {item["Name"]: item["Value"] for item in container["Environment"]}


def ref(stack: SynthesizedStack, resource_type: str, name_property: str, name: str) -> str:
    """The logical ID of the resource of that type whose name property is `name`."""
    for logical_id, resource in stack.resources(resource_type).items():
        if resource["Properties"].get(name_property) == name:
            return logical_id
    raise AssertionError(f"{stack.name}: no {resource_type} named {name}")


def test_the_session_synthesized_every_environment_and_region(
    stacks: dict[str, SynthesizedStack],
) -> None:
    assert sorted(stacks) == sorted(
        [
            "wsgw-dev-us-east-1",
            "wsgw-prod-us-east-1",
            "wsgw-prod-eu-west-1",
            "wsgw-edge-eu-central-1",
            "wsgw-edge-us-west-2",
            "wsgw-edge-ap-southeast-2",
        ]
    )


# Network ---------------------------------------------------------------------------------------


@each(ALL)
def test_vpc_spans_the_configured_azs_with_public_and_private_subnets(
    stack: SynthesizedStack,
) -> None:
    az_count = stack.settings.get("azCount", 2)
    subnets = [resource["Properties"] for resource in stack.resources("AWS::EC2::Subnet").values()]
    public = [subnet for subnet in subnets if subnet["MapPublicIpOnLaunch"]]
    private = [subnet for subnet in subnets if not subnet["MapPublicIpOnLaunch"]]
    assert len(public) == len(private) == az_count >= 2
    # Resolved at deploy time: never the dummy AZs of an account-less synthesis.
    assert sorted(subnet["AvailabilityZone"]["Fn::Select"][0] for subnet in public) == list(
        range(az_count)
    )
    vpc = stack.one("AWS::EC2::VPC")
    expected = stack.settings.get("vpcCidr", {}).get(stack.region) or default_cidr(stack.region)
    assert vpc["CidrBlock"] == expected
    # Rejected traffic only unless the environment asks for all of it.
    stack.template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {
            "ResourceType": "VPC",
            "TrafficType": stack.settings.get("flowLogs", "REJECT"),
            "LogDestinationType": "s3",
        },
    )


@each(ENDPOINTS)
def test_endpoint_egress_has_no_nat_and_private_endpoints_for_every_service(
    stack: SynthesizedStack,
) -> None:
    template = stack.template
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 8)
    services = (
        "sqs",
        "sns",
        "ecr.api",
        "ecr.dkr",
        "logs",
        "secretsmanager",
        "elasticloadbalancing",
    )
    for service in services:
        template.has_resource_properties(
            "AWS::EC2::VPCEndpoint",
            {
                "ServiceName": f"com.amazonaws.{stack.region}.{service}",
                "VpcEndpointType": "Interface",
                "PrivateDnsEnabled": True,
            },
        )
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]},
            "VpcEndpointType": "Gateway",
        },
    )
    endpoint_group = ref(
        stack,
        "AWS::EC2::SecurityGroup",
        "GroupDescription",
        "VPC interface endpoints: HTTPS from the gateway nodes only",
    )
    ingress = [
        rule["Properties"]
        for rule in stack.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [endpoint_group, "GroupId"]}
    ]
    assert ingress == [
        {
            "Description": "Gateway nodes call AWS APIs through the endpoints",
            "FromPort": 443,
            "ToPort": 443,
            "IpProtocol": "tcp",
            "GroupId": {"Fn::GetAtt": [endpoint_group, "GroupId"]},
            "SourceSecurityGroupId": {"Fn::GetAtt": [node_group(stack), "GroupId"]},
        }
    ]


@each(NAT)
def test_nat_egress_has_the_configured_nat_gateways(stack: SynthesizedStack) -> None:
    stack.template.resource_count_is("AWS::EC2::NatGateway", stack.settings["natGateways"])
    stack.template.resource_count_is("AWS::EC2::VPCEndpoint", 1)  # S3 gateway: free


@each(ALL)
def test_network_logs_go_to_a_private_tls_only_bucket_that_expires_them(
    stack: SynthesizedStack,
) -> None:
    bucket = stack.one("AWS::S3::Bucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["LifecycleConfiguration"]["Rules"] == [
        {"ExpirationInDays": stack.settings.get("logRetentionDays", 90), "Status": "Enabled"}
    ]
    stack.template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


# Nodes -----------------------------------------------------------------------------------------


def node_group(stack: SynthesizedStack) -> str:
    return ref(
        stack,
        "AWS::EC2::SecurityGroup",
        "GroupDescription",
        "Gateway nodes: WebSocket from the ALB, UDP peer traffic between nodes",
    )


def alb_group(stack: SynthesizedStack) -> str:
    return ref(
        stack,
        "AWS::EC2::SecurityGroup",
        "GroupDescription",
        "Gateway ALB: WebSocket clients from the internet",
    )


@each(ALL)
def test_cluster_has_container_insights(stack: SynthesizedStack) -> None:
    cluster = stack.one("AWS::ECS::Cluster")
    assert "ClusterName" not in cluster  # generated: a replacement never collides with a name
    assert cluster["ClusterSettings"] == [{"Name": "containerInsights", "Value": "enabled"}]


@each(ALL)
def test_task_definition_sizes_architecture_and_image(stack: SynthesizedStack) -> None:
    task = stack.one("AWS::ECS::TaskDefinition")
    assert task["Family"] == f"wsgw-{stack.environment}-nodes"
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    assert task["Cpu"] == str(stack.settings.get("taskCpu", 1024))
    assert task["Memory"] == str(stack.settings.get("taskMemory", 2048))
    assert task["RuntimePlatform"] == {
        "CpuArchitecture": stack.settings.get("architecture", "ARM64"),
        "OperatingSystemFamily": "LINUX",
    }
    container = task["ContainerDefinitions"][0]
    assert "container-assets" in str(container["Image"])  # built from runtime/Dockerfile
    assert container["Essential"] is True
    assert container["ReadonlyRootFilesystem"] is True
    assert container["LinuxParameters"]["InitProcessEnabled"] is True
    assert container["Ulimits"] == [{"Name": "nofile", "SoftLimit": 262144, "HardLimit": 262144}]
    assert container["PortMappings"] == [
        {"ContainerPort": 8080, "Name": "websocket", "Protocol": "tcp"},
        {"ContainerPort": 9100, "Name": "peer", "Protocol": "udp"},
    ]


@each(ALL)
def test_container_stops_after_its_drain_and_is_health_checked(stack: SynthesizedStack) -> None:
    container = stack.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    drain = stack.settings.get("drainSeconds", 30)
    assert environment_of(stack)["DRAIN_SECONDS"] == str(drain)
    assert drain < container["StopTimeout"] <= 120
    health = container["HealthCheck"]
    assert health["Command"][:3] == ["CMD", "python", "-c"]
    assert "http://127.0.0.1:8080/healthz" in health["Command"][3]
    assert health["StartPeriod"] > 0 and health["Retries"] >= 2


@each(ALL)
def test_container_logs_to_cloudwatch_with_retention(stack: SynthesizedStack) -> None:
    logging = stack.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["mode"] == "non-blocking"
    group = logging["Options"]["awslogs-group"]["Ref"]
    retention = stack.data["Resources"][group]["Properties"]["RetentionInDays"]
    assert retention == stack.settings.get("logRetentionDays", 90)


@each(ALL)
def test_container_is_configured_by_environment_variables(stack: SynthesizedStack) -> None:
    environment = environment_of(stack)
    names = names_of(stack)
    messaging = {"COMMANDS_QUEUE_URL": {"Ref": queue(stack, names.commands_queue)}}
    if stack.settings.get("eventsVia") == "sns":
        messaging |= {
            "ORIGIN_TRANSPORT": "sns",
            "EVENTS_TOPIC_ARN": {"Ref": topic(stack, names.events_topic)},
        }
    else:
        messaging |= {
            "ORIGIN_TRANSPORT": "sqs",
            "EVENTS_QUEUE_URL": {"Ref": queue(stack, names.events_queue)},
        }
    config = config_of(stack)
    domain = config.domain_name(stack.region)
    target_group = next(iter(stack.resources("AWS::ElasticLoadBalancingV2::TargetGroup")))
    origins = stack.settings.get("allowedOrigins")
    assert environment == {
        **messaging,
        "LISTEN": "0.0.0.0:8080",
        "COMMAND_LISTEN": "",
        "PEER_LISTEN": "0.0.0.0:9100",
        "PEERS_DNS": f"nodes.wsgw-{stack.environment}.internal:9100",
        "REGION": stack.region,
        "AWS_REGION": stack.region,
        "STAGE": stack.environment,
        "DOMAIN_NAME": domain or {"Fn::GetAtt": [load_balancer(stack), "DNSName"]},
        "TRUST_FORWARDED_FOR": "true",
        "DRAIN_SECONDS": str(stack.settings.get("drainSeconds", 30)),
        "KEEPALIVE_INTERVAL": str(stack.settings.get("keepaliveSeconds", 60)),
        "MAX_CONNECTIONS": str(stack.settings.get("maxConnectionsPerTask", 20000)),
        "EVENT_BUFFER_BYTES": str(
            max(64 * 1024 * 1024, 2048 * stack.settings.get("maxConnectionsPerTask", 20000))
        ),
        "EVENT_BUFFER_EVENTS": str(
            max(100_000, 2 * stack.settings.get("maxConnectionsPerTask", 20000))
        ),
        "LOG_FORMAT": "json",
        "SERVICE_NAME": f"wsgw-{stack.environment}-nodes",
        "TARGET_HEALTH_INTERVAL": str(target_health_interval_seconds(config.max_tasks)),
        "TARGET_GROUP_ARN": {"Ref": target_group},
        **({"ALLOWED_ORIGINS": ",".join(origins)} if origins else {}),
        "EVENTS_PER_MESSAGE": str(stack.settings.get("eventsPerMessage", 1000)),
        "EVENTS_MESSAGE_BYTES": str(stack.settings.get("eventsMessageBytes", 65536)),
        "EVENTS_LINGER_MS": str(stack.settings.get("eventsLingerMs", 20)),
        "EVENTS_FIFO_GROUPS": str(stack.settings.get("eventsFifoGroups", 10)),
        **(
            {"GRAPHQL_ORIGIN_FUNCTION": _function_arn(stack, graphql)}
            if (graphql := config.graphql_origin_function(stack.region))
            else {}
        ),
    }
    container = stack.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    secret = next(iter(stack.resources("AWS::SecretsManager::Secret")))
    assert container["Secrets"] == [{"Name": "PEER_SECRET", "ValueFrom": {"Ref": secret}}]


@each(ALL)
def test_peer_key_is_a_generated_secret(stack: SynthesizedStack) -> None:
    secret = stack.one("AWS::SecretsManager::Secret")
    assert secret["GenerateSecretString"] == {"ExcludePunctuation": True, "PasswordLength": 64}


@each(ALL)
def test_service_rolls_back_failed_deployments_and_registers_in_cloud_map(
    stack: SynthesizedStack,
) -> None:
    service = stack.one("AWS::ECS::Service")
    assert "ServiceName" not in service  # generated: a replacement never collides with a name
    assert service["LaunchType"] == "FARGATE"
    assert service["DeploymentConfiguration"] == {
        "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
        "MaximumPercent": 200,
        "MinimumHealthyPercent": 100,
    }
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"] == [
        {"Fn::GetAtt": [node_group(stack), "GroupId"]}
    ]
    assert service.get("DesiredCount") == stack.settings.get("desiredTasks")
    target_group = next(iter(stack.resources("AWS::ElasticLoadBalancingV2::TargetGroup")))
    assert service["LoadBalancers"] == [
        {"ContainerName": "node", "ContainerPort": 8080, "TargetGroupArn": {"Ref": target_group}}
    ]
    namespace = stack.one("AWS::ServiceDiscovery::PrivateDnsNamespace")
    assert namespace["Name"] == f"wsgw-{stack.environment}.internal"
    discovery = stack.one("AWS::ServiceDiscovery::Service")
    assert discovery["Name"] == "nodes"
    assert discovery["DnsConfig"]["DnsRecords"] == [{"TTL": 10, "Type": "A"}]
    assert discovery["DnsConfig"]["RoutingPolicy"] == "MULTIVALUE"


def load_balancer(stack: SynthesizedStack) -> str:
    return next(iter(stack.resources("AWS::ElasticLoadBalancingV2::LoadBalancer")))


@each(ALL)
def test_load_balancer_is_internet_facing_with_websocket_timeouts_and_logs(
    stack: SynthesizedStack,
) -> None:
    alb = stack.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert "Name" not in alb  # generated
    assert alb["Scheme"] == "internet-facing"
    attributes = {item["Key"]: item["Value"] for item in alb["LoadBalancerAttributes"]}
    protected = stack.settings.get("deletionProtection", True)
    assert attributes.get("deletion_protection.enabled", "false") == str(protected).lower()
    assert int(attributes["idle_timeout.timeout_seconds"]) >= 300
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert attributes["access_logs.s3.enabled"] == "true"
    target_group = stack.one("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert target_group["TargetType"] == "ip"
    assert target_group["Port"] == 8080
    assert target_group["HealthCheckPath"] == "/healthz"
    assert target_group["Matcher"] == {"HttpCode": "200"}
    attributes = {item["Key"]: item["Value"] for item in target_group["TargetGroupAttributes"]}
    # Past the node's own drain, which begins within two polls of its target turning draining.
    drain = stack.settings.get("drainSeconds", 30)
    max_tasks = stack.settings.get("maxTasks", 8)
    interval = int(environment_of(stack)["TARGET_HEALTH_INTERVAL"])
    assert interval == target_health_interval_seconds(max_tasks) >= max_tasks / 4
    delay = int(attributes["deregistration_delay.timeout_seconds"])
    assert delay == deregistration_delay_seconds(drain, max_tasks) >= drain + 3 * interval


@each(TLS)
def test_with_a_certificate_https_serves_and_http_redirects(stack: SynthesizedStack) -> None:
    listeners = {
        resource["Properties"]["Port"]: resource["Properties"]
        for resource in stack.resources("AWS::ElasticLoadBalancingV2::Listener").values()
    }
    assert sorted(listeners) == [80, 443]
    https = listeners[443]
    assert https["Protocol"] == "HTTPS"
    given = stack.settings.get("certificateArn", {}).get(stack.region)
    if given:
        assert https["Certificates"] == [{"CertificateArn": given}]
    else:  # made by the stack, validated in the hosted zone
        certificate = next(iter(stack.resources("AWS::CertificateManager::Certificate")))
        assert https["Certificates"] == [{"CertificateArn": {"Ref": certificate}}]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert https["DefaultActions"][0]["Type"] == "forward"
    assert listeners[80]["DefaultActions"] == [
        {
            "Type": "redirect",
            "RedirectConfig": {"Port": "443", "Protocol": "HTTPS", "StatusCode": "HTTP_301"},
        }
    ]
    assert client_ports(stack) == [80, 443]
    domain = config_of(stack).domain_name(stack.region)
    assert stack.data["Outputs"]["WebSocketUrl"]["Value"] == f"wss://{domain}"


@each(PLAIN)
def test_without_a_certificate_plain_http_serves(stack: SynthesizedStack) -> None:
    listener = stack.one("AWS::ElasticLoadBalancingV2::Listener")
    assert listener["Port"] == 80 and listener["Protocol"] == "HTTP"
    assert listener["DefaultActions"][0]["Type"] == "forward"
    assert client_ports(stack) == [80]
    assert stack.data["Outputs"]["WebSocketUrl"]["Value"] == {
        "Fn::Join": ["", ["ws://", {"Fn::GetAtt": [load_balancer(stack), "DNSName"]}]]
    }


def client_ports(stack: SynthesizedStack) -> list[int]:
    """Ports the internet may reach: the ALB's ingress, and no other group's."""
    groups = stack.resources("AWS::EC2::SecurityGroup")
    open_rules = [
        (logical_id, rule)
        for logical_id, group in groups.items()
        for rule in group["Properties"].get("SecurityGroupIngress", [])
    ]
    assert {logical_id for logical_id, _rule in open_rules} == {alb_group(stack)}
    assert all(rule["CidrIp"] == "0.0.0.0/0" for _id, rule in open_rules)
    return sorted(rule["FromPort"] for _id, rule in open_rules)


@each(ALL)
def test_load_balancer_reaches_nodes_only_on_the_websocket_port_and_nodes_each_other_only_on_udp(
    stack: SynthesizedStack,
) -> None:
    nodes = {"Fn::GetAtt": [node_group(stack), "GroupId"]}
    alb = {"Fn::GetAtt": [alb_group(stack), "GroupId"]}
    ingress = [
        rule["Properties"]
        for rule in stack.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == nodes
    ]
    into_nodes = sorted(
        (rule["IpProtocol"], rule["FromPort"], rule["ToPort"], rule["SourceSecurityGroupId"])
        for rule in ingress
    )
    # From the ALB on the WebSocket port; from other nodes on the UDP peer port; nothing else.
    assert into_nodes == [("tcp", 8080, 8080, alb), ("udp", 9100, 9100, nodes)]
    alb_egress = [
        rule["Properties"]
        for rule in stack.resources("AWS::EC2::SecurityGroupEgress").values()
        if rule["Properties"]["GroupId"] == alb
    ]
    assert [
        (rule["IpProtocol"], rule["FromPort"], rule["DestinationSecurityGroupId"])
        for rule in alb_egress
    ] == [("tcp", 8080, nodes)]
    node_egress = stack.data["Resources"][node_group(stack)]["Properties"]["SecurityGroupEgress"]
    assert [(rule["IpProtocol"], rule["FromPort"], rule["CidrIp"]) for rule in node_egress] == [
        ("tcp", 443, "0.0.0.0/0")
    ]


@each(ALL)
def test_capacity_tracks_cpu_and_connections_per_task(stack: SynthesizedStack) -> None:
    target = stack.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["MinCapacity"] == stack.settings.get("minTasks", 2)
    assert target["MaxCapacity"] == stack.settings.get("maxTasks", 8)
    policies = [
        resource["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for resource in stack.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    cpu = next(policy for policy in policies if "PredefinedMetricSpecification" in policy)
    assert cpu["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
    }
    assert cpu["TargetValue"] == stack.settings.get("cpuTargetPercent", 60)
    connections = next(policy for policy in policies if "CustomizedMetricSpecification" in policy)
    assert connections["CustomizedMetricSpecification"] == {
        "Namespace": "WsGateway",
        "MetricName": "ConnectionsPerTask",
        "Dimensions": [{"Name": "ServiceName", "Value": f"wsgw-{stack.environment}-nodes"}],
        "Statistic": "Average",
    }
    assert connections["TargetValue"] == stack.settings.get("connectionsPerTaskTarget", 10000)
    for policy in (cpu, connections):
        assert policy["ScaleInCooldown"] > policy["ScaleOutCooldown"]


# Messaging -------------------------------------------------------------------------------------


def queue(stack: SynthesizedStack, name: str) -> str:
    return ref(stack, "AWS::SQS::Queue", "QueueName", name)


def topic(stack: SynthesizedStack, name: str) -> str:
    return ref(stack, "AWS::SNS::Topic", "TopicName", name)


@each(ALL)
def test_queues_are_named_encrypted_tls_only_and_take_1_mib(stack: SynthesizedStack) -> None:
    names = names_of(stack)
    queues = {
        resource["Properties"]["QueueName"]: (logical_id, resource["Properties"])
        for logical_id, resource in stack.resources("AWS::SQS::Queue").items()
    }
    assert sorted(queues) == sorted(
        [names.events_queue, names.events_dlq, names.commands_queue, names.commands_dlq]
    )
    for name, (logical_id, properties) in queues.items():
        assert properties["MaximumMessageSize"] == MAX_MESSAGE_BYTES == 1024 * 1024, name
        assert properties["SqsManagedSseEnabled"] is True, name
        assert properties.get("FifoQueue", False) == (names.fifo and "events" in name), name
        stack.template.has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "Queues": [{"Ref": logical_id}],
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "sqs:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                },
            },
        )
    for queue_name, dlq_name in (
        (names.events_queue, names.events_dlq),
        (names.commands_queue, names.commands_dlq),
    ):
        assert queues[queue_name][1]["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [queues[dlq_name][0], "Arn"]},
            "maxReceiveCount": MAX_RECEIVE_COUNT,
        }
        assert queues[dlq_name][1]["MessageRetentionPeriod"] == 14 * 24 * 3600
    # Commands outlive their connections by minutes at most: no replay of old ones after an outage.
    retention = 60 * stack.settings.get("commandsRetentionMinutes", 10)
    assert queues[names.commands_queue][1]["MessageRetentionPeriod"] == retention
    if names.fifo:  # high-throughput FIFO: ordered per connection (message group)
        events = queues[names.events_queue][1]
        assert events["FifoThroughputLimit"] == "perMessageGroupId"
        assert events["DeduplicationScope"] == "messageGroup"


@each(ALL)
def test_commands_topic_delivers_raw_to_the_commands_queue(stack: SynthesizedStack) -> None:
    names = names_of(stack)
    commands_topic = topic(stack, names.commands_topic)
    properties = stack.data["Resources"][commands_topic]["Properties"]
    assert "FifoTopic" not in properties
    assert_topic_is_encrypted_tls_only_and_takes_1_mib(stack, commands_topic)
    stack.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            "Protocol": "sqs",
            "TopicArn": {"Ref": commands_topic},
            "Endpoint": {"Fn::GetAtt": [queue(stack, names.commands_queue), "Arn"]},
            "RawMessageDelivery": True,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": [queue(stack, names.commands_dlq), "Arn"]}
            },
        },
    )


@each(SNS_EVENTS)
def test_events_topic_feeds_the_events_queue(stack: SynthesizedStack) -> None:
    names = names_of(stack)
    events_topic = topic(stack, names.events_topic)
    properties = stack.data["Resources"][events_topic]["Properties"]
    assert properties.get("FifoTopic", False) == names.fifo
    assert_topic_is_encrypted_tls_only_and_takes_1_mib(stack, events_topic)
    stack.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {
            "Protocol": "sqs",
            "TopicArn": {"Ref": events_topic},
            "Endpoint": {"Fn::GetAtt": [queue(stack, names.events_queue), "Arn"]},
            "RawMessageDelivery": True,
        },
    )
    assert stack.data["Outputs"]["EventsTopicArn"]["Value"] == {"Ref": events_topic}


@each(SQS_EVENTS)
def test_without_sns_events_there_is_no_events_topic(stack: SynthesizedStack) -> None:
    names = [
        resource["Properties"].get("TopicName")
        for resource in stack.resources("AWS::SNS::Topic").values()
    ]
    assert names_of(stack).events_topic not in names
    assert "EventsTopicArn" not in stack.data["Outputs"]


def assert_topic_is_encrypted_tls_only_and_takes_1_mib(stack: SynthesizedStack, topic: str) -> None:
    properties = stack.data["Resources"][topic]["Properties"]
    assert properties["MaximumMessageSize"] == MAX_MESSAGE_BYTES
    assert ":alias/aws/sns" in str(properties["KmsMasterKeyId"])
    stack.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [{"Ref": topic}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


# Least privilege -------------------------------------------------------------------------------


def policy_statements(stack: SynthesizedStack, role: str) -> list[tuple[tuple[str, ...], str]]:
    """(actions, resource logical ID) of every statement of the role's inline policies."""
    statements = []
    for policy in stack.resources("AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            actions = (actions,) if isinstance(actions, str) else tuple(sorted(actions))
            resource = statement["Resource"]
            if isinstance(resource, dict):  # a Ref or GetAtt of a resource of the stack
                resource = resource.get("Ref") or resource.get("Fn::GetAtt", [resource])[0]
            statements.append((actions, resource if isinstance(resource, str) else str(resource)))
    return sorted(statements)


def role_of_task(stack: SynthesizedStack) -> str:
    return str(stack.one("AWS::ECS::TaskDefinition")["TaskRoleArn"]["Fn::GetAtt"][0])


@each(ALL)
def test_node_task_role_may_send_events_and_settle_commands_and_nothing_else(
    stack: SynthesizedStack,
) -> None:
    """And invoke the GraphQL origin, when there is one (tests/infra/test_infra_graphql.py)."""
    names = names_of(stack)
    if stack.settings.get("eventsVia") == "sns":
        events = (("sns:GetTopicAttributes", "sns:Publish"), topic(stack, names.events_topic))
    else:
        events = (("sqs:GetQueueAttributes", "sqs:SendMessage"), queue(stack, names.events_queue))
    commands = (
        (
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
        ),
        queue(stack, names.commands_queue),
    )
    function = config_of(stack).graphql_origin_function(stack.region)
    graphql = (
        [(("lambda:InvokeFunction",), str(_function_arn(stack, function)))] if function else []
    )
    # The one action without resource-level permissions: it reads target states only.
    target_health = (("elasticloadbalancing:DescribeTargetHealth",), "*")
    assert policy_statements(stack, role_of_task(stack)) == sorted(
        [events, commands, target_health, *graphql]
    )
    role = stack.data["Resources"][role_of_task(stack)]["Properties"]
    assert "ManagedPolicyArns" not in role


@each(ORIGIN)
def test_example_origin_consumes_events_with_partial_batch_failures(
    stack: SynthesizedStack,
) -> None:
    names = names_of(stack)
    function = origin_function(stack)
    assert function["Handler"] == "runtime.origin.examples.chat.handler"
    assert function["Runtime"].startswith("python3.")
    assert function["Architectures"] == [
        "arm64" if stack.settings.get("architecture", "ARM64") == "ARM64" else "x86_64"
    ]
    assert "FunctionName" not in function  # generated
    assert function["Environment"]["Variables"] == {
        "WSGW_ENVIRONMENT": stack.environment,
        "WSGW_ACCOUNT_ID": {"Ref": "AWS::AccountId"},
        "WSGW_REGIONS": ",".join(stack.settings["regions"]),  # a room spans every region
    }
    mapping = stack.one("AWS::Lambda::EventSourceMapping")
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue(stack, names.events_queue), "Arn"]}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    if names.fifo:  # SQS FIFO: at most 10 per batch, no batching window
        assert mapping["BatchSize"] == 10 and "MaximumBatchingWindowInSeconds" not in mapping
    else:
        assert mapping["BatchSize"] == 10 and mapping["MaximumBatchingWindowInSeconds"] == 1
    visibility = stack.data["Resources"][queue(stack, names.events_queue)]["Properties"]
    assert visibility["VisibilityTimeout"] >= 6 * function["Timeout"]


def origin_function(stack: SynthesizedStack) -> dict[str, Any]:
    functions = [
        resource["Properties"]
        for resource in stack.resources("AWS::Lambda::Function").values()
        if resource["Properties"].get("Handler") == "runtime.origin.examples.chat.handler"
    ]
    assert len(functions) == 1
    return functions[0]


@each(ORIGIN)
def test_example_origin_keeps_no_table_and_its_region_deploys_alone(
    stack: SynthesizedStack,
) -> None:
    """Rooms are channels: no DynamoDB, so no region's stack waits for another's."""
    stack.template.resource_count_is("AWS::DynamoDB::GlobalTable", 0)
    stack.template.resource_count_is("AWS::DynamoDB::Table", 0)
    manifest = json.loads((stack.outdir / "manifest.json").read_text())
    dependencies = set(manifest["artifacts"][stack.name].get("dependencies", []))
    others = {f"wsgw-{stack.environment}-{region}" for region in stack.settings["regions"]}
    assert dependencies & others == set()


@each(ORIGIN)
def test_example_origin_role_has_only_what_the_chat_needs(stack: SynthesizedStack) -> None:
    names = names_of(stack)
    role = origin_function(stack)["Role"]["Fn::GetAtt"][0]
    statements = policy_statements(stack, role)
    # Replies go to each connection's region: every region's commands topic, and no other.
    (publish,) = [resource for actions, resource in statements if actions == ("sns:Publish",)]
    for region in stack.settings["regions"]:
        if region != stack.region:
            assert f":sns:{region}:" in publish and f":{names.commands_topic}'" in publish
    assert topic(stack, names.commands_topic) in publish
    assert publish.count(":sns:") == len(stack.settings["regions"]) - 1
    log_group = next(
        logical_id
        for logical_id, resource in stack.resources("AWS::Logs::LogGroup").items()
        if logical_id.startswith("ExampleOrigin")
    )
    assert policy_statements(stack, role) == sorted(
        [
            (("logs:CreateLogStream", "logs:PutLogEvents"), log_group),
            (("sns:Publish",), publish),
            (
                (
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                ),
                queue(stack, names.events_queue),
            ),
        ]
    )
    assert "ManagedPolicyArns" not in stack.data["Resources"][role]["Properties"]


@each(NO_ORIGIN)
def test_without_the_example_origin_there_is_no_function(stack: SynthesizedStack) -> None:
    stack.template.resource_count_is("AWS::Lambda::EventSourceMapping", 0)


# Observability and outputs ---------------------------------------------------------------------


@each(ALL)
def test_dashboard_is_per_region(stack: SynthesizedStack) -> None:
    dashboard = stack.one("AWS::CloudWatch::Dashboard")
    assert dashboard["DashboardName"] == f"wsgw-{stack.environment}-{stack.region}"
    assert "ConnectionsPerTask" in str(dashboard["DashboardBody"])


@each(ALL)
def test_outputs_give_an_origin_what_it_needs(stack: SynthesizedStack) -> None:
    names = names_of(stack)
    outputs = stack.data["Outputs"]
    events_queue = queue(stack, names.events_queue)
    assert outputs["OriginQueueUrl"]["Value"] == {"Ref": events_queue}
    assert outputs["OriginQueueArn"]["Value"] == {"Fn::GetAtt": [events_queue, "Arn"]}
    assert outputs["CommandsTopicArn"]["Value"] == {"Ref": topic(stack, names.commands_topic)}
    assert "WebSocketUrl" in outputs and "LoadBalancerDnsName" in outputs


def test_names_are_deterministic_per_environment_and_region(
    stacks: dict[str, SynthesizedStack],
) -> None:
    prod = [stacks["wsgw-prod-us-east-1"], stacks["wsgw-prod-eu-west-1"]]
    named = [
        ("AWS::SQS::Queue", "QueueName"),
        ("AWS::SNS::Topic", "TopicName"),
        ("AWS::CloudWatch::Alarm", "AlarmName"),
    ]
    for resource_type, name_property in named:
        each_region = [
            sorted(
                resource["Properties"][name_property]
                for resource in stack.resources(resource_type).values()
                if name_property in resource["Properties"]  # the alarm topic's is generated
            )
            for stack in prod
        ]
        # Regional services: the same names in every region, which the origin SDK relies on.
        assert each_region[0] == each_region[1], resource_type
    dashboards = [stack.one("AWS::CloudWatch::Dashboard")["DashboardName"] for stack in prod]
    assert dashboards == ["wsgw-prod-us-east-1", "wsgw-prod-eu-west-1"]  # global: per region


def arn_of(stack: SynthesizedStack, service: str, resource: str) -> Any:
    """The ARN the stack writes for a resource of its own region: literal where the account
    is known, else joined with the deploy-time account (the partition follows the region).
    """
    account = stack.settings.get("account")
    if account:
        return f"arn:aws:{service}:{stack.region}:{account}:{resource}"
    return {
        "Fn::Join": [
            "",
            [f"arn:aws:{service}:{stack.region}:", {"Ref": "AWS::AccountId"}, f":{resource}"],
        ]
    }


def _function_arn(stack: SynthesizedStack, function: str) -> Any:
    return (
        function if function.startswith("arn:") else arn_of(stack, "lambda", f"function:{function}")
    )
