"""`python -m runtime serve` as a user runs it: flags, logs, SIGTERM drain, bad settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.aws import MotoEndpoint, create_target_group, start_draining
from tests.origin_server import RecordingOrigin
from tests.processes import ROOT, free_ports, keep_reading, start_process


async def test_sigterm_drains_100_clients(origin: RecordingOrigin) -> None:
    drain_seconds = 5.0
    process, addresses = await start_process(
        "--listen", "127.0.0.1:0",
        "--command-listen", "127.0.0.1:0",
        "--command-token", "t0ken",
        "--origin-url", origin.url,
        "--drain-seconds", str(drain_seconds),
    )  # fmt: skip
    clients: list[ClientConnection] = []
    try:
        url = f"ws://{addresses['websocketAddress']}"
        clients = list(await asyncio.gather(*(connect(url) for _ in range(100))))
        await origin.wait_for(lambda e: len(e) >= 100)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)

        async def close_code(client: ClientConnection) -> int | None:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), drain_seconds)
            return client.close_code

        codes = await asyncio.gather(*(close_code(client) for client in clients))
        assert codes == [1001] * 100
        returncode = await asyncio.wait_for(process.wait(), drain_seconds + 2)
        elapsed = time.monotonic() - started
        assert returncode == 0
        assert elapsed < drain_seconds
        disconnects = origin.of_type("DISCONNECT")
        assert len(disconnects) == 100
        assert {d["disconnectStatusCode"] for d in disconnects} == {1001}
        connected = {e["requestContext"]["connectionId"] for e in origin.of_type("CONNECT")}
        assert {d["requestContext"]["connectionId"] for d in disconnects} == connected
        assert process.stdout is not None
        tail = [json.loads(line) for line in (await process.stdout.read()).splitlines()]
        assert any(record["message"] == "drained" for record in tail)
        assert all("connectionId" in r for r in tail if r["message"] == "disconnected")
    finally:
        for client in clients:
            await client.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_healthz_fails_while_draining(origin: RecordingOrigin) -> None:
    process, addresses = await start_process(
        "--listen", "127.0.0.1:0", "--command-listen", "", "--origin-url", origin.url,
        "--drain-seconds", "3", "--close-timeout", "2",
        expect=("websocketAddress",),
    )  # fmt: skip
    host, port = addresses["websocketAddress"].rsplit(":", 1)
    try:
        # A client that completes the handshake and then never answers the close.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        await origin.wait_for(lambda e: len(e) >= 1)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        health = await _get(host, int(port), "/healthz")
        assert health.startswith(b"HTTP/1.1 503")
        upgrade_refused = await _get(host, int(port), "/", upgrade=True)
        assert upgrade_refused.startswith(b"HTTP/1.1 503")
        assert await asyncio.wait_for(process.wait(), 5) == 0
        # The silent client was dropped at the close timeout; its DISCONNECT still went out.
        assert len(origin.of_type("DISCONNECT")) == 1
        writer.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _get(host: str, port: int, path: str, upgrade: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    extra = (
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if upgrade
        else b""
    )
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n")
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--max-message-bytes", "12"], {}, "--max-message-bytes must be between 1024"),
        ([], {"MAX_CONNECTIONS": "lots"}, "MAX_CONNECTIONS must be an integer (got 'lots')"),
        (["--origin-transport", "http"], {}, "--origin-url is required"),
        (["--origin-transport", "echo"], {}, "--command-token is required"),
        (["--allowed-origins", "example.com"], {}, "--allowed-origins allowed origin must"),
        (["--listen", "nowhere"], {}, "--listen must be host:port"),
        (
            ["--origin-transport", "echo", "--no-command-auth", "true"],
            {},
            "--peer-secret is required",
        ),
        (
            ["--origin-transport", "echo", "--no-command-auth", "1", "--local-only", "1"],
            {"PEER_LISTEN": "0.0.0.0:0"},
            "PEER_LISTEN needs a fixed port",
        ),
        (
            ["--origin-transport", "echo", "--no-command-auth", "1", "--local-only", "1"],
            {"TARGET_GROUP_ARN": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/g/1"},
            "--target-group-arn needs this node's IP in the target group: set --target-id",
        ),
        (
            ["--origin-transport", "echo", "--no-command-auth", "1", "--local-only", "1"],
            {"TARGET_ID": "10.0.0.7"},
            "--target-id names this node in --target-group-arn",
        ),
    ],
)
def test_bad_settings_stop_the_node_with_a_clear_message(
    flags: list[str], env: dict[str, str], message: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if k.upper() != k or "_" not in k}
    environment.update(PATH=os.environ.get("PATH", ""), **env)
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", *flags],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


async def test_builtin_echo_origin_answers_each_message() -> None:
    process, addresses = await start_process(
        "--listen", "127.0.0.1:0", "--command-listen", "127.0.0.1:0",
        "--origin-transport", "echo", "--no-command-auth", "true",
    )  # fmt: skip
    try:
        async with connect(f"ws://{addresses['websocketAddress']}") as client:
            await client.send("ping?")
            assert await asyncio.wait_for(client.recv(), 5) == "ping?"
            await client.send(b"\x00bytes")
            assert await asyncio.wait_for(client.recv(), 5) == b"\x00bytes"
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0


class TaskMetadata:
    """A fake ECS task metadata endpoint: the container's (its IP) and the task's (its status)."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.ip = ip
        self.desired_status = "RUNNING"
        self.container_reads = 0
        app = web.Application()
        app.router.add_get("/v4/abc", self._container)
        app.router.add_get("/v4/abc/task", self._task)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def start(self) -> TaskMetadata:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v4/abc"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _container(self, request: web.Request) -> web.Response:
        self.container_reads += 1
        return web.json_response({"Networks": [{"IPv4Addresses": [self.ip]}]})

    async def _task(self, request: web.Request) -> web.Response:
        return web.json_response({"DesiredStatus": self.desired_status, "KnownStatus": "RUNNING"})


