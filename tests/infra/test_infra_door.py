"""The door in the stack: cdk.json's connectHandler, authorizer, jwtAuthorizer, handshake limits
and connectionsApi become the node's environment, exact invoke grants, a Lambda endpoint without
NAT, and one ingress rule from the origin's security group.

One extra app (`door`, synthesized once for this module) sets every setting that can go together:
a $connect handler by name, a Lambda authorizer by alias ARN, a GraphQL origin besides them, the
handshake limits and the @connections API, with egress vpc-endpoints. A JWT authorizer excludes a
Lambda one and needs NAT, so its variables are checked on the pure mapping (infra/door.py), as is
every validation error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cfnlint.api
import pytest

from app import build_app
from infra.config import ConfigError, parse_environment
from infra.door import ConnectionsApi, Door
from runtime.config import Settings, load
from tests.infra.synth import SynthesizedStack, cdk_json_context, validation_findings
from tests.infra.test_infra_compliance import (
    ACKNOWLEDGED,
    CDK_ACKNOWLEDGED,
    EXPECTED_WARNINGS,
    acknowledgments,
)
from tests.infra.test_infra_graphql import environment_of, lambda_endpoints, task_role_statements

REGION = "us-west-2"
ACCOUNT = "123456789012"
CONNECT_FUNCTION = "wsgw-door-connect"  # by name: that function in the stack's region
AUTHORIZER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:wsgw-door-authorizer:live"
GRAPHQL_FUNCTION = "wsgw-door-graphql"
ORIGIN_GROUP = "sg-0123456789abcdef0"
COMMAND_PORT = 8090
DOOR: dict[str, Any] = {
    "regions": [REGION],
    "allowPlaintext": True,
    "graphqlOriginFunction": GRAPHQL_FUNCTION,
    "connectHandler": {
        "functionArn": CONNECT_FUNCTION,
        "timeoutSeconds": 3,
        "errorStatus": 503,
        "connectEvent": "suppress",
    },
    "authorizer": {
        "functionArn": AUTHORIZER_ARN,
        "identitySources": ["route.request.header.Authorization", "route.request.querystring.t"],
        "ttlSeconds": 60,
        "ratePerSecond": 20.5,
        "burst": 40,
        "timeoutSeconds": 2.5,
        "errorStatus": 502,
    },
    "handshakeRatePerIp": 5,
    "handshakeBurstPerIp": 10,
    "handshakeRate": 200,
    "handshakeBurst": 400,
    "connectionsApi": {"securityGroupId": ORIGIN_GROUP, "port": COMMAND_PORT},
}
DOOR_VARIABLES = (
    "CONNECT_", "AUTHORIZER_", "JWT_", "HANDSHAKE_", "CONNECTIONS_API", "COMMAND_",
)  # fmt: skip


def by_name(function: str) -> dict[str, Any]:
    """The ARN the stack writes for a function given by name."""
    return {
        "Fn::Join": [
            "",
            [f"arn:aws:lambda:{REGION}:", {"Ref": "AWS::AccountId"}, f":function:{function}"],
        ]
    }


TARGET_GROUP_ARN = (
    "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/wsgw-nodes/0123456789abcdef"
)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStack:
    outdir: Path = tmp_path_factory.mktemp("cdk-door")
    context = {**cdk_json_context(), "environments": {"door": DOOR}, "env": "door"}
    build_app(context, outdir=str(outdir)).synth()  # cdk-nag runs: no unacknowledged finding
    path = outdir / f"wsgw-door-{REGION}.template.json"
    return SynthesizedStack(
        environment="door",
        region=REGION,
        settings=DOOR,
        data=json.loads(path.read_text()),
        path=path,
        outdir=outdir,
    )


def node_group(stack: SynthesizedStack) -> str:
    [group] = [
        logical_id
        for logical_id, resource in stack.resources("AWS::EC2::SecurityGroup").items()
        if resource["Properties"]["GroupDescription"].startswith("Gateway nodes:")
    ]
    return group


def command_token(stack: SynthesizedStack) -> str:
    [secret] = [
        logical_id
        for logical_id, resource in stack.resources("AWS::SecretsManager::Secret").items()
        if "command listener" in resource["Properties"]["Description"]
    ]
    return secret


def test_the_door_reaches_the_node_as_environment_variables(door: SynthesizedStack) -> None:
    environment = environment_of(door)
    assert {
        name: value for name, value in environment.items() if name.startswith(DOOR_VARIABLES)
    } == {
        "CONNECT_HANDLER_FUNCTION": by_name(CONNECT_FUNCTION),
        "CONNECT_HANDLER_TIMEOUT": "3",
        "CONNECT_HANDLER_ERROR_STATUS": "503",
        "CONNECT_EVENT": "suppress",
        "AUTHORIZER_FUNCTION": AUTHORIZER_ARN,
        "AUTHORIZER_IDENTITY_SOURCES": (
            "route.request.header.Authorization,route.request.querystring.t"
        ),
        "AUTHORIZER_TTL": "60",
        "AUTHORIZER_RATE": "20.5",
        "AUTHORIZER_BURST": "40",
        "AUTHORIZER_TIMEOUT": "2.5",
        "AUTHORIZER_ERROR_STATUS": "502",
        "HANDSHAKE_RATE_PER_IP": "5",
        "HANDSHAKE_BURST_PER_IP": "10",
        "HANDSHAKE_RATE": "200",
        "HANDSHAKE_BURST": "400",
        "COMMAND_LISTEN": f"0.0.0.0:{COMMAND_PORT}",
        "CONNECTIONS_API": "token",
    }
    assert environment["GRAPHQL_ORIGIN_FUNCTION"] == by_name(GRAPHQL_FUNCTION)
    container = door.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert {item["Name"]: item["ValueFrom"] for item in container["Secrets"]} == {
        "PEER_SECRET": {"Ref": next(iter(door.resources("AWS::SecretsManager::Secret")))},
        "COMMAND_TOKEN": {"Ref": command_token(door)},
    }
    assert {"name": "commands", "containerPort": COMMAND_PORT, "protocol": "tcp"} in [
        {key[0].lower() + key[1:]: value for key, value in mapping.items()}
        for mapping in container["PortMappings"]
    ]


def test_nodes_may_invoke_exactly_the_door_and_graphql_functions(door: SynthesizedStack) -> None:
    invoke = [s for s in task_role_statements(door) if "lambda:" in json.dumps(s["Action"])]
    assert len(invoke) == 1, invoke
    [statement] = invoke
    assert statement["Action"] == "lambda:InvokeFunction" and statement["Effect"] == "Allow"
    resources = statement["Resource"]
    assert len(resources) == 3
    for expected in (by_name(GRAPHQL_FUNCTION), by_name(CONNECT_FUNCTION), AUTHORIZER_ARN):
        assert expected in resources
    assert "*" not in json.dumps(resources)  # no wildcard: no other alias, version or function


def test_the_command_port_is_open_only_from_the_named_security_group(
    door: SynthesizedStack,
) -> None:
    group = node_group(door)
    nodes = {"Fn::GetAtt": [group, "GroupId"]}
    separate = [
        rule["Properties"]
        for rule in door.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == nodes
    ]
    inline = door.data["Resources"][group]["Properties"].get("SecurityGroupIngress", [])
    # Every rule into the nodes, by protocol, ports and source; no CIDR source at all.
    rules = sorted(
        (
            rule["IpProtocol"],
            rule["FromPort"],
            rule["ToPort"],
            json.dumps(rule.get("CidrIp")),
            json.dumps(rule.get("SourceSecurityGroupId")),
        )
        for rule in [*separate, *inline]
    )
    alb = next(
        logical_id
        for logical_id, resource in door.resources("AWS::EC2::SecurityGroup").items()
        if resource["Properties"]["GroupDescription"].startswith("Gateway ALB")
    )
    assert rules == sorted(
        [
            ("tcp", 8080, 8080, "null", json.dumps({"Fn::GetAtt": [alb, "GroupId"]})),
            ("tcp", COMMAND_PORT, COMMAND_PORT, "null", json.dumps(ORIGIN_GROUP)),
            ("udp", 9100, 9100, "null", json.dumps(nodes)),
        ]
    )


def test_one_lambda_endpoint_serves_every_invoked_function(door: SynthesizedStack) -> None:
    [endpoint] = lambda_endpoints(door)
    assert endpoint["ServiceName"] == f"com.amazonaws.{REGION}.lambda"
    assert endpoint["PrivateDnsEnabled"] and endpoint["VpcEndpointType"] == "Interface"


def test_the_command_token_is_generated_and_an_origin_is_told_where_to_run(
    door: SynthesizedStack,
) -> None:
    secret = door.data["Resources"][command_token(door)]["Properties"]
    assert secret["GenerateSecretString"] == {"ExcludePunctuation": True, "PasswordLength": 64}
    outputs = door.data["Outputs"]
    assert outputs["ConnectionsTokenSecretArn"]["Value"] == {"Ref": command_token(door)}
    vpc = next(iter(door.resources("AWS::EC2::VPC")))
    assert outputs["VpcId"]["Value"] == {"Ref": vpc}
    subnets = outputs["NodeSubnetIds"]["Value"]["Fn::Join"]
    assert subnets[0] == "," and len(subnets[1]) == 2  # the two private subnets
    # ECS injects the token with the execution role; the node's own role cannot read it.
    statements = task_role_statements(door)
    assert "secretsmanager" not in json.dumps([s["Action"] for s in statements])


def test_the_node_accepts_the_door_task_environment(door: SynthesizedStack) -> None:
    """runtime/config.py's own rules (one authorizer, a token for the command listener, ...)."""
    environment = environment_of(door)
    function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
    environment.update(  # what CloudFormation resolves the references to, and the ECS secrets
        COMMANDS_QUEUE_URL=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/wsgw-door-commands",
        EVENTS_QUEUE_URL=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/wsgw-door-events.fifo",
        DOMAIN_NAME="gateway.example.com",
        GRAPHQL_ORIGIN_FUNCTION=function + GRAPHQL_FUNCTION,
        CONNECT_HANDLER_FUNCTION=function + CONNECT_FUNCTION,
        PEER_SECRET="p" * 64,
        TARGET_GROUP_ARN=TARGET_GROUP_ARN,
        COMMAND_TOKEN="c" * 64,
    )
    assert all(isinstance(value, str) for value in environment.values()), environment
    settings = load({}, environ=environment)
    assert settings.connect_handler_function == function + CONNECT_FUNCTION
    assert settings.connect_handler_timeout == 3 and settings.connect_handler_error_status == 503
    assert settings.connect_event == "suppress"
    assert settings.authorizer_function == AUTHORIZER_ARN
    assert settings.authorizer_identity_sources == (
        "route.request.header.Authorization",
        "route.request.querystring.t",
    )
    assert (settings.authorizer_ttl, settings.authorizer_rate) == (60, 20.5)
    assert (settings.authorizer_burst, settings.authorizer_timeout) == (40, 2.5)
    assert settings.authorizer_error_status == 502
    assert (settings.handshake_rate_per_ip, settings.handshake_burst_per_ip) == (5, 10)
    assert (settings.handshake_rate, settings.handshake_burst) == (200, 400)
    assert settings.command_listen == ("0.0.0.0", COMMAND_PORT)
    assert settings.connections_api == "token" and settings.command_token == "c" * 64
    assert not settings.no_command_auth


