"""What the peer protocol tells its caller: messages in, the fate of ours, peers up and down.

`Failed` means "not known to be delivered": a message in flight when its peer went down may
still have been delivered. Callers retry (at-least-once), as the command queue does anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.wire.connection_id import NodeAddress


@dataclass(frozen=True, slots=True)
class Delivered:
    """A whole message from `peer`, in the order that peer sent it."""

    peer: NodeAddress
    payload: bytes


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The peer delivered message `message_id`."""

    message_id: int


@dataclass(frozen=True, slots=True)
class Failed:
    """Message `message_id` is not known to have been delivered and will not be retried."""

    message_id: int
    peer: NodeAddress


@dataclass(frozen=True, slots=True)
class PeerUp:
    peer: NodeAddress


@dataclass(frozen=True, slots=True)
class PeerDown:
    peer: NodeAddress


Event = Delivered | Acknowledged | Failed | PeerUp | PeerDown