async def test_drains_when_ecs_starts_stopping_the_task(origin: RecordingOrigin) -> None:
    """Behind an ALB the SIGTERM comes too late: the node drains on the metadata's STOPPED."""
    metadata = await TaskMetadata().start()
    process, addresses = await start_process(
        "--listen", "127.0.0.1:0", "--command-listen", "", "--origin-url", origin.url,
        "--drain-seconds", "5",
        expect=("websocketAddress",),
        env={"ECS_CONTAINER_METADATA_URI_V4": metadata.url},
    )  # fmt: skip
    try:
        async with connect(f"ws://{addresses['websocketAddress']}") as client:
            await origin.wait_for(lambda e: len(e) >= 1)
            await asyncio.sleep(1.5)  # polled and still RUNNING: nothing happens
            assert client.state.name == "OPEN"
            metadata.desired_status = "STOPPED"  # no signal at all
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 5)
            assert client.close_code == 1001
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await origin.wait_for(lambda e: len(origin.of_type("DISCONNECT")) == 1)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await metadata.stop()


async def test_sigterm_after_a_watcher_began_the_drain_lets_it_finish(
    origin: RecordingOrigin,
) -> None:
    """ECS sends SIGTERM once the load balancer has let go, which may be at once when the last
    client leaves: that signal must not cut short a drain still sending its DISCONNECTs."""
    metadata = await TaskMetadata().start()
    process, _addresses = await start_process(
        "--listen", "127.0.0.1:0", "--command-listen", "", "--origin-url", origin.url,
        "--drain-seconds", "10",
        expect=("websocketAddress",),
        env={"ECS_CONTAINER_METADATA_URI_V4": metadata.url},
    )  # fmt: skip
    records, reader = keep_reading(process)
    try:
        url = f"ws://{_addresses['websocketAddress']}"
        clients = [await connect(url) for _ in range(3)]
        await origin.wait_for(lambda e: len(e) >= 3)
        origin.hold = asyncio.Event()  # the DISCONNECTs will wait at the origin
        metadata.desired_status = "STOPPED"
        for client in clients:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 5)
            assert client.close_code == 1001
        process.send_signal(signal.SIGTERM)  # ECS's, while the drain still flushes
        await asyncio.sleep(1.0)
        assert process.returncode is None, "the first SIGTERM cut the drain short"
        origin.hold.set()
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await asyncio.wait_for(reader, 5)
        assert len(origin.of_type("DISCONNECT")) == 3
        messages = [r["message"] for r in records]
        assert "signal received while draining; finishing (signal again to stop now)" in messages
        assert "second signal; stopping without finishing the drain" not in messages
    finally:
        if origin.hold is not None:
            origin.hold.set()
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()
        await metadata.stop()


async def test_drains_when_the_load_balancer_drains_the_target(
    origin: RecordingOrigin, moto_endpoint: MotoEndpoint, environment_name: str
) -> None:
    """The documented signal: ELB says the task's target is draining (the metadata never says
    STOPPED here, and no signal is sent)."""
    clients_count = 20
    metadata = await TaskMetadata("127.0.0.1").start()
    port = free_ports(1)[0]
    group = create_target_group(moto_endpoint, environment_name, "127.0.0.1", port)
    process, addresses = await start_process(
        "--listen", f"127.0.0.1:{port}", "--command-listen", "", "--origin-url", origin.url,
        "--drain-seconds", "5",
        expect=("websocketAddress",),
        env={
            **moto_endpoint.environment(),
            "ECS_CONTAINER_METADATA_URI_V4": metadata.url,
            "TARGET_GROUP_ARN": group,
            "TARGET_HEALTH_INTERVAL": "1",
        },
    )  # fmt: skip
    records, reader = keep_reading(process)
    clients: list[ClientConnection] = []
    try:
        url = f"ws://{addresses['websocketAddress']}"
        clients = list(await asyncio.gather(*(connect(url) for _ in range(clients_count))))
        await origin.wait_for(lambda e: len(e) >= clients_count)
        deadline = time.monotonic() + 10
        while not any(r.get("state") == "healthy" for r in records):  # seen registered
            assert time.monotonic() < deadline, "the node never asked for its target's state"
            await asyncio.sleep(0.05)
        assert all(client.state.name == "OPEN" for client in clients)
        start_draining(moto_endpoint, group, "127.0.0.1")

        async def close_code(client: ClientConnection) -> int | None:
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 8)
            return client.close_code

        codes = await asyncio.gather(*(close_code(client) for client in clients))
        assert codes == [1001] * clients_count
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await asyncio.wait_for(reader, 5)
        disconnects = origin.of_type("DISCONNECT")
        assert len(disconnects) == clients_count
        assert {d["disconnectStatusCode"] for d in disconnects} == {1001}
        messages = [r["message"] for r in records]
        assert (
            "the load balancer target of this task is draining; draining (signal twice to stop now)"
            in messages
        )
        assert "signal received; draining (signal again to stop now)" not in messages
        assert metadata.container_reads == 1  # the task's IP, read once
    finally:
        for client in clients:
            await client.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()
        await metadata.stop()
