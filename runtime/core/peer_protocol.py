"""Peer protocol: reliable, ordered, authenticated messages between nodes over UDP, with no I/O.

Nodes forward commands to each other over UDP in the VPC, which loses, duplicates and reorders
datagrams, and where anyone may send forged ones. This core turns that into per-peer ordered,
exactly-once delivery while both nodes live, and says plainly when it could not (`Failed`). Like
the `websockets` protocol core it takes bytes and the time as arguments and returns datagrams and
events; an asyncio adapter owns the socket and the clock.

Wire format (big-endian; every datagram):

    magic b"WG" | version 2 (1) | kind (1) | wall clock, ms since the epoch (8)
    | sender address (19) | recipient address (19) | sender session (8)
    | recipient session (8) | body
    | HMAC-SHA256 of everything before it, keyed by the shared secret (32)

An address is family (1: 4 or 6) | IP (16; IPv4 left-aligned, zero-padded) | port (2). A session
names one run of a node (1 or more); the recipient session is the recipient's run as the sender
knows it, 0 while it knows none. Bodies:

    DATA 1  base (8) | seq (8) | frag_index (4) | frag_count (4) | payload chunk
    ACK  2  start (8) | cumulative (8) | SACK bitmap (8) | latest (8)
    PING 3  nonce (8)
    PONG 4  nonce (8)

Replays are stopped by the MAC (forgery), the recipient field (replaying to another node), the
timestamp (older than the replay window), the sender session (an earlier run of the sender), the
recipient session (an earlier run of the recipient: a node restarted at the same address, as ECS
tasks do, starts with no state and would take a replay as new) and, between two runs, the
sequence numbers (DATA) or nonces (PING, PONG). The secret is shared, so any node holding it is
trusted: the sender field guards against replays, not against a rogue node.

Each DATA packet has a per (our session, peer) sequence number that is never reused; messages
are cut into fragments of consecutive numbers so that no datagram needs IP fragmentation. The
receiver delivers packets in sequence order and acknowledges cumulatively plus a 64-packet SACK
bitmap. `base`, the sender's oldest unacknowledged packet, lets a receiver with no state start
and lets a sender that gave up (peer marked down) tell the receiver to skip what it abandoned.

Choices beyond the outline this module was written from:
- A message is `Acknowledged` only once a cumulative ack passes its last packet, i.e. once the
  receiver has delivered it. A SACK only stops retransmissions (as in TCP, it is advisory):
  SACKed packets still sit in the receiver's reorder buffer, which a restart or a `base` skip
  may discard, so they prove nothing delivered and stay in flight until the cumulative ack.
- ACK carries `start`, the sequence number at which the receiver's current run of packets began
  (fresh state, or the last `base` skip). A receiver that restarted mid-message drops the orphan
  fragments ("orphan"); `start` lets the sender fail that one message instead of reporting it
  acknowledged. A restarted receiver also loses what it had SACKed: the sender resends it all.
- ACK carries `latest`, the newest packet the receiver got for the first time, and the sender
  takes its one RTT sample per ACK from that packet (if never retransmitted: Karn). Packets
  parked behind a hole, beyond the SACK bitmap, are acknowledged long after they arrived and
  would inflate the RTO; and a burst's newest packet is often beyond the bitmap. `latest` also
  counts as a SACK for that packet.
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
- `Failed` means "not known to be delivered": a message in flight when its peer went down may
  still have been delivered. Callers retry (at-least-once), as the command queue does anyway.
- Forgetting an idle peer must not reuse sequence numbers: a new link starts at the highest next
  sequence number of any forgotten link, and its first `base` moves the receiver forward.
- The sender refuses payloads above its own max_message_bytes (ValueError), as for ourselves.
  The receiver still drops messages above its limit ("too_large"); they count as acknowledged.
- All nodes must share max_datagram (the receiver drops longer datagrams), window, secret and
  wire version: to a node of another version, every datagram is "garbage".
- The first RTO before any RTT sample is max_rto (RFC 6298's conservative 1 s); members are
  pinged at once, so their RTO is usually measured before data flows.

Memory per tracked peer is bounded by window x max_datagram (reorder buffer) plus
max_message_bytes (one message being reassembled); idle state expires, and the number of
tracked peers is bounded ("capacity" drops beyond it).
"""

from __future__ import annotations

import heapq
import hmac
import ipaddress
import itertools
import math
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.wire.connection_id import NodeAddress

