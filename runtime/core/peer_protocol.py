"""Peer protocol: reliable, ordered, authenticated messages between nodes over UDP, with no I/O.

Nodes forward commands to each other over UDP in the VPC, which loses, duplicates and reorders
datagrams, and where anyone may send forged ones. This core turns that into per-peer ordered,
exactly-once delivery while both nodes live, and says plainly when it could not (`Failed`). Like
the `websockets` protocol core it takes bytes and the time as arguments and returns datagrams and
events; an asyncio adapter (runtime/transports/udp_peers.py) owns the socket and the clock.

`PeerProtocol` below checks each datagram's header and hands it to the part that owns its kind;
each part documents its share of the design next to its code (in runtime/core/peer/):

- `codec`: the wire format, the HMAC and why the header stops replays;
- `sending`: sequence numbers, fragments, the window, retransmission timers;
- `recovery`: what acks mean to a sender: delivery, fast retransmit, RTT and RTO;
- `receiving`: reassembly, in-order delivery, duplicates, the acks we owe;
- `liveness`: pings, sessions, peers up and down, idle expiry and the bound on tracked peers;
- `link`: one peer's state, joined from those parts; `events`: what the caller reads.

The sender refuses payloads above its own max_message_bytes (ValueError), as for ourselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from runtime.core.peer.codec import (
    ACK,
    ADDRESS_SIZE,
    DATA,
    DATA_OVERHEAD,
    HEADER_SIZE,
    MAC_SIZE,
    MAGIC,
    MAX_DATAGRAM_RANGE,
    MAX_SESSION,
    MIN_DATAGRAM,
    PING,
    PONG,
    VERSION,
    canonical,
    decode_address,
    encode_address,
    encode_session,
    read_header,
    rejection,
    well_sized,
)
from runtime.core.peer.events import (
    Acknowledged,
    Delivered,
    Event,
    Failed,
    PeerDown,
    PeerUp,
)
from runtime.core.peer.liveness import Membership
from runtime.core.peer.receiving import Receiver
from runtime.core.peer.recovery import Recovery
from runtime.core.peer.sending import Sender
from runtime.wire.connection_id import NodeAddress

__all__ = [
    "ACK",
    "ADDRESS_SIZE",
    "DATA",
    "DATA_OVERHEAD",
    "DROP_REASONS",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAGIC",
    "MAX_DATAGRAM_RANGE",
    "MAX_SESSION",
    "MIN_DATAGRAM",
    "PING",
    "PONG",
    "VERSION",
    "Acknowledged",
    "Delivered",
    "Event",
    "Failed",
    "PeerDown",
    "PeerProtocol",
    "PeerUp",
    "decode_address",
    "encode_address",
]

DROP_REASONS = (
    "truncated",
    "oversized",
    "garbage",
    "bad_mac",
    "misdirected",
    "stale",
    "stale_session",
    "malformed",
    "duplicate",
    "window",
    "too_large",
    "orphan",
    "capacity",
)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} (got {value})")


class PeerProtocol:
    """One node's side of the peer transport: call it with datagrams and time, send what it says.

    Drive it like this: feed every datagram to `receive_datagram`, queue messages with
    `send_message`, then send what `datagrams_to_send` returns and read `events_received`; call
    `datagrams_to_send` again at `next_deadline()` (a time at or before the last `now` means at
    once). `now` is monotonic seconds, `wall` epoch seconds.
    """

    __slots__ = (
        "_clock",
        "_events",
        "_local_encoded",
        "_membership",
        "_next_id",
        "_receiver",
        "_recovery",
        "_replay_ms",
        "_secret",
        "_sender",
        "down_after",
        "local",
        "max_datagram",
        "max_message_bytes",
        "max_peers",
        "max_rto",
        "min_rto",
        "ping_interval",
        "replay_window",
        "session",
        "state_expiry",
        "stats",
        "window",
    )

    def __init__(
        self,
        *,
        local: NodeAddress,
        secret: bytes,
        session: int,
        max_datagram: int = 1472,
        window: int = 1024,
        max_message_bytes: int = 16 << 20,
        down_after: float = 3.0,
        ping_interval: float = 1.0,
        replay_window: float = 30.0,
        state_expiry: float = 60.0,
        min_rto: float = 0.010,
        max_rto: float = 1.0,
        max_peers: int = 4096,
    ) -> None:
        if len(secret) < 16:
            raise ValueError(f"secret must be at least 16 bytes (got {len(secret)})")
        _check_range("session", session, 1, MAX_SESSION)
        _check_range("max_datagram", max_datagram, *MAX_DATAGRAM_RANGE)
        _check_range("window", window, 1, 1 << 20)
        _check_range("max_message_bytes", max_message_bytes, 0, 1 << 31)
        _check_range("min_rto", min_rto, 0.0001, 60.0)
        _check_range("max_rto", max_rto, min_rto, 60.0)
        _check_range("max_peers", max_peers, 1, 1 << 20)
        if not 0 < ping_interval < down_after:
            raise ValueError(
                f"ping_interval must be above 0 and below down_after ({down_after}) "
                f"(got {ping_interval})"
            )
        if not 0 < replay_window < state_expiry or not down_after < state_expiry:
            raise ValueError(
                f"state_expiry must exceed replay_window ({replay_window}) and down_after "
                f"({down_after}), and replay_window be above 0 (got {state_expiry})"
            )
        self.local = canonical(local)
        self.session = session
        self.max_datagram = max_datagram
        self.window = window
        self.max_message_bytes = max_message_bytes
        self.down_after = down_after
        self.ping_interval = ping_interval
        self.replay_window = replay_window
        self.state_expiry = state_expiry
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.max_peers = max_peers
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "datagrams_sent",
                "datagrams_received",
                "retransmitted",
                *(f"dropped_{reason}" for reason in DROP_REASONS),
                "messages_sent",
                "messages_acknowledged",
                "messages_failed",
                "messages_delivered",
                "peers_up",
                "peers_down",
            ),
            0,
        )

        self._secret = key = bytes(secret)
        self._local_encoded = encode_address(self.local)
        self._replay_ms = replay_window * 1000.0
        self._events: list[Event] = []
        self._next_id = 1
        self._clock = 0.0
        self._sender = Sender(
            key=key,
            chunk=max_datagram - DATA_OVERHEAD,
            window=window,
            min_rto=min_rto,
            max_rto=max_rto,
            events=self._events,
            stats=self.stats,
        )
        self._recovery = Recovery(
            sender=self._sender,
            min_rto=min_rto,
            max_rto=max_rto,
            events=self._events,
            stats=self.stats,
        )
        self._receiver = Receiver(
            key=key,
            window=window,
            max_message_bytes=max_message_bytes,
            events=self._events,
            stats=self.stats,
        )
        self._membership = Membership(
            sender=self._sender,
            recovery=self._recovery,
            key=key,
            local_encoded=self._local_encoded,
            session_bytes=encode_session(session),
            down_after=down_after,
            ping_interval=ping_interval,
            replay_window=replay_window,
            state_expiry=state_expiry,
            min_rto=min_rto,
            max_peers=max_peers,
            events=self._events,
            stats=self.stats,
        )

    def set_members(self, peers: Iterable[NodeAddress], now: float) -> None:
        """The cluster's nodes: pinged, watched for liveness, listed by `live_peers`."""
        self._clock = now
        self._membership.set_members(peers, now)

    def send_message(self, peer: NodeAddress, payload: bytes, now: float) -> int:
        """Queue `payload` for `peer`; the id comes back in `Acknowledged` or `Failed`."""
        self._clock = now
        if len(payload) > self.max_message_bytes:
            raise ValueError(
                f"payload must be at most max_message_bytes={self.max_message_bytes} bytes "
                f"(got {len(payload)})"
            )
        link = self._membership.link_to(peer, now)
        message_id = self._next_id
        self._next_id += 1
        self.stats["messages_sent"] += 1
        if link is None:
            self._sender.fail(message_id, peer)
        elif self._membership.recently_down(link, now):
            self._sender.fail(message_id, link.address)
        else:
            self._sender.queue(link, message_id, payload)
        return message_id

    def receive_datagram(self, data: bytes, now: float, wall: float) -> None:
        """Take one datagram as it came off the socket; bad ones are dropped and counted."""
        self._clock = now
        stats = self.stats
        stats["datagrams_received"] += 1
        reason = rejection(data, self._secret, self.max_datagram)
        if reason is not None:
            stats["dropped_" + reason] += 1
            return
        stamp, sender, recipient, session, bound_to = read_header(data)
        if recipient != self._local_encoded or sender == self._local_encoded:
            stats["dropped_misdirected"] += 1
            return
        if abs(stamp - wall * 1000.0) > self._replay_ms:
            stats["dropped_stale"] += 1
            return
        membership = self._membership
        link = membership.links.get(sender)
        if link is not None and session < link.remote_session:
            stats["dropped_stale_session"] += 1
            return
        kind = data[3]
        if not session or not well_sized(kind, len(data)):
            stats["dropped_malformed"] += 1
            return
        if link is None:
            address = decode_address(sender)
            if address is None:
                stats["dropped_malformed"] += 1
                return
            link = membership.new_link(sender, address, now)
            if link is None:
                stats["dropped_capacity"] += 1
                return
        if session > link.remote_session:
            membership.learn_session(link, session)
        if bound_to != self.session and (bound_to or kind != PING):
            membership.unbound(link, kind, now)
            return
        link.last_rx = now
        if kind == DATA:
            inbound = link.inbound
            began = not inbound.expected
            mark = self._receiver.on_data(link, data, now)
            if began and inbound.expected:
                membership.watch(now + self.state_expiry)  # to expire the new stream
            if mark >= 0:
                membership.mark_up(link, now, at=mark)
        elif kind == ACK:
            mark = self._recovery.on_ack(link, data, now)
            if mark >= 0:
                membership.mark_up(link, now, at=mark)
        elif kind == PING:
            membership.on_ping(link, data, now, first_contact=not bound_to)
        else:
            membership.on_pong(link, data, now)

    def datagrams_to_send(self, now: float, wall: float) -> list[tuple[NodeAddress, bytes]]:
        """Everything due now: acks, pongs, retransmissions, new data, pings; runs the timers."""
        self._clock = now
        out: list[tuple[NodeAddress, bytes]] = []
        ms = int(wall * 1000.0)
        membership, receiver, sender = self._membership, self._receiver, self._sender
        if now >= membership.housekeeping_at:
            membership.housekeeping(now, ms, out)
        if receiver.ack_due:
            receiver.send_acks(ms, out)
        if membership.pong_due or membership.hello_due:
            membership.send_answers(now, ms, out)
        sender.send_retransmissions(now, ms, out)
        if sender.sendable and sender.send_queued(now, ms, out):
            membership.watch(now + self.down_after)  # to notice if the new flight goes unacked
        self.stats["datagrams_sent"] += len(out)
        return out

    def events_received(self) -> list[Event]:
        """Events since the last call, oldest first."""
        events = self._events[:]
        self._events.clear()
        return events

    def next_deadline(self) -> float | None:
        """When `datagrams_to_send` must next be called; None when nothing is pending."""
        membership, sender = self._membership, self._sender
        if (
            self._receiver.ack_due
            or membership.pong_due
            or membership.hello_due
            or sender.fast
            or sender.sendable
        ):
            return self._clock
        timer = sender.next_timer()
        deadline = membership.housekeeping_at
        if timer is not None and timer < deadline:
            deadline = timer
        return None if deadline == math.inf else deadline

    def is_up(self, peer: NodeAddress) -> bool:
        return self._membership.is_up(peer)

    def live_peers(self) -> list[NodeAddress]:
        """Members currently up, in the order given to `set_members` (broadcast targets)."""
        return self._membership.live_peers()

    def reachable_peers(self) -> list[NodeAddress]:
        """Members up or not yet heard from: a message to one of these may still arrive."""
        return self._membership.reachable_peers()

    def tracked_peers(self) -> int:
        """How many remote nodes this core holds state for (bounded by max_peers)."""
        return len(self._membership.links)
