"""Three `python -m runtime serve` processes in one cluster over UDP, started as a user would."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.origin_server import RecordingOrigin
from tests.processes import keep_reading, start_process
from tests.transports.test_udp_peers import free_udp_port

SECRET = "three-node-secret-0123456789"
TOKEN = "cluster-token"
DOWN_SECONDS = 1.0


@dataclass
class NodeProcess:
    process: asyncio.subprocess.Process
    ws_url: str
    commands_url: str
    logs: list[dict[str, Any]]
    reader: asyncio.Task[None]

    async def post(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.commands_url, json={"commands": commands}, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            return dict(await r.json())

    async def stats(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = self.commands_url.rsplit("/", 1)[0] + "/stats"
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            return dict(await r.json())


@pytest.fixture
async def three_nodes(origin: RecordingOrigin) -> AsyncIterator[list[NodeProcess]]:
    ports = [free_udp_port() for _ in range(3)]
    nodes: list[NodeProcess] = []
    try:
        for port in ports:
            others = ",".join(f"127.0.0.1:{p}" for p in ports if p != port)
            process, addresses = await start_process(
                "--listen", "127.0.0.1:0",
                "--command-listen", "127.0.0.1:0",
                "--command-token", TOKEN,
                "--origin-url", origin.url,
                "--peer-listen", f"127.0.0.1:{port}",
                "--peer-secret", SECRET,
                "--peers", others,
                "--peer-down-seconds", str(DOWN_SECONDS),
                "--keepalive-interval", "0",
                "--peer-metrics-interval", "0.3",
            )  # fmt: skip
            logs, reader = keep_reading(process)
            nodes.append(
                NodeProcess(
                    process,
                    f"ws://{addresses['websocketAddress']}",
                    f"http://{addresses['commandAddress']}/commands",
                    logs,
                    reader,
                )
            )
        # Broadcasts go to the peers a node knows to be up: wait until each sees both others.
        deadline = time.monotonic() + 10
        while not all([(await node.stats())["peers"]["peers_up"] == 2 for node in nodes]):
            assert time.monotonic() < deadline, "peers never came up"
            await asyncio.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            if node.process.returncode is None:
                node.process.kill()
            await node.process.wait()
            node.reader.cancel()


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
