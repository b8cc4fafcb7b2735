"""GraphQL mode in the stack: `graphqlOriginFunction` gives the nodes that function, and leave to
invoke it and nothing else; `graphqlOnly` makes them GraphQL-only nodes, which send no events.

edge (tests/infra/synth.py) sets a function by its alias ARN, next to events through SNS; dev
and prod set neither. One small extra app here is GraphQL-only with the function given by name
and no NAT (so through a Lambda VPC endpoint), the combinations edge does not cover.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cfnlint.api
import pytest

from app import build_app
from runtime.config import load
from tests.infra.synth import (
    EDGE_GRAPHQL_FUNCTION,
    SynthesizedStack,
    cdk_json_context,
    stack_names,
    validation_findings,
)
from tests.infra.test_infra_compliance import (
    ACKNOWLEDGED,
    CDK_ACKNOWLEDGED,
    EXPECTED_WARNINGS,
    acknowledgments,
)

GRAPHQL = [name for name in stack_names() if "-edge-" in name]  # a function in every region
NO_GRAPHQL = stack_names(graphqlOriginFunction=None)
ONLY_REGION = "us-west-2"
ONLY_FUNCTION = "wsgw-gql-graphql"


def environment_of(stack: SynthesizedStack) -> dict[str, Any]:
    container = stack.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    return {item["Name"]: item["Value"] for item in container["Environment"]}


def task_role_statements(stack: SynthesizedStack) -> list[dict[str, Any]]:
    role = stack.one("AWS::ECS::TaskDefinition")["TaskRoleArn"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in stack.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def invoke_statements(stack: SynthesizedStack) -> list[dict[str, Any]]:
    """Every statement of any policy in the stack that mentions a Lambda invocation."""
    return [
        statement
        for policy in stack.resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:Invoke" in json.dumps(statement["Action"])
    ]


def lambda_endpoints(stack: SynthesizedStack) -> list[dict[str, Any]]:
    return [
        endpoint["Properties"]
        for endpoint in stack.resources("AWS::EC2::VPCEndpoint").values()
        if str(endpoint["Properties"]["ServiceName"]).endswith(".lambda")
    ]


TARGET_GROUP_ARN = (
    "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/wsgw-nodes/0123456789abcdef"
)


@pytest.fixture(scope="module")
def graphql_only(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedStack:
    """A GraphQL-only environment: its function by name, and no NAT (egress vpc-endpoints)."""
    settings = {
        "regions": [ONLY_REGION],
        "allowPlaintext": True,
        "graphqlOriginFunction": ONLY_FUNCTION,
        "graphqlOnly": True,
    }
    outdir: Path = tmp_path_factory.mktemp("cdk-gql")
    context = {**cdk_json_context(), "environments": {"gql": settings}, "env": "gql"}
    build_app(context, outdir=str(outdir)).synth()  # cdk-nag runs: no unacknowledged finding
    path = outdir / f"wsgw-gql-{ONLY_REGION}.template.json"
    return SynthesizedStack(
        environment="gql",
        region=ONLY_REGION,
        settings=settings,
        data=json.loads(path.read_text()),
        path=path,
        outdir=outdir,
    )


@pytest.mark.parametrize("stack", GRAPHQL, indirect=True)
def test_nodes_get_the_function_and_may_invoke_exactly_it(stack: SynthesizedStack) -> None:
    # eu-central-1 names an alias by ARN; the other regions a name, the function of their own.
    given = stack.settings["graphqlOriginFunction"][stack.region]
    expected = (
        given
        if given.startswith("arn:")
        else f"arn:aws:lambda:{stack.region}:{stack.settings['account']}:function:{given}"
    )
    assert (stack.region == "eu-central-1") is (expected == EDGE_GRAPHQL_FUNCTION)
    assert environment_of(stack)["GRAPHQL_ORIGIN_FUNCTION"] == expected
    invoke = [s for s in task_role_statements(stack) if "lambda:InvokeFunction" in s["Action"]]
    # That ARN alone: no wildcard, no other version or alias of the function.
    assert invoke == [{"Action": "lambda:InvokeFunction", "Effect": "Allow", "Resource": expected}]
    # A function set alongside events: the node still sends events (here through SNS).
    assert environment_of(stack)["ORIGIN_TRANSPORT"] == stack.settings["eventsVia"]
    assert lambda_endpoints(stack) == []  # NAT gateways reach Lambda's public endpoint


@pytest.mark.parametrize("stack", NO_GRAPHQL, indirect=True)
def test_without_a_graphql_origin_nodes_neither_know_nor_invoke_one(
    stack: SynthesizedStack,
) -> None:
    assert not [name for name in environment_of(stack) if name.startswith("GRAPHQL_")]
    assert not [s for s in task_role_statements(stack) if "lambda:" in json.dumps(s["Action"])]
    assert lambda_endpoints(stack) == []
    # The example origin's function is invoked by its event source, not by any role here.
    assert invoke_statements(stack) == []


def test_graphql_only_nodes_send_no_events_and_invoke_the_named_function_in_their_region(
    graphql_only: SynthesizedStack,
) -> None:
    environment = environment_of(graphql_only)
    assert environment["ORIGIN_TRANSPORT"] == "none"
    assert "EVENTS_QUEUE_URL" not in environment and "EVENTS_TOPIC_ARN" not in environment
    assert "COMMANDS_QUEUE_URL" in environment  # publish commands still arrive
    arn = {
        "Fn::Join": [
            "",
            [
                f"arn:aws:lambda:{ONLY_REGION}:",
                {"Ref": "AWS::AccountId"},
                f":function:{ONLY_FUNCTION}",
            ],
        ]
    }
    assert environment["GRAPHQL_ORIGIN_FUNCTION"] == arn
    invoke = [
        s for s in task_role_statements(graphql_only) if "lambda:InvokeFunction" in s["Action"]
    ]
    assert invoke == [{"Action": "lambda:InvokeFunction", "Effect": "Allow", "Resource": arn}]
    actions = json.dumps([s["Action"] for s in task_role_statements(graphql_only)])
    assert "sqs:SendMessage" not in actions and "sns:Publish" not in actions  # no events to send
    assert "sqs:ReceiveMessage" in actions  # commands still arrive


def test_graphql_only_nodes_without_nat_reach_lambda_through_a_private_endpoint(
    graphql_only: SynthesizedStack,
) -> None:
    [endpoint] = lambda_endpoints(graphql_only)
    assert endpoint["ServiceName"] == f"com.amazonaws.{ONLY_REGION}.lambda"
    assert endpoint["VpcEndpointType"] == "Interface" and endpoint["PrivateDnsEnabled"]
    # The same security group as the other endpoints: HTTPS from the nodes only.
    sqs = next(
        resource["Properties"]
        for resource in graphql_only.resources("AWS::EC2::VPCEndpoint").values()
        if resource["Properties"]["ServiceName"] == f"com.amazonaws.{ONLY_REGION}.sqs"
    )
    assert endpoint["SecurityGroupIds"] == sqs["SecurityGroupIds"]
    assert endpoint["SubnetIds"] == sqs["SubnetIds"]


def test_the_node_accepts_the_graphql_only_task_environment(
    graphql_only: SynthesizedStack,
) -> None:
    """runtime/config.py's own rules (--origin-transport none needs a GraphQL origin, ...)."""
    environment = environment_of(graphql_only)
    account = "123456789012"
    function = f"arn:aws:lambda:{ONLY_REGION}:{account}:function:{ONLY_FUNCTION}"
    environment.update(  # what CloudFormation resolves the references to, and the ECS secret
        COMMANDS_QUEUE_URL=f"https://sqs.{ONLY_REGION}.amazonaws.com/{account}/wsgw-gql-commands",
        DOMAIN_NAME="gateway.example.com",
        GRAPHQL_ORIGIN_FUNCTION=function,
        PEER_SECRET="x" * 32,
        TARGET_GROUP_ARN=TARGET_GROUP_ARN,
    )
    assert all(isinstance(value, str) for value in environment.values()), environment
    settings = load({}, environ=environment)
    assert settings.origin_transport == "none"
    assert settings.graphql and settings.graphql_origin_function == function


def test_graphql_only_has_no_finding_and_no_new_acknowledgment(
    graphql_only: SynthesizedStack,
) -> None:
    assert validation_findings(graphql_only.outdir) == []
    found = acknowledgments(graphql_only)
    assert {rule for rule in found if not CDK_ACKNOWLEDGED.match(rule)} == ACKNOWLEDGED
    matches = cfnlint.api.lint(graphql_only.path.read_text(), regions=[ONLY_REGION])
    assert [f"{m.rule.id} {m.message}" for m in matches if m.rule.severity == "error"] == []
    assert {m.rule.id for m in matches} <= EXPECTED_WARNINGS