MAGIC = b"WG"
VERSION = 2
DATA, ACK, PING, PONG = 1, 2, 3, 4

ADDRESS_SIZE = 19
HEADER_SIZE = 2 + 1 + 1 + 8 + ADDRESS_SIZE + ADDRESS_SIZE + 8 + 8  # 66
MAC_SIZE = 32
MIN_DATAGRAM = HEADER_SIZE + MAC_SIZE
DATA_OVERHEAD = HEADER_SIZE + 24 + MAC_SIZE
ACK_SIZE = HEADER_SIZE + 32 + MAC_SIZE
PING_SIZE = PONG_SIZE = HEADER_SIZE + 8 + MAC_SIZE
MAX_DATAGRAM_RANGE = (512, 8900)
SACK_BITS = 64
MAX_SESSION = (1 << 64) - 1

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

_PREFIX = {kind: MAGIC + bytes((VERSION, kind)) for kind in (DATA, ACK, PING, PONG)}
_MAGIC_VERSION = MAGIC + bytes((VERSION,))
# From offset 4: wall ms, sender, recipient, sender session, recipient session.
_HEADER = struct.Struct(">Q19s19sQQ")
# Prefix, wall ms, route, recipient session, then the body.
_DATA_OUT = struct.Struct(">4sQ46sQQQII")  # base, seq, index, count
_DATA_IN = struct.Struct(">QQII")
_ACK_OUT = struct.Struct(">4sQ46sQQQQQ")  # start, cumulative, SACK bitmap, latest
_ACK_IN = struct.Struct(">QQQQ")
_NONCE_OUT = struct.Struct(">4sQ46sQQ")  # PING and PONG: nonce
_U64 = struct.Struct(">Q")

_UNKNOWN, _UP, _DOWN = 0, 1, 2
_ZERO12 = bytes(12)


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


def encode_address(address: NodeAddress) -> bytes:
    """The 19-byte wire form of an address: family, IP (16, IPv4 left-aligned), port."""
    ip = ipaddress.ip_address(address.host)
    return bytes((ip.version,)) + ip.packed.ljust(16, b"\0") + address.port.to_bytes(2, "big")


def decode_address(encoded: bytes) -> NodeAddress | None:
    """The address in its canonical spelling, or None if `encoded` is not a canonical encoding."""
    if len(encoded) != ADDRESS_SIZE:
        return None
    family, port = encoded[0], int.from_bytes(encoded[17:19], "big")
    if port == 0:
        return None
    if family == 4 and encoded[5:17] == _ZERO12:
        return NodeAddress(str(ipaddress.IPv4Address(encoded[1:5])), port)
    if family == 6:
        return NodeAddress(str(ipaddress.IPv6Address(encoded[1:17])), port)
    return None


class _Message:
    __slots__ = ("count", "failed", "first_seq", "id", "next_index", "payload")

    def __init__(self, message_id: int, payload: memoryview, count: int) -> None:
        self.id = message_id
        self.payload = payload
        self.count = count
        self.next_index = 0
        self.first_seq = 0
        self.failed = False


class _Packet:
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
        self, link: _Link, message: _Message, seq: int, index: int, chunk: memoryview, now: float
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