def test_door_has_no_finding_and_no_new_acknowledgment(door: SynthesizedStack) -> None:
    assert validation_findings(door.outdir) == []
    found = acknowledgments(door)
    assert {rule for rule in found if not CDK_ACKNOWLEDGED.match(rule)} == ACKNOWLEDGED
    assert len(found["AwsSolutions-SMG4"]) == 2  # the peer key and the command token, each why
    matches = cfnlint.api.lint(door.path.read_text(), regions=[REGION])
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.severity == "error"] == []
    assert {m.rule.id for m in matches} <= EXPECTED_WARNINGS


# The pure mapping: what synthesis does not cover.


def test_no_door_setting_means_no_door_variable() -> None:
    config = parse_environment("dev", {"regions": ["us-east-1"], "allowPlaintext": True})
    assert config.door == Door()
    assert config.door.functions("us-east-1") == []
    assert config.door.node_environment("us-east-1", lambda name: name) == {}


def jwt_environment(settings: dict[str, Any]) -> dict[str, str]:
    config = parse_environment(
        "dev",
        {"regions": ["us-east-1"], "egress": "nat-gateways", "allowPlaintext": True, **settings},
    )
    assert config.door.functions("us-east-1") == []  # a JWT authorizer invokes no function
    return config.door.node_environment("us-east-1", lambda name: pytest.fail(name))


