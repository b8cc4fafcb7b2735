"""cdk.json settings: the examples parse, defaults are production choices, and every missing or
bad setting stops synthesis with a message naming it. No synthesis here: these are fast.
"""

from __future__ import annotations

from typing import Any

import pytest

import app
from infra.config import (
    ConfigError,
    EnvironmentConfig,
    load_environment,
    parse_environment,
)
from runtime.config import load
from tests.infra.synth import cdk_json_context


def _load(context: dict[str, Any]) -> EnvironmentConfig:
    return load_environment(context.get)


def test_cdk_json_lists_a_dev_with_one_region_and_a_prod_with_two() -> None:
    context = cdk_json_context()
    dev = _load({**context, "env": "dev"})
    prod = _load({**context, "env": "prod"})
    assert dev.regions == ("us-east-1",)
    assert prod.regions == ("us-east-1", "eu-west-1")
    assert dev.example_origin and not prod.example_origin
    assert (dev.egress, prod.egress) == ("nat-gateways", "vpc-endpoints")


def test_cdk_json_turns_on_the_recommended_feature_flags_and_template_validation() -> None:
    context = cdk_json_context()
    assert context["@aws-cdk/core:validateAgainstDefaultRules"] is True
    assert context["@aws-cdk/aws-iam:minimizePolicies"] is True


def test_defaults_are_production_choices() -> None:
    config = parse_environment(
        "prod",
        {
            "regions": ["eu-west-1"],
            "hostedZone": {"name": "example.com", "id": "Z0123456789ABC"},
            "allowedOrigins": ["https://app.example.com"],
        },
    )
    assert config.fifo and config.events_via == "sqs"
    assert config.architecture == "ARM64"
    assert config.egress == "vpc-endpoints" and config.nat_gateways == 0
    assert config.min_tasks >= 2 and config.az_count >= 2
    assert config.desired_tasks is None  # deploys keep the count autoscaling chose
    assert not config.example_origin
    assert config.drain_seconds < config.stop_timeout_seconds <= 120
    assert config.names.events_queue == "wsgw-prod-events.fifo"
    assert config.graphql_origin_function("eu-west-1") is None and not config.graphql_only
    assert config.entry.waf and config.entry.deletion_protection
    assert not config.entry.allow_plaintext and not config.entry.allow_any_origin
    assert config.network.flow_log_traffic == "REJECT"
    assert config.network.vpc_cidrs == {"eu-west-1": "10.6.0.0/16"}
    assert config.commands_retention_minutes == 10


def test_a_string_certificate_and_domain_apply_to_the_only_region() -> None:
    certificate = "arn:aws:acm:eu-central-1:123456789012:certificate/abc-123"
    config = parse_environment(
        "edge",
        {
            "regions": ["eu-central-1"],
            "certificateArn": certificate,
            "domainName": "ws.example.com",
            "allowAnyOrigin": True,
            "fifo": False,
        },
    )
    assert config.certificate_arn("eu-central-1") == certificate
    assert config.domain_name("eu-central-1") == "ws.example.com"
    assert config.names.events_queue == "wsgw-edge-events"


def test_certificates_per_region() -> None:
    arns = {
        region: f"arn:aws:acm:{region}:123456789012:certificate/abc-123"
        for region in ("us-east-1", "eu-west-1")
    }
    config = parse_environment(
        "prod",
        {
            "regions": ["us-east-1", "eu-west-1"],
            "certificateArn": arns,
            "domainName": {"us-east-1": "us.example.com", "eu-west-1": "eu.example.com"},
            "allowedOrigins": ["https://app.example.com"],
        },
    )
    assert config.certificate_arn("eu-west-1") == arns["eu-west-1"]
    assert config.domain_name("us-east-1") == "us.example.com"


