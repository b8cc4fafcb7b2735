"""Three `python -m runtime serve` processes in one cluster over UDP, started as a user would."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.origin_server import RecordingOrigin
from tests.processes import NodeProcess, start_cluster

SECRET = "three-node-secret-0123456789"
TOKEN = "cluster-token"
DOWN_SECONDS = 1.0


@pytest.fixture
async def three_nodes(origin: RecordingOrigin) -> AsyncIterator[list[NodeProcess]]:
    nodes: list[NodeProcess] = []
    try:
        nodes = await start_cluster(
            3,
            "--origin-url", origin.url,
            "--peer-down-seconds", str(DOWN_SECONDS),
            "--keepalive-interval", "0",
            "--peer-metrics-interval", "0.3",
            token=TOKEN,
            secret=SECRET,
        )  # fmt: skip
        yield nodes
    finally:
        for node in nodes:
            await node.kill()


async def connect_clients(
    nodes: list[NodeProcess], origin: RecordingOrigin
) -> tuple[list[ClientConnection], list[str]]:
    clients, ids = [], []
    for node in nodes:
        before = len(origin.of_type("CONNECT"))
        clients.append(await connect(node.ws_url))
        events = await origin.wait_for(lambda e, n=before: len(origin.of_type("CONNECT")) > n)
        del events
        ids.append(origin.of_type("CONNECT")[-1]["requestContext"]["connectionId"])
    return clients, ids


async def nothing_more(client: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.recv(), 0.3)


async def test_commands_and_broadcasts_cross_the_cluster(
    three_nodes: list[NodeProcess], origin: RecordingOrigin
) -> None:
    a, b, c = three_nodes
    clients, ids = await connect_clients(three_nodes, origin)
    # A client on A receives a command posted to C.
    await c.post([{"action": "send", "connectionIds": [ids[0]], "data": "from C"}])
    assert await asyncio.wait_for(clients[0].recv(), 5) == "from C"
    # One send naming clients of all three nodes, posted to B.
    await b.post([{"action": "send", "connectionIds": ids, "data": "to all three"}])
    for client in clients:
        assert await asyncio.wait_for(client.recv(), 5) == "to all three"
    # A broadcast posted to B reaches every client exactly once.
    await b.post([{"action": "broadcast", "data": "everyone"}])
    for client in clients:
        assert await asyncio.wait_for(client.recv(), 5) == "everyone"
    for client in clients:
        await nothing_more(client)
    assert not origin.of_type("GONE")
    for client in clients:
        await client.close()
    stats = await a.stats()
    assert stats["peers"]["datagrams_received"] > 0
    assert stats["peers"]["peers_down"] == 0
    # The traffic counters are logged periodically too, every drop reason among them.
    deadline = time.monotonic() + 3
    while not any(r["message"] == "peer traffic" for r in a.logs):
        assert time.monotonic() < deadline, "no peer traffic log line"
        await asyncio.sleep(0.05)
    metrics = next(r for r in a.logs if r["message"] == "peer traffic")
    for key in ("datagrams_sent", "datagrams_received", "retransmitted", "peers_up"):
        assert key in metrics
    assert {"dropped_bad_mac", "dropped_duplicate", "dropped_stale"} <= set(metrics)
    assert any(r["message"] == "peer up" for r in a.logs)


async def test_killed_peer_yields_gone_and_spares_the_others(
    three_nodes: list[NodeProcess], origin: RecordingOrigin
) -> None:
    a, _, c = three_nodes
    clients, ids = await connect_clients(three_nodes, origin)
    c.process.send_signal(signal.SIGKILL)
    await c.process.wait()
    started = time.monotonic()
    await a.post([{"action": "send", "connectionIds": [ids[2]], "data": "to the dead"}])
    gone = await origin.wait_for(lambda e: bool(origin.of_type("GONE")), timeout=5)
    del gone
    elapsed = time.monotonic() - started
    assert elapsed < DOWN_SECONDS + 1.0
    assert origin.of_type("GONE")[0]["requestContext"]["connectionId"] == ids[2]
    # Commands for live peers are unaffected, and fast.
    started = time.monotonic()
    await a.post([{"action": "send", "connectionIds": [ids[1]], "data": "B lives"}])
    assert await asyncio.wait_for(clients[1].recv(), 5) == "B lives"
    assert time.monotonic() - started < 0.5
    # C is down now: another command for it fails at once, and broadcasts skip it.
    started = time.monotonic()
    await a.post([{"action": "send", "connectionIds": [ids[2]], "data": "again"}])
    assert time.monotonic() - started < 0.5
    await a.post([{"action": "broadcast", "data": "survivors"}])
    for client in clients[:2]:
        assert await asyncio.wait_for(client.recv(), 5) == "survivors"
    assert (await a.stats())["peers"]["peers_down"] == 1
    assert any(record["message"] == "peer down" for record in a.logs)
    for client in clients[:2]:
        await client.close()
