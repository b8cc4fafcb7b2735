"""What acks tell a sender: delivery, losses to resend early, and the round-trip time.

Choices beyond the outline this was written from:
- A message is `Acknowledged` only once a cumulative ack passes its last packet, i.e. once the
  receiver has delivered it. A SACK only stops retransmissions (as in TCP, it is advisory):
  SACKed packets still sit in the receiver's reorder buffer, which a restart or a `base` skip
  may discard, so they prove nothing delivered and stay in flight until the cumulative ack.
- ACK carries `start`, the sequence number at which the receiver's current run of packets began
  (fresh state, or the last `base` skip). A receiver that restarted mid-message drops the orphan
  fragments; `start` lets us fail that one message instead of reporting it acknowledged. A
  restarted receiver also loses what it had SACKed: we resend it all.
- ACK carries `latest`, the newest packet the receiver got for the first time, and we take our
  one RTT sample per ACK from that packet (if never retransmitted: Karn). Packets parked behind a
  hole, beyond the SACK bitmap, are acknowledged long after they arrived and would inflate the
  RTO; and a burst's newest packet is often beyond the bitmap. `latest` also counts as a SACK for
  that packet.
- A hole with 3 or more later packets received is resent at once (fast retransmit), at most
  once per RTT. The RTO follows RFC 6298 between min_rto and max_rto; the first, before any RTT
  sample, is max_rto (RFC 6298's conservative 1 s). Members are pinged at once, so their RTO is
  usually measured (from pongs) before data flows.
"""

from __future__ import annotations

import heapq

from runtime.core.peer.codec import read_ack
from runtime.core.peer.events import Acknowledged, Event
from runtime.core.peer.link import PeerLink
from runtime.core.peer.sending import OutboundStream, Packet, Sender


class Recovery:
    """The ack side of our streams to all peers; what it decides to resend, `Sender` sends."""

    __slots__ = ("_events", "_sender", "_stats", "max_rto", "min_rto")

    def __init__(
        self,
        *,
        sender: Sender,
        min_rto: float,
        max_rto: float,
        events: list[Event],
        stats: dict[str, int],
    ) -> None:
        self._sender = sender
        self.min_rto = min_rto
        self.max_rto = max_rto
        self._events = events
        self._stats = stats

    def rtt_sample(self, stream: OutboundStream, rtt: float) -> None:
        """RFC 6298 smoothing; the caller applies Karn's rule (no retransmitted packets)."""
        if stream.srtt is None:
            stream.srtt = rtt
            stream.rttvar = rtt / 2.0
        else:
            stream.rttvar += 0.25 * (abs(stream.srtt - rtt) - stream.rttvar)
            stream.srtt += 0.125 * (rtt - stream.srtt)
        stream.rto = min(max(stream.srtt + 4.0 * stream.rttvar, self.min_rto), self.max_rto)

    def on_ack(self, link: PeerLink, data: bytes, now: float) -> int:
        """Take an ACK; return where in the events the peer's PeerUp belongs if it acknowledged
        something new (proof the peer is alive: a replayed ack acknowledges nothing), else -1."""
        start, cumulative, bits, latest = read_ack(data)
        stream = link.outbound
        if not 0 < start <= cumulative <= stream.next_seq or latest >= stream.next_seq:
            self._stats["dropped_malformed"] += 1
            return -1
        flight = stream.flight
        if not flight:
            return -1
        if start != stream.checked_start:
            stream.checked_start = start
            self._fail_orphan(link, start)
        mark = len(self._events)
        fresh = False
        position = latest - flight[0].seq
        if 0 <= position < len(flight):
            # The receiver has `latest`, even beyond the SACK bitmap: one RTT sample (Karn).
            packet = flight[position]
            if not packet.done:
                packet.done = fresh = True
                if not packet.retransmitted:
                    self.rtt_sample(stream, now - packet.sent_at)
        if cumulative > flight[0].seq:
            while flight and flight[0].seq < cumulative:
                packet = flight.popleft()
                if not packet.done:
                    packet.done = fresh = True
                self._popped(packet)
        if bits and flight:
            offset = cumulative + 1 - flight[0].seq
            length = len(flight)
            rest = bits
            while rest:
                low = rest & -rest
                rest ^= low
                position = offset + low.bit_length() - 1
                if position >= length:
                    break
                if position >= 0:
                    packet = flight[position]
                    if not packet.done:
                        packet.done = fresh = True
        if cumulative > stream.acked_cum:
            stream.acked_cum = cumulative
        if bits and flight:
            self._fast_retransmit(stream, cumulative, bits, now)
        if stream.parked:
            self._release(stream)
        if not fresh:
            return -1
        if stream.queue:
            self._sender.wake(link)
        return mark

    def _popped(self, packet: Packet) -> None:
        """A cumulative ack passed `packet`: the receiver has delivered everything up to it."""
        message = packet.message
        if packet.index + 1 == message.count and not message.failed:
            self._stats["messages_acknowledged"] += 1
            self._events.append(Acknowledged(message.id))

    def _fast_retransmit(
        self, stream: OutboundStream, cumulative: int, bits: int, now: float
    ) -> None:
        """Resend holes with 3 or more later packets received, at most once per RTT each."""
        flight = stream.flight
        head = flight[0].seq
        length = len(flight)
        again = stream.rto if stream.srtt is None else stream.srtt + stream.rttvar
        position = -1  # -1: the packet at `cumulative`, always missing
        while (bits >> (position + 1)).bit_count() >= 3:
            if position < 0 or not (bits >> position) & 1:
                index = cumulative + 1 + position - head
                if 0 <= index < length:
                    packet = flight[index]
                    if not packet.done and (
                        not packet.retransmitted or now - packet.sent_at >= again
                    ):
                        packet.sent_at = now  # blocks another fast resend for one RTT
                        packet.retransmitted = True
                        self._sender.fast.append(packet)
            position += 1

    def _release(self, stream: OutboundStream) -> None:
        """Resend parked packets that acks can now show: this ack would have SACKed them."""
        parked = stream.parked
        limit = stream.visible()
        while parked and parked[0][0] <= limit:
            packet = heapq.heappop(parked)[1]
            if packet.parked and not packet.done:
                self._sender.fast.append(packet)

    def _fail_orphan(self, link: PeerLink, start: int) -> None:
        """The receiver's state begins at `start`: a message begun before it cannot complete."""
        flight = link.outbound.flight
        head = flight[0].seq
        if start <= head:
            message = flight[0].message
        elif start - head < len(flight):
            message = flight[start - head].message
        else:
            return
        straddles = message.first_seq < start <= message.first_seq + message.count - 1
        if straddles and not message.failed:
            message.failed = True
            self._sender.fail(message.id, link.address)
