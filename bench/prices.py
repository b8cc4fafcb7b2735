"""Every AWS list price the cost model (bench/cost.py) uses, in one place, with where it came from.

All are on-demand list prices of us-east-1 in USD, read on READ_ON. Each names the aws.amazon.com
pricing page it belongs to and says how it was checked here: the pricing pages render their rate
tables with scripts, so the stored copies this was written from rarely show the figures; a price
that could not be seen on (a transcription of) the AWS page itself says "unconfirmed here" and
names the public pages that quote the same figure. Check them before relying on a bill.

The prices of what issue 16 adds to a production region (bench/hardening.py) come last: WAF's
are the same in every region and Route 53 is global. Two are free, priced at 0 to show it.

Free tiers are NOT applied anywhere (FREE_TIERS_APPLIED): the model prices a steady production
load, where they are small, and AWS grants some only to new accounts for 12 months.
"""

from __future__ import annotations

from dataclasses import dataclass

REGION = "us-east-1"
READ_ON = "2026-12-04"
FREE_TIERS_APPLIED = False
GB = 2**30  # AWS bills data per GB of 2^30 bytes

# Billing units that are part of a price's definition.
SQS_BILLING_CHUNK_BYTES = 64 * 1024  # each 64 KiB of a request's payload is one request
SNS_BILLING_CHUNK_BYTES = 64 * 1024  # each 64 KiB of published (or delivered) data is one request
APIGW_MESSAGE_UNIT_BYTES = 32 * 1024  # WebSocket messages are metered in 32 KB increments
APIGW_FIRST_TIER_MESSAGES = 1_000_000_000  # messages a month at the first-tier rate
# One ALB LCU: the most of these four dimensions, per hour.
ALB_LCU_NEW_CONNECTIONS_PER_SECOND = 25
ALB_LCU_ACTIVE_CONNECTIONS = 3_000  # per minute
ALB_LCU_PROCESSED_GB_PER_HOUR = 1.0  # EC2, container and IP targets (0.4 for Lambda targets)
ALB_LCU_RULE_EVALUATIONS_PER_SECOND = 1_000
ALB_FREE_RULES = 10  # the first 10 rules a request meets are not charged


@dataclass(frozen=True)
class Price:
    """One list price: `usd` per `unit`, from `source`, checked as `checked` says, on `read_on`."""

    key: str
    usd: float
    unit: str
    what: str
    source: str
    checked: str
    read_on: str = READ_ON


_FARGATE = "https://aws.amazon.com/fargate/pricing/"
_ELB = "https://aws.amazon.com/elasticloadbalancing/pricing/"
_VPC = "https://aws.amazon.com/vpc/pricing/"
_PRIVATELINK = "https://aws.amazon.com/privatelink/pricing/"
_SQS = "https://aws.amazon.com/sqs/pricing/"
_SNS = "https://aws.amazon.com/sns/pricing/"
_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_CLOUDWATCH = "https://aws.amazon.com/cloudwatch/pricing/"
_EC2 = "https://aws.amazon.com/ec2/pricing/on-demand/"
_APIGW = "https://aws.amazon.com/api-gateway/pricing/"
_WAF = "https://aws.amazon.com/waf/pricing/"
_ROUTE53 = "https://aws.amazon.com/route53/pricing/"
_KMS = "https://aws.amazon.com/kms/pricing/"
_ACM = "https://aws.amazon.com/certificate-manager/pricing/"

_FARGATE_SEEN = (
    "unconfirmed here (the stored page shows no rates); the same figures on "
    "vantage.sh/blog/fargate-pricing and cloudburn.io/blog/aws-fargate-pricing (March 2026)"
)
_ELB_SEEN = (
    "figure and LCU dimensions as transcribed verbatim from the AWS page on 2026-09-20 "
    "(github.com/api-evangelist/amazon-elastic-load-balancing, plans/...-pricing.yml)"
)
_WAF_SEEN = (
    "unconfirmed here (the stored AWS pages name the three charges without figures; AWS's "
    "networking blog says WAF is priced the same in every region); the same figures on "
    "c3x.dev/blog/aws-waf-cost-explained and awsnegotiations.com (2026)"
)
_APIGW_SEEN = (
    "figure from the AWS page's worked example, transcribed verbatim on 2026-09-20 "
    "(github.com/api-evangelist/amazon-web-services, plans/...-pricing.yml); the 32 KB "
    "metering is on the stored page"
)