def test_a_jwt_authorizer_becomes_jwt_variables_the_node_accepts() -> None:
    environment = jwt_environment(
        {
            "jwtAuthorizer": {
                "issuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC",
                "audiences": ["client-1", "client-2"],
                "jwksUrl": "https://keys.example.com:443/jwks.json",
                "algorithms": ["RS256", "ES256"],
                "tokenSource": "query:token",
                "leewaySeconds": 30,
            },
            "connectionsApi": {"securityGroupId": "sg-0abc1234", "mode": "network"},
        }
    )
    assert environment == {
        "JWT_ISSUER": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC",
        "JWT_AUDIENCES": "client-1,client-2",
        "JWT_JWKS_URL": "https://keys.example.com:443/jwks.json",
        "JWT_ALGORITHMS": "RS256,ES256",
        "JWT_TOKEN_SOURCE": "query:token",
        "JWT_LEEWAY": "30",
        "COMMAND_LISTEN": "0.0.0.0:8081",
        "CONNECTIONS_API": "network",
    }
    settings = load(
        {}, environ={**environment, "ORIGIN_TRANSPORT": "echo", "LOCAL_ONLY": "true",
                     "COMMAND_TOKEN": "t" * 32}
    )  # fmt: skip
    assert settings.jwt_issuer.endswith("us-east-1_AbC")
    assert settings.jwt_audiences == ("client-1", "client-2")
    assert settings.jwt_algorithms == ("RS256", "ES256") and settings.jwt_leeway == 30
    assert settings.connections_api == "network"


