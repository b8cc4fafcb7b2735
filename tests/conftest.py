"""Shared fixtures: in-process nodes on 127.0.0.1 with real sockets, and an in-memory origin."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from runtime.config import Settings
from runtime.node.service import NodeService
from runtime.transports.base import ClusterTransport, OriginTransport
from runtime.transports.graphql_origin import GraphqlOriginClient
from runtime.wire.connection_id import NodeAddress
from tests.aws import (  # noqa: F401 (fixtures)
    environment_name,
    lambda_backend,
    moto_endpoint,
    simple_function,
)
from tests.doubles.memory import MemoryOrigin
from tests.origin_server import RecordingOrigin

TOKEN = "test-token"


def node_settings(**overrides: Any) -> Settings:
    base = Settings(
        listen=("127.0.0.1", 0),
        command_listen=("127.0.0.1", 0),
        command_token=TOKEN,
        origin_url="http://127.0.0.1:9/unused",
        keepalive_interval=0,
        close_timeout=2,
        drain_seconds=5,
        local_only=True,
        peer_advertise=NodeAddress("127.0.0.1", 9100),
    )
    return dataclasses.replace(base, **overrides)


class RunningNode:
    """A started NodeService and the handles a test needs to reach it."""

    def __init__(self, service: NodeService, origin: Any) -> None:
        self.service = service
        self.node = service.node
        self.origin = origin

    @property
    def ws_url(self) -> str:
        host, port = self.node.ws_address  # type: ignore[misc]
        return f"ws://{host}:{port}"

    @property
    def http_url(self) -> str:
        host, port = self.node.ws_address  # type: ignore[misc]
        return f"http://{host}:{port}"

    @property
    def listener_url(self) -> str:
        """The command listener (/commands, presence, @connections)."""
        assert self.service.commands is not None
        return f"http://127.0.0.1:{self.service.commands.port}"

    @property
    def commands_url(self) -> str:
        return f"{self.listener_url}/commands"

    async def post_commands(
        self, body: Any, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = body if isinstance(body, bytes | str) else None
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.commands_url,
                data=data,
                json=None if data is not None else body,
                headers=headers,
            ) as response,
        ):
            return response.status, await response.json()


StartNode = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
async def origin() -> AsyncIterator[RecordingOrigin]:
    """A real HTTP origin on 127.0.0.1 that records every event."""
    server = await RecordingOrigin().start()
    yield server
    await server.stop()


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """Start nodes with given settings; all are stopped when the test ends."""
    running: list[RunningNode] = []

    async def start(
        origin: OriginTransport | None = None,
        cluster: ClusterTransport | None = None,
        graphql_origin: GraphqlOriginClient | None = None,
        **overrides: Any,
    ) -> RunningNode:
        origin = origin if origin is not None else MemoryOrigin()
        settings = node_settings(**overrides)
        service = NodeService(settings, origin, cluster, graphql_origin)
        await service.start()
        handle = RunningNode(service, origin)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if not handle.node.draining:
            await handle.service.stop()


def send(connection_ids: list[str], data: str, **extra: Any) -> dict[str, Any]:
    return {
        "commands": [{"action": "send", "connectionIds": connection_ids, "data": data, **extra}]
    }


def connect_id(origin: MemoryOrigin, index: int = -1) -> str:
    return origin.of_type("CONNECT")[index]["requestContext"]["connectionId"]