def test_a_graphql_function_by_name_serves_every_region() -> None:
    config = parse_environment(
        "prod",
        {
            "regions": ["us-east-1", "eu-west-1"],
            "allowPlaintext": True,
            "graphqlOriginFunction": "my_graphql-1",
            "graphqlOnly": True,
        },
    )
    assert config.graphql_origin_function("us-east-1") == "my_graphql-1"
    assert config.graphql_origin_function("eu-west-1") == "my_graphql-1"
    assert config.graphql_only


def test_graphql_functions_by_arn_per_region_with_an_alias_or_a_version() -> None:
    arns = {
        "us-east-1": "arn:aws:lambda:us-east-1:123456789012:function:gql:live",
        "eu-west-1": "arn:aws:lambda:eu-west-1:210987654321:function:gql:7",
    }
    config = parse_environment(
        "prod",
        {
            "regions": ["us-east-1", "eu-west-1"],
            "allowPlaintext": True,
            "graphqlOriginFunction": arns,
        },
    )
    assert config.graphql_origin_function("eu-west-1") == arns["eu-west-1"]
    assert not config.graphql_only  # events still go to the event origin


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, r"environments\.dev\.regions is required"),
        ({"regions": "us-east-1"}, r"environments\.dev\.regions is required"),
        ({"regions": ["us_east_1"]}, r"environments\.dev\.regions must list region names"),
        ({"regions": ["us-east-1", "us-east-1"]}, r"regions must not repeat"),
        ({"account": 123456789012}, r"account must be a 12-digit AWS account ID as a string"),
        ({"taskCpu": 300}, r"taskCpu must be one of 256, 512"),
        ({"taskCpu": 512, "taskMemory": 512}, r"taskMemory must be one of .* for taskCpu 512"),
        ({"architecture": "arm64"}, r"architecture must be one of ARM64, X86_64 \(got 'arm64'\)"),
        ({"minTasks": 0}, r"minTasks must be an integer from 1 to 100"),
        ({"minTasks": 4, "maxTasks": 3}, r"maxTasks must be an integer from 4 to 100"),
        ({"maxTasks": 101}, r"maxTasks .* every node pings every other"),
        ({"minTasks": 2, "maxTasks": 4, "desiredTasks": 5}, r"desiredTasks .*minTasks to maxTasks"),
        ({"fifo": "yes"}, r"fifo must be true or false \(got 'yes'\)"),
        ({"eventsVia": "kinesis"}, r"eventsVia must be one of sqs, sns"),
        ({"egress": "internet"}, r"egress must be one of vpc-endpoints, nat-gateways"),
        ({"natGateways": 1}, r"natGateways applies only with egress nat-gateways"),
        ({"egress": "nat-gateways", "natGateways": 3}, r"natGateways .* one per AZ"),
        ({"azCount": 1}, r"azCount must be an integer from 2 to 3"),
        ({"drainSeconds": 200}, r"drainSeconds must be an integer from 5 to 110"),
        ({"logRetentionDays": 10}, r"logRetentionDays must be one of 1, 3, 5"),
        ({"connectionsPerTaskTarget": 20000}, r"connectionsPerTaskTarget must be .* to 19999"),
        ({"certificateArn": "arn:aws:iam::1:x"}, r"certificateArn\.us-east-1 must be an ACM"),
        (
            {"certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc"},
            r"certificateArn\.us-east-1 must be a certificate in us-east-1",
        ),
        ({"certificateArn": {"eu-west-1": "x"}}, r"certificateArn names a region not in"),
        ({"domainName": "not a domain"}, r"domainName\.us-east-1 must be a DNS name"),
        (
            {"certificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc"},
            r"certificateArn\.us-east-1 needs domainName",
        ),
        ({"tasks": 3}, r"environments\.dev has unknown settings \['tasks'\]"),
        (
            {"graphqlOriginFunction": "my graphql"},
            r"environments\.dev\.graphqlOriginFunction\.us-east-1 must be a Lambda function name",
        ),
        ({"graphqlOriginFunction": "f" * 65}, r"graphqlOriginFunction\.us-east-1 must be a Lambda"),
        (
            {"graphqlOriginFunction": "arn:aws:lambda:us-east-1:123:function:gql"},
            r"graphqlOriginFunction\.us-east-1 must be a Lambda function name .* or ARN",
        ),
        (
            {"graphqlOriginFunction": "arn:aws:sqs:us-east-1:123456789012:gql"},
            r"graphqlOriginFunction\.us-east-1 must be a Lambda",
        ),
        ({"graphqlOriginFunction": 7}, r"graphqlOriginFunction must be a string or an object"),
        (
            {"graphqlOriginFunction": "arn:aws:lambda:eu-west-1:123456789012:function:gql"},
            r"graphqlOriginFunction\.us-east-1 must be a function in us-east-1",
        ),
        (
            {"regions": ["us-east-1", "eu-west-1"], "graphqlOriginFunction": {"us-east-1": "gql"}},
            r"graphqlOriginFunction must name a function for every region; missing \['eu-west-1'\]",
        ),
        ({"graphqlOnly": "yes"}, r"graphqlOnly must be true or false"),
        ({"eventsPerMessage": 0}, r"eventsPerMessage must be an integer from 1 to 10000"),
        ({"eventsMessageBytes": 300_000}, r"eventsMessageBytes must be an integer from 1024"),
        ({"eventsLingerMs": -1}, r"eventsLingerMs must be an integer from 0 to 1000"),
        ({"eventsFifoGroups": 2000}, r"eventsFifoGroups must be an integer from 1 to 1024"),
        ({"graphqlOnly": True}, r"environments\.dev\.graphqlOnly needs graphqlOriginFunction"),
        (
            {"graphqlOnly": True, "graphqlOriginFunction": "gql", "exampleOrigin": True},
            r"graphqlOnly and exampleOrigin do not go together",
        ),
    ],
)
def test_bad_settings_are_named(settings: dict[str, Any], message: str) -> None:
    # Settings without regions get one, except the case about regions missing altogether.
    raw = (
        settings
        if "regions" in settings or not settings
        else {"regions": ["us-east-1"], **settings}
    )
    with pytest.raises(ConfigError, match=message):
        parse_environment("dev", raw)