FARGATE_ARM_VCPU_HOUR = Price(
    "fargate_arm_vcpu_hour", 0.03238, "vCPU-hour", "Fargate Linux/ARM64 vCPU", _FARGATE,
    _FARGATE_SEEN,
)  # fmt: skip
FARGATE_ARM_GB_HOUR = Price(
    "fargate_arm_gb_hour", 0.00356, "GB-hour", "Fargate Linux/ARM64 memory", _FARGATE,
    _FARGATE_SEEN,
)  # fmt: skip
FARGATE_X86_VCPU_HOUR = Price(
    "fargate_x86_vcpu_hour", 0.04048, "vCPU-hour", "Fargate Linux/x86 vCPU", _FARGATE,
    _FARGATE_SEEN,
)  # fmt: skip
FARGATE_X86_GB_HOUR = Price(
    "fargate_x86_gb_hour", 0.004445, "GB-hour", "Fargate Linux/x86 memory", _FARGATE,
    _FARGATE_SEEN,
)  # fmt: skip
ALB_HOUR = Price("alb_hour", 0.0225, "ALB-hour", "Application Load Balancer", _ELB, _ELB_SEEN)
ALB_LCU_HOUR = Price("alb_lcu_hour", 0.008, "LCU-hour", "ALB capacity unit", _ELB, _ELB_SEEN)
NAT_GATEWAY_HOUR = Price(
    "nat_gateway_hour", 0.045, "NAT gateway-hour", "NAT gateway", _VPC,
    "unconfirmed here; the same figure on basavytix.com/blog/aws-nat-gateway-pricing and "
    "cloudburn.io/blog/aws-nat-gateway-pricing (2026)",
)  # fmt: skip
NAT_GATEWAY_GB = Price(
    "nat_gateway_gb", 0.045, "GB", "NAT gateway data processed", _VPC,
    "unconfirmed here; the same figure on basavytix.com and egresscost.com/nat-gateway (2026)",
)  # fmt: skip
INTERFACE_ENDPOINT_AZ_HOUR = Price(
    "interface_endpoint_az_hour", 0.01, "endpoint-AZ-hour", "VPC interface endpoint, per AZ",
    _PRIVATELINK,
    "unconfirmed here (the stored page says endpoints bill per AZ-hour, without the rate); "
    "$7.20 per AZ-month on egresscost.com/nat-gateway (2026)",
)  # fmt: skip
INTERFACE_ENDPOINT_GB = Price(
    "interface_endpoint_gb", 0.01, "GB", "VPC interface endpoint data processed (first PB)",
    _PRIVATELINK, "seen on a stored copy of the AWS page (tier: first 1 PB a month)",
)  # fmt: skip
PUBLIC_IPV4_HOUR = Price(
    "public_ipv4_hour", 0.005, "address-hour", "public IPv4 address (ALB per AZ, NAT)", _VPC,
    "unconfirmed here; charged since 2024-02-01 per AWS's announcement, figure on "
    "vishalvyas.com and besthub.dev",
)  # fmt: skip
SQS_STANDARD_MILLION = Price(
    "sqs_standard_million", 0.40, "million requests", "SQS standard requests", _SQS,
    "unconfirmed here (64 KiB chunk rule on the stored aws.amazon.com/sqs/features page); "
    "figure on cloudburn.io/blog/amazon-sqs-pricing (March 2026)",
)  # fmt: skip
SQS_FIFO_MILLION = Price(
    "sqs_fifo_million", 0.50, "million requests", "SQS FIFO requests", _SQS,
    "unconfirmed here; figure on cloudburn.io/blog/amazon-sqs-pricing (March 2026) and "
    "factualminds.com (June 2026)",
)  # fmt: skip
SNS_STANDARD_PUBLISH_MILLION = Price(
    "sns_standard_publish_million", 0.50, "million requests",
    "SNS standard publishes (64 KiB chunks)", _SNS,
    "unconfirmed here; figure on factualminds.com/blog/amazon-sns-pricing-... (June 2026)",
)  # fmt: skip
SNS_STANDARD_TO_SQS_MILLION = Price(
    "sns_standard_to_sqs_million", 0.0, "million deliveries",
    "SNS standard deliveries to SQS (the queue bills its send)", _SNS,
    "unconfirmed here; best-known public list price (no charge for SQS deliveries)",
)  # fmt: skip
SNS_FIFO_PUBLISH_MILLION = Price(
    "sns_fifo_publish_million", 0.30, "million requests", "SNS FIFO publishes (64 KiB chunks)",
    _SNS, "unconfirmed here; figure on factualminds.com/blog/amazon-sns-pricing-... (June 2026)",
)  # fmt: skip
SNS_FIFO_PUBLISH_GB = Price(
    "sns_fifo_publish_gb", 0.017, "GB", "SNS FIFO published payload", _SNS,
    "unconfirmed here; best-known public list price",
)  # fmt: skip
SNS_FIFO_DELIVERY_MILLION = Price(
    "sns_fifo_delivery_million", 0.01, "million deliveries",
    "SNS FIFO subscription messages (besides the queue's own billing)", _SNS,
    "unconfirmed here; best-known public list price",
)  # fmt: skip
SNS_FIFO_DELIVERY_GB = Price(
    "sns_fifo_delivery_gb", 0.001, "GB", "SNS FIFO delivered payload", _SNS,
    "unconfirmed here; best-known public list price",
)  # fmt: skip
LAMBDA_ARM_GB_SECOND = Price(
    "lambda_arm_gb_second", 0.0000133334, "GB-second", "Lambda ARM64 duration (first tier)",
    _LAMBDA,
    "unconfirmed here; figure on cloudchipr.com/blog/aws-lambda-pricing (tier: first 7.5 "
    "billion GB-s a month)",
)  # fmt: skip
LAMBDA_X86_GB_SECOND = Price(
    "lambda_x86_gb_second", 0.0000166667, "GB-second", "Lambda x86 duration (first tier)",
    _LAMBDA, "unconfirmed here; figure on cloudchipr.com/blog/aws-lambda-pricing",
)  # fmt: skip
LAMBDA_REQUESTS_MILLION = Price(
    "lambda_requests_million", 0.20, "million requests", "Lambda invocations", _LAMBDA,
    "unconfirmed here; figure on cloudchipr.com and git.mcrn.ar (lambda cost notes)",
)  # fmt: skip
LOGS_INGESTION_GB = Price(
    "logs_ingestion_gb", 0.50, "GB", "CloudWatch Logs ingestion (standard class)", _CLOUDWATCH,
    "unconfirmed here; figure on c3x.dev (June 2026) and hykell.com",
)  # fmt: skip
LOGS_STORAGE_GB_MONTH = Price(
    "logs_storage_gb_month", 0.03, "GB-month", "CloudWatch Logs storage", _CLOUDWATCH,
    "unconfirmed here; figure on c3x.dev (June 2026) and hykell.com",
)  # fmt: skip
DATA_TRANSFER_OUT_GB = Price(
    "data_transfer_out_gb", 0.09, "GB", "data transfer out to the internet (first 10 TB tier)",
    _EC2,
    "the same $0.09 per GB in the worked example of aws.amazon.com/api-gateway/pricing, "
    "transcribed 2026-09-20; the 100 GB free a month is not applied",
)  # fmt: skip
CROSS_AZ_GB = Price(
    "cross_az_gb", 0.01, "GB, each way", "data transfer between AZs", _EC2,
    "unconfirmed here; figure on basavytix.com/blog/aws-nat-gateway-pricing (2026)",
)  # fmt: skip
APIGW_MESSAGES_MILLION = Price(
    "apigw_messages_million", 1.00, "million messages",
    "API Gateway WebSocket messages, first 1 billion a month", _APIGW, _APIGW_SEEN,
)  # fmt: skip
APIGW_MESSAGES_MILLION_BEYOND = Price(
    "apigw_messages_million_beyond", 0.80, "million messages",
    "API Gateway WebSocket messages beyond 1 billion a month", _APIGW,
    "unconfirmed here; best-known public list price",
)  # fmt: skip
APIGW_CONNECTION_MINUTES_MILLION = Price(
    "apigw_connection_minutes_million", 0.25, "million connection-minutes",
    "API Gateway WebSocket connection minutes", _APIGW, _APIGW_SEEN,
)  # fmt: skip