class _Link:
    """Everything about one remote node: our stream to it, its stream to us, and its liveness."""

    __slots__ = (
        "ack_due",
        "acked_cum",
        "address",
        "buffer",
        "checked_start",
        "down_since",
        "encoded",
        "expected",
        "flight",
        "hello_at",
        "last_data",
        "last_heard",
        "last_rx",
        "last_tx",
        "latest",
        "member",
        "member_since",
        "next_ping",
        "next_seq",
        "parked",
        "part_bytes",
        "part_count",
        "part_drop",
        "part_next",
        "parts",
        "peer_ping_high",
        "ping_nonce",
        "ping_sent_at",
        "pong_due",
        "pong_high",
        "queue",
        "remote_session",
        "removed",
        "route",
        "rto",
        "rttvar",
        "sendable",
        "srtt",
        "start",
        "state",
    )

    def __init__(
        self, address: NodeAddress, encoded: bytes, route: bytes, seq: int, rto: float, now: float
    ) -> None:
        self.address = address
        self.encoded = encoded
        self.route = route  # our address, its address, our session: the fixed middle of a header
        self.removed = False
        # Our stream to it.
        self.next_seq = seq
        # Sent and not yet passed by a cumulative ack (SACKed ones are `done` but stay).
        self.flight: deque[_Packet] = deque()
        self.queue: deque[_Message] = deque()  # messages with fragments not yet sent
        self.sendable = False
        self.acked_cum = 0  # the highest cumulative ack seen
        # Timed-out packets beyond what the receiver's acks can show, by seq (see _release).
        self.parked: list[tuple[int, _Packet]] = []
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto
        self.checked_start = 0  # the receiver's last `start` compared with our flight
        self.last_tx = now
        # Its stream to us (expected == 0: no state for its current session).
        self.remote_session = 0  # its run as we know it, 0 while unknown: binds what we send
        self.expected = 0
        self.start = 0
        self.latest = 0  # the newest packet received for the first time: for RTT samples
        self.buffer: dict[int, tuple[int, int, bytes]] = {}
        self.parts: list[bytes] = []
        self.part_count = 0  # 0: between messages
        self.part_next = 0
        self.part_bytes = 0
        self.part_drop = False
        self.ack_due = False
        self.last_rx = now
        self.last_data = now
        # Liveness.
        self.state = _UNKNOWN
        self.down_since = 0.0
        self.last_heard = now
        self.member = False
        self.member_since = now
        self.next_ping = now
        self.ping_nonce = 0
        self.ping_sent_at = now
        self.pong_high = 0
        self.peer_ping_high = 0
        self.pong_due = 0
        self.hello_at = -math.inf  # when we last answered traffic bound to another run of ours


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
        self.local = NodeAddress(str(ipaddress.ip_address(local.host)), local.port)
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

        self._secret = bytes(secret)
        self._local_encoded = encode_address(self.local)
        self._route_tail = self._local_encoded  # + peer encoding + our session
        self._session_bytes = _U64.pack(session)
        self._chunk = max_datagram - DATA_OVERHEAD
        self._replay_ms = replay_window * 1000.0
        self._links: dict[bytes, _Link] = {}
        self._by_address: dict[NodeAddress, _Link] = {}
        self._members: dict[bytes, _Link] = {}
        self._events: list[Event] = []
        self._ack_due: list[_Link] = []
        self._pong_due: list[_Link] = []
        self._hello_due: list[_Link] = []
        self._fast: list[_Packet] = []
        self._sendable: list[_Link] = []
        self._timers: list[tuple[float, int, _Packet]] = []
        self._tiebreak = itertools.count()
        self._housekeeping_at = math.inf
        self._seq_floor = 1
        self._next_id = 1
        self._clock = 0.0

    # -- the caller's side ------------------------------------------------------------------

    def set_members(self, peers: Iterable[NodeAddress], now: float) -> None:
        """The cluster's nodes: pinged, watched for liveness, listed by `live_peers`."""
        self._clock = now
        wanted: dict[bytes, NodeAddress] = {}
        for peer in peers:
            encoded = encode_address(peer)
            if encoded != self._local_encoded:
                wanted[encoded] = peer
        for encoded, link in self._members.items():
            if encoded not in wanted:
                link.member = False
                link.last_tx = max(link.last_tx, now)  # expires like any idle non-member
        members: dict[bytes, _Link] = {}
        for encoded, peer in wanted.items():
            link = self._links.get(encoded) or self._new_link(encoded, peer, now, force=True)
            assert link is not None
            if not link.member:
                link.member = True
                link.member_since = now
                link.next_ping = now
            members[encoded] = link
        self._members = members
        self._housekeeping_at = min(self._housekeeping_at, now)

    def send_message(self, peer: NodeAddress, payload: bytes, now: float) -> int:
        """Queue `payload` for `peer`; the id comes back in `Acknowledged` or `Failed`."""
        self._clock = now
        if len(payload) > self.max_message_bytes:
            raise ValueError(
                f"payload must be at most max_message_bytes={self.max_message_bytes} bytes "
                f"(got {len(payload)})"
            )
        link = self._by_address.get(peer)
        if link is None:
            encoded = encode_address(peer)
            if encoded == self._local_encoded:
                raise ValueError(f"cannot send to ourselves ({peer}): deliver locally instead")
            link = self._links.get(encoded) or self._new_link(encoded, peer, now)
        message_id = self._next_id
        self._next_id += 1
        self.stats["messages_sent"] += 1
        if link is None or (link.state == _DOWN and now - link.down_since < self.down_after):
            self._fail_now(message_id, peer if link is None else link.address)
            return message_id
        count = max(1, -(-len(payload) // self._chunk))
        link.queue.append(_Message(message_id, memoryview(payload), count))
        self._wake(link)
        return message_id

    def receive_datagram(self, data: bytes, now: float, wall: float) -> None:
        """Take one datagram as it came off the socket; bad ones are dropped and counted."""
        self._clock = now
        stats = self.stats
        stats["datagrams_received"] += 1
        size = len(data)
        if size < MIN_DATAGRAM:
            stats["dropped_truncated"] += 1
            return
        if size > self.max_datagram:
            stats["dropped_oversized"] += 1
            return
        if data[:3] != _MAGIC_VERSION:
            stats["dropped_garbage"] += 1
            return
        signed = memoryview(data)[:-MAC_SIZE]
        if not hmac.compare_digest(
            hmac.digest(self._secret, signed, "sha256"), data[size - MAC_SIZE :]
        ):
            stats["dropped_bad_mac"] += 1
            return
        stamp, sender, recipient, session, bound_to = _HEADER.unpack_from(data, 4)
        if recipient != self._local_encoded or sender == self._local_encoded:
            stats["dropped_misdirected"] += 1
            return
        if abs(stamp - wall * 1000.0) > self._replay_ms:
            stats["dropped_stale"] += 1
            return
        link = self._links.get(sender)
        if link is not None and session < link.remote_session:
            stats["dropped_stale_session"] += 1
            return
        kind = data[3]
        if not session or not (
            (kind == DATA and size >= DATA_OVERHEAD)
            or (kind == ACK and size == ACK_SIZE)
            or (kind == PING and size == PING_SIZE)
            or (kind == PONG and size == PONG_SIZE)
        ):
            stats["dropped_malformed"] += 1
            return
        if link is None:
            address = decode_address(sender)
            if address is None:
                stats["dropped_malformed"] += 1
                return
            link = self._new_link(sender, address, now)
            if link is None:
                stats["dropped_capacity"] += 1
                return
        if session > link.remote_session:
            self._new_remote_session(link, session)
        if bound_to != self.session and (bound_to or kind != PING):
            self._unbound(link, kind, now)
            return
        link.last_rx = now
        if kind == DATA:
            self._on_data(link, data, now)
        elif kind == ACK:
            self._on_ack(link, data, now)
        elif kind == PING:
            self._on_ping(link, data, now, first_contact=not bound_to)
        else:
            self._on_pong(link, data, now)

    def datagrams_to_send(self, now: float, wall: float) -> list[tuple[NodeAddress, bytes]]:
        """Everything due now: acks, pongs, retransmissions, new data, pings; runs the timers."""
        self._clock = now
        out: list[tuple[NodeAddress, bytes]] = []
        ms = int(wall * 1000.0)
        key = self._secret
        digest = hmac.digest
        if now >= self._housekeeping_at:
            self._housekeeping(now, ms, out)
        if self._ack_due:
            due, self._ack_due = self._ack_due, []
            for link in due:
                link.ack_due = False
                if not link.removed and link.expected:
                    body = _ACK_OUT.pack(
                        _PREFIX[ACK],
                        ms,
                        link.route,
                        link.remote_session,
                        link.start,
                        link.expected,
                        self._sack_bits(link),
                        link.latest,
                    )
                    out.append((link.address, body + digest(key, body, "sha256")))
        if self._pong_due:
            due, self._pong_due = self._pong_due, []
            for link in due:
                if not link.removed and link.pong_due:
                    body = _NONCE_OUT.pack(
                        _PREFIX[PONG], ms, link.route, link.remote_session, link.pong_due
                    )
                    out.append((link.address, body + digest(key, body, "sha256")))
                link.pong_due = 0
        if self._hello_due:
            due, self._hello_due = self._hello_due, []
            for link in due:
                if not link.removed:
                    self._ping(link, now, ms, out)
        if self._fast:
            fast, self._fast = self._fast, []
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
            if not packet.parked and packet.seq > self._visible(link):
                # Probably received, waiting behind a hole beyond the SACK bitmap's reach: defer
                # once by a backoff period, unless the ack that brings it into view comes first.
                packet.parked = True
                heapq.heappush(link.parked, (packet.seq, packet))
                packet.deadline = deadline = now + self._backoff(link, packet)
                heapq.heappush(timers, (deadline, next(self._tiebreak), packet))
                continue
            self._retransmit(packet, now, ms, out)
        if self._sendable:
            sendable, self._sendable = self._sendable, []
            for link in sendable:
                link.sendable = False
                if not link.removed:
                    self._send_new(link, now, ms, out)
        self.stats["datagrams_sent"] += len(out)
        return out

    def events_received(self) -> list[Event]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When `datagrams_to_send` must next be called; None when nothing is pending."""
        if self._ack_due or self._pong_due or self._hello_due or self._fast or self._sendable:
            return self._clock
        timers = self._timers
        while timers:
            deadline, _, packet = timers[0]
            if not packet.done and packet.deadline == deadline:
                break
            heapq.heappop(timers)
        deadline = min(timers[0][0] if timers else math.inf, self._housekeeping_at)
        return None if deadline == math.inf else deadline

    def is_up(self, peer: NodeAddress) -> bool:
        link = self._by_address.get(peer) or self._links.get(encode_address(peer))
        return link is not None and link.state == _UP

    def live_peers(self) -> list[NodeAddress]:
        """Members currently up, in the order given to `set_members` (broadcast targets)."""
        return [link.address for link in self._members.values() if link.state == _UP]

    def tracked_peers(self) -> int:
        """How many remote nodes this core holds state for (bounded by max_peers)."""
        return len(self._links)

    # -- receiving ---------------------------------------------------------------------------

    def _on_data(self, link: _Link, data: bytes, now: float) -> None:
        base, seq, index, count = _DATA_IN.unpack_from(data, HEADER_SIZE)
        if not 0 < base <= seq or index >= count:
            self.stats["dropped_malformed"] += 1
            return
        link.last_data = now
        expected = link.expected
        if not expected:
            link.expected = link.start = base
            self._housekeeping_at = min(self._housekeeping_at, now + self.state_expiry)
        elif base > expected:
            # The sender gave up on everything before base: skip it, and any message it cut.
            buffer = link.buffer
            for stale in [s for s in buffer if s < base]:
                del buffer[stale]
            self._reset_partial(link)
            link.expected = link.start = base
            self._drain(link)
        expected = link.expected
        if seq < expected or seq in link.buffer:
            self.stats["dropped_duplicate"] += 1
            self._ack_soon(link)
            return
        if seq - expected >= self.window:
            self.stats["dropped_window"] += 1
            return
        self._mark_up(link, now)
        link.latest = seq
        chunk = data[DATA_OVERHEAD - MAC_SIZE : len(data) - MAC_SIZE]
        if seq == expected:
            link.expected = seq + 1
            self._reassemble(link, index, count, chunk)
            if link.buffer:
                self._drain(link)
        else:
            link.buffer[seq] = (index, count, chunk)
        self._ack_soon(link)

    def _drain(self, link: _Link) -> None:
        buffer = link.buffer
        while buffer:
            item = buffer.pop(link.expected, None)
            if item is None:
                return
            link.expected += 1
            self._reassemble(link, *item)

    def _reassemble(self, link: _Link, index: int, count: int, chunk: bytes) -> None:
        if link.part_count:
            if index != link.part_next or count != link.part_count:
                # Only a misbehaving sender interleaves messages: lose the one in progress.
                self.stats["dropped_malformed"] += 1
                self._reset_partial(link)
                self._reassemble(link, index, count, chunk)
                return
            link.part_next = index + 1
            if not link.part_drop:
                link.part_bytes += len(chunk)
                if link.part_bytes > self.max_message_bytes:
                    self.stats["dropped_too_large"] += 1
                    link.part_drop = True
                    link.parts = []
                else:
                    link.parts.append(chunk)
            if link.part_next == count:
                if not link.part_drop:
                    self._deliver(link, b"".join(link.parts))
                self._reset_partial(link)
            return
        if index:
            # Our state began mid-message (we restarted): its start went to our previous run.
            self.stats["dropped_orphan"] += 1
            if index + 1 < count:
                link.part_count, link.part_next, link.part_drop = count, index + 1, True
            return
        if count == 1:
            if len(chunk) > self.max_message_bytes:
                self.stats["dropped_too_large"] += 1
            else:
                self._deliver(link, chunk)
            return
        link.part_count, link.part_next, link.part_bytes = count, 1, len(chunk)
        if len(chunk) > self.max_message_bytes:
            self.stats["dropped_too_large"] += 1
            link.part_drop = True
        else:
            link.parts = [chunk]

    def _deliver(self, link: _Link, payload: bytes) -> None:
        self.stats["messages_delivered"] += 1
        self._events.append(Delivered(link.address, payload))

    def _ack_soon(self, link: _Link) -> None:
        if not link.ack_due:
            link.ack_due = True
            self._ack_due.append(link)

    def _sack_bits(self, link: _Link) -> int:
        buffer = link.buffer
        if not buffer:
            return 0
        first = link.expected + 1
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

    def _on_ack(self, link: _Link, data: bytes, now: float) -> None:
        start, cumulative, bits, latest = _ACK_IN.unpack_from(data, HEADER_SIZE)
        if not 0 < start <= cumulative <= link.next_seq or latest >= link.next_seq:
            self.stats["dropped_malformed"] += 1
            return
        flight = link.flight
        if not flight:
            return
        if start != link.checked_start:
            link.checked_start = start
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
                    self._rtt_sample(link, now - packet.sent_at)
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
        if cumulative > link.acked_cum:
            link.acked_cum = cumulative
        if bits and flight:
            self._fast_retransmit(link, cumulative, bits, now)
        if link.parked:
            self._release(link)
        if fresh:
            self._mark_up(link, now, at=mark)
            if link.queue:
                self._wake(link)

    def _popped(self, packet: _Packet) -> None:
        """A cumulative ack passed `packet`: the receiver has delivered everything up to it."""
        message = packet.message
        if packet.index + 1 == message.count and not message.failed:
            self.stats["messages_acknowledged"] += 1
            self._events.append(Acknowledged(message.id))

    def _fast_retransmit(self, link: _Link, cumulative: int, bits: int, now: float) -> None:
        """Resend holes with 3 or more later packets received, at most once per RTT each."""
        flight = link.flight
        head = flight[0].seq
        length = len(flight)
        again = link.rto if link.srtt is None else link.srtt + link.rttvar
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
                        self._fast.append(packet)
            position += 1

    def _release(self, link: _Link) -> None:
        """Resend parked packets that acks can now show: this ack would have SACKed them."""
        parked = link.parked
        limit = self._visible(link)
        while parked and parked[0][0] <= limit:
            packet = heapq.heappop(parked)[1]
            if packet.parked and not packet.done:
                self._fast.append(packet)

    @staticmethod
    def _visible(link: _Link) -> int:
        """The highest seq the receiver's acks can report: a timeout beyond it proves nothing."""
        head = link.flight[0].seq if link.flight else link.next_seq
        return max(link.acked_cum, head) + SACK_BITS

    def _fail_orphan(self, link: _Link, start: int) -> None:
        """The receiver's state begins at `start`: a message begun before it cannot complete."""
        flight = link.flight
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
            self._fail_now(message.id, link.address)

    def _on_ping(self, link: _Link, data: bytes, now: float, *, first_contact: bool) -> None:
        """Answer it; a first-contact ping (bound to no run of ours) could be a replay into this
        run, so only a ping bound to our run proves the peer alive: to a peer not up yet we
        send one of ours at once, bound to its run, whose pong proves it within a round trip
        (rather than at our next periodic ping, up to ping_interval later)."""
        (nonce,) = _U64.unpack_from(data, HEADER_SIZE)
        if nonce <= link.peer_ping_high:
            self.stats["dropped_duplicate"] += 1
            return
        link.peer_ping_high = nonce
        if not link.pong_due:
            self._pong_due.append(link)
        link.pong_due = nonce
        if not first_contact:
            self._mark_up(link, now)
        elif link.state != _UP:
            self._hello(link, now)

    def _on_pong(self, link: _Link, data: bytes, now: float) -> None:
        (nonce,) = _U64.unpack_from(data, HEADER_SIZE)
        if nonce > link.ping_nonce:
            self.stats["dropped_malformed"] += 1
            return
        if nonce <= link.pong_high:
            self.stats["dropped_duplicate"] += 1
            return
        link.pong_high = nonce
        if nonce == link.ping_nonce:
            self._rtt_sample(link, now - link.ping_sent_at)
        self._mark_up(link, now)

    def _new_remote_session(self, link: _Link, session: int) -> None:
        """We met the peer, or it restarted: its old stream and nonces went with its previous
        run. Everything in flight to it was bound to another run (or to none), which drops it,
        SACKed or not: send it all again now, and what waited for the session."""
        link.remote_session = session
        link.expected = link.start = 0
        link.buffer.clear()
        self._reset_partial(link)
        link.peer_ping_high = 0
        link.pong_due = 0
        link.checked_start = 0
        for packet in link.flight:
            packet.done = False
            packet.retransmitted = True
            self._fast.append(packet)
        self._wake(link)

    def _unbound(self, link: _Link, kind: int, now: float) -> None:
        """Traffic bound to another run of ours, or to none: a replay into this run, or a
        sender that does not know this run yet. A ping of ours tells the sender our session;
        at most one per min_rto, so replays cannot make us flood the peer."""
        self.stats["dropped_stale_session"] += 1
        if kind in (DATA, PING):
            self._hello(link, now)

    def _hello(self, link: _Link, now: float) -> None:
        """A ping of ours out now, at most one per min_rto per peer (replays cannot make us
        flood it): its answer teaches the peer our run, or proves the peer's run to us."""
        if now - link.hello_at >= self.min_rto:
            link.hello_at = now
            self._hello_due.append(link)

    @staticmethod
    def _reset_partial(link: _Link) -> None:
        link.parts = []
        link.part_count = link.part_next = link.part_bytes = 0
        link.part_drop = False

    # -- sending -----------------------------------------------------------------------------

    def _window(self, link: _Link) -> int:
        """Packets in flight to the peer: one, the probe, until we know its session."""
        return self.window if link.remote_session else 1

    def _wake(self, link: _Link) -> None:
        if link.sendable or not link.queue:
            return
        flight = link.flight
        if flight and link.next_seq - flight[0].seq >= self._window(link):
            return
        link.sendable = True
        self._sendable.append(link)

    def _send_new(
        self, link: _Link, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]
    ) -> None:
        flight, queue = link.flight, link.queue
        seq = link.next_seq
        if flight:
            base = flight[0].seq
        else:
            base = seq
            self._housekeeping_at = min(self._housekeeping_at, now + self.down_after)
        limit = base + self._window(link)
        size, key, route, address = self._chunk, self._secret, link.route, link.address
        bound_to = link.remote_session
        deadline = now + link.rto
        prefix = _PREFIX[DATA]
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
            packet = _Packet(link, message, seq, index, chunk, now)
            packet.deadline = deadline
            flight.append(packet)
            header = _DATA_OUT.pack(prefix, ms, route, bound_to, base, seq, index, message.count)
            body = header + chunk
            out.append((address, body + hmac.digest(key, body, "sha256")))
            heapq.heappush(timers, (deadline, next(tiebreak), packet))
            seq += 1
        link.next_seq = seq
        link.last_tx = now

    def _retransmit(
        self, packet: _Packet, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]
    ) -> None:
        link = packet.link
        packet.sent_at = now
        packet.retransmitted = True
        packet.parked = False
        packet.deadline = deadline = now + self._backoff(link, packet)
        heapq.heappush(self._timers, (deadline, next(self._tiebreak), packet))
        body = (
            _DATA_OUT.pack(
                _PREFIX[DATA],
                ms,
                link.route,
                link.remote_session,
                link.flight[0].seq,
                packet.seq,
                packet.index,
                packet.message.count,
            )
            + packet.chunk
        )
        out.append((link.address, body + hmac.digest(self._secret, body, "sha256")))
        self.stats["retransmitted"] += 1

    def _backoff(self, link: _Link, packet: _Packet) -> float:
        return min(self.max_rto, link.rto * (1 << min(packet.backoff, 20)))

    def _rtt_sample(self, link: _Link, rtt: float) -> None:
        """RFC 6298 smoothing; the caller applies Karn's rule (no retransmitted packets)."""
        if link.srtt is None:
            link.srtt = rtt
            link.rttvar = rtt / 2.0
        else:
            link.rttvar += 0.25 * (abs(link.srtt - rtt) - link.rttvar)
            link.srtt += 0.125 * (rtt - link.srtt)
        link.rto = min(max(link.srtt + 4.0 * link.rttvar, self.min_rto), self.max_rto)

    # -- liveness and timers -----------------------------------------------------------------

    def _housekeeping(self, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]) -> None:
        next_at = math.inf
        down_after, expiry = self.down_after, self.state_expiry
        for link in list(self._links.values()):
            if link.flight:
                due = link.flight[0].first_sent + down_after
                if now >= due:
                    self._mark_down(link, now)
                else:
                    next_at = min(next_at, due)
            if link.member:
                if link.state != _DOWN:
                    due = max(link.last_heard, link.member_since) + down_after
                    if now >= due:
                        self._mark_down(link, now)
                    else:
                        next_at = min(next_at, due)
                if now >= link.next_ping:
                    link.next_ping = now + self.ping_interval
                    self._ping(link, now, ms, out)
                next_at = min(next_at, link.next_ping)
            if link.expected:
                due = link.last_data + expiry
                if now >= due:
                    link.expected = link.start = 0
                    link.buffer.clear()
                    self._reset_partial(link)
                else:
                    next_at = min(next_at, due)
            if not link.member and not link.flight and not link.queue:
                due = max(link.last_rx, link.last_tx) + expiry
                if now >= due:
                    self._remove(link)
                else:
                    next_at = min(next_at, due)
        self._housekeeping_at = next_at

    def _ping(self, link: _Link, now: float, ms: int, out: list[tuple[NodeAddress, bytes]]) -> None:
        link.ping_nonce += 1
        link.ping_sent_at = now
        body = _NONCE_OUT.pack(_PREFIX[PING], ms, link.route, link.remote_session, link.ping_nonce)
        out.append((link.address, body + hmac.digest(self._secret, body, "sha256")))

    def _mark_up(self, link: _Link, now: float, at: int | None = None) -> None:
        """Fresh traffic from the peer; `at` puts PeerUp before the events that traffic caused."""
        link.last_heard = now
        if link.state != _UP:
            if link.state == _DOWN:
                self.stats["peers_down"] -= 1
            link.state = _UP
            self.stats["peers_up"] += 1
            self._events.insert(len(self._events) if at is None else at, PeerUp(link.address))

    def _mark_down(self, link: _Link, now: float) -> None:
        """Give up on the peer: fail what it has not delivered, and skip it on the wire."""
        link.down_since = now
        if link.state != _DOWN:
            if link.state == _UP:
                self.stats["peers_up"] -= 1
            link.state = _DOWN
            self.stats["peers_down"] += 1
            self._events.append(PeerDown(link.address))
        messages: list[_Message] = []
        for packet in link.flight:
            packet.done = True
            if not packet.message.failed:
                packet.message.failed = True
                messages.append(packet.message)
        link.flight.clear()
        link.parked.clear()
        for message in link.queue:
            if not message.failed:
                message.failed = True
                messages.append(message)
        link.queue.clear()
        for message in messages:
            self._fail_now(message.id, link.address)

    def _fail_now(self, message_id: int, peer: NodeAddress) -> None:
        self.stats["messages_failed"] += 1
        self._events.append(Failed(message_id, peer))

    def _new_link(
        self, encoded: bytes, address: NodeAddress, now: float, *, force: bool = False
    ) -> _Link | None:
        if len(self._links) >= self.max_peers and not self._make_room(now) and not force:
            return None
        canonical = NodeAddress(str(ipaddress.ip_address(address.host)), address.port)
        route = self._route_tail + encoded + self._session_bytes
        rto = min(max(1.0, self.min_rto), self.max_rto)
        link = _Link(canonical, encoded, route, self._seq_floor, rto, now)
        self._links[encoded] = link
        self._by_address[canonical] = link
        self._housekeeping_at = min(self._housekeeping_at, now + self.state_expiry)
        return link

    def _make_room(self, now: float) -> bool:
        """Forget the longest-idle non-members, if idle past the replay window (replays stay
        stale once their sender's session is forgotten)."""
        idle_before = now - self.replay_window
        idle = [
            link
            for link in self._links.values()
            if not link.member
            and not link.flight
            and not link.queue
            and max(link.last_rx, link.last_tx) < idle_before
        ]
        idle.sort(key=lambda link: max(link.last_rx, link.last_tx))
        for link in idle[: max(1, len(self._links) - self.max_peers * 9 // 10)]:
            self._remove(link)
        return len(self._links) < self.max_peers

    def _remove(self, link: _Link) -> None:
        link.removed = True
        del self._links[link.encoded]
        self._by_address.pop(link.address, None)
        self._seq_floor = max(self._seq_floor, link.next_seq)
        if link.state == _UP:
            self.stats["peers_up"] -= 1
        elif link.state == _DOWN:
            self.stats["peers_down"] -= 1
