"""Synthesized templates of the CDK app, made once per test session (a synthesis takes seconds).

Three apps: cdk.json's `dev` (one region) and `prod` (two regions) exactly as users deploy
them, and `edge` (tests/infra/synth.py), which turns every switch the other way. Each
synthesis runs the full validation, cdk-nag's AwsSolutions pack included, so the fixture
returning at all proves there is no unacknowledged finding.
"""

from __future__ import annotations

import pytest

from tests.infra.synth import SynthesizedStack, environments, synthesize


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SynthesizedStack]:
    """Every synthesized stack by name: wsgw-dev-us-east-1, wsgw-prod-eu-west-1, ..."""
    synthesized: list[SynthesizedStack] = []
    for environment in environments():
        synthesized += synthesize(environment, tmp_path_factory.mktemp(f"cdk-{environment}"))
    return {stack.name: stack for stack in synthesized}


@pytest.fixture
def stack(request: pytest.FixtureRequest, stacks: dict[str, SynthesizedStack]) -> SynthesizedStack:
    """The stack named by the test's `stack` parameter (parametrize with indirect=True)."""
    return stacks[request.param]
