"""Test doubles for the node's transports: an origin that keeps what it receives (and can be
taken down), and a cluster of nodes in one process. Tests and nothing else use them, so they live
here and not in the node's image."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from runtime.core.execution import ClusterNode
from runtime.transports.base import OriginUnavailable
from runtime.wire.commands import PeerCommand
from runtime.wire.connection_id import NodeAddress


class MemoryOrigin:
    """Keeps every event it receives, decoded; can be taken down to test outages."""

    def __init__(
        self,
        *,
        max_batch_events: int = 500,
        max_batch_bytes: int = 4 << 20,
        max_event_bytes: int = 64 << 20,
        concurrency: int = 4,
    ) -> None:
        self.max_batch_events = max_batch_events
        self.linger = 0.0
        self.max_batch_bytes = max_batch_bytes
        self.max_event_bytes = max_event_bytes
        self.concurrency = concurrency
        self.events: list[dict[str, Any]] = []
        self.batches = 0
        self.up = True
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def deliver(self, events: Sequence[bytes]) -> None:
        if not self.up:
            raise OriginUnavailable("memory origin is down")
        async with self._changed:
            self.events.extend(json.loads(event) for event in events)
            self.batches += 1
            self._changed.notify_all()

    def of_type(self, event_type: str, connection_id: str | None = None) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events
            if event["requestContext"]["eventType"] == event_type
            and (
                connection_id is None
                or event["requestContext"].get("connectionId") == connection_id
            )
        ]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until `predicate(self.events)` holds; fail loudly with what did arrive."""

        async def satisfied() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))

        try:
            await asyncio.wait_for(satisfied(), timeout)
        except TimeoutError:
            kinds = [event["requestContext"]["eventType"] for event in self.events]
            raise AssertionError(
                f"origin condition not met in {timeout}s; events: {kinds}"
            ) from None
        return self.events


class MemoryCluster:
    """Nodes in one process reach each other by address, as the UDP transport will across hosts."""

    def __init__(self) -> None:
        self.nodes: dict[NodeAddress, ClusterNode] = {}

    def join(self, address: NodeAddress) -> MemoryClusterLink:
        """The link of the node at `address`; it is reachable once the link is started."""
        return MemoryClusterLink(self, address)

    def leave(self, address: NodeAddress) -> None:
        if self.nodes.pop(address, None) is not None:
            for node in self.nodes.values():
                node.peer_down(address)


class MemoryClusterLink:
    """One node's view of a MemoryCluster."""

    def __init__(self, cluster: MemoryCluster, address: NodeAddress) -> None:
        self.cluster = cluster
        self.address = address

    async def start(self, executor: ClusterNode) -> None:
        """Reachable from now on; the nodes already here and this one each see the other up."""
        for address, node in list(self.cluster.nodes.items()):
            node.peer_up(self.address)
            executor.peer_up(address)
        self.cluster.nodes[self.address] = executor

    async def stop(self) -> None:
        self.cluster.leave(self.address)

    def stats(self) -> dict[str, object]:
        return {"members": len(self.peers())}

    def peers(self) -> list[NodeAddress]:
        return [address for address in self.cluster.nodes if address != self.address]

    def members(self) -> set[NodeAddress]:
        return set(self.peers())

    def reachable(self) -> list[NodeAddress]:
        return self.peers()

    async def forward(self, node: NodeAddress, commands: Sequence[PeerCommand]) -> bool:
        target = self.cluster.nodes.get(node)
        if target is None:
            return False
        await target.execute(list(commands), from_peer=True)
        return True
