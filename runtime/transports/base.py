"""What the node needs of its transports; each concrete one lives in its own module."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runtime.core.execution import ClusterNode
from runtime.wire.commands import PeerCommand
from runtime.wire.connect_answer import ConnectAnswer
from runtime.wire.connection_id import NodeAddress
from runtime.wire.events import HandshakeDetails


class OriginUnavailable(Exception):
    """The origin did not take a batch; the node keeps the events and retries."""


class OriginRefused(OriginUnavailable):
    """Some events of a batch can never be carried (too large, refused by the service).

    Every other event of the batch was delivered or is safe to hand again: a transport that
    raises this remembers what it delivered, so the pump drops `refused` (positions in the
    batch) and hands the rest again at once, rather than retrying at the head of the line.
    """

    def __init__(self, message: str, refused: Sequence[int]) -> None:
        super().__init__(message)
        self.refused = tuple(refused)


class OriginTransport(Protocol):
    """Carries event batches to the origin. `deliver` returns only once the origin has them."""

    # Read-only to the node: a transport may compute them (or learn them at `start`).

    @property
    def max_batch_events(self) -> int: ...

    @property
    def max_batch_bytes(self) -> int: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def linger(self) -> float:
        """Seconds the pump may wait for a batch to fill before sending what it has (0: never
        waits); worth it where each request is billed, as on SQS and SNS."""
        ...

    @property
    def max_event_bytes(self) -> int:
        """The largest event one delivery can carry, known once `start` returned; the node
        refuses bigger ones at the door (a handshake, a message) rather than wedge the pump."""
        ...

    async def start(self) -> None: ...

    async def deliver(self, events: Sequence[bytes]) -> None: ...

    async def close(self) -> None: ...


class CommandSource(Protocol):
    """Hands the origin's commands to the node, its executor from construction on: the HTTP
    command endpoint, the SQS commands queue's poller.

    Started once the node runs. The queue's poller stops before the node drains (other nodes
    deliver what arrives meanwhile); the endpoint after (its @connections calls are answered to
    the end).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ClusterTransport(Protocol):
    """Carries commands to the node holding their connections, and theirs to this one.

    The service starts it before the node and stops it after the node's command sources, so
    forwards made while draining still travel.
    """

    async def start(self, executor: ClusterNode) -> None:
        """Listen; commands peers forward go to `executor` (this node) from now on, and so does
        news of peers coming up and going down."""
        ...

    async def stop(self) -> None: ...

    def stats(self) -> Mapping[str, object]:
        """Counters for the node's /stats (under "peers")."""
        ...

    def peers(self) -> Sequence[NodeAddress]:
        """Live nodes other than this one (broadcasts go to each)."""
        ...

    def members(self) -> Container[NodeAddress]:
        """Nodes of the cluster other than this one, up or not: the only ones ever sent to."""
        ...

    def reachable(self) -> Sequence[NodeAddress]:
        """Members up, or not heard from yet (this node just started): all but those known down.
        A publish to a channel goes to each whose channels are not known, so one taken in a
        node's first moments misses no subscriber."""
        ...

    async def forward(self, node: NodeAddress, commands: Sequence[PeerCommand]) -> bool:
        """True once `node` has the commands; False if it is unknown or down (then: GONE)."""
        ...


class NoOrigin:
    """`--origin-transport none`: GraphQL-only. Only GONE events reach it, and they are dropped."""

    max_batch_events = 500
    max_batch_bytes = 4 << 20
    max_event_bytes = 64 << 20  # only GONE events, which it drops
    concurrency = 1
    linger = 0.0

    async def start(self) -> None:
        return None

    async def deliver(self, events: Sequence[bytes]) -> None:
        return None

    async def close(self) -> None:
        return None


# At the door: authorizers and the synchronous $connect handler, asked before the 101.


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the handshake go on; `context` becomes `requestContext.authorizer` in every event of
    the connection (API Gateway's place for it), or is left out when empty."""

    context: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the handshake with this HTTP status; `reason` is the response's text body and goes
    to the log (never a secret: the client reads it)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()  # e.g. Retry-After on a 429, WWW-Authenticate


Verdict = Allow | Refuse


class HandshakeAuthorizer(Protocol):
    """Decides whether a handshake may connect, before any event exists for it.

    `authorize` never raises: a failure of the authorizer itself is a `Refuse` with the status
    its settings name for errors (never an `Allow`). `request_context` is the requestContext of
    the $connect event the node would send (connectionId, apiId, stage, identity, ...).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def authorize(
        self, details: HandshakeDetails, request_context: Mapping[str, object]
    ) -> Verdict: ...

    def stats(self) -> dict[str, int]: ...


class ConnectHandler(Protocol):
    """The user's $connect handler, called during the handshake with the $connect event.

    `call` never raises: a timeout or an error is a `ConnectAnswer` with the error status its
    settings name, so a failing handler refuses, never accepts."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, event: bytes) -> ConnectAnswer: ...

    def stats(self) -> dict[str, int]: ...
