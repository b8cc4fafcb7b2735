"""`python -m runtime local`, as `make run` starts it: two clients on different nodes chat through
SQS, SNS, the chat origin and UDP between the nodes; Ctrl-C stops everything."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from tests.processes import ROOT


def free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def chat_line(client: ClientConnection, text: str, timeout: float = 15) -> dict[str, Any]:
    """Wait for the chat line saying `text`; its sender sees it too, and system notices pass."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(client.recv(), deadline - time.monotonic()))
        if message.get("text") == text and not message.get("system"):
            return dict(message)


async def test_two_clients_on_two_nodes_chat() -> None:
    aws, page = free_ports(2)
    nodes = free_ports(2)
    peers = free_ports(2, socket.SOCK_DGRAM)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtime", "local",
        "--aws-port", str(aws), "--page-port", str(page),
        "--node-ports", ",".join(map(str, nodes)), "--peer-ports", ",".join(map(str, peers)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    urls: dict[str, list[str]] = {"page": [], "node": []}
    try:
        deadline = time.monotonic() + 30
        while len(urls["node"]) < 2:
            line = await asyncio.wait_for(process.stdout.readline(), deadline - time.monotonic())
            assert line, "runtime local exited before printing its URLs"
            kind, _, url = line.decode().strip().partition(": ")
            if kind in urls:
                urls[kind].append(url)
        assert urls["page"] == [f"http://127.0.0.1:{page}/"]
        async with aiohttp.ClientSession() as session:
            async with session.get(urls["page"][0]) as response:
                assert response.status == 200
                assert "wsgateway chat" in await response.text()
            async with session.get(urls["page"][0] + "config.json") as response:
                assert (await response.json())["nodes"] == urls["node"]

        alice = await connect(urls["node"][0] + "?room=test")
        bob = await connect(urls["node"][1] + "?room=test")
        await asyncio.sleep(1.0)  # both CONNECTs reach the origin through SQS
        await alice.send("hello from node 1")
        line = await chat_line(bob, "hello from node 1")
        await bob.send("hello from node 2")
        reply = await chat_line(alice, "hello from node 2")
        assert line["from"] != reply["from"]  # two connections, on two nodes
        await alice.close()
        await bob.close()

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