def test_a_minimal_jwt_authorizer_leaves_the_rest_to_the_node() -> None:
    environment = jwt_environment(
        {"jwtAuthorizer": {"issuer": "https://id.example.com", "audiences": ["api"]}}
    )
    assert environment == {"JWT_ISSUER": "https://id.example.com", "JWT_AUDIENCES": "api"}
    defaults = Settings()
    local = {"ORIGIN_TRANSPORT": "echo", "LOCAL_ONLY": "1", "COMMAND_LISTEN": ""}  # as ECS has
    settings = load({}, environ={**environment, **local})
    assert settings.jwt_algorithms == defaults.jwt_algorithms
    assert settings.jwt_token_source == defaults.jwt_token_source


def test_defaults_of_a_connections_api_and_a_bare_connect_handler() -> None:
    config = parse_environment(
        "prod",
        {
            "regions": ["us-east-1", "eu-west-1"],
            "allowPlaintext": True,
            "connectHandler": {
                "functionArn": {
                    "us-east-1": "arn:aws:lambda:us-east-1:123456789012:function:c",
                    "eu-west-1": "arn:aws:lambda:eu-west-1:123456789012:function:c:7",
                }
            },
            "connectionsApi": {"securityGroupId": "sg-0123456789abcdef0"},
        },
    )
    assert config.door.connections_api == ConnectionsApi(
        security_group_id="sg-0123456789abcdef0", port=8081, mode="token"
    )
    assert config.door.functions("eu-west-1") == [
        "arn:aws:lambda:eu-west-1:123456789012:function:c:7"
    ]
    assert config.door.node_environment("us-east-1", str.upper) == {
        "CONNECT_HANDLER_FUNCTION": "ARN:AWS:LAMBDA:US-EAST-1:123456789012:FUNCTION:C",
        "COMMAND_LISTEN": "0.0.0.0:8081",
        "CONNECTIONS_API": "token",
    }
    assert config.door.authorizer is None and config.door.jwt_authorizer is None


