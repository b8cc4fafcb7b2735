"""An AWS WAF web ACL on the load balancer: a per-address handshake rate, and AWS's common rules.

WAF sees each HTTP request the ALB receives: every WebSocket handshake (and GET /healthz), not
the frames that follow an upgrade, which the nodes bound themselves. The rate-based rule blocks a
source address that opens more than `wafRateLimit` handshakes in five minutes, before it reaches
a node; the nodes' own per-address limits (handshakeRatePerIp) still apply behind it. AWS's
common rule set blocks known-bad requests; two of its rules would refuse legitimate WebSocket
clients and only count: NoUserAgent_HEADER (many non-browser clients send no User-Agent) and
SizeRestrictions_QUERYSTRING (a token in the query string, `?token=<JWT>`, can pass 2 KiB).
Blocked requests are logged to a CloudWatch Logs group; allowed ones are not (every handshake).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.retention import log_retention

RATE_WINDOW_SECONDS = 300
COMMON_RULE_SET = "AWSManagedRulesCommonRuleSet"
COUNTED_COMMON_RULES = ("NoUserAgent_HEADER", "SizeRestrictions_QUERYSTRING")
# WAF delivers logs only to log groups whose names start so.
LOG_GROUP_PREFIX = "aws-waf-logs-"


class GatewayFirewall(Construct):
    """The web ACL, its association with the load balancer, and its log of blocked requests."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        load_balancer: elbv2.IApplicationLoadBalancer,
        rate_limit: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        metric_prefix = stack.stack_name
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            description="WebSocket gateway: handshakes per source address, AWS common rules",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(f"{metric_prefix}-web-acl"),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="HandshakesPerAddress",
                    priority=0,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            aggregate_key_type="IP",
                            limit=rate_limit,
                            evaluation_window_sec=RATE_WINDOW_SECONDS,
                        )
                    ),
                    visibility_config=_visibility(f"{metric_prefix}-handshakes-per-address"),
                ),
                wafv2.CfnWebACL.RuleProperty(
                    name=COMMON_RULE_SET,
                    priority=1,
                    override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                            vendor_name="AWS",
                            name=COMMON_RULE_SET,
                            rule_action_overrides=[
                                wafv2.CfnWebACL.RuleActionOverrideProperty(
                                    name=rule,
                                    action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                                )
                                for rule in COUNTED_COMMON_RULES
                            ],
                        )
                    ),
                    visibility_config=_visibility(f"{metric_prefix}-common-rules"),
                ),
            ],
        )
        self.association = wafv2.CfnWebACLAssociation(
            self,
            "Association",
            resource_arn=load_balancer.load_balancer_arn,
            web_acl_arn=self.web_acl.attr_arn,
        )
        # WAF needs the prefix, so CloudFormation cannot generate the name; the stack's own ID
        # (a UUID per stack) keeps a retained group from blocking a stack made again later.
        stack_uuid = cdk.Fn.select(2, cdk.Fn.split("/", stack.stack_id))
        log_group_name = f"{LOG_GROUP_PREFIX}{stack.stack_name}-{stack_uuid}"
        self.log_group = logs.LogGroup(
            self,
            "BlockedRequests",
            log_group_name=log_group_name,
            retention=log_retention(log_retention_days),
        )
        self.logging = wafv2.CfnLoggingConfiguration(
            self,
            "Logging",
            resource_arn=self.web_acl.attr_arn,
            # WAF wants the group's ARN without the ":*" that LogGroup.log_group_arn ends with.
            log_destination_configs=[
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name=log_group_name,
                    arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            logging_filter={
                "DefaultBehavior": "DROP",
                "Filters": [
                    {
                        "Behavior": "KEEP",
                        "Requirement": "MEETS_ANY",
                        "Conditions": [{"ActionCondition": {"Action": "BLOCK"}}],
                    }
                ],
            },
        )
        self.logging.node.add_dependency(self.log_group)

    @property
    def rate_metric_name(self) -> str:
        return f"{cdk.Stack.of(self).stack_name}-handshakes-per-address"


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True,
        metric_name=metric_name,
        sampled_requests_enabled=True,
    )