# ---- what issue 16 adds to a production region (bench/hardening.py) ----
WAF_WEB_ACL_MONTH = Price(
    "waf_web_acl_month", 5.00, "web ACL-month", "AWS WAF web ACL (prorated hourly)", _WAF,
    _WAF_SEEN,
)  # fmt: skip
WAF_RULE_MONTH = Price(
    "waf_rule_month", 1.00, "rule-month",
    "AWS WAF rule; a rule group counts as one rule (AWS managed groups other than the paid "
    "ones cost nothing more)", _WAF,
    _WAF_SEEN + "; one rule per rule group per aws.github.io/aws-security-services-best-practices "
    "(WAF cost guide)",
)  # fmt: skip
WAF_REQUESTS_MILLION = Price(
    "waf_requests_million", 0.60, "million requests",
    "AWS WAF requests inspected, allowed or blocked (web ACLs within 1,500 WCUs)", _WAF,
    _WAF_SEEN + "; the 1,500 WCUs the base price covers per AWS's What's New of 2023-04-11",
)  # fmt: skip
LOGS_VENDED_GB = Price(
    "logs_vended_gb", 0.50, "GB",
    "CloudWatch Logs vended logs (WAF's) delivered to CloudWatch Logs, first 10 TB", _CLOUDWATCH,
    "unconfirmed here; the first-tier figure in aws-samples' cfm-tips vended-log calculator "
    "(the same as standard ingestion)",
)  # fmt: skip
ROUTE53_HEALTH_CHECK_MONTH = Price(
    "route53_health_check_month", 0.50, "health check-month",
    "Route 53 health check of an AWS endpoint", _ROUTE53,
    "unconfirmed here (AWS's developer guide sends to the pricing page for what an AWS "
    "endpoint is); figure on wewantcode.com's Route 53 lesson and ns1.com/resources/aws-dns",
)  # fmt: skip
ROUTE53_HEALTH_CHECK_FEATURE_MONTH = Price(
    "route53_health_check_feature_month", 1.00, "feature-month",
    "Route 53 health check optional feature (HTTPS, string matching, fast interval, latency), "
    "AWS endpoint", _ROUTE53,
    "unconfirmed here; best-known public list price (public study notes give $1-2 a month "
    "each, $1 for AWS endpoints)",
)  # fmt: skip
ROUTE53_HOSTED_ZONE_MONTH = Price(
    "route53_hosted_zone_month", 0.50, "hosted zone-month",
    "Route 53 public hosted zone (first 25)", _ROUTE53,
    "unconfirmed here; figure on ns1.com/resources/aws-dns and eatsip365.com",
)  # fmt: skip
ROUTE53_ALIAS_QUERIES_MILLION = Price(
    "route53_alias_queries_million", 0.0, "million queries",
    "Route 53 alias queries to an ELB load balancer, any routing policy", _ROUTE53,
    "free: AWS's Route 53 developer guide (choosing between alias and non-alias records) says "
    "Route 53 does not charge for alias queries to AWS resources",
)  # fmt: skip
ACM_PUBLIC_CERTIFICATE_MONTH = Price(
    "acm_public_certificate_month", 0.0, "certificate-month",
    "ACM public certificate used by an ALB", _ACM,
    "free: unconfirmed here; public certificates for integrated services are free per "
    "digitaliceroom.com and awsi.click (2025-2026)",
)  # fmt: skip
CLOUDWATCH_ALARM_MONTH = Price(
    "cloudwatch_alarm_month", 0.10, "alarm-month",
    "CloudWatch standard-resolution alarm on one metric", _CLOUDWATCH,
    "unconfirmed here; figure on c3x.dev/resources/aws/aws_cloudwatch_metric_alarm (2026)",
)  # fmt: skip
CLOUDWATCH_DASHBOARD_MONTH = Price(
    "cloudwatch_dashboard_month", 3.00, "dashboard-month",
    "CloudWatch dashboard (3 per account free, not applied)", _CLOUDWATCH,
    "unconfirmed here; figure on factualminds.com/blog/amazon-cloudwatch-pricing-... (June 2026)",
)  # fmt: skip
CLOUDWATCH_METRIC_MONTH = Price(
    "cloudwatch_metric_month", 0.30, "metric-month",
    "CloudWatch custom metric, EMF included (first 10,000)", _CLOUDWATCH,
    "unconfirmed here; figure on cal53.calculator.city and vantage.sh (metrics pricing)",
)  # fmt: skip
KMS_KEY_MONTH = Price(
    "kms_key_month", 1.00, "key-month", "KMS customer managed key (prorated hourly)", _KMS,
    "seen on stored copies of the AWS page (English and French), 20,000 free requests a month "
    "not applied",
)  # fmt: skip
KMS_REQUESTS_10K = Price(
    "kms_requests_10k", 0.03, "10,000 requests", "KMS requests, symmetric keys", _KMS,
    "unconfirmed here; figure on wring.co/blog/aws-kms-pricing-guide and factualminds.com (2026)",
)  # fmt: skip
SNS_EMAIL_100K = Price(
    "sns_email_100k", 2.00, "100,000 notifications", "SNS email notifications", _SNS,
    "unconfirmed here; figure on factualminds.com/blog/amazon-sns-pricing-... (June 2026); the "
    "first 1,000 a month free are not applied",
)  # fmt: skip

ALL: tuple[Price, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Price)
)
