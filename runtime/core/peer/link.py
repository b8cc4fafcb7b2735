"""One remote node as this node knows it: the halves of its state, joined.

Each concern keeps its own state for the peer (our stream to it in `sending`, its stream to us in
`receiving`, its liveness in `liveness`); the link holds what they share: where the peer is and
which run of it we talk to, which every datagram we send to it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.wire.connection_id import NodeAddress

if TYPE_CHECKING:  # the halves refer to links: imported for the annotations only
    from runtime.core.peer.liveness import Liveness
    from runtime.core.peer.receiving import InboundStream
    from runtime.core.peer.sending import OutboundStream


class PeerLink:
    """Everything about one remote node, by concern."""

    __slots__ = (
        "address",
        "encoded",
        "inbound",
        "last_rx",
        "last_tx",
        "liveness",
        "outbound",
        "remote_session",
        "removed",
        "route",
    )

    def __init__(
        self,
        address: NodeAddress,
        encoded: bytes,
        route: bytes,
        outbound: OutboundStream,
        inbound: InboundStream,
        liveness: Liveness,
        now: float,
    ) -> None:
        self.address = address
        self.encoded = encoded
        self.route = route  # our address, its address, our session: the fixed middle of a header
        self.remote_session = 0  # its run as we know it, 0 while unknown: binds what we send
        self.removed = False  # forgotten: anything still queued for it is skipped
        self.outbound = outbound  # our stream to it
        self.inbound = inbound  # its stream to us
        self.liveness = liveness
        self.last_rx = now  # traffic either way: idle links are forgotten
        self.last_tx = now
