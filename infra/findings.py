"""Accepting a best-practice finding where it arises, with the reason a reviewer reads.

Acknowledgments go on the CloudFormation resource itself (not a whole subtree), so that a new,
different finding elsewhere still fails synthesis; app.py also writes them into the template's
Metadata, where the reason stays visible to whoever reviews the deployed stack.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct


def acknowledge(resource: IConstruct | None, rule: str, reason: str) -> None:
    """Accept `rule` (e.g. AwsSolutions-S1, or AwsSolutions-IAM5[Resource::*]) on `resource`."""
    if resource is None:
        raise ValueError(f"nothing to acknowledge {rule} on")
    cdk.Validations.of(resource).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
