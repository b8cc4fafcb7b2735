"""What issue 16 adds to each production region, priced item by item for bench.cost.

Its own module so that the additions can be read, adjusted and shown on their own: every count
is a field of `Added` (its defaults are issue 16's list), and `additions` prices them for a
deployment's regions, tasks and handshake rate. bench.cost adds them to the bill of the
environments in HARDENED_ENVIRONMENTS and prints them as a table of their own, with the totals
before and after.

Two changes of issue 16 cost nothing here, by design: VPC flow logs now record REJECTed traffic
only (bench.cost never priced the flow logs, delivered to S3, so the saving is not counted), and
the commands queue keeps messages for minutes (SQS bills requests, not retention).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import prices
from bench.bill import HOURS_PER_MONTH, MILLION, MINUTES_PER_MONTH, Line, monthly, spec
from bench.prices import Price

HARDENED_ENVIRONMENTS = ("prod",)  # the cdk.json environments issue 16 hardens
# InterfaceVpcEndpointAwsService members issue 16 adds: priced here, not with the others.
ENDPOINT_SERVICES = ("ELASTIC_LOAD_BALANCING",)
ASSUMED = "assumption, not measured"


@dataclass(frozen=True)
class Added:
    """Issue 16's additions to each production region, and the assumptions that price them."""

    web_acls: int = spec("WAF web ACLs (regional, on the ALB)", "per region", 1)
    waf_rules: int = spec(
        "WAF rules: one rate-based, AWSManagedRulesCommonRuleSet", "per region", 2
    )
    blocked_millions: float = spec(
        "requests WAF blocks: scanners, rate-limited clients", "million a month per region", 1.0
    )
    waf_log_bytes: int = spec("a WAF log record (blocked requests only are logged)", "bytes", 1_500)
    health_checks: int = spec("Route 53 HTTPS health checks of the ALB, 30 s", "per region", 1)
    health_check_features: int = spec("optional features of each (HTTPS)", "per check", 1)
    health_check_request_seconds: float = spec(
        "a health checker's request reaches the ALB every (Route 53 FAQ: 2-3 s at 30 s)", "s", 2.5
    )
    hosted_zones: int = spec("Route 53 hosted zones (usually there already)", "per deployment", 1)
    certificates: int = spec("ACM public certificates, DNS-validated", "per region", 1)
    alarms_before: int = spec("CloudWatch standard alarms before issue 16", "per region", 5)
    alarms: int = spec("CloudWatch standard alarms with issue 16", "per region", 9)
    dashboards_before: int = spec("CloudWatch dashboards before issue 16", "per region", 1)
    dashboards: int = spec("CloudWatch dashboards with issue 16", "per region", 1)
    metrics: int = spec("custom metrics added to the node's EMF line", "per region", 8)
    emf_bytes_per_task_minute: int = spec("the EMF line's growth", "bytes per task-minute", 200)
    kms_keys: int = spec("KMS customer managed keys (the alarm topic's)", "per region", 1)
    notifications: int = spec("alarm notifications", "per region a month", 100)
    kms_requests_per_notification: int = spec(
        "KMS requests per notification (data key at publish, decrypt at delivery)", "requests", 2
    )
    email_subscribers: int = spec("email subscriptions to the alarm topic", "per region", 1)
    elb_endpoints: int = spec("ELB API interface endpoints (vpc-endpoints egress)", "per AZ", 1)
    target_health_poll_seconds: float = spec("each task's DescribeTargetHealth poll", "s", 5.0)
    target_health_answer_bytes: int = spec("a DescribeTargetHealth answer", "bytes", 2_000)


# Where each field of Added comes from, for bench.cost's inputs table.
SOURCES = {
    name: ASSUMED
    for name in (
        "blocked_millions",
        "waf_log_bytes",
        "notifications",
        "kms_requests_per_notification",
        "target_health_answer_bytes",
    )
}
SOURCES["health_check_request_seconds"] = "the Route 53 FAQ (one request every 2-3 s)"
ISSUE = "issue 16's list (bench/hardening.py)"


@dataclass(frozen=True)
class Addition:
    """One item issue 16 adds: `quantity` in its price's unit in each of `regions` regions, or
    in the deployment as a whole when `once` (a hosted zone serves every region)."""

    item: str
    quantity: float
    price: Price
    regions: int
    once: bool = False

    @property
    def copies(self) -> int:
        return 1 if self.once else self.regions

    @property
    def each_monthly(self) -> float:
        """A month of one copy: one region's, or the deployment's when `once`."""
        return self.quantity * self.price.usd

    @property
    def line(self) -> Line:
        return Line(self.item, self.quantity * self.copies, self.price)


