"""The VPC of one region: public subnets for the load balancer, private ones for the nodes.

Each region's address range comes from its settings (infra/config_network.py), disjoint from the
environment's other regions so that VPCs can be peered.

Nodes reach AWS APIs (SQS, SNS, ECR, CloudWatch Logs, Secrets Manager) either through NAT
gateways or, with no route to the internet at all, through VPC endpoints that only the nodes'
security group may use. Network logs (VPC flow logs here, the load balancer's access logs
later) go to one private, TLS-only bucket that expires them after the retention period.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.findings import acknowledge

# Interface endpoints a node (and Fargate, on its behalf) needs when there is no NAT gateway:
# events and commands, the image (ECR API and registry; its layers come from S3 through the
# gateway endpoint), logs and metrics (EMF), the peer secret, and Elastic Load Balancing, which
# tells a node that its target is draining. Lambda's is added only for
# nodes that invoke functions (add_lambda_endpoint).
INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "ElasticLoadBalancing": ec2.InterfaceVpcEndpointAwsService.ELASTIC_LOAD_BALANCING,
}
FLOW_LOG_TRAFFIC = {"REJECT": ec2.FlowLogTrafficType.REJECT, "ALL": ec2.FlowLogTrafficType.ALL}
HTTPS = ec2.Port.tcp(443)


class GatewayNetwork(Construct):
    """VPC, subnets, egress (NAT or endpoints), flow logs and the network log bucket."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        availability_zones: Sequence[str],
        cidr: str,
        flow_log_traffic: str,
        egress: str,
        nat_gateways: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        private_type = (
            ec2.SubnetType.PRIVATE_WITH_EGRESS
            if egress == "nat-gateways"
            else ec2.SubnetType.PRIVATE_ISOLATED
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            availability_zones=list(availability_zones),
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(name="Nodes", subnet_type=private_type, cidr_mask=20),
            ],
        )
        self.node_subnets = ec2.SubnetSelection(subnet_type=private_type)

        self.log_bucket = s3.Bucket(
            self,
            "LogBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,  # ALB access logs accept no KMS key
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(log_retention_days))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.log_bucket.node.default_child,
            "AwsSolutions-S1",
            (
                "This bucket is the sink of the ALB access logs and VPC flow logs: server "
                "access logging for it would need yet another bucket with the same finding. "
                "It is private, TLS-only and written by the log delivery services only; turn "
                "on CloudTrail data events for it where object-level auditing is required."
            ),
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_s3(self.log_bucket, "vpc-flow-logs/"),
            # Rejected traffic by default: what a security review looks for, at a fraction of
            # the volume (every WebSocket frame is accepted traffic).
            traffic_type=FLOW_LOG_TRAFFIC[flow_log_traffic],
        )

        # Free, and keeps image layer downloads off the NAT gateways too.
        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.node_subnets]
        )
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        if egress == "vpc-endpoints":
            self.endpoint_security_group = ec2.SecurityGroup(
                self,
                "EndpointSecurityGroup",
                vpc=self.vpc,
                description="VPC interface endpoints: HTTPS from the gateway nodes only",
                allow_all_outbound=False,
            )
            for name, service in INTERFACE_ENDPOINTS.items():
                self.vpc.add_interface_endpoint(
                    name,
                    service=service,
                    subnets=self.node_subnets,
                    security_groups=[self.endpoint_security_group],
                    private_dns_enabled=True,
                    open=False,
                )

    def add_lambda_endpoint(self) -> None:
        """Nodes that invoke Lambda functions (a GraphQL origin, a $connect handler, an
        authorizer) reach Lambda's API through an endpoint too; once, and only without NAT.
        """
        if self.endpoint_security_group is None or self.vpc.node.try_find_child("Lambda"):
            return
        self.vpc.add_interface_endpoint(
            "Lambda",
            service=ec2.InterfaceVpcEndpointAwsService.LAMBDA_,
            subnets=self.node_subnets,
            security_groups=[self.endpoint_security_group],
            private_dns_enabled=True,
            open=False,
        )

    def allow_endpoint_access_from(self, peer: ec2.IConnectable) -> None:
        """Let `peer` use the interface endpoints (no-op with NAT gateways, which need no rule)."""
        if self.endpoint_security_group is not None:
            self.endpoint_security_group.connections.allow_from(
                peer, HTTPS, "Gateway nodes call AWS APIs through the endpoints"
            )
