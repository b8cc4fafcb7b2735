"""A node killed with SIGKILL: its members leave the cluster's presence answers within the
liveness timeout. Two real node processes over UDP on 127.0.0.1, real clients, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time

import aiohttp
from websockets.asyncio.client import connect

from runtime.origin.presence import PresenceClient
from tests.origin_server import RecordingOrigin
from tests.processes import free_ports, start_process

SECRET = "sigkill-presence-secret-0123456789"
TOKEN = "sigkill-token"
PEER_DOWN_SECONDS = 2.0


async def test_a_killed_node_drops_its_members_within_the_liveness_timeout(
    origin: RecordingOrigin,
) -> None:
    peer_ports = free_ports(2, socket.SOCK_DGRAM)
    processes = []
    addresses = []
    try:
        for own, other in ((0, 1), (1, 0)):
            process, found = await start_process(
                "--listen", "127.0.0.1:0", "--command-listen", "127.0.0.1:0",
                "--command-token", TOKEN, "--origin-url", origin.url,
                "--peer-secret", SECRET, "--peer-listen", f"127.0.0.1:{peer_ports[own]}",
                "--peers", f"127.0.0.1:{peer_ports[other]}",
                "--peer-down-seconds", str(PEER_DOWN_SECONDS),
            )  # fmt: skip
            processes.append(process)
            addresses.append(found)
        clients = []
        for found, count in zip(addresses, (2, 3), strict=True):
            for _ in range(count):
                clients.append(await connect(f"ws://{found['websocketAddress']}"))
        await origin.wait_for(lambda e: len(origin.of_type("CONNECT")) >= 5)
        ids = [event["requestContext"]["connectionId"] for event in origin.of_type("CONNECT")]
        survivor = PresenceClient(f"http://{addresses[0]['commandAddress']}", TOKEN)
        survivor_ids = set(ids[:2])  # the first two connected to the first node
        body = {"commands": [{"action": "subscribe", "connectionIds": ids, "channels": ["room"]}]}
        async with aiohttp.ClientSession() as session:
            url = f"http://{addresses[0]['commandAddress']}/commands"
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(url, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
        deadline = time.monotonic() + 10
        while (await asyncio.to_thread(survivor.count, "room")).count != 5:
            assert time.monotonic() < deadline, "the count never reached 5"
            await asyncio.sleep(0.05)
        processes[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        while True:
            answer = await asyncio.to_thread(survivor.count, "room")
            if answer.count == 2 and not answer.partial:
                break
            assert time.monotonic() - killed_at < PEER_DOWN_SECONDS + 3, answer
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - killed_at
        members = {member.connection_id for member in survivor.members("room")}
        assert members == survivor_ids
        print(f"members of the killed node gone from presence {elapsed:.2f} s after SIGKILL")
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
