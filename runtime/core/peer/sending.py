"""Our streams to the peers: sequence numbers, fragments, the window, timers and retransmission.

Each DATA packet has a per (our session, peer) sequence number that is never reused; messages
are cut into fragments of consecutive numbers so that no datagram needs IP fragmentation. `base`,
our oldest unacknowledged packet, rides in every DATA: it lets a receiver with no state start,
and lets us, having given up on a peer (marked down), tell it to skip what we abandoned.

Packets are sent within a window (one packet, the probe, until we know the peer's session) and
resent when their timer, the link's RTO backed off exponentially, runs out; acks are read by
`recovery`, which also decides what to resend early. A timeout of a packet beyond what the
receiver's acks can show proves nothing (it probably waits behind a hole): it is deferred once
("parked") until an ack brings it into view.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from runtime.core.peer.codec import SACK_BITS, data_datagram
from runtime.core.peer.events import Event, Failed
from runtime.core.peer.link import PeerLink
from runtime.wire.connection_id import NodeAddress


class Message:
    """A queued payload and how far its fragments have gone out."""

    __slots__ = ("count", "failed", "first_seq", "id", "next_index", "payload")

    def __init__(self, message_id: int, payload: memoryview, count: int) -> None:
        self.id = message_id
        self.payload = payload
        self.count = count
        self.next_index = 0
        self.first_seq = 0
        self.failed = False


class Packet:
    """One fragment on the wire, kept until a cumulative ack passes it or we give up."""

    __slots__ = (
        "backoff",
        "chunk",
        "deadline",
        "done",
        "first_sent",
        "index",
        "link",
        "message",
        "parked",
        "retransmitted",
        "sent_at",
        "seq",
    )

    def __init__(
        self, link: PeerLink, message: Message, seq: int, index: int, chunk: memoryview, now: float
    ) -> None:
        self.link = link
        self.message = message
        self.seq = seq
        self.index = index
        self.chunk = chunk
        self.first_sent = now
        self.sent_at = now
        self.deadline = 0.0
        self.backoff = 0
        self.retransmitted = False
        self.parked = False  # its timeout was deferred once, waiting to come into view
        self.done = False  # acknowledged (cumulatively or by SACK) or abandoned


class OutboundStream:
    """Our stream to one peer: what waits, what is in flight, and its round-trip estimate."""

    __slots__ = (
        "acked_cum",
        "checked_start",
        "flight",
        "next_seq",
        "parked",
        "queue",
        "rto",
        "rttvar",
        "sendable",
        "srtt",
    )

    def __init__(self, seq: int, rto: float) -> None:
        self.next_seq = seq
        # Sent and not yet passed by a cumulative ack (SACKed ones are `done` but stay).
        self.flight: deque[Packet] = deque()
        self.queue: deque[Message] = deque()  # messages with fragments not yet sent
        self.sendable = False
        self.acked_cum = 0  # the highest cumulative ack seen
        # Timed-out packets beyond what the receiver's acks can show, by seq (see `visible`).
        self.parked: list[tuple[int, Packet]] = []
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto
        self.checked_start = 0  # the receiver's last `start` compared with our flight

    def visible(self) -> int:
        """The highest seq the receiver's acks can report: a timeout beyond it proves nothing."""
        head = self.flight[0].seq if self.flight else self.next_seq
        return max(self.acked_cum, head) + SACK_BITS


