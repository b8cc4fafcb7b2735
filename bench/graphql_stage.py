"""What the GraphQL benchmark runs against: the GraphQL origin, the node and a picows server as
child processes, the HTTP clients that command and watch them, and the WebSocket clients
connected to them; and one timed fan-out, the unit every figure is made of.

The harness (bench.graphql) decides which fan-outs to run and what they must add up to; this
module only starts things, connects, waits until the node has settled, and times.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from picows import WSTransport, ws_connect

from bench import client as load
from bench.common import BenchFailure
from bench.graphql_clients import (
    SETUP_TIMEOUT,
    TEXT,
    Receiver,
    Watch,
    close,
    marker,
    open_subscribers,
    result_text,
    specs_for,
    tick_context,
)
from bench.graphql_results import Fanout, graphql_counters
from bench.procs import Child, Fleet, free_port, wait_listening
from runtime.transports.http1_client import HttpClient

ROUND_TIMEOUT = 10.0  # seconds one fan-out may take before it counts as incomplete

# Who receives each kind of fan-out: GraphQL subscribers of the node (publish), plain clients of
# the node (broadcast), plain clients of the picows server (picows: the generator's ceiling).
KINDS = ("publish", "broadcast", "picows")


class GraphqlStage:
    """The three child processes and every connection to them; `watches` counts what each kind
    of client gets (new ones for every scenario)."""

    def __init__(
        self,
        fleet: Fleet,
        cpus: dict[str, int | None],
        *,
        subscribers: int,
        message_bytes: int,
    ) -> None:
        self.fleet = fleet
        self.cpus = cpus
        self.subscribers = subscribers
        self.message_bytes = message_bytes
        self.token = secrets.token_hex(16)
        self.seq = 0
        self.watches = {kind: Watch() for kind in KINDS}  # each kind's clients; new per scenario
        self.node: Child | None = None
        self.origin: Child | None = None
        self.picows: Child | None = None  # the generator's ceiling: picows' broadcast
        self.trigger: WSTransport | None = None  # its control connection, while open
        self.ws_url = ""
        self.picows_url = ""
        self._clients: list[HttpClient] = []

    def _client(self, url: str, *, auth: bool = True) -> HttpClient:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        client = HttpClient(url, headers=headers, timeout=30)
        self._clients.append(client)
        return client

    async def start(self) -> None:
        ws_port, command_port, origin_port = free_port(), free_port(), free_port()
        self.origin = self.fleet.python(
            "graphql-origin",
            ["-m", "bench.graphql", "--serve-origin", f"127.0.0.1:{origin_port}"],
            self.cpus["origin"],
        )
        await wait_listening(self.origin, origin_port)
        self.node = self.fleet.python(
            "graphql-node",
            [
                "-m", "runtime", "serve",
                "--listen", f"127.0.0.1:{ws_port}",
                "--command-listen", f"127.0.0.1:{command_port}",
                "--command-token", self.token,
                "--origin-transport", "echo",  # to accept the plain clients; they send nothing
                "--graphql-origin-url", f"http://127.0.0.1:{origin_port}/",
                "--graphql-ka-interval", "0",
                "--keepalive-interval", "0",
                "--local-only", "true",
                "--log-level", "WARNING",
                "--log-format", "json",
            ],
            self.cpus["node"],
        )  # fmt: skip
        picows_port = free_port()
        self.picows = self.fleet.python(
            "graphql-picows",
            ["-m", "bench.servers", "picows", "--listen", f"127.0.0.1:{picows_port}"],
            self.cpus["node"],
        )
        await wait_listening(self.node, ws_port)
        await wait_listening(self.node, command_port)
        await wait_listening(self.picows, picows_port)
        self.ws_url = f"ws://127.0.0.1:{ws_port}/"
        self.picows_url = f"ws://127.0.0.1:{picows_port}/"
        self.commands = self._client(f"http://127.0.0.1:{command_port}/commands")
        self.node_stats_client = self._client(f"http://127.0.0.1:{command_port}/stats")
        self.origin_stats_client = self._client(f"http://127.0.0.1:{origin_port}/stats", auth=False)

    async def stop(self) -> None:
        """Close the HTTP clients, then stop the children."""
        for client in self._clients:
            await client.close()
        for child in (self.node, self.origin, self.picows):
            if child is not None:
                self.fleet.stop(child)

    def children(self) -> list[Child]:
        return [child for child in (self.node, self.origin, self.picows) if child]

    async def node_stats(self) -> dict[str, Any]:
        return (await self.node_stats_client.request("GET")).json()  # type: ignore[no-any-return]

    async def origin_stats(self) -> dict[str, Any]:
        return (await self.origin_stats_client.request("GET")).json()  # type: ignore[no-any-return]

    async def counters(self) -> dict[str, Any]:
        return {"node": await self.node_stats(), "origin": await self.origin_stats()}

    def unexpected(self) -> dict[str, int]:
        return {kind: watch.unexpected for kind, watch in self.watches.items()}

    async def subscribe(self, digests: list[str], key: str) -> list[WSTransport]:
        """N subscribers over `digests`; returns once the node holds every subscription."""
        n = self.subscribers
        watch = self.watches["publish"]
        opened = await open_subscribers(self.ws_url, specs_for(n, digests, key), watch)
        deadline = time.monotonic() + SETUP_TIMEOUT
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await self.node_stats()
            if (
                stats.get("graphqlSubscriptions") == n
                and stats.get("graphqlDistinctInputs") == len(digests)
                and stats.get("graphqlConnections") == n
            ):
                return opened
            await asyncio.sleep(0.1)
        close(opened)
        raise BenchFailure(
            f"the node did not register {n} subscriptions over {len(digests)} inputs: "
            f"{graphql_counters(stats)}; client errors {watch.errors[:3]}"
        )

    async def open_plain(self) -> list[WSTransport]:
        """N plain clients of the node (no subprotocol), the broadcasts' recipients; returns once
        the node holds them and the echo origin has had their CONNECT events."""
        n, watch = self.subscribers, self.watches["broadcast"]
        opened, failures = await load.open_many(self.ws_url, n, lambda _: Receiver(watch))
        transports = [transport for transport, _ in opened]
        if failures:
            close(transports)
            raise BenchFailure(f"{failures} of {n} plain connections to the node failed to open")
        deadline = time.monotonic() + SETUP_TIMEOUT
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = await self.node_stats()
            if (
                stats.get("connections") == 2 * n
                and stats.get("graphqlConnections") == n
                and stats.get("bufferedEvents") == 0
            ):
                return transports
            await asyncio.sleep(0.1)
        close(transports)
        raise BenchFailure(
            f"the node did not settle with {n} plain and {n} GraphQL connections: "
            f"{graphql_counters(stats)}, bufferedEvents {stats.get('bufferedEvents')}"
        )

    async def open_picows(self) -> list[WSTransport]:
        """N plain clients of the picows server, and its trigger."""
        n, watch = self.subscribers, self.watches["picows"]
        opened, failures = await load.open_many(self.picows_url, n, lambda _: Receiver(watch))
        transports = [transport for transport, _ in opened]
        if failures:
            close(transports)
            raise BenchFailure(f"{failures} connections to the picows server failed")
        self.trigger, _ = await asyncio.wait_for(
            ws_connect(load.quiet_listener, self.picows_url + "control"), load.CONNECT_TIMEOUT
        )
        await asyncio.sleep(0.3)
        return transports

    def close_trigger(self) -> None:
        if self.trigger is not None:
            self.trigger.disconnect()
            self.trigger = None

    async def unsubscribe(self, opened: list[WSTransport]) -> None:
        close(opened)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = await self.node_stats()
            if (
                stats["connections"] == 0
                and stats.get("graphqlSubscriptions") == 0
                and stats.get("bufferedEvents") == 0  # the plain clients' DISCONNECT events
            ):
                return
            await asyncio.sleep(0.1)
        raise BenchFailure(f"connections did not go away: {graphql_counters(stats)}")

    async def fan_out(self, kind: str, key: str) -> Fanout:
        """One fan-out to N clients, timed to the last one: a `publish` command to the node (its
        N GraphQL subscribers), a `broadcast` command to the node (its N plain clients: it skips
        GraphQL ones), or (`picows`) a broadcast by the picows server to its own N clients."""
        assert self.origin is not None
        self.seq += 1
        seq, size = self.seq, self.message_bytes
        context = tick_context(seq, size)
        if kind == "publish":
            command: dict[str, Any] = {"action": "publish", "keys": [key], "context": context}
        else:
            command = {"action": "broadcast", "data": result_text(seq, context["pad"])}
        body = json.dumps({"commands": [command]}, separators=(",", ":")).encode()
        server = self.picows if kind == "picows" else self.node
        assert server is not None
        finished = self.watches[kind].arm(marker(seq), self.subscribers)
        # This process's CPU from time.process_time(), also to the nanosecond.
        node0, origin0 = server.exact_cpu_seconds(), self.origin.exact_cpu_seconds()
        mine0 = time.process_time()
        started = time.perf_counter()
        if kind == "picows":
            assert self.trigger is not None
            self.trigger.send(TEXT, result_text(seq, context["pad"]).encode())
        else:
            response = await self.commands.request("POST", body)
            if response.status != 200:
                raise BenchFailure(f"/commands answered {response.status}: {response.body[:300]!r}")
        try:
            seconds: float | None = await asyncio.wait_for(finished, ROUND_TIMEOUT) - started
        except TimeoutError:
            seconds = None
        return Fanout(
            kind,
            seconds,
            server.exact_cpu_seconds() - node0,
            self.origin.exact_cpu_seconds() - origin0,
            time.process_time() - mine0,
        )
