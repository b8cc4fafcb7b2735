"""Synthesizing the CDK app for tests, and reading the templates it writes.

The environments: cdk.json's `dev` (one region) and `prod` (two regions) exactly as users deploy
them, and `edge`, defined here, which turns every switch the other way (an explicit account,
three regions behind one global name in a hosted zone, one of them with its own certificate,
WAF with its own rate, existing alarm topics, a region's own VPC range, standard queues, events
through a standard SNS topic, NAT gateways, x86, and a GraphQL origin: a Lambda alias, by ARN).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Template

from app import build_app

ROOT = Path(__file__).resolve().parents[2]
CDK_JSON = ROOT / "cdk.json"
EDGE_CERTIFICATE = (
    "arn:aws:acm:eu-central-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
)
EDGE_GRAPHQL_FUNCTION = "arn:aws:lambda:eu-central-1:123456789012:function:wsgw-edge-graphql:live"
EDGE_REGIONS = ["eu-central-1", "us-west-2", "ap-southeast-2"]
EDGE_ALARM_TOPICS = {
    region: f"arn:aws:sns:{region}:123456789012:oncall-pager" for region in EDGE_REGIONS
}
EDGE = {
    "account": "123456789012",
    "regions": EDGE_REGIONS,
    "hostedZone": {"name": "example.net", "id": "Z04EDGE0000EXAMPLE"},
    "globalName": "live.example.net",
    # One region brings its own certificate (and name); the others get theirs from the zone.
    "certificateArn": {"eu-central-1": EDGE_CERTIFICATE},
    "domainName": {"eu-central-1": "eu.example.net"},
    "allowedOrigins": ["https://app.example.net", "https://*.preview.example.net"],
    "wafRateLimit": 500,
    "deletionProtection": False,
    "alarmTopicArn": EDGE_ALARM_TOPICS,
    "vpcCidr": {"ap-southeast-2": "172.20.0.0/16"},
    "flowLogs": "ALL",
    "commandsRetentionMinutes": 30,
    "fifo": False,
    "eventsVia": "sns",
    "egress": "nat-gateways",
    "natGateways": 2,
    "architecture": "X86_64",
    "exampleOrigin": True,
    "taskCpu": 2048,
    "taskMemory": 4096,
    "minTasks": 3,
    "maxTasks": 6,
    "drainSeconds": 60,
    "keepaliveSeconds": 30,
    "maxConnectionsPerTask": 50000,
    "connectionsPerTaskTarget": 30000,
    "cpuTargetPercent": 50,
    "logRetentionDays": 30,
    "graphqlOriginFunction": {
        "eu-central-1": EDGE_GRAPHQL_FUNCTION,
        "us-west-2": "wsgw-edge-graphql",
        "ap-southeast-2": "wsgw-edge-graphql",
    },
}


# The one warning the app may add: an environment whose alarms notify a topic nobody is
# subscribed to (no alarmEmail, no alarmTopicArn). Every other finding fails the tests.
UNSUBSCRIBED_ALARMS = "Annotation::wsgw:alarmsReachNobody"


def validation_findings(outdir: Path, *, allow_unsubscribed: bool = True) -> list[Any]:
    """Every finding of the synthesis's validation report, but the unsubscribed-alarms warning."""
    report = json.loads((outdir / "validation-report.json").read_text())
    return [
        violation
        for plugin in report["pluginReports"]
        for violation in plugin.get("violations", [])
        if not (allow_unsubscribed and violation["ruleName"] == UNSUBSCRIBED_ALARMS)
    ]


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


@dataclass(frozen=True)
class SynthesizedStack:
    """One stack's template, as a dict and as an assertions.Template, and what made it."""

    environment: str
    region: str
    settings: dict[str, Any]
    data: dict[str, Any]
    path: Path
    outdir: Path

    @property
    def template(self) -> Template:
        return Template.from_json(self.data)

    @property
    def name(self) -> str:
        return f"wsgw-{self.environment}-{self.region}"

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.data["Resources"].items()
            if resource["Type"] == resource_type
        }

    def one(self, resource_type: str) -> dict[str, Any]:
        found = list(self.resources(resource_type).values())
        assert len(found) == 1, f"{self.name}: {len(found)} {resource_type}"
        properties: dict[str, Any] = found[0]["Properties"]
        return properties


def environments() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Environment name -> (its settings, the whole context to synthesize it with)."""
    context = cdk_json_context()
    edge_context = {**context, "environments": {**context["environments"], "edge": EDGE}}
    return {
        "dev": (context["environments"]["dev"], context),
        "prod": (context["environments"]["prod"], context),
        "edge": (EDGE, edge_context),
    }


def stack_names(**only: Any) -> list[str]:
    """Names of the stacks the session synthesizes, optionally only those whose settings match.

    `stack_names(exampleOrigin=True)` lists the stacks that deploy the example origin; a
    setting absent from an environment counts as its default (`DEFAULTS`).
    """
    names = []
    for environment, (settings, _context) in environments().items():
        if all(settings.get(key, DEFAULTS[key]) == value for key, value in only.items()):
            names += [f"wsgw-{environment}-{region}" for region in settings["regions"]]
    return names


DEFAULTS: dict[str, Any] = {
    "fifo": True,
    "eventsVia": "sqs",
    "egress": "vpc-endpoints",
    "exampleOrigin": False,
    "architecture": "ARM64",
    "certificateArn": None,
    "allowPlaintext": False,
    "waf": True,
    "deletionProtection": True,
    "graphqlOriginFunction": None,
    "graphqlOnly": False,
}


def synthesize(environment: str, outdir: Path) -> list[SynthesizedStack]:
    """Synthesize one environment's app into `outdir`, validations and cdk-nag included."""
    settings, context = environments()[environment]
    app = build_app({**context, "env": environment}, outdir=str(outdir))
    app.synth()
    stacks = []
    for region in settings["regions"]:
        path = outdir / f"wsgw-{environment}-{region}.template.json"
        stacks.append(
            SynthesizedStack(
                environment=environment,
                region=region,
                settings=settings,
                data=json.loads(path.read_text()),
                path=path,
                outdir=outdir,
            )
        )
    return stacks
