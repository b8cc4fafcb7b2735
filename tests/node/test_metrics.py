"""Connections per task, logged as CloudWatch Embedded Metric Format lines the stack scales on."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect

from runtime.logs import JsonFormatter
from tests.conftest import StartNode


async def test_connections_metric_lines(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runtime.metrics")
    node = await start_node(metrics_interval=0.05, service_name="gw-dev")
    async with connect(node.ws_url), connect(node.ws_url):
        await asyncio.sleep(0.3)
    records = [r for r in caplog.records if r.name == "runtime.metrics"]
    assert records
    lines = [json.loads(JsonFormatter().format(record)) for record in records]
    assert max(line["ConnectionsPerTask"] for line in lines) == 2
    line = lines[-1]
    definition = line["_aws"]["CloudWatchMetrics"][0]
    assert definition == {
        "Namespace": "WsGateway",
        "Dimensions": [["ServiceName"]],
        "Metrics": [{"Name": "ConnectionsPerTask", "Unit": "Count"}],
    }
    assert line["ServiceName"] == "gw-dev"
    assert isinstance(line["_aws"]["Timestamp"], int)