class Sender:
    """The sending side for all peers: its timers and the links with something to send."""

    __slots__ = (
        "_chunk",
        "_events",
        "_key",
        "_stats",
        "_tiebreak",
        "_timers",
        "fast",
        "first_rto",
        "max_rto",
        "sendable",
        "window",
    )

    def __init__(
        self,
        *,
        key: bytes,
        chunk: int,
        window: int,
        min_rto: float,
        max_rto: float,
        events: list[Event],
        stats: dict[str, int],
    ) -> None:
        self._key = key
        self._chunk = chunk
        self.window = window
        self.max_rto = max_rto
        self.first_rto = min(max(1.0, min_rto), max_rto)
        self._events = events
        self._stats = stats
        self.fast: list[Packet] = []  # to resend at the next send, before the timers
        self.sendable: list[PeerLink] = []  # links with queued messages and room in flight
        self._timers: list[tuple[float, int, Packet]] = []
        self._tiebreak = itertools.count()

    # -- messages in -------------------------------------------------------------------------

    def queue(self, link: PeerLink, message_id: int, payload: bytes) -> None:
        count = max(1, -(-len(payload) // self._chunk))
        link.outbound.queue.append(Message(message_id, memoryview(payload), count))
        self.wake(link)

    def fail(self, message_id: int, peer: NodeAddress) -> None:
        self._stats["messages_failed"] += 1
        self._events.append(Failed(message_id, peer))

    def abandon(self, link: PeerLink) -> None:
        """We gave up on the peer: fail what it has not delivered; `base` will skip it."""
        stream = link.outbound
        messages: list[Message] = []
        for packet in stream.flight:
            packet.done = True
            if not packet.message.failed:
                packet.message.failed = True
                messages.append(packet.message)
        stream.flight.clear()
        stream.parked.clear()
        for message in stream.queue:
            if not message.failed:
                message.failed = True
                messages.append(message)
        stream.queue.clear()
        for message in messages:
            self.fail(message.id, link.address)

    def resend_all(self, link: PeerLink) -> None:
        """The peer is a new run: everything in flight to it was bound to another run (or to
        none), which drops it, SACKed or not: send it all again now, and what waited."""
        stream = link.outbound
        stream.checked_start = 0
        for packet in stream.flight:
            packet.done = False
            packet.retransmitted = True
            self.fast.append(packet)
        self.wake(link)

    # -- datagrams out -----------------------------------------------------------------------

    def window_for(self, link: PeerLink) -> int:
        """Packets in flight to the peer: one, the probe, until we know its session."""
        return self.window if link.remote_session else 1

    def wake(self, link: PeerLink) -> None:
        stream = link.outbound
        if stream.sendable or not stream.queue:
            return
        flight = stream.flight
        if flight and stream.next_seq - flight[0].seq >= self.window_for(link):
            return
        stream.sendable = True
        self.sendable.append(link)

    def send_queued(self, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]) -> bool:
        """New data to every sendable link; True if a flight began, for down detection to watch."""
        sendable, self.sendable = self.sendable, []
        began = False
        for link in sendable:
            link.outbound.sendable = False
            if not link.removed:
                began = self._send_new(link, now, ms, out) or began
        return began

    def _send_new(
        self, link: PeerLink, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]
    ) -> bool:
        stream = link.outbound
        flight, queue = stream.flight, stream.queue
        seq = stream.next_seq
        began = not flight
        base = seq if began else flight[0].seq
        limit = base + self.window_for(link)
        size, key, route, address = self._chunk, self._key, link.route, link.address
        bound_to = link.remote_session
        deadline = now + stream.rto
        timers, tiebreak = self._timers, self._tiebreak
        while queue and seq < limit:
            message = queue[0]
            index = message.next_index
            if not index:
                message.first_seq = seq
            message.next_index = index + 1
            if index + 1 == message.count:
                queue.popleft()
            chunk = message.payload[index * size : index * size + size]
            packet = Packet(link, message, seq, index, chunk, now)
            packet.deadline = deadline
            flight.append(packet)
            datagram = data_datagram(
                key, ms, route, bound_to, base, seq, index, message.count, chunk
            )
            out.append((address, datagram))
            heapq.heappush(timers, (deadline, next(tiebreak), packet))
            seq += 1
        stream.next_seq = seq
        link.last_tx = now
        return began

    def send_retransmissions(
        self, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]
    ) -> None:
        """Fast retransmissions first, then the packets whose timers ran out."""
        if self.fast:
            fast, self.fast = self.fast, []
            for packet in fast:
                if not packet.done:
                    self._retransmit(packet, now, ms, out)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, packet = heapq.heappop(timers)
            if packet.done or packet.deadline != deadline:
                continue
            packet.backoff += 1
            link = packet.link
            if not packet.parked and packet.seq > link.outbound.visible():
                # Probably received, waiting behind a hole beyond the SACK bitmap's reach: defer
                # once by a backoff period, unless the ack that brings it into view comes first.
                packet.parked = True
                heapq.heappush(link.outbound.parked, (packet.seq, packet))
                packet.deadline = deadline = now + self._backoff(link, packet)
                heapq.heappush(timers, (deadline, next(self._tiebreak), packet))
                continue
            self._retransmit(packet, now, ms, out)

    def next_timer(self) -> float | None:
        """The earliest live retransmission deadline (dropping stale heap entries on the way)."""
        timers = self._timers
        while timers:
            deadline, _, packet = timers[0]
            if not packet.done and packet.deadline == deadline:
                return deadline
            heapq.heappop(timers)
        return None

    def _retransmit(
        self, packet: Packet, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]
    ) -> None:
        link = packet.link
        packet.sent_at = now
        packet.retransmitted = True
        packet.parked = False
        packet.deadline = deadline = now + self._backoff(link, packet)
        heapq.heappush(self._timers, (deadline, next(self._tiebreak), packet))
        datagram = data_datagram(
            self._key,
            ms,
            link.route,
            link.remote_session,
            link.outbound.flight[0].seq,
            packet.seq,
            packet.index,
            packet.message.count,
            packet.chunk,
        )
        out.append((link.address, datagram))
        self._stats["retransmitted"] += 1

    def _backoff(self, link: PeerLink, packet: Packet) -> float:
        return min(self.max_rto, link.outbound.rto * (1 << min(packet.backoff, 20)))
