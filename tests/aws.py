"""An embedded AWS for tests: moto's server on 127.0.0.1, reached by real boto3 clients.

The server runs once per test session; each test gets its own environment name, so queues and
topics never carry messages from one test into another (moto's SQS slows with queue depth).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
