"""The node's metrics, logged as CloudWatch Embedded Metric Format lines: connections per task
(the stack scales on it) and, in the same line, what moved since the line before."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect

from runtime.logs import JsonFormatter
from runtime.node.service import peers_from_settings
from runtime.wire.connection_id import NodeAddress
from tests.conftest import RunningNode, StartNode, connect_id, node_settings, send
from tests.doubles.memory import MemoryOrigin
from tests.transports.test_udp_peers import free_udp_port

INTERVAL = 0.05
COUNTS = (
    "MessagesIn",
    "MessagesOut",
    "EventsSent",
    "OriginErrors",
    "PeerDatagramsIn",
    "PeerDatagramsOut",
    "Drains",
)


def metric_lines(caplog: pytest.LogCaptureFixture, service: str) -> list[dict[str, Any]]:
    records = [r for r in caplog.records if r.name == "runtime.metrics"]
    lines = [json.loads(JsonFormatter().format(record)) for record in records]
    return [line for line in lines if line["ServiceName"] == service]


def totals(caplog: pytest.LogCaptureFixture, service: str) -> dict[str, int]:
    """Each count summed over every line so far: the node's totals, if no line lost any."""
    lines = metric_lines(caplog, service)
    return {name: sum(line[name] for line in lines) for name in COUNTS}


async def test_connections_metric_lines(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runtime.metrics")
    node = await start_node(metrics_interval=INTERVAL, service_name="gw-dev")
    async with connect(node.ws_url), connect(node.ws_url):
        await asyncio.sleep(0.3)
    lines = metric_lines(caplog, "gw-dev")
    assert lines
    assert max(line["ConnectionsPerTask"] for line in lines) == 2
    line = lines[-1]
    definition = line["_aws"]["CloudWatchMetrics"]
    assert len(definition) == 1  # one entry, one dimension: every metric of the node
    assert definition[0]["Namespace"] == "WsGateway"
    assert definition[0]["Dimensions"] == [["ServiceName"]]
    units = {metric["Name"]: metric["Unit"] for metric in definition[0]["Metrics"]}
    latency = {"OriginLatency": "Milliseconds"} if "OriginLatency" in line else {}
    assert units == {"ConnectionsPerTask": "Count", **dict.fromkeys(COUNTS, "Count"), **latency}
    assert set(units) <= set(line)  # every metric named has its value in the line
    # OriginLatency only in lines whose interval saw a delivery: the two CONNECTs' at least.
    assert any("OriginLatency" in line for line in lines)
    assert isinstance(line["_aws"]["Timestamp"], int)
    # A single node: no peer traffic, and no drain yet.
    assert totals(caplog, "gw-dev")["PeerDatagramsOut"] == 0
    assert totals(caplog, "gw-dev")["Drains"] == 0


async def until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def start_pair(start_node: StartNode) -> tuple[RunningNode, RunningNode]:
    """Two nodes peering over UDP on 127.0.0.1 (ServiceName a and b), each up in the other's
    eyes."""
    ports = free_udp_port(), free_udp_port()
    nodes = []
    for name, own, other in (("a", *ports), ("b", *ports[::-1])):
        overrides: dict[str, Any] = {
            "local_only": False,
            "peer_secret": "metrics-secret-0123456789",
            "peer_listen": ("127.0.0.1", own),
            "peer_advertise": NodeAddress("127.0.0.1", own),
            "peers": (NodeAddress("127.0.0.1", other),),
            "peer_metrics_interval": 0,
            "metrics_interval": INTERVAL,
            "service_name": name,
        }
        cluster = peers_from_settings(node_settings(**overrides))
        nodes.append(await start_node(MemoryOrigin(), cluster, **overrides))
    a, b = nodes
    await until(lambda: all(node.node.cluster.peers() for node in nodes))  # type: ignore[union-attr]
    return a, b


async def test_the_counts_move_with_real_traffic(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runtime.metrics")
    a, b = await start_pair(start_node)
    origin = b.origin
    async with connect(b.ws_url) as client:
        for text in ("one", "two", "three"):
            await client.send(text)
        await origin.wait_for(lambda events: len(events) == 4)  # CONNECT and 3 MESSAGEs
        # A command posted to a reaches the client on b over UDP.
        status, _ = await a.post_commands(send([connect_id(origin)], "hello"))
        assert status == 200
        assert await asyncio.wait_for(client.recv(), 5) == "hello"
        await until(lambda: totals(caplog, "b")["EventsSent"] == 4)
        await until(lambda: totals(caplog, "a")["PeerDatagramsOut"] > 0)
        b_totals = totals(caplog, "b")
        assert (b_totals["MessagesIn"], b_totals["MessagesOut"]) == (3, 1)
        assert b_totals["PeerDatagramsIn"] > 0 and b_totals["OriginErrors"] == 0
        latencies = [
            line["OriginLatency"] for line in metric_lines(caplog, "b") if "OriginLatency" in line
        ]
        assert latencies and all(latency >= 0 for latency in latencies)
        assert totals(caplog, "a")["MessagesIn"] == 0

        origin.up = False  # the origin's failures are counted, and its events kept
        await client.send("four")
        await until(lambda: totals(caplog, "b")["OriginErrors"] > 0)
        origin.up = True
        await until(lambda: totals(caplog, "b")["EventsSent"] == 5)

        assert await asyncio.wait_for(b.service.drain(), 10)
    assert totals(caplog, "b")["Drains"] == 1
    assert totals(caplog, "a")["Drains"] == 0


async def test_a_drain_logs_its_line_as_it_begins(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    """The task may be gone before the next interval: the drain's line does not wait for it."""
    caplog.set_level(logging.INFO, logger="runtime.metrics")
    node = await start_node(metrics_interval=3600, service_name="gw-drain")
    async with connect(node.ws_url) as client:
        await client.send("bye")
        await node.origin.wait_for(lambda events: len(events) == 2)
        assert metric_lines(caplog, "gw-drain") == []
        assert await asyncio.wait_for(node.service.drain(), 10)
    (line,) = metric_lines(caplog, "gw-drain")
    assert (line["Drains"], line["ConnectionsPerTask"], line["MessagesIn"]) == (1, 1, 1)
