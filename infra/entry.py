"""Names and certificates in a Route 53 hosted zone: one global name for every region.

With `hostedZone`, each region gets a DNS-validated ACM certificate for its own name and the
environment's global name, an alias record for its own name, and a latency record for the
global name with a health check on its load balancer's /healthz. Clients of the global name
reach the nearest region whose check passes; when a region fails its check, Route 53 stops
answering with it, and clients reconnecting go to the next nearest. Every stack adds only its
own region's records, so regions deploy independently.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from constructs import Construct

from infra.config_entry import HostedZone
from runtime.names import HEALTH_PATH

HEALTH_CHECK_INTERVAL = cdk.Duration.seconds(30)  # the standard interval; 10 s costs more
HEALTH_CHECK_FAILURES = 3  # failed checks before a region is taken out of the answers


def imported_zone(scope: Construct, zone: HostedZone) -> route53.IHostedZone:
    """The zone from its ID and name: no lookup, so synthesis needs no AWS credentials."""
    return route53.PublicHostedZone.from_public_hosted_zone_attributes(
        scope, "HostedZone", hosted_zone_id=zone.zone_id, zone_name=zone.name
    )


def regional_certificate(
    scope: Construct, zone: route53.IHostedZone, regional_name: str, global_name: str
) -> acm.Certificate:
    """One certificate for the region's own name and the global name, validated in the zone.

    Clients of the global name land on this region's load balancer, so it must present a
    certificate for that name as well as its own.
    """
    return acm.Certificate(
        scope,
        "Certificate",
        domain_name=regional_name,
        subject_alternative_names=[global_name],
        validation=acm.CertificateValidation.from_dns(zone),
    )


class GatewayDns(Construct):
    """This region's records: its own name, and its latency answer for the global name."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        zone: route53.IHostedZone,
        region: str,
        regional_name: str,
        global_name: str,
        load_balancer: elbv2.IApplicationLoadBalancer,
    ) -> None:
        super().__init__(scope, construct_id)
        # The health check below sees what evaluating the target's health would: with no
        # healthy node, the ALB answers /healthz with 503.
        alias = route53.RecordTarget.from_alias(targets.LoadBalancerTarget(load_balancer))
        self.regional_record = route53.ARecord(
            self, "Regional", zone=zone, record_name=regional_name, target=alias
        )
        self.health_check = route53.HealthCheck(
            self,
            "HealthCheck",
            type=route53.HealthCheckType.HTTPS,
            fqdn=regional_name,
            port=443,
            resource_path=HEALTH_PATH,
            enable_sni=True,
            request_interval=HEALTH_CHECK_INTERVAL,
            failure_threshold=HEALTH_CHECK_FAILURES,
        )
        self.health_check.node.add_dependency(self.regional_record)
        self.global_record = route53.ARecord(
            self,
            "Global",
            zone=zone,
            record_name=global_name,
            target=alias,
            region=region,  # latency-based: answered to clients nearest this region
            set_identifier=region,
            health_check=self.health_check,
        )