def additions(
    added: Added,
    *,
    regions: int,
    handshakes_per_second: float,
    tasks: int,
    az_count: int,
    vpc_endpoints: bool,
    api_request_bytes: int,
) -> tuple[Addition, ...]:
    """Issue 16's items for a deployment of `regions` regions, each with `tasks` tasks and
    `handshakes_per_second` WebSocket handshakes (each one request WAF inspects; frames after
    the upgrade are not requests)."""
    handshake_millions = monthly(handshakes_per_second) / MILLION
    checker_millions = monthly(added.health_checks / added.health_check_request_seconds) / MILLION
    waf_log_gb = added.blocked_millions * MILLION * added.waf_log_bytes / prices.GB
    emf_gb = tasks * added.emf_bytes_per_task_minute * MINUTES_PER_MONTH / prices.GB
    polls = monthly(tasks / added.target_health_poll_seconds)
    api_gb = polls * (api_request_bytes + added.target_health_answer_bytes) / prices.GB
    notifications = added.notifications

    def each(item: str, quantity: float, price: Price) -> Addition:
        return Addition(item, quantity, price, regions)

    items = [
        each("WAF web ACL", added.web_acls, prices.WAF_WEB_ACL_MONTH),
        each("WAF rules", added.waf_rules, prices.WAF_RULE_MONTH),
        each("WAF requests: WebSocket handshakes", handshake_millions, prices.WAF_REQUESTS_MILLION),
        each(
            "WAF requests: Route 53 health checkers", checker_millions, prices.WAF_REQUESTS_MILLION
        ),
        each("WAF requests: blocked", added.blocked_millions, prices.WAF_REQUESTS_MILLION),
        each("WAF logs of blocked requests: delivery", waf_log_gb, prices.LOGS_VENDED_GB),
        each("WAF logs: storage (one month's)", waf_log_gb, prices.LOGS_STORAGE_GB_MONTH),
        each(
            "Route 53 health checks (AWS endpoint)",
            added.health_checks,
            prices.ROUTE53_HEALTH_CHECK_MONTH,
        ),
        each(
            "Route 53 health checks: HTTPS",
            added.health_checks * added.health_check_features,
            prices.ROUTE53_HEALTH_CHECK_FEATURE_MONTH,
        ),
        each(
            "Route 53 alias queries to the ALB (at most one a handshake)",
            handshake_millions,
            prices.ROUTE53_ALIAS_QUERIES_MILLION,
        ),
        Addition(
            "Route 53 hosted zone (usually there already)",
            added.hosted_zones,
            prices.ROUTE53_HOSTED_ZONE_MONTH,
            regions,
            once=True,
        ),
        each("ACM certificate", added.certificates, prices.ACM_PUBLIC_CERTIFICATE_MONTH),
        each(
            f"CloudWatch alarms added ({added.alarms_before} to {added.alarms})",
            added.alarms - added.alarms_before,
            prices.CLOUDWATCH_ALARM_MONTH,
        ),
        each(
            f"CloudWatch dashboards added ({added.dashboards_before} to {added.dashboards})",
            added.dashboards - added.dashboards_before,
            prices.CLOUDWATCH_DASHBOARD_MONTH,
        ),
        each("CloudWatch custom metrics added", added.metrics, prices.CLOUDWATCH_METRIC_MONTH),
        each("CloudWatch Logs ingestion: the EMF line's growth", emf_gb, prices.LOGS_INGESTION_GB),
        each(
            "CloudWatch Logs storage: the same (one month's)", emf_gb, prices.LOGS_STORAGE_GB_MONTH
        ),
        each("KMS key of the alarm topic", added.kms_keys, prices.KMS_KEY_MONTH),
        each(
            "KMS requests (alarm notifications)",
            notifications * added.kms_requests_per_notification / 10_000,
            prices.KMS_REQUESTS_10K,
        ),
        each(
            "SNS publishes (alarm notifications)",
            notifications / MILLION,
            prices.SNS_STANDARD_PUBLISH_MILLION,
        ),
        each(
            "SNS email notifications",
            notifications * added.email_subscribers / 100_000,
            prices.SNS_EMAIL_100K,
        ),
    ]
    if vpc_endpoints:
        items += [
            each(
                "ELB API interface endpoint",
                added.elb_endpoints * az_count * HOURS_PER_MONTH,
                prices.INTERFACE_ENDPOINT_AZ_HOUR,
            ),
            each(
                "interface endpoint data: target health polls, EMF growth",
                api_gb + emf_gb,
                prices.INTERFACE_ENDPOINT_GB,
            ),
        ]
    else:
        items.append(
            each(
                "NAT gateway data: target health polls, EMF growth",
                api_gb + emf_gb,
                prices.NAT_GATEWAY_GB,
            )
        )
    return tuple(items)


def per_region(items: tuple[Addition, ...]) -> float:
    """What the additions cost a month in one region, without what a deployment has once."""
    return sum(item.each_monthly for item in items if not item.once)


def total(items: tuple[Addition, ...]) -> float:
    """What the additions cost a month, all regions."""
    return sum(item.line.monthly for item in items)