GOOD_AUTHORIZER = {"functionArn": "auth", "identitySources": ["route.request.header.Auth"]}
GOOD_JWT = {"issuer": "https://id.example.com", "audiences": ["api"]}
NAT = {"egress": "nat-gateways"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"connectHandler": "fn"}, r"dev\.connectHandler must be an object with functionArn"),
        ({"connectHandler": {}}, r"dev\.connectHandler\.functionArn is required: a Lambda"),
        (
            {"connectHandler": {"functionArn": "f", "timeout": 3}},
            r"dev\.connectHandler has unknown settings \['timeout'\]; known: functionArn",
        ),
        (
            {"connectHandler": {"functionArn": "my function"}},
            r"connectHandler\.functionArn\.us-east-1 must be a Lambda function name",
        ),
        (
            {"connectHandler": {"functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"}},
            r"connectHandler\.functionArn\.us-east-1 must be a function in us-east-1",
        ),
        (
            {"connectHandler": {"functionArn": "f", "timeoutSeconds": 30}},
            r"connectHandler\.timeoutSeconds must be a number from 0\.1 to 29 \(got 30\)",
        ),
        (
            {"connectHandler": {"functionArn": "f", "timeoutSeconds": "3"}},
            r"connectHandler\.timeoutSeconds must be a number",
        ),
        (
            {"connectHandler": {"functionArn": "f", "timeoutSeconds": True}},
            r"connectHandler\.timeoutSeconds must be a number",
        ),
        (
            {"connectHandler": {"functionArn": "f", "errorStatus": 302}},
            r"connectHandler\.errorStatus must be an integer from 400 to 599",
        ),
        (
            {"connectHandler": {"functionArn": "f", "connectEvent": "drop"}},
            r"connectHandler\.connectEvent must be one of mark, suppress \(got 'drop'\)",
        ),
        ({"authorizer": {"functionArn": "auth"}}, r"authorizer\.identitySources is required"),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "identitySources": []}},
            r"authorizer\.identitySources is required: a list, each route\.request\.header",
        ),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "identitySources": ["header.Authorization"]}},
            r"authorizer\.identitySources must list strings, each route\.request\.header\.<name>",
        ),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "identitySources": ["route.request.header.a,b"]}},
            r"authorizer\.identitySources must list strings",
        ),
        (
            {"authorizer": {"identitySources": ["route.request.header.A"]}},
            r"authorizer\.functionArn is required",
        ),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "ttlSeconds": 7200}},
            r"authorizer\.ttlSeconds must be a number from 0 to 3600",
        ),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "ratePerSecond": 0}},
            r"authorizer\.ratePerSecond must be a number from 0\.1 to 100000",
        ),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "burst": 1.5}},
            r"authorizer\.burst must be an integer from 1 to 1000000",
        ),
        (
            {"authorizer": {**GOOD_AUTHORIZER, "errorStatus": 200}},
            r"authorizer\.errorStatus must be an integer from 400 to 599",
        ),
        (
            {"authorizer": GOOD_AUTHORIZER, "jwtAuthorizer": GOOD_JWT, **NAT},
            r"dev\.authorizer and jwtAuthorizer do not go together",
        ),
        (
            {"jwtAuthorizer": GOOD_JWT},
            r"dev\.jwtAuthorizer needs egress nat-gateways: nodes fetch the issuer's key set",
        ),
        (
            {"jwtAuthorizer": {"audiences": ["api"]}, **NAT},
            r"jwtAuthorizer\.issuer is required and must be an https:// URL",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "issuer": "http://id.example.com"}, **NAT},
            r"jwtAuthorizer\.issuer must be an https:// URL on port 443",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "jwksUrl": "https://id.example.com:8443/k"}, **NAT},
            r"jwtAuthorizer\.jwksUrl must be an https:// URL on port 443",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "jwksUrl": "https://u:secret@id.example.com/k"}, **NAT},
            r"jwtAuthorizer\.jwksUrl must be an https:// URL .*\(got '<redacted>'\)",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "jwksUrl": "https://[::1/k"}, **NAT},
            r"jwtAuthorizer\.jwksUrl must be an https:// URL",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "audiences": "api"}, **NAT},
            r"jwtAuthorizer\.audiences is required: a list",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "audiences": ["a,b"]}, **NAT},
            r"jwtAuthorizer\.audiences must list strings, each a name without commas",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "algorithms": ["HS256"]}, **NAT},
            r"jwtAuthorizer\.algorithms must list strings, each RS256, RS384",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "algorithms": []}, **NAT},
            r"jwtAuthorizer\.algorithms is required: a list",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "tokenSource": "cookie:t"}, **NAT},
            r"jwtAuthorizer\.tokenSource must be header:<name> or query:<name>",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "leewaySeconds": 301}, **NAT},
            r"jwtAuthorizer\.leewaySeconds must be a number from 0 to 300",
        ),
        (
            {"jwtAuthorizer": {**GOOD_JWT, "jwks": "x"}, **NAT},
            r"jwtAuthorizer has unknown settings \['jwks'\]",
        ),
        ({"handshakeRatePerIp": -1}, r"handshakeRatePerIp must be a number from 0 to 1e\+06"),
        ({"handshakeRate": "10"}, r"handshakeRate must be a number"),
        (
            {"handshakeBurstPerIp": 5},
            r"handshakeBurstPerIp applies only with handshakeRatePerIp above 0",
        ),
        (
            {"handshakeRate": 0, "handshakeBurst": 5},
            r"handshakeBurst applies only with handshakeRate above 0",
        ),
        (
            {"handshakeRate": 10, "handshakeBurst": 0},
            r"handshakeBurst must be an integer from 1 to 10000000",
        ),
        ({"connectionsApi": {}}, r"connectionsApi\.securityGroupId is required: a security"),
        (
            {"connectionsApi": {"securityGroupId": "default"}},
            r"connectionsApi\.securityGroupId must be a security group ID \(sg-\.\.\.\)",
        ),
        (
            {"connectionsApi": {"securityGroupId": "sg-0123", "port": 8081}},
            r"connectionsApi\.securityGroupId must be a security group ID",
        ),
        (
            {"connectionsApi": {"securityGroupId": "sg-0abc1234", "port": 80}},
            r"connectionsApi\.port must be an integer from 1024 to 65535",
        ),
        (
            {"connectionsApi": {"securityGroupId": "sg-0abc1234", "port": 8080}},
            r"connectionsApi\.port must not be one of the node's ports \(8080, 9100\)",
        ),
        (
            {"connectionsApi": {"securityGroupId": "sg-0abc1234", "mode": "off"}},
            r"connectionsApi\.mode must be one of token, network \(got 'off'\)",
        ),
        (
            {"connectionsApi": {"securityGroupId": "sg-0abc1234", "cidr": "10.0.0.0/8"}},
            r"connectionsApi has unknown settings \['cidr'\]",
        ),
    ],
)
def test_bad_door_settings_are_named(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_environment("dev", {"regions": ["us-east-1"], **settings})
