"""Production by default: TLS and named browser origins or an explicit opt-out, WAF, deletion
protection, one global name with health-checked latency records, non-overlapping VPCs, alarms
that notify a topic, and ARNs in the region's partition. Read from the session's templates
(dev, prod, and edge: hosted zone, three regions, WAF on, existing alarm topics), and from
synthesis refusing what is unsafe.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest

from app import build_app
from infra.config import ConfigError, parse_environment
from infra.firewall import COUNTED_COMMON_RULES
from runtime.names import (
    DRAINS_METRIC,
    EVENTS_SENT_METRIC,
    MESSAGES_IN_METRIC,
    MESSAGES_OUT_METRIC,
    ORIGIN_ERRORS_METRIC,
    ORIGIN_LATENCY_METRIC,
    PEER_IN_METRIC,
    PEER_OUT_METRIC,
    partition,
)
from tests.infra.synth import (
    EDGE_ALARM_TOPICS,
    UNSUBSCRIBED_ALARMS,
    SynthesizedStack,
    cdk_json_context,
    stack_names,
    validation_findings,
)

ALL = stack_names()
WAF = stack_names(waf=True)
NO_WAF = stack_names(waf=False)
ZONED = [name for name in ALL if "-dev-" not in name]  # prod and edge have hosted zones


def each(names: list[str]) -> Any:
    return pytest.mark.parametrize("stack", names, indirect=True)


def alarms_of(stack: SynthesizedStack) -> dict[str, dict[str, Any]]:
    return {
        resource["Properties"]["AlarmName"]: resource["Properties"]
        for resource in stack.resources("AWS::CloudWatch::Alarm").values()
    }


def load_balancer(stack: SynthesizedStack) -> str:
    return next(iter(stack.resources("AWS::ElasticLoadBalancingV2::LoadBalancer")))


# Synthesis refuses what is unsafe ---------------------------------------------------------------


def synthesize_only(settings: dict[str, Any], tmp_path: Path) -> None:
    context = {**cdk_json_context(), "environments": {"qa": settings}, "env": "qa"}
    build_app(context, outdir=str(tmp_path)).synth()


def test_plaintext_production_fails_synthesis_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environments\.qa would serve plain ws://.*"
                       r"allowPlaintext: true"):  # fmt: skip
        synthesize_only({"regions": ["us-east-1"]}, tmp_path)


def test_a_region_without_a_certificate_is_plaintext_too(tmp_path: Path) -> None:
    settings = {
        "regions": ["us-east-1", "eu-west-1"],
        "certificateArn": {"us-east-1": "arn:aws:acm:us-east-1:123456789012:certificate/a-1"},
        "domainName": {"us-east-1": "us.example.com"},
        "allowedOrigins": ["https://app.example.com"],
    }
    with pytest.raises(ConfigError, match=r"no TLS\) in eu-west-1:"):
        synthesize_only(settings, tmp_path)


def test_tls_without_allowed_origins_fails_synthesis_naming_the_settings(tmp_path: Path) -> None:
    settings = {"regions": ["us-east-1"], "hostedZone": {"name": "example.com", "id": "Z0ABC"}}
    with pytest.raises(ConfigError, match=r"allowedOrigins is required with TLS.*allowAnyOrigin"):
        synthesize_only(settings, tmp_path)


def test_cdk_json_prod_without_its_zone_would_be_refused() -> None:
    """The shipped prod is safe because it says so: take its TLS away and synthesis stops."""
    context = cdk_json_context()
    prod = dict(context["environments"]["prod"])
    del prod["hostedZone"]
    context["environments"] = {**context["environments"], "prod": prod}
    with pytest.raises(ConfigError, match="allowPlaintext"):
        build_app({**context, "env": "prod"})


def test_explicit_opt_outs_are_honoured() -> None:
    plain = parse_environment("qa", {"regions": ["us-east-1"], "allowPlaintext": True})
    assert plain.entry.allow_plaintext and not plain.entry.tls("us-east-1")
    anyone = parse_environment(
        "qa",
        {
            "regions": ["us-east-1"],
            "hostedZone": {"name": "example.com", "id": "Z0ABC"},
            "allowAnyOrigin": True,
        },
    )
    assert anyone.entry.allow_any_origin and anyone.entry.node_environment() == {}
    assert anyone.entry.global_name == "ws.example.com"
    assert anyone.domain_name("us-east-1") == "us-east-1.ws.example.com"


ZONE = {"hostedZone": {"name": "example.com", "id": "Z0ABC"}}
ORIGINS = {"allowedOrigins": ["https://app.example.com"]}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hostedZone": {"name": "example.com"}}, r"hostedZone\.id is required"),
        ({"hostedZone": {"name": "example.com", "id": "z12"}}, r"hostedZone\.id must be"),
        ({"hostedZone": {"name": "Example", "id": "Z1"}}, r"hostedZone\.name must be"),
        ({"hostedZone": {"name": "example.com", "id": "Z1", "ttl": 5}}, r"unknown settings"),
        ({"globalName": "ws.example.com", **ORIGINS}, r"globalName needs hostedZone"),
        ({**ZONE, **ORIGINS, "globalName": "ws.example.org"}, r"globalName must be a name inside"),
        ({**ZONE, **ORIGINS, "domainName": "us.other.com"}, r"domainName\.us-east-1 must be"),
        ({**ZONE, "allowedOrigins": ["*"]}, r"allowedOrigins must not hold '\*'"),
        ({**ZONE, "allowedOrigins": ["https://a.com/x"]}, r"allowedOrigins must list strings"),
        ({**ZONE, "allowedOrigins": ["https://a.*.com"]}, r"a wildcard may only stand first"),
        ({**ZONE, "allowedOrigins": "https://a.com"}, r"allowedOrigins is required: a list"),
        ({**ZONE, **ORIGINS, "allowAnyOrigin": True}, r"do not go together"),
        ({**ZONE, **ORIGINS, "allowPlaintext": True}, r"allowPlaintext is true but every"),
        ({**ZONE, **ORIGINS, "allowAnyOrigin": "yes"}, r"allowAnyOrigin must be true or false"),
        ({**ZONE, **ORIGINS, "wafRateLimit": 5}, r"wafRateLimit must be an integer from 10"),
        ({**ZONE, **ORIGINS, "waf": False, "wafRateLimit": 100}, r"applies only with waf true"),
        ({**ZONE, **ORIGINS, "deletionProtection": 1}, r"deletionProtection must be true or"),
        ({**ZONE, **ORIGINS, "vpcCidr": "8.8.0.0/16"}, r"vpcCidr\.us-east-1 must be a private"),
        ({**ZONE, **ORIGINS, "vpcCidr": "10.1.0.0/20"}, r"from /16 to /18"),
        ({**ZONE, **ORIGINS, "vpcCidr": "10.1.0.0/33"}, r"must be a private IPv4 range"),
        ({**ZONE, **ORIGINS, "flowLogs": "ACCEPT"}, r"flowLogs must be one of REJECT, ALL"),
        ({**ZONE, **ORIGINS, "commandsRetentionMinutes": 0}, r"from 1 to 20160"),
        ({**ZONE, **ORIGINS, "alarmEmail": "oncall"}, r"alarmEmail must be an email address"),
        ({**ZONE, **ORIGINS, "domainName": "ws.example.com"}, r"must differ from globalName"),
        (
            {**ZONE, **ORIGINS, "alarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:t"},
            r"alarmTopicArn\.us-east-1 must be a topic in us-east-1",
        ),
        (
            {
                **ZONE,
                **ORIGINS,
                "alarmEmail": "a@example.com",
                "alarmTopicArn": "arn:aws:sns:us-east-1:123456789012:t",
            },
            r"alarmEmail and alarmTopicArn do not go together",
        ),
    ],
)
def test_bad_production_settings_are_named(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_environment("qa", {"regions": ["us-east-1"], **settings})


def test_a_tls_region_needs_allowed_origins_even_beside_a_plaintext_one() -> None:
    settings = {
        "regions": ["us-east-1", "eu-west-1"],
        "certificateArn": {"us-east-1": "arn:aws:acm:us-east-1:123456789012:certificate/a-1"},
        "domainName": {"us-east-1": "us.example.com"},
        "allowPlaintext": True,
    }
    with pytest.raises(ConfigError, match="allowedOrigins is required with TLS"):
        parse_environment("qa", settings)
    config = parse_environment("qa", {**settings, "allowAnyOrigin": True})
    assert config.entry.tls("us-east-1") and not config.entry.tls("eu-west-1")


def test_multi_region_names_and_topics_are_checked_per_region() -> None:
    two = {"regions": ["us-east-1", "eu-west-1"], **ZONE, **ORIGINS}
    with pytest.raises(ConfigError, match=r"domainName must give each region its own name"):
        parse_environment("qa", {**two, "domainName": "ws2.example.com"})
    topic = {"us-east-1": "arn:aws:sns:us-east-1:123456789012:pager"}
    with pytest.raises(ConfigError, match=r"alarmTopicArn must name a topic for every region"):
        parse_environment("qa", {**two, "alarmTopicArn": topic})


def test_a_fixed_size_service_has_no_tasks_at_maximum_alarm(tmp_path: Path) -> None:
    settings = {"regions": ["us-east-1"], "allowPlaintext": True, "minTasks": 3, "maxTasks": 3}
    synthesize_only(settings, tmp_path)
    data = json.loads((tmp_path / "wsgw-qa-us-east-1.template.json").read_text())
    names = [
        resource["Properties"]["AlarmName"]
        for resource in data["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    ]
    assert "wsgw-qa-connections-metric-missing" in names
    assert "wsgw-qa-tasks-at-maximum" not in names


def test_regions_get_disjoint_vpc_ranges_that_stay_when_regions_are_added() -> None:
    two = parse_environment("qa", {"regions": ["us-east-1", "eu-west-1"], "allowPlaintext": True})
    three = parse_environment(
        "qa", {"regions": ["ap-south-1", "us-east-1", "eu-west-1"], "allowPlaintext": True}
    )
    assert two.network.vpc_cidrs["us-east-1"] == "10.0.0.0/16"  # the range it always had
    for region, cidr in two.network.vpc_cidrs.items():
        assert three.network.vpc_cidrs[region] == cidr
    networks = [ipaddress.ip_network(cidr) for cidr in three.network.vpc_cidrs.values()]
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    with pytest.raises(ConfigError, match=r"us-east-1 \(10\.0\.0\.0/16\) and eu-west-1"):
        parse_environment(
            "qa",
            {
                "regions": ["us-east-1", "eu-west-1"],
                "allowPlaintext": True,
                "vpcCidr": {"eu-west-1": "10.0.128.0/17"},
            },
        )
    with pytest.raises(ConfigError, match=r"vpcCidr\.xx-mars-1 is required"):
        parse_environment("qa", {"regions": ["xx-mars-1"], "allowPlaintext": True})


# What production deploys ------------------------------------------------------------------------


@each(WAF)
def test_a_web_acl_limits_handshakes_per_address_and_applies_the_common_rules(
    stack: SynthesizedStack,
) -> None:
    acl_id, acl = next(iter(stack.resources("AWS::WAFv2::WebACL").items()))
    properties = acl["Properties"]
    assert properties["Scope"] == "REGIONAL" and properties["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in properties["Rules"]}
    rate = rules["HandshakesPerAddress"]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "Limit": stack.settings.get("wafRateLimit", 2000),
        "EvaluationWindowSec": 300,
    }
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert common["VendorName"] == "AWS" and common["Name"] == "AWSManagedRulesCommonRuleSet"
    counted = {item["Name"]: item["ActionToUse"] for item in common["RuleActionOverrides"]}
    assert counted == {rule: {"Count": {}} for rule in COUNTED_COMMON_RULES}
    association = stack.one("AWS::WAFv2::WebACLAssociation")
    assert association["ResourceArn"] == {"Ref": load_balancer(stack)}
    assert association["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    logging = stack.one("AWS::WAFv2::LoggingConfiguration")
    assert logging["ResourceArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    destination = json.dumps(logging["LogDestinationConfigs"])
    assert f"aws-waf-logs-{stack.name}-" in destination and "AWS::StackId" in destination
    assert logging["LoggingFilter"]["DefaultBehavior"] == "DROP"  # only blocked requests


@each(NO_WAF)
def test_waf_can_be_switched_off(stack: SynthesizedStack) -> None:
    stack.template.resource_count_is("AWS::WAFv2::WebACL", 0)


@each(ALL)
def test_deletion_protection_follows_the_setting(stack: SynthesizedStack) -> None:
    protected = stack.settings.get("deletionProtection", True)
    alb = stack.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {item["Key"]: item["Value"] for item in alb["LoadBalancerAttributes"]}
    assert attributes.get("deletion_protection.enabled", "false") == str(protected).lower()
    manifest = json.loads((stack.outdir / "manifest.json").read_text())
    properties = manifest["artifacts"][stack.name]["properties"]
    assert properties.get("terminationProtection", False) is protected


@each(ZONED)
def test_one_global_name_answers_with_the_nearest_healthy_region(stack: SynthesizedStack) -> None:
    config = parse_environment(stack.environment, stack.settings)
    regional, global_name = config.domain_name(stack.region), config.entry.global_name
    assert regional and global_name
    zone_id = stack.settings["hostedZone"]["id"]
    records = {
        (record["Properties"]["Name"], record["Properties"].get("SetIdentifier")): record[
            "Properties"
        ]
        for record in stack.resources("AWS::Route53::RecordSet").values()
    }
    check_id, check = next(iter(stack.resources("AWS::Route53::HealthCheck").items()))
    assert check["Properties"]["HealthCheckConfig"] | {"Inverted": 0, "MeasureLatency": 0} == {
        "Inverted": 0,
        "MeasureLatency": 0,
        "Type": "HTTPS",
        "FullyQualifiedDomainName": regional,
        "Port": 443,
        "ResourcePath": "/healthz",
        "EnableSNI": True,
        "RequestInterval": 30,
        "FailureThreshold": 3,
    }
    own = records[(f"{regional}.", None)]
    latency = records[(f"{global_name}.", stack.region)]
    for record in (own, latency):
        assert record["HostedZoneId"] == zone_id and record["Type"] == "A"
        assert "AliasTarget" in record and "DNSName" in json.dumps(record["AliasTarget"])
    assert latency["Region"] == stack.region
    assert latency["HealthCheckId"] == {"Ref": check_id}
    assert stack.data["Outputs"]["GlobalWebSocketUrl"]["Value"] == f"wss://{global_name}"
    certificates = stack.resources("AWS::CertificateManager::Certificate")
    if stack.region in stack.settings.get("certificateArn", {}):
        assert not certificates  # its own certificate, which must name the global name too
        return
    (certificate,) = certificates.values()
    assert certificate["Properties"]["DomainName"] == regional
    assert certificate["Properties"]["SubjectAlternativeNames"] == [global_name]
    assert certificate["Properties"]["ValidationMethod"] == "DNS"
    assert {"DomainName": regional, "HostedZoneId": zone_id} in certificate["Properties"][
        "DomainValidationOptions"
    ]


def test_alarms_that_reach_nobody_are_the_one_warning(stacks: dict[str, SynthesizedStack]) -> None:
    """dev sets neither alarmEmail nor alarmTopicArn: synthesis says so; prod and edge do."""
    for name, stack in stacks.items():
        warned = validation_findings(stack.outdir, allow_unsubscribed=False)
        rules = {finding["ruleName"] for finding in warned}
        assert rules == ({UNSUBSCRIBED_ALARMS} if "-dev-" in name else set()), name


def test_without_a_hosted_zone_there_are_no_records(stacks: dict[str, SynthesizedStack]) -> None:
    dev = stacks["wsgw-dev-us-east-1"]
    for resource_type in ("AWS::Route53::RecordSet", "AWS::Route53::HealthCheck"):
        dev.template.resource_count_is(resource_type, 0)
    assert "GlobalWebSocketUrl" not in dev.data["Outputs"]


def test_allowed_origins_reach_the_nodes(stacks: dict[str, SynthesizedStack]) -> None:
    for stack in stacks.values():
        container = stack.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
        environment = {item["Name"]: item["Value"] for item in container["Environment"]}
        expected = stack.settings.get("allowedOrigins")
        assert environment.get("ALLOWED_ORIGINS") == (",".join(expected) if expected else None)
    assert "ALLOWED_ORIGINS" in json.dumps(stacks["wsgw-prod-us-east-1"].data)


SERVICE_ALARMS = (
    "events-dlq-not-empty",
    "commands-dlq-not-empty",
    "origin-queue-age",
    "commands-queue-age",
    "unhealthy-targets",
    "alb-5xx",
    "node-5xx",
    "tasks-at-maximum",
    "connections-metric-missing",
)


@each(ALL)
def test_every_alarm_notifies_the_alarm_topic_when_it_fires_and_clears(
    stack: SynthesizedStack,
) -> None:
    alarms = alarms_of(stack)
    prefix = f"wsgw-{stack.environment}"
    functions = []
    if stack.settings.get("graphqlOriginFunction"):
        functions += ["graphql-origin-errors", "graphql-origin-throttles"]
    if stack.settings.get("exampleOrigin"):
        functions += ["example-origin-errors", "example-origin-throttles"]
    assert sorted(alarms) == sorted(f"{prefix}-{name}" for name in (*SERVICE_ALARMS, *functions))
    existing = EDGE_ALARM_TOPICS.get(stack.region) if stack.environment == "edge" else None
    if existing:
        topic: Any = existing
        stack.template.resource_count_is("AWS::KMS::Key", 0)
    else:
        topic_id = next(
            logical_id
            for logical_id, resource in stack.resources("AWS::SNS::Topic").items()
            if "TopicName" not in resource["Properties"]
        )
        topic = {"Ref": topic_id}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic], name
        anchor = name.removeprefix(f"{prefix}-")
        description = json.dumps(alarm["AlarmDescription"])  # a Join where it names a function
        assert f'Runbook: docs/architecture.md#{anchor}"' in description, name
    assert stack.data["Outputs"]["AlarmTopicArn"]["Value"] == topic


def test_every_alarm_has_a_runbook_entry(stacks: dict[str, SynthesizedStack]) -> None:
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    for stack in stacks.values():
        for name in alarms_of(stack):
            anchor = name.removeprefix(f"wsgw-{stack.environment}-")
            assert f"#### {anchor}\n" in runbook or f'<a id="{anchor}"></a>' in runbook, anchor
    for label in ("connect-handler", "authorizer"):  # alarms of door functions, not in these
        assert f'<a id="{label}-errors"></a>' in runbook


@each(ALL)
def test_alarm_thresholds_and_missing_data(stack: SynthesizedStack) -> None:
    alarms = alarms_of(stack)
    prefix = f"wsgw-{stack.environment}"
    at_max = alarms[f"{prefix}-tasks-at-maximum"]
    assert at_max["MetricName"] == "RunningTaskCount"
    assert at_max["Threshold"] == stack.settings.get("maxTasks", 8)
    assert at_max["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert at_max["EvaluationPeriods"] * at_max["Period"] == 15 * 60
    missing = alarms[f"{prefix}-connections-metric-missing"]
    assert missing["MetricName"] == "ConnectionsPerTask"
    assert missing["Statistic"] == "SampleCount"
    assert missing["TreatMissingData"] == "breaching"  # silence is the failure it looks for
    assert alarms[f"{prefix}-node-5xx"]["MetricName"] == "HTTPCode_Target_5XX_Count"
    assert alarms[f"{prefix}-alb-5xx"]["MetricName"] == "HTTPCode_ELB_5XX_Count"
    assert alarms[f"{prefix}-unhealthy-targets"]["MetricName"] == "UnHealthyHostCount"
    assert alarms[f"{prefix}-commands-queue-age"]["Threshold"] == 60
    for name, alarm in alarms.items():
        if name.endswith(("-errors", "-throttles")):
            assert alarm["Namespace"] == "AWS/Lambda" and alarm["Threshold"] == 0
        if not name.endswith("connections-metric-missing"):
            assert alarm["TreatMissingData"] == "notBreaching", name


def test_the_created_topic_is_encrypted_for_cloudwatch_and_mails_the_on_call(
    stacks: dict[str, SynthesizedStack],
) -> None:
    prod = stacks["wsgw-prod-us-east-1"]
    key_id, key = next(iter(prod.resources("AWS::KMS::Key").items()))
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [
        s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch and set(cloudwatch[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    topics = [
        resource["Properties"]
        for resource in prod.resources("AWS::SNS::Topic").values()
        if "TopicName" not in resource["Properties"]
    ]
    assert topics[0]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    # The TLS-only topic policy replaces SNS's default one: CloudWatch is let back in by name.
    policy = next(
        resource["Properties"]["PolicyDocument"]["Statement"]
        for resource in prod.resources("AWS::SNS::TopicPolicy").values()
        if "ObservabilityAlarmTopic" in json.dumps(resource["Properties"]["Topics"])
    )
    publish = [s for s in policy if s["Effect"] == "Allow" and s["Action"] == "sns:Publish"]
    assert publish and publish[0]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert "wsgw-prod-*" in json.dumps(publish[0]["Condition"]["ArnLike"])
    prod.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": cdk_json_context()["environments"]["prod"]["alarmEmail"]},
    )


@each(ALL)
def test_the_dashboard_shows_the_nodes_own_metrics(stack: SynthesizedStack) -> None:
    body = json.dumps(stack.one("AWS::CloudWatch::Dashboard")["DashboardBody"])
    for metric in (
        MESSAGES_IN_METRIC,
        MESSAGES_OUT_METRIC,
        EVENTS_SENT_METRIC,
        ORIGIN_ERRORS_METRIC,
        ORIGIN_LATENCY_METRIC,
        PEER_IN_METRIC,
        PEER_OUT_METRIC,
        DRAINS_METRIC,
        "ConnectionsPerTask",
        "RunningTaskCount",
    ):
        assert metric in body, metric


@each(ALL)
def test_every_literal_arn_is_in_the_regions_partition(stack: SynthesizedStack) -> None:
    """Partitions come from the region (AWS::Partition, or the CDK's literal for a known
    region), never from a hard-coded `arn:aws:` in our code."""
    literals = re.findall(r"arn:([a-z-]+):", json.dumps(stack.data))
    assert literals and set(literals) == {partition(stack.region)}


def test_a_china_region_synthesizes_in_its_own_partition(tmp_path: Path) -> None:
    settings = {
        "regions": ["cn-north-1"],
        "allowPlaintext": True,
        "waf": False,
        "egress": "nat-gateways",
        "natGateways": 1,
    }
    synthesize_only(settings, tmp_path)
    data = (tmp_path / "wsgw-qa-cn-north-1.template.json").read_text()
    assert "arn:aws:" not in data
    assert "arn:aws-cn:" in data or '"Ref": "AWS::Partition"' in data
