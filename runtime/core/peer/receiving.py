"""The peers' streams to us: reassembly, in-order delivery, duplicates, and the acks we owe.

The receiver delivers packets in sequence order and acknowledges cumulatively plus a 64-packet
SACK bitmap, with `start` (where its current run of packets began) and `latest` (the newest
packet it got for the first time) for the sender's sake (see `sending`). A packet below the
next expected one, or already buffered, is a duplicate or a replay: dropped, and acknowledged
again, since its sender may have missed our ack. `base` in every DATA, the sender's oldest
unacknowledged packet, starts a stream we have no state for and skips what the sender gave up on.

A receiver that restarted mid-message drops the orphan fragments ("orphan"); one that gets a
message above its max_message_bytes drops it ("too_large"), which still counts as acknowledged.
Memory per peer is bounded by window x max_datagram (the reorder buffer) plus max_message_bytes
(the one message being reassembled).
"""

from __future__ import annotations

from runtime.core.peer.codec import SACK_BITS, ack_datagram, data_chunk, read_data
from runtime.core.peer.events import Delivered, Event
from runtime.core.peer.link import PeerLink
from runtime.wire.connection_id import NodeAddress


class InboundStream:
    """One peer's stream to us (expected == 0: no state for its current session)."""

    __slots__ = (
        "ack_due",
        "buffer",
        "expected",
        "last_data",
        "latest",
        "part_bytes",
        "part_count",
        "part_drop",
        "part_next",
        "parts",
        "start",
    )

    def __init__(self, now: float) -> None:
        self.expected = 0
        self.start = 0
        self.latest = 0  # the newest packet received for the first time: for RTT samples
        # Received beyond a hole, by seq: fragment index, fragment count, chunk.
        self.buffer: dict[int, tuple[int, int, bytes]] = {}
        self.parts: list[bytes] = []
        self.part_count = 0  # 0: between messages
        self.part_next = 0
        self.part_bytes = 0
        self.part_drop = False
        self.ack_due = False
        self.last_data = now

    def forget(self) -> None:
        """Drop all state: the next DATA's `base` starts the stream afresh."""
        self.expected = self.start = 0
        self.buffer.clear()
        self.reset_partial()

    def reset_partial(self) -> None:
        self.parts = []
        self.part_count = self.part_next = self.part_bytes = 0
        self.part_drop = False


class Receiver:
    """The receiving side for all peers: delivery, and the links that owe an ack."""

    __slots__ = ("_events", "_key", "_stats", "ack_due", "max_message_bytes", "window")

    def __init__(
        self,
        *,
        key: bytes,
        window: int,
        max_message_bytes: int,
        events: list[Event],
        stats: dict[str, int],
    ) -> None:
        self._key = key
        self.window = window
        self.max_message_bytes = max_message_bytes
        self._events = events
        self._stats = stats
        self.ack_due: list[PeerLink] = []

    def on_data(self, link: PeerLink, data: bytes, now: float) -> int:
        """Take a DATA; return where in the events the peer's PeerUp belongs if the packet was
        new (proof the peer is alive: a replay is a duplicate), else -1."""
        base, seq, index, count = read_data(data)
        if not 0 < base <= seq or index >= count:
            self._stats["dropped_malformed"] += 1
            return -1
        stream = link.inbound
        stream.last_data = now
        expected = stream.expected
        if not expected:
            stream.expected = stream.start = base
        elif base > expected:
            # The sender gave up on everything before base: skip it, and any message it cut.
            buffer = stream.buffer
            for stale in [s for s in buffer if s < base]:
                del buffer[stale]
            stream.reset_partial()
            stream.expected = stream.start = base
            self._drain(link)
        expected = stream.expected
        if seq < expected or seq in stream.buffer:
            self._stats["dropped_duplicate"] += 1
            self._ack_soon(link)
            return -1
        if seq - expected >= self.window:
            self._stats["dropped_window"] += 1
            return -1
        mark = len(self._events)
        stream.latest = seq
        chunk = data_chunk(data)
        if seq == expected:
            stream.expected = seq + 1
            self._reassemble(link, index, count, chunk)
            if stream.buffer:
                self._drain(link)
        else:
            stream.buffer[seq] = (index, count, chunk)
        self._ack_soon(link)
        return mark

    def send_acks(self, ms: int, out: list[tuple[NodeAddress, bytes]]) -> None:
        """One ACK to each link that received DATA since the last call."""
        due, self.ack_due = self.ack_due, []
        key = self._key
        for link in due:
            stream = link.inbound
            stream.ack_due = False
            if not link.removed and stream.expected:
                datagram = ack_datagram(
                    key,
                    ms,
                    link.route,
                    link.remote_session,
                    stream.start,
                    stream.expected,
                    self._sack_bits(stream),
                    stream.latest,
                )
                out.append((link.address, datagram))

    def _drain(self, link: PeerLink) -> None:
        stream = link.inbound
        buffer = stream.buffer
        while buffer:
            item = buffer.pop(stream.expected, None)
            if item is None:
                return
            stream.expected += 1
            self._reassemble(link, *item)

    def _reassemble(self, link: PeerLink, index: int, count: int, chunk: bytes) -> None:
        stream = link.inbound
        if stream.part_count:
            if index != stream.part_next or count != stream.part_count:
                # Only a misbehaving sender interleaves messages: lose the one in progress.
                self._stats["dropped_malformed"] += 1
                stream.reset_partial()
                self._reassemble(link, index, count, chunk)
                return
            stream.part_next = index + 1
            if not stream.part_drop:
                stream.part_bytes += len(chunk)
                if stream.part_bytes > self.max_message_bytes:
                    self._stats["dropped_too_large"] += 1
                    stream.part_drop = True
                    stream.parts = []
                else:
                    stream.parts.append(chunk)
            if stream.part_next == count:
                if not stream.part_drop:
                    self._deliver(link, b"".join(stream.parts))
                stream.reset_partial()
            return
        if index:
            # Our state began mid-message (we restarted): its start went to our previous run.
            self._stats["dropped_orphan"] += 1
            if index + 1 < count:
                stream.part_count, stream.part_next, stream.part_drop = count, index + 1, True
            return
        if count == 1:
            if len(chunk) > self.max_message_bytes:
                self._stats["dropped_too_large"] += 1
            else:
                self._deliver(link, chunk)
            return
        stream.part_count, stream.part_next, stream.part_bytes = count, 1, len(chunk)
        if len(chunk) > self.max_message_bytes:
            self._stats["dropped_too_large"] += 1
            stream.part_drop = True
        else:
            stream.parts = [chunk]

    def _deliver(self, link: PeerLink, payload: bytes) -> None:
        self._stats["messages_delivered"] += 1
        self._events.append(Delivered(link.address, payload))

    def _ack_soon(self, link: PeerLink) -> None:
        stream = link.inbound
        if not stream.ack_due:
            stream.ack_due = True
            self.ack_due.append(link)

    @staticmethod
    def _sack_bits(stream: InboundStream) -> int:
        buffer = stream.buffer
        if not buffer:
            return 0
        first = stream.expected + 1
        bits = 0
        if len(buffer) <= SACK_BITS:
            for seq in buffer:
                offset = seq - first
                if offset < SACK_BITS:
                    bits |= 1 << offset
        else:
            for offset in range(SACK_BITS):
                if first + offset in buffer:
                    bits |= 1 << offset
        return bits