def test_bad_environment_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"environments\.Prod: environment must be"):
        parse_environment("Prod", {"regions": ["us-east-1"]})


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"env": "dev"}, r'cdk\.json context needs "environments"'),
        ({"environments": {"dev": {"regions": ["us-east-1"]}}}, r"context env is required"),
        (
            {"environments": {"dev": {"regions": ["us-east-1"]}}, "env": "qa"},
            r"context env must be one of: dev \(got 'qa'\)",
        ),
        ({"environments": {"dev": ["us-east-1"]}, "env": "dev"}, r"must be an object"),
    ],
)
def test_bad_context_is_named(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(context)


def test_the_app_fails_with_the_message_and_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert app.main(["-c", "env=staging"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: context env must be one of: dev, prod (got 'staging')"
    )


def test_event_packing_reaches_the_node_settings_of_the_same_names() -> None:
    config = parse_environment(
        "dev",
        {
            "regions": ["us-east-1"],
            "allowPlaintext": True,
            "eventsPerMessage": 1,
            "eventsMessageBytes": 131072,
            "eventsLingerMs": 20,
            "eventsFifoGroups": 4,
        },
    )
    environment = config.event_packing.node_environment()
    assert environment == {
        "EVENTS_PER_MESSAGE": "1",
        "EVENTS_MESSAGE_BYTES": "131072",
        "EVENTS_LINGER_MS": "20",
        "EVENTS_FIFO_GROUPS": "4",
    }
    settings = load(
        {},
        environ={
            **environment,
            "ORIGIN_TRANSPORT": "sqs",
            "EVENTS_QUEUE_URL": "q",
            "COMMAND_LISTEN": "",
            "LOCAL_ONLY": "true",
        },
    )
    assert (
        settings.events_per_message,
        settings.events_message_bytes,
        settings.events_linger_ms,
        settings.events_fifo_groups,
    ) == (1, 131072, 20, 4)
