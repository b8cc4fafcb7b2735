"""The seam between the node and everything that hands it commands.

The HTTP command endpoint, the SQS commands poller, the UDP peers and the echo origin all carry
commands to a node and read back what became of them; they depend on these two types, never on
the node itself, so each can be built and tested against any executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runtime.wire.commands import PeerCommand
from runtime.wire.connection_id import NodeAddress


@dataclass(slots=True)
class Outcome:
    """What became of a list of commands: how many were taken, and why the others were not
    (their positions in the list, each with the error the origin reads)."""

    accepted: int = 0
    rejections: list[tuple[int, str]] = field(default_factory=list)


class CommandExecutor(Protocol):
    """Carries out commands in order; returns once local writes are done and peers have theirs.

    `from_peer` marks commands another node forwarded: they are never forwarded again.
    """

    async def execute(
        self, commands: Sequence[PeerCommand], *, from_peer: bool = False
    ) -> Outcome: ...


class ClusterNode(CommandExecutor, Protocol):
    """A node as its cluster transport sees it: it executes what peers forward, and hears when a
    peer comes up (a new or restarted node: tell it what it must know) or goes down (forget what
    it held)."""

    def peer_up(self, peer: NodeAddress) -> None: ...

    def peer_down(self, peer: NodeAddress) -> None: ...
