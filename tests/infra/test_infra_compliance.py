"""Best-practice checks on the synthesized templates: cdk-nag's AwsSolutions pack, the CDK's own
CloudFormation validation (both run inside every synthesis), and cfn-lint on the results.
"""

from __future__ import annotations

import re
from typing import Any

import cfnlint.api
import pytest
from aws_cdk import aws_sqs as sqs

from app import build_app
from tests.infra.synth import SynthesizedStack, cdk_json_context, stack_names, validation_findings

# Every finding acknowledged in the app, by rule: a new one must be added here, on review.
ACKNOWLEDGED = {
    "AwsSolutions-EC23",  # the ALB is the public endpoint
    "AwsSolutions-ECS2",  # non-secret settings in the environment, by design
    "AwsSolutions-IAM5[Resource::*]",  # ecr:GetAuthorizationToken has no resource ARN
    "AwsSolutions-S1",  # the log bucket would need a log bucket
    "AwsSolutions-SMG4",  # the peer key is rotated by a deployment
}
# The CDK's own acknowledgments for its generated resources (flow log options' casing).
CDK_ACKNOWLEDGED = re.compile(r"^CloudFormation-Validate::")
# cfn-lint warnings the CDK's output always carries, with why they are harmless.
EXPECTED_WARNINGS = {
    # The CDK adds DependsOn the role (and its policy) to Lambda functions; the role is also
    # referenced by GetAtt, so one of the two is redundant. Ordering is unaffected.
    "W3005",
}


def acknowledgments(stack: SynthesizedStack) -> dict[str, set[str]]:
    """Rule ID -> reasons, from the cdk_nag Metadata the app writes into the template."""
    found: dict[str, set[str]] = {}
    for resource in stack.data["Resources"].values():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            found.setdefault(rule["id"], set()).add(rule["reason"])
    return found


@pytest.mark.parametrize("stack", stack_names(), indirect=True)
def test_validation_reports_no_finding_at_all(stack: SynthesizedStack) -> None:
    """Synthesis raises on an error; the report also lists warnings, and there are none."""
    assert validation_findings(stack.outdir) == []


@pytest.mark.parametrize("stack", stack_names(), indirect=True)
def test_each_acknowledged_finding_is_known_and_explained(stack: SynthesizedStack) -> None:
    found = acknowledgments(stack)
    ours = {rule for rule in found if not CDK_ACKNOWLEDGED.match(rule)}
    assert ours == ACKNOWLEDGED
    for rule, reasons in found.items():
        for reason in reasons:
            assert len(reason) >= 60, f"{rule}: a reason a reviewer can judge, not {reason!r}"


def test_an_unacknowledged_finding_fails_synthesis(tmp_path: Any) -> None:
    """The checks are wired into the app itself, not only into these tests."""
    context = {
        **cdk_json_context(),
        "environments": {
            "nag": {"regions": ["us-west-2"], "egress": "nat-gateways", "allowPlaintext": True}
        },
        "env": "nag",
    }
    app = build_app(context, outdir=str(tmp_path))
    stack = app.node.find_child("wsgw-nag-us-west-2")
    sqs.Queue(stack, "Careless", encryption=sqs.QueueEncryption.UNENCRYPTED)
    with pytest.raises(RuntimeError, match="ValidationFailed") as failure:
        app.synth()
    for rule in ("SQS2", "SQS3", "SQS4"):
        assert f"AwsSolutions-{rule}" in str(failure.value)
    assert "wsgw-nag-us-west-2/Careless/Resource" in str(failure.value)


@pytest.fixture(scope="module")
def lint_results(stacks: dict[str, SynthesizedStack]) -> dict[str, list[Any]]:
    return {
        name: cfnlint.api.lint(stack.path.read_text(), regions=[stack.region])
        for name, stack in stacks.items()
    }


@pytest.mark.parametrize("name", stack_names())
def test_cfn_lint_finds_no_error_and_only_the_expected_warnings(
    name: str, lint_results: dict[str, list[Any]]
) -> None:
    matches = lint_results[name]
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.severity == "error"]
    assert errors == []
    warnings = {m.rule.id for m in matches if m.rule.severity != "error"}
    assert warnings <= EXPECTED_WARNINGS, [
        f"{m.rule.id} {m.message}" for m in matches if m.rule.id not in EXPECTED_WARNINGS
    ]
