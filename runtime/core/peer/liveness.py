"""Which peers this node tracks, which run of each it talks to, and whether each is up.

- PING carries a nonce and PONG echoes it; only datagrams that are not replays or duplicates
  (new DATA, an ACK acknowledging something, a newer PING or PONG, all bound to our run) prove a
  peer alive, so replaying a dead node's traffic cannot keep it "up". Pongs give RTT samples.
- Only datagrams bound to our run are taken: recipient session ours, or 0 for a PING (first
  contact: we answer it, which teaches the pinger our session, but it proves nothing, since it
  could be a replay into a later run of ours). DATA or PING bound to another run of ours, or to
  none, is dropped ("stale_session") and answered by a PING of ours, at most one per min_rto per
  peer, so its sender learns our session within a round trip. A node that learns a peer's
  session (its first, or a new run) resends everything in flight to it at once, as all of it was
  bound to another run; until it knows the session it has one packet in flight, the probe. So
  first contact costs one round trip and one dropped datagram, and a restart no timeout.
- A peer is down once a packet to it goes unacknowledged for down_after, or a member is not
  heard from for as long; what was in flight or queued to it fails.
- Idle state expires, and the number of tracked peers is bounded ("capacity" drops beyond it).
  Forgetting an idle peer must not reuse sequence numbers: a new link starts at the highest next
  sequence number of any forgotten link, and its first `base` moves the receiver forward.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from runtime.core.peer.codec import (
    DATA,
    PING,
    PONG,
    canonical,
    encode_address,
    nonce_datagram,
    read_nonce,
)
from runtime.core.peer.events import Event, PeerDown, PeerUp
from runtime.core.peer.link import PeerLink
from runtime.core.peer.receiving import InboundStream
from runtime.core.peer.recovery import Recovery
from runtime.core.peer.sending import OutboundStream, Sender
from runtime.wire.connection_id import NodeAddress

UNKNOWN, UP, DOWN = 0, 1, 2


class Liveness:
    """What we know of one peer's health, and the nonces of the pings both ways."""

    __slots__ = (
        "down_since",
        "hello_at",
        "last_heard",
        "member",
        "member_since",
        "next_ping",
        "peer_ping_high",
        "ping_nonce",
        "ping_sent_at",
        "pong_due",
        "pong_high",
        "state",
    )

    def __init__(self, now: float) -> None:
        self.state = UNKNOWN
        self.down_since = 0.0
        self.last_heard = now
        self.member = False
        self.member_since = now
        self.next_ping = now
        self.ping_nonce = 0
        self.ping_sent_at = now
        self.pong_high = 0
        self.peer_ping_high = 0
        self.pong_due = 0  # the nonce to echo, 0: none
        self.hello_at = -math.inf  # when we last answered traffic bound to another run of ours


