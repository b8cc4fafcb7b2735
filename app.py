"""The CDK app: one gateway stack per region of the environment that `-c env=<name>` names.

`cdk synth -c env=prod` (or `python app.py -c env=prod`) synthesizes every region of prod;
settings come from the `environments` object of cdk.json's context (see infra/config.py).
AWS Solutions checks (cdk-nag) run on every synthesis and fail it on an unacknowledged finding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import ConfigError, load_environment
from infra.stack import GatewayStack


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """The app with its stacks; `context` adds to (or, in tests, stands in for) cdk.json's."""
    app = cdk.App(context=dict(context) if context is not None else None, outdir=outdir)
    config = load_environment(app.node.try_get_context)
    account = config.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    for region in config.regions:  # independent: no stack needs another's resources
        GatewayStack(app, config=config, region=region, account=account)
    # Acknowledged findings are also written into each resource's Metadata (cdk_nag), so the
    # template itself shows reviewers what was accepted and why.
    cdk.Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True)
    )
    return app


def cli_context(argv: list[str]) -> dict[str, Any]:
    """cdk.json's context with `-c key=value` on top, for running this file without the CLI.

    Under the CLI the same values arrive in CDK_CONTEXT_JSON, which takes precedence anyway.
    """
    parser = argparse.ArgumentParser(description="Synthesize the gateway stacks.")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cdk_json = Path(__file__).resolve().parent / "cdk.json"
    context: dict[str, Any] = json.loads(cdk_json.read_text()).get("context", {})
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"-c takes KEY=VALUE (got {item!r})")
        context[key] = value
    return context


def main(argv: list[str]) -> int:
    try:
        app = build_app(cli_context(argv))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
