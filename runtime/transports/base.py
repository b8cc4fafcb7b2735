"""What the node needs of its transports; each concrete one lives in its own module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from runtime.wire.commands import Command
from runtime.wire.connection_id import NodeAddress


class OriginUnavailable(Exception):
    """The origin did not take a batch; the node keeps the events and retries."""


class OriginTransport(Protocol):
    """Carries event batches to the origin. `deliver` returns only once the origin has them."""

    max_batch_events: int
    max_batch_bytes: int
    concurrency: int

    async def start(self) -> None: ...

    async def deliver(self, events: Sequence[bytes]) -> None: ...

    async def close(self) -> None: ...


class CommandExecutor(Protocol):
    """The part of a node that transports hand commands to."""

    async def execute(self, commands: Sequence[Command], *, from_peer: bool = False) -> object: ...


class ClusterTransport(Protocol):
    """Carries commands to the node holding their connections."""

    def peers(self) -> Sequence[NodeAddress]:
        """Live nodes other than this one (broadcasts go to each)."""
        ...

    async def forward(self, node: NodeAddress, commands: Sequence[Command]) -> bool:
        """True once `node` has the commands; False if it is unknown or down (then: GONE)."""
        ...


class NoOrigin:
    """`--origin-transport none`: GraphQL-only. Only GONE events reach it, and they are dropped."""

    max_batch_events = 500
    max_batch_bytes = 4 << 20
    concurrency = 1

    async def start(self) -> None:
        return None

    async def deliver(self, events: Sequence[bytes]) -> None:
        return None

    async def close(self) -> None:
        return None
