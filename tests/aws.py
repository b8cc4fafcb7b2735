"""An embedded AWS for tests: moto's server on 127.0.0.1, reached by real boto3 clients.

The server runs once per test session; each test gets its own environment name, so queues and
topics never carry messages from one test into another (moto's SQS slows with queue depth).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import socket
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_environments = itertools.count(1)


@dataclass(frozen=True)
class MotoEndpoint:
    url: str
    region: str = REGION

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=self.region, endpoint_url=self.url)

    def environment(self) -> dict[str, str]:
        """What a subprocess needs to reach this endpoint through boto3's standard chain."""
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[MotoEndpoint]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # it logs every request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {key: os.environ.get(key) for key in (*CREDENTIALS, "AWS_DEFAULT_REGION")}
    os.environ.update({**CREDENTIALS, "AWS_DEFAULT_REGION": REGION})
    try:
        yield MotoEndpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def environment_name() -> str:
    """A fresh environment name per test: its resources are its own."""
    return f"t{next(_environments)}-{os.getpid() % 100_000}"


# Lambda: moto's simple backend (no docker) answers invokes with queued results.


def _moto_api(endpoint: MotoEndpoint, path: str, document: Any | None = None) -> Any:
    request = urllib.request.Request(
        endpoint.url + path,
        data=None if document is None else json.dumps(document).encode(),
        method="GET" if document is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def _create_function(endpoint: MotoEndpoint, name: str) -> None:
    role = endpoint.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handle(event, context):\n    return event\n")
    endpoint.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": code.getvalue()},
    )


@pytest.fixture
def lambda_backend(moto_endpoint: MotoEndpoint) -> Iterator[Callable[[bool], None]]:
    """Choose moto's Lambda backend (docker or simple) for this test; the old one comes back."""
    before = _moto_api(moto_endpoint, "/moto-api/config")["lambda"]

    def choose(use_docker: bool) -> None:
        _moto_api(moto_endpoint, "/moto-api/config", {"lambda": {"use_docker": use_docker}})

    yield choose
    _moto_api(moto_endpoint, "/moto-api/config", {"lambda": before})


@pytest.fixture
def simple_function(
    moto_endpoint: MotoEndpoint, environment_name: str, lambda_backend: Callable[[bool], None]
) -> Iterator[str]:
    """A function in moto's simple backend; results a test left queued are drained after it."""
    lambda_backend(False)
    name = f"{environment_name}-graphql"
    _create_function(moto_endpoint, name)
    yield name
    client = moto_endpoint.client("lambda")
    for _ in range(100):  # the queue is per region, shared by every test: leave it empty
        payload = client.invoke(FunctionName=name, Payload=b'{"drain":1}')["Payload"].read()
        if payload == b'{"drain":1}':
            break


async def queue_lambda_results(endpoint: MotoEndpoint, *results: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{endpoint.url}/moto-api/static/lambda-simple/response",
            json={"results": list(results), "region": endpoint.region},
        ) as response,
    ):
        assert response.status == 201


# Elastic Load Balancing: a target group with one IP target, as ECS registers a task behind an ALB.


def create_target_group(endpoint: MotoEndpoint, name: str, ip: str, port: int) -> str:
    """A VPC and an IP target group in it holding `ip:port`; returns the group's ARN."""
    vpc = endpoint.client("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    elbv2 = endpoint.client("elbv2")
    arn: str = elbv2.create_target_group(
        Name=name, Protocol="HTTP", Port=port, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": ip, "Port": port}])
    return arn


def moto_target_groups(endpoint: MotoEndpoint) -> dict[str, Any]:
    """moto's target groups by ARN: its server runs in this process, so tests reach into it."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.elbv2.models import elbv2_backends

    groups: dict[str, Any] = elbv2_backends[DEFAULT_ACCOUNT_ID][endpoint.region].target_groups
    return groups


def start_draining(endpoint: MotoEndpoint, arn: str, ip: str) -> None:
    """Turn a registered target `draining`, as a real ALB does for its deregistration delay.

    moto has no delay: DeregisterTargets makes an IP target `unused` (Target.NotRegistered) at
    once, and it says `draining` only of a group's "terminated" targets (see `health_for` in
    moto/elbv2/models.py). The server runs in this process, so the target is moved there.
    """
    group = moto_target_groups(endpoint)[arn]
    group.terminated_targets[ip] = group.targets.pop(ip)