class Membership:
    """The tracked peers (members and whoever talks to us), their sessions and liveness."""

    __slots__ = (
        "_by_address",
        "_events",
        "_key",
        "_local_encoded",
        "_members",
        "_recovery",
        "_sender",
        "_session_bytes",
        "_stats",
        "down_after",
        "hello_due",
        "housekeeping_at",
        "links",
        "max_peers",
        "min_rto",
        "ping_interval",
        "pong_due",
        "replay_window",
        "seq_floor",
        "state_expiry",
    )

    def __init__(
        self,
        *,
        sender: Sender,
        recovery: Recovery,
        key: bytes,
        local_encoded: bytes,
        session_bytes: bytes,
        down_after: float,
        ping_interval: float,
        replay_window: float,
        state_expiry: float,
        min_rto: float,
        max_peers: int,
        events: list[Event],
        stats: dict[str, int],
    ) -> None:
        self._sender = sender
        self._recovery = recovery
        self._key = key
        self._local_encoded = local_encoded
        self._session_bytes = session_bytes
        self.down_after = down_after
        self.ping_interval = ping_interval
        self.replay_window = replay_window
        self.state_expiry = state_expiry
        self.min_rto = min_rto
        self.max_peers = max_peers
        self._events = events
        self._stats = stats
        self.links: dict[bytes, PeerLink] = {}  # by encoded address
        self._by_address: dict[NodeAddress, PeerLink] = {}
        self._members: dict[bytes, PeerLink] = {}
        self.pong_due: list[PeerLink] = []
        self.hello_due: list[PeerLink] = []
        self.housekeeping_at = math.inf
        self.seq_floor = 1  # the first sequence number of a new link: never reused

    # -- who is tracked ----------------------------------------------------------------------

    def set_members(self, peers: Iterable[NodeAddress], now: float) -> None:
        wanted: dict[bytes, NodeAddress] = {}
        for peer in peers:
            encoded = encode_address(peer)
            if encoded != self._local_encoded:
                wanted[encoded] = peer
        for encoded, link in self._members.items():
            if encoded not in wanted:
                link.liveness.member = False
                link.last_tx = max(link.last_tx, now)  # expires like any idle non-member
        members: dict[bytes, PeerLink] = {}
        for encoded, peer in wanted.items():
            member = self.links.get(encoded) or self.new_link(encoded, peer, now, force=True)
            assert member is not None
            liveness = member.liveness
            if not liveness.member:
                liveness.member = True
                liveness.member_since = now
                liveness.next_ping = now
            members[encoded] = member
        self._members = members
        self.watch(now)

    def link_to(self, peer: NodeAddress, now: float) -> PeerLink | None:
        """The link to send to `peer` on, made if need be; None when at capacity."""
        link = self._by_address.get(peer)
        if link is None:
            encoded = encode_address(peer)
            if encoded == self._local_encoded:
                raise ValueError(f"cannot send to ourselves ({peer}): deliver locally instead")
            link = self.links.get(encoded) or self.new_link(encoded, peer, now)
        return link

    def new_link(
        self, encoded: bytes, address: NodeAddress, now: float, *, force: bool = False
    ) -> PeerLink | None:
        if len(self.links) >= self.max_peers and not self._make_room(now) and not force:
            return None
        address = canonical(address)
        route = self._local_encoded + encoded + self._session_bytes
        outbound = OutboundStream(self.seq_floor, self._sender.first_rto)
        link = PeerLink(address, encoded, route, outbound, InboundStream(now), Liveness(now), now)
        self.links[encoded] = link
        self._by_address[address] = link
        self.watch(now + self.state_expiry)
        return link

    def _make_room(self, now: float) -> bool:
        """Forget the longest-idle non-members, if idle past the replay window (replays stay
        stale once their sender's session is forgotten)."""
        idle_before = now - self.replay_window
        idle = [
            link
            for link in self.links.values()
            if not link.liveness.member
            and not link.outbound.flight
            and not link.outbound.queue
            and max(link.last_rx, link.last_tx) < idle_before
        ]
        idle.sort(key=lambda link: max(link.last_rx, link.last_tx))
        for link in idle[: max(1, len(self.links) - self.max_peers * 9 // 10)]:
            self._remove(link)
        return len(self.links) < self.max_peers

    def _remove(self, link: PeerLink) -> None:
        link.removed = True
        del self.links[link.encoded]
        self._by_address.pop(link.address, None)
        self.seq_floor = max(self.seq_floor, link.outbound.next_seq)
        state = link.liveness.state
        if state == UP:
            self._stats["peers_up"] -= 1
        elif state == DOWN:
            self._stats["peers_down"] -= 1

    def is_up(self, peer: NodeAddress) -> bool:
        link = self._by_address.get(peer) or self.links.get(encode_address(peer))
        return link is not None and link.liveness.state == UP

    def live_peers(self) -> list[NodeAddress]:
        return [link.address for link in self._members.values() if link.liveness.state == UP]

    def reachable_peers(self) -> list[NodeAddress]:
        """Members up, or not heard from yet (just started): all but those known down."""
        return [link.address for link in self._members.values() if link.liveness.state != DOWN]

    def recently_down(self, link: PeerLink, now: float) -> bool:
        """Marked down less than down_after ago: new messages to it fail at once."""
        liveness = link.liveness
        return liveness.state == DOWN and now - liveness.down_since < self.down_after

    # -- sessions ----------------------------------------------------------------------------

    def learn_session(self, link: PeerLink, session: int) -> None:
        """We met the peer, or it restarted: its old stream and nonces went with its previous
        run, and what we sent it was bound to another run (see Sender.resend_all)."""
        link.remote_session = session
        link.inbound.forget()
        liveness = link.liveness
        liveness.peer_ping_high = 0
        liveness.pong_due = 0
        self._sender.resend_all(link)

    def unbound(self, link: PeerLink, kind: int, now: float) -> None:
        """Traffic bound to another run of ours, or to none: a replay into this run, or a
        sender that does not know this run yet. A ping of ours tells the sender our session;
        at most one per min_rto, so replays cannot make us flood the peer."""
        self._stats["dropped_stale_session"] += 1
        if kind in (DATA, PING):
            self._hello(link, now)

    def _hello(self, link: PeerLink, now: float) -> None:
        """A ping of ours out now, at most one per min_rto per peer (replays cannot make us
        flood it): its answer teaches the peer our run, or proves the peer's run to us."""
        liveness = link.liveness
        if now - liveness.hello_at >= self.min_rto:
            liveness.hello_at = now
            self.hello_due.append(link)

    # -- pings and pongs ---------------------------------------------------------------------

    def on_ping(self, link: PeerLink, data: bytes, now: float, *, first_contact: bool) -> None:
        """Answer it; a first-contact ping (bound to no run of ours) could be a replay into this
        run, so only a ping bound to our run proves the peer alive: to a peer not up yet we
        send one of ours at once, bound to its run, whose pong proves it within a round trip
        (rather than at our next periodic ping, up to ping_interval later)."""
        nonce = read_nonce(data)
        liveness = link.liveness
        if nonce <= liveness.peer_ping_high:
            self._stats["dropped_duplicate"] += 1
            return
        liveness.peer_ping_high = nonce
        if not liveness.pong_due:
            self.pong_due.append(link)
        liveness.pong_due = nonce
        if not first_contact:
            self.mark_up(link, now)
        elif liveness.state != UP:
            self._hello(link, now)

    def on_pong(self, link: PeerLink, data: bytes, now: float) -> None:
        nonce = read_nonce(data)
        liveness = link.liveness
        if nonce > liveness.ping_nonce:
            self._stats["dropped_malformed"] += 1
            return
        if nonce <= liveness.pong_high:
            self._stats["dropped_duplicate"] += 1
            return
        liveness.pong_high = nonce
        if nonce == liveness.ping_nonce:
            self._recovery.rtt_sample(link.outbound, now - liveness.ping_sent_at)
        self.mark_up(link, now)

    def send_answers(self, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]) -> None:
        """The pongs we owe, then the pings that tell peers our session."""
        if self.pong_due:
            due, self.pong_due = self.pong_due, []
            key = self._key
            for link in due:
                liveness = link.liveness
                if not link.removed and liveness.pong_due:
                    datagram = nonce_datagram(
                        key, PONG, ms, link.route, link.remote_session, liveness.pong_due
                    )
                    out.append((link.address, datagram))
                liveness.pong_due = 0
        if self.hello_due:
            due, self.hello_due = self.hello_due, []
            for link in due:
                if not link.removed:
                    self._ping(link, now, ms, out)

    def _ping(
        self, link: PeerLink, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]
    ) -> None:
        liveness = link.liveness
        liveness.ping_nonce += 1
        liveness.ping_sent_at = now
        datagram = nonce_datagram(
            self._key, PING, ms, link.route, link.remote_session, liveness.ping_nonce
        )
        out.append((link.address, datagram))

    # -- up, down, and timers ----------------------------------------------------------------

    def mark_up(self, link: PeerLink, now: float, at: int | None = None) -> None:
        """Fresh traffic from the peer; `at` puts PeerUp before the events that traffic caused."""
        liveness = link.liveness
        liveness.last_heard = now
        if liveness.state != UP:
            if liveness.state == DOWN:
                self._stats["peers_down"] -= 1
            liveness.state = UP
            self._stats["peers_up"] += 1
            self._events.insert(len(self._events) if at is None else at, PeerUp(link.address))

    def mark_down(self, link: PeerLink, now: float) -> None:
        """Give up on the peer: fail what it has not delivered, and skip it on the wire."""
        liveness = link.liveness
        liveness.down_since = now
        if liveness.state != DOWN:
            if liveness.state == UP:
                self._stats["peers_up"] -= 1
            liveness.state = DOWN
            self._stats["peers_down"] += 1
            self._events.append(PeerDown(link.address))
        self._sender.abandon(link)

    def watch(self, at: float) -> None:
        """Run the housekeeping no later than `at`."""
        if at < self.housekeeping_at:
            self.housekeeping_at = at

    def housekeeping(self, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]) -> None:
        """Down detection, periodic pings, and expiry of idle state."""
        next_at = math.inf
        down_after, expiry = self.down_after, self.state_expiry
        for link in list(self.links.values()):
            flight = link.outbound.flight
            liveness = link.liveness
            if flight:
                due = flight[0].first_sent + down_after
                if now >= due:
                    self.mark_down(link, now)
                else:
                    next_at = min(next_at, due)
            if liveness.member:
                if liveness.state != DOWN:
                    due = max(liveness.last_heard, liveness.member_since) + down_after
                    if now >= due:
                        self.mark_down(link, now)
                    else:
                        next_at = min(next_at, due)
                if now >= liveness.next_ping:
                    liveness.next_ping = now + self.ping_interval
                    self._ping(link, now, ms, out)
                next_at = min(next_at, liveness.next_ping)
            inbound = link.inbound
            if inbound.expected:
                due = inbound.last_data + expiry
                if now >= due:
                    inbound.forget()
                else:
                    next_at = min(next_at, due)
            if not liveness.member and not flight and not link.outbound.queue:
                due = max(link.last_rx, link.last_tx) + expiry
                if now >= due:
                    self._remove(link)
                else:
                    next_at = min(next_at, due)
        self.housekeeping_at = next_at
