"""Nodes as a user starts them: `python -m runtime serve` subprocesses, their logs parsed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


async def start_process(
    *flags: str,
    expect: tuple[str, ...] = ("websocketAddress", "commandAddress"),
    env: dict[str, str] | None = None,
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start a node and wait for its 'listening' log lines; returns the addresses they name.

    Without `--peer-secret` among the flags the node runs `--local-only`.
    """
    local_only = () if "--peer-secret" in flags else ("--local-only", "true")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runtime",
        "serve",
        *local_only,
        *flags,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    addresses: dict[str, str] = {}
    deadline = time.monotonic() + 15
    try:
        while len(addresses) < len(expect):
            line = await asyncio.wait_for(process.stdout.readline(), deadline - time.monotonic())
            if not line:
                raise AssertionError("node exited before listening")
            record = json.loads(line)  # stdout is a pipe: every line must be JSON
            for key in expect:
                if key in record:
                    addresses[key] = record[key]
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, addresses


def keep_reading(
    process: asyncio.subprocess.Process,
) -> tuple[list[dict[str, Any]], asyncio.Task[None]]:
    """Collect the rest of a node's log lines, so a full pipe never blocks it."""
    records: list[dict[str, Any]] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            records.append(json.loads(line))

    return records, asyncio.create_task(read())


def free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class LocalPorts:
    """Ports for one `python -m runtime local`, kept so it can be restarted on the same ones."""

    aws: int
    page: int
    graphql: int
    nodes: tuple[int, int]
    peers: tuple[int, int]
    commands: tuple[int, int]

    @classmethod
    def free(cls) -> LocalPorts:
        aws, page, graphql, node_a, node_b, command_a, command_b = free_ports(7)
        peer_a, peer_b = free_ports(2, socket.SOCK_DGRAM)
        return cls(aws, page, graphql, (node_a, node_b), (peer_a, peer_b), (command_a, command_b))


async def start_local_system(
    ports: LocalPorts,
) -> tuple[asyncio.subprocess.Process, dict[str, list[str]]]:
    """`python -m runtime local` as `make run` starts it; returns its printed URLs by kind."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runtime",
        "local",
        "--aws-port",
        str(ports.aws),
        "--page-port",
        str(ports.page),
        "--graphql-port",
        str(ports.graphql),
        "--node-ports",
        ",".join(map(str, ports.nodes)),
        "--peer-ports",
        ",".join(map(str, ports.peers)),
        "--command-ports",
        ",".join(map(str, ports.commands)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return process, await read_local_urls(process, ("page", "node", "graphql", "aws"))


async def read_local_urls(
    process: asyncio.subprocess.Process, kinds: Sequence[str], seconds: float = 30
) -> dict[str, list[str]]:
    """The URLs `python -m runtime local` prints ("kind: url" lines, `aws` last), by kind;
    the process is killed if it exits or stays silent before then."""
    assert process.stdout is not None
    urls: dict[str, list[str]] = {kind: [] for kind in kinds}
    deadline = time.monotonic() + seconds
    try:
        while not urls["aws"]:
            line = await asyncio.wait_for(process.stdout.readline(), deadline - time.monotonic())
            if not line:
                raise AssertionError("runtime local exited before printing its URLs")
            kind, _, url = line.decode().strip().partition(": ")
            if kind in urls:
                urls[kind].append(url)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return urls


async def stop_local_system(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            return await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
    return await process.wait()


@dataclass
class NodeProcess:
    """A running `python -m runtime serve`: its URLs, its logs, and its command endpoint."""

    process: asyncio.subprocess.Process
    ws_url: str
    commands_url: str
    logs: list[dict[str, Any]]
    reader: asyncio.Task[None]
    token: str

    @classmethod
    async def start(cls, *flags: str, token: str) -> NodeProcess:
        """Start a node with a command endpoint on a free port, guarded by `token`."""
        process, addresses = await start_process(
            "--listen",
            "127.0.0.1:0",
            "--command-listen",
            "127.0.0.1:0",
            "--command-token",
            token,
            *flags,
        )
        logs, reader = keep_reading(process)
        return cls(
            process,
            f"ws://{addresses['websocketAddress']}",
            f"http://{addresses['commandAddress']}/commands",
            logs,
            reader,
            token,
        )

    async def post(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.commands_url, json={"commands": commands}, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            return dict(await r.json())

    async def stats(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = self.commands_url.rsplit("/", 1)[0] + "/stats"
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            return dict(await r.json())

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self.reader.cancel()


async def start_cluster(count: int, *flags: str, token: str, secret: str) -> list[NodeProcess]:
    """`count` nodes peered over UDP on loopback, returned once each sees all the others up."""
    ports = free_ports(count, socket.SOCK_DGRAM)
    nodes: list[NodeProcess] = []
    try:
        for port in ports:
            others = ",".join(f"127.0.0.1:{p}" for p in ports if p != port)
            nodes.append(
                await NodeProcess.start(
                    "--peer-listen",
                    f"127.0.0.1:{port}",
                    "--peer-secret",
                    secret,
                    "--peers",
                    others,
                    *flags,
                    token=token,
                )
            )
        # Broadcasts go to the peers a node knows to be up: wait until each sees all others.
        deadline = time.monotonic() + 10
        while not all([(await node.stats())["peers"]["peers_up"] == count - 1 for node in nodes]):
            assert time.monotonic() < deadline, "peers never came up"
            await asyncio.sleep(0.05)
    except BaseException:
        for node in nodes:
            await node.kill()
        raise
    return nodes
