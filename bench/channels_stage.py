"""What the channel benchmark runs against: node processes (clustered over UDP on 127.0.0.1, or
alone), the origin that learns their connection IDs, and the HTTP clients that command them.

The harness (bench.channels) decides what to measure; this module starts things, waits until the
nodes have settled, and carries out the commands every phase needs (subscribing, reading stats).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench.common import BenchFailure
from bench.procs import Child, Fleet, free_port, free_udp_port, wait_listening
from runtime.transports.http1_client import HttpClient
from runtime.wire.connection_id import NodeAddress, parse_connection_id

SETTLE_TIMEOUT = 60.0  # seconds for nodes to report what they should (connections, peers)
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, f"no port in {url}"
    return port


@dataclass
class Node:
    name: str
    child: Child
    ws_url: str
    address: NodeAddress  # its peer address, the one inside its connection IDs
    client: HttpClient  # its command listener: /commands, /stats, /channels/...
    ids: list[str] = field(default_factory=list)  # its connections, from the origin


class Stage:
    """The processes of one phase and the ways to drive them; `close()` stops them all."""

    def __init__(self, fleet: Fleet, label: str, cpus: dict[str, int | None]) -> None:
        self.fleet = fleet
        self.label = label
        self.cpus = cpus
        # Hex: passed as flag values, where a token starting with "-" would read as a flag.
        self.token = secrets.token_hex(16)
        self.secret = secrets.token_hex(24)
        self.origin: Child | None = None
        self.origin_client: HttpClient | None = None
        self.origin_url = ""
        self.children: list[Child] = []
        self._clients: list[HttpClient] = []

    def _client(self, url: str, auth: bool = True, timeout: float = 30.0) -> HttpClient:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        client = HttpClient(url, headers=headers, timeout=timeout)
        self._clients.append(client)
        return client

    async def start_origin(self) -> None:
        """bench.origin: it keeps the live connection IDs from CONNECT and DISCONNECT events.
        The clients send nothing, so it never posts a command (its commands URL is unused)."""
        port = free_port()
        self.origin = self.fleet.python(
            f"channels-origin-{self.label}",
            [
                "-m", "bench.origin",
                "--listen", f"127.0.0.1:{port}",
                "--commands-url", "http://127.0.0.1:9/commands",
                "--token", self.token,
            ],
            self.cpus["generator"],
        )  # fmt: skip
        self.children.append(self.origin)
        await wait_listening(self.origin, port)
        self.origin_url = f"http://127.0.0.1:{port}"
        self.origin_client = self._client(self.origin_url + "/stats", auth=False)

    def spawn_nodes(self, count: int, *, clustered: bool, prefix: str = "node") -> list[Node]:
        """`count` nodes on the nodes' core, each with its own peer address; clustered: each
        lists all the others as `--peers`. Wait for them with `wait_listening_nodes`."""
        udp = [free_udp_port() for _ in range(count)]
        nodes = []
        for index in range(count):
            name = f"channels-{prefix}{index}-{self.label}"
            ws, commands = free_port(), free_port()
            address = NodeAddress("127.0.0.1", udp[index])
            if clustered:
                others = ",".join(f"127.0.0.1:{port}" for port in udp if port != udp[index])
                cluster = [
                    "--peer-secret", self.secret,
                    "--peers", others,
                    "--peer-metrics-interval", "0",
                ]  # fmt: skip
            else:
                cluster = ["--local-only", "true"]
            child = self.fleet.python(
                name,
                [
                    "-m", "runtime", "serve",
                    "--listen", f"127.0.0.1:{ws}",
                    "--command-listen", f"127.0.0.1:{commands}",
                    "--command-token", self.token,
                    "--origin-url", f"{self.origin_url}/events",
                    "--peer-listen", f"127.0.0.1:{udp[index]}",
                    *cluster,
                    "--keepalive-interval", "0",
                    "--log-level", "WARNING",
                    "--log-format", "json",
                ],
                self.cpus["nodes"],
            )  # fmt: skip
            self.children.append(child)
            client = self._client(f"http://127.0.0.1:{commands}/commands")
            nodes.append(Node(name, child, f"ws://127.0.0.1:{ws}/", address, client))
        return nodes

    async def wait_listening_nodes(self, nodes: Sequence[Node]) -> None:
        for node in nodes:
            for url in (node.ws_url, node.client.url):
                await wait_listening(node.child, port_of(url))

    def spawn_picows(self) -> tuple[Child, str]:
        """A picows server (C frame parser) on the nodes' core: the generator's ceiling."""
        port = free_port()
        child = self.fleet.python(
            f"channels-picows-{self.label}",
            ["-m", "bench.servers", "picows", "--listen", f"127.0.0.1:{port}"],
            self.cpus["nodes"],
        )
        self.children.append(child)
        return child, f"ws://127.0.0.1:{port}/"

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for child in self.children:
            self.fleet.stop(child)
        self.children = []

    # Asking the nodes

    async def stats(self, node: Node) -> dict[str, Any]:
        response = await node.client.request("GET", target="/stats")
        if response.status != 200:
            raise BenchFailure(f"{node.name}: GET /stats answered {response.status}")
        return response.json()  # type: ignore[no-any-return]

    async def post(self, node: Node, commands: list[dict[str, Any]]) -> float:
        """POST the commands; every one must be accepted. Returns the seconds it took."""
        body = _dumps({"commands": commands}).encode()
        started = time.monotonic()
        response = await node.client.request("POST", body)
        seconds = time.monotonic() - started
        if response.status != 200:
            raise BenchFailure(
                f"{node.name}: /commands answered {response.status}: {response.body[:300]!r}"
            )
        return seconds

    async def wait_until(
        self, nodes: Sequence[Node], what: str, ok: Callable[[dict[str, Any]], bool]
    ) -> None:
        """Until `ok(stats)` holds for every node's stats, within SETTLE_TIMEOUT."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            stats = [await self.stats(node) for node in nodes]
            if all(ok(s) for s in stats):
                return
            if time.monotonic() > deadline:
                raise BenchFailure(f"nodes did not reach {what}: {stats}")
            await asyncio.sleep(0.1)

    async def wait_peers(self, nodes: Sequence[Node]) -> None:
        others = len(nodes) - 1
        await self.wait_until(
            nodes, f"{others} peers up", lambda s: s["peers"]["peers_up"] >= others
        )

    async def settle(self, nodes: Sequence[Node], connections: Sequence[int]) -> None:
        """Until each node holds its connections and has delivered every event, and the origin
        has their IDs: each node's `ids` are then its connections."""
        wanted = dict(zip((node.name for node in nodes), connections, strict=True))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            stats = [await self.stats(node) for node in nodes]
            if all(
                s["connections"] == wanted[node.name] and s["bufferedEvents"] == 0
                for node, s in zip(nodes, stats, strict=True)
            ):
                break
            if time.monotonic() > deadline:
                raise BenchFailure(f"nodes did not settle at {connections}: {stats}")
            await asyncio.sleep(0.1)
        assert self.origin_client is not None
        response = await self.origin_client.request("GET", target="/ids")
        by_address: dict[NodeAddress, list[str]] = {node.address: [] for node in nodes}
        for connection_id in response.json():
            held = by_address.get(parse_connection_id(connection_id).node)
            if held is not None:
                held.append(connection_id)
        for node in nodes:
            node.ids = by_address[node.address]
            if len(node.ids) != wanted[node.name]:
                raise BenchFailure(
                    f"the origin knows {len(node.ids)} connections of {node.name}, "
                    f"which holds {wanted[node.name]}"
                )

    async def subscribe(
        self, node: Node, ids: Sequence[str], channels: Sequence[str], per_post: int = 10_000
    ) -> None:
        """Subscribe `ids` (connections of `node`) to `channels` through `node`, the node that
        holds them (so that a refusal comes back as an error), `per_post` IDs to a body."""
        for start in range(0, len(ids), per_post):
            chunk = list(ids[start : start + per_post])
            await self.post(
                node, [{"action": "subscribe", "connectionIds": chunk, "channels": list(channels)}]
            )
