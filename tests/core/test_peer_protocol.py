"""PeerProtocol: nodes wired by a simulated network that loses, duplicates and reorders; no sockets.

The clock is a variable: `Net` advances it to the next arrival or the next deadline a node asks
for, so seconds of protocol time (timeouts, expiry) run in milliseconds.
"""

from __future__ import annotations

import heapq
import hmac
import ipaddress
import itertools
import math
import random
import re
import struct
from collections.abc import Callable
from typing import Any

import pytest

from runtime.core import peer_protocol as pp
from runtime.core.peer_protocol import (
    Acknowledged,
    Delivered,
    Event,
    Failed,
    PeerDown,
    PeerProtocol,
    PeerUp,
)
from runtime.wire.connection_id import NodeAddress

SECRET = b"test-secret-0123456789abcdef"
WALL0 = 1_700_000_000.0
A = NodeAddress("10.0.0.1", 9100)
B = NodeAddress("10.0.0.2", 9100)
C = NodeAddress("2001:db8::3", 9200)
D = NodeAddress("10.0.0.4", 9100)

# Offsets into a DATA datagram, from the documented layout.
SEQ_AT = pp.HEADER_SIZE + 8
INDEX_AT = pp.HEADER_SIZE + 16


def node(local: NodeAddress, session: int = 1, **options: Any) -> PeerProtocol:
    return PeerProtocol(local=local, secret=SECRET, session=session, **options)


def seq_of(data: bytes) -> int:
    return int.from_bytes(data[SEQ_AT : SEQ_AT + 8], "big")


def index_of(data: bytes) -> int:
    return int.from_bytes(data[INDEX_AT : INDEX_AT + 4], "big")


def forge(
    kind: int,
    body: bytes,
    *,
    wall: float,
    sender: NodeAddress = A,
    recipient: NodeAddress = B,
    session: int = 1,
    bound_to: int = 1,
    secret: bytes = SECRET,
) -> bytes:
    """A datagram built from the documented wire format, independently of the module."""
    signed = (
        b"WG\x02"
        + bytes((kind,))
        + struct.pack(">Q", int(wall * 1000))
        + pp.encode_address(sender)
        + pp.encode_address(recipient)
        + struct.pack(">QQ", session, bound_to)
        + body
    )
    return signed + hmac.digest(secret, signed, "sha256")


def bound_to(data: bytes) -> int:
    """The recipient session a datagram carries: the receiver's run as its sender knew it."""
    return int.from_bytes(data[58:66], "big")


def introduce(a: PeerProtocol, b: PeerProtocol, now: float = 0.0) -> None:
    """A's first-contact ping, B's pong and B's own ping bound to A's run, A's pong: both learn
    the other's session and see it up, as members do at start-up, so data flows at once rather
    than after a first-contact probe."""
    a.set_members([b.local], now)
    [(_, ping)] = a.datagrams_to_send(now, WALL0 + now)
    b.receive_datagram(ping, now, WALL0 + now)
    [(_, pong), (_, hello)] = b.datagrams_to_send(now, WALL0 + now)
    a.receive_datagram(pong, now, WALL0 + now)
    a.receive_datagram(hello, now, WALL0 + now)
    [(_, answer)] = a.datagrams_to_send(now, WALL0 + now)
    b.receive_datagram(answer, now, WALL0 + now)
    a.set_members([], now)
    assert a.events_received() == [PeerUp(b.local)]
    assert b.events_received() == [PeerUp(a.local)]


class Net:
    """Moves datagrams between nodes with seeded loss, duplication and reordering (jitter)."""

    def __init__(
        self,
        *nodes: PeerProtocol,
        loss: float = 0.0,
        duplicate: float = 0.0,
        latency: float = 0.0005,
        jitter: float = 0.0,
        seed: int = 7,
    ) -> None:
        self.nodes = {peer.local: peer for peer in nodes}
        self.events: dict[NodeAddress, list[Event]] = {peer.local: [] for peer in nodes}
        self.now = 0.0
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.latency, self.jitter = loss, duplicate, latency, jitter
        self.in_air: list[tuple[float, int, NodeAddress, bytes]] = []
        self.order = itertools.count()
        self.dead: set[NodeAddress] = set()
        self.drop: Callable[[NodeAddress, NodeAddress, bytes], bool] | None = None
        self.sent: list[tuple[NodeAddress, NodeAddress, bytes]] = []

    @property
    def wall(self) -> float:
        return WALL0 + self.now

    def replace(self, peer: PeerProtocol) -> None:
        """A restart: a new instance takes over the address."""
        self.nodes[peer.local] = peer

    def flush(self) -> None:
        for address, peer in self.nodes.items():
            if address in self.dead:
                continue
            for destination, data in peer.datagrams_to_send(self.now, self.wall):
                self.sent.append((address, destination, data))
                if self.drop is not None and self.drop(address, destination, data):
                    continue
                if self.rng.random() < self.loss:
                    continue
                for _ in range(2 if self.rng.random() < self.duplicate else 1):
                    arrival = self.now + self.latency + self.rng.random() * self.jitter
                    heapq.heappush(self.in_air, (arrival, next(self.order), destination, data))
            self.events[address].extend(peer.events_received())

    def run(
        self,
        until: Callable[[], bool] | None = None,
        *,
        duration: float | None = None,
        max_steps: int = 100_000,
    ) -> None:
        """Advance until `until()` holds, or for `duration` seconds of protocol time."""
        end = math.inf if duration is None else self.now + duration
        for _ in range(max_steps):
            self.flush()
            if until is not None and until():
                return
            times = [self.in_air[0][0]] if self.in_air else []
            for address, peer in self.nodes.items():
                deadline = peer.next_deadline()
                if deadline is not None and address not in self.dead:
                    times.append(deadline)
            upcoming = min(times, default=math.inf)
            if upcoming > end:
                self.now = end
                self.flush()
                return
            assert upcoming < math.inf, "nothing left to do, and the condition does not hold"
            self.now = max(self.now, upcoming)
            while self.in_air and self.in_air[0][0] <= self.now:
                _, _, destination, data = heapq.heappop(self.in_air)
                if destination in self.nodes and destination not in self.dead:
                    self.nodes[destination].receive_datagram(data, self.now, self.wall)
        raise AssertionError(f"step limit reached at t={self.now}")

    def delivered(self, address: NodeAddress, since: int = 0) -> list[bytes]:
        return [e.payload for e in self.events[address][since:] if isinstance(e, Delivered)]

    def of(self, address: NodeAddress, kind: type) -> list[Event]:
        return [e for e in self.events[address] if isinstance(e, kind)]

    def data_sent(self, source: NodeAddress, destination: NodeAddress) -> list[bytes]:
        return [
            data
            for src, dst, data in self.sent
            if src == source and dst == destination and data[3] == pp.DATA
        ]


def acknowledged(peer: PeerProtocol, count: int) -> Callable[[], bool]:
    return lambda: peer.stats["messages_acknowledged"] >= count


# -- basic delivery -------------------------------------------------------------------------


def test_round_trip_of_one_small_message() -> None:
    a, b = node(A), node(B)
    net = Net(a, b)
    message_id = a.send_message(B, b"hello", net.now)
    net.run(acknowledged(a, 1))
    assert net.events[B] == [PeerUp(A), Delivered(A, b"hello")]
    assert net.events[A] == [PeerUp(B), Acknowledged(message_id)]
    # First contact: the probe is bound to no run of B's, so B drops it and pings; A resends.
    assert net.now == pytest.approx(0.002)  # two round trips
    assert (a.stats["datagrams_sent"], b.stats["datagrams_sent"]) == (3, 2)
    assert b.stats["dropped_stale_session"] == 1
    # Once both know the other's run, a message is one round trip: data, ack.
    started, sent = net.now, (a.stats["datagrams_sent"], b.stats["datagrams_sent"])
    second = a.send_message(B, b"again", net.now)
    net.run(acknowledged(a, 2))
    assert net.events[A][-1] == Acknowledged(second) and net.delivered(B)[-1] == b"again"
    assert net.now - started == pytest.approx(0.001)
    assert (a.stats["datagrams_sent"], b.stats["datagrams_sent"]) == (sent[0] + 1, sent[1] + 1)
    assert (a.stats["messages_sent"], a.stats["messages_acknowledged"]) == (2, 2)
    assert b.stats["messages_delivered"] == 2
    assert (a.stats["peers_up"], b.stats["peers_up"]) == (1, 1)
    assert a.is_up(B) and b.is_up(A)


def test_data_datagram_follows_the_documented_layout() -> None:
    a, b = node(A, session=77), node(B, session=5)
    a.send_message(B, b"payload", 1.0)
    [(destination, probe)] = a.datagrams_to_send(1.0, WALL0)
    assert bound_to(probe) == 0  # B's run is not known yet
    b.receive_datagram(probe, 1.0, WALL0)
    [(_, hello)] = b.datagrams_to_send(1.0, WALL0)
    a.receive_datagram(hello, 1.0, WALL0)
    [_, (destination, data)] = a.datagrams_to_send(1.0, WALL0)  # the pong, then the data
    assert destination == B
    assert data[:4] == b"WG\x02\x01"
    stamp, sender, recipient, session, recipient_session = struct.unpack_from(">Q19s19sQQ", data, 4)
    assert stamp == int(WALL0 * 1000)
    assert sender == bytes([4, 10, 0, 0, 1]) + bytes(12) + (9100).to_bytes(2, "big")
    assert recipient == pp.encode_address(B)
    assert (session, recipient_session) == (77, 5)
    assert struct.unpack_from(">QQII", data, 66) == (1, 1, 0, 1)  # base, seq, index, count
    assert data[90:-32] == b"payload"
    assert data[-32:] == hmac.digest(SECRET, data[:-32], "sha256")
    assert len(data) == pp.DATA_OVERHEAD + len(b"payload")


def test_address_encoding_round_trips_and_rejects_non_canonical_forms() -> None:
    for address in (A, C, NodeAddress("::ffff:10.0.0.1", 1), NodeAddress("2001:0db8::03", 2)):
        canonical = NodeAddress(str(ipaddress.ip_address(address.host)), address.port)
        assert pp.decode_address(pp.encode_address(address)) == canonical
    v4 = pp.encode_address(A)
    assert pp.decode_address(v4[:5] + b"\x01" + v4[6:]) is None  # padding must be zero
    assert pp.decode_address(b"\x05" + v4[1:]) is None
    assert pp.decode_address(v4[:17] + b"\x00\x00") is None  # port 0
    assert pp.decode_address(v4[:10]) is None


@pytest.mark.parametrize(
    ("max_datagram", "loss"), [(1472, 0.0), (1472, 0.05), (8900, 0.0), (8900, 0.05), (512, 0.0)]
)
def test_one_mebibyte_payload_is_reassembled_intact(max_datagram: int, loss: float) -> None:
    a, b = node(A, max_datagram=max_datagram), node(B, max_datagram=max_datagram)
    net = Net(a, b, loss=loss, jitter=0.001 if loss else 0.0, seed=3)
    payload = random.Random(1).randbytes(1 << 20)
    message_id = a.send_message(B, payload, net.now)
    net.run(acknowledged(a, 1))
    assert net.delivered(B) == [payload]
    assert net.of(A, Acknowledged) == [Acknowledged(message_id)]
    packets = net.data_sent(A, B)
    assert max(len(data) for data in packets) == max_datagram
    fragments = -(-len(payload) // (max_datagram - pp.DATA_OVERHEAD))
    assert len({seq_of(data) for data in packets}) == fragments
    if loss == 0.0:
        assert len(packets) == fragments + 1  # the first-contact probe is sent twice


def test_empty_payload_is_a_message_too() -> None:
    a, b = node(A), node(B)
    net = Net(a, b)
    a.send_message(B, b"", net.now)
    net.run(acknowledged(a, 1))
    assert net.delivered(B) == [b""]


def test_ten_thousand_messages_over_a_bad_network_arrive_once_in_order() -> None:
    a, b = node(A), node(B)
    net = Net(a, b, loss=0.10, duplicate=0.05, latency=0.0005, jitter=0.002, seed=11)
    payloads = [f"command batch {index}".encode() for index in range(10_000)]
    ids = [a.send_message(B, payload, net.now) for payload in payloads]
    net.run(acknowledged(a, len(ids)), max_steps=200_000)
    assert net.delivered(B) == payloads
    assert net.of(A, Acknowledged) == [Acknowledged(message_id) for message_id in ids]
    assert net.of(A, Failed) == []
    assert net.of(A, PeerDown) == [] and net.of(B, PeerDown) == []
    assert a.stats["retransmitted"] > 0
    assert b.stats["dropped_duplicate"] > 0
    assert b.stats["messages_delivered"] == len(payloads)
    assert a.next_deadline() is not None and not a.datagrams_to_send(net.now, net.wall)


def test_three_nodes_all_to_all_with_loss_keep_per_peer_order() -> None:
    nodes = [node(A), node(B), node(C)]
    net = Net(*nodes, loss=0.1, duplicate=0.05, jitter=0.003, seed=5)
    for peer in nodes:
        peer.set_members([A, B, C], net.now)
    # Not heard from yet, and not known down: reachable, though not up.
    assert nodes[0].live_peers() == [] and nodes[0].reachable_peers() == [B, C]
    sent: dict[tuple[NodeAddress, NodeAddress], list[bytes]] = {}
    for source in nodes:
        for destination in (A, B, C):
            if destination != source.local:
                payloads = [f"{source.local}>{destination}:{i}".encode() for i in range(300)]
                sent[source.local, destination] = payloads
                for payload in payloads:
                    source.send_message(destination, payload, net.now)
    net.run(lambda: all(peer.stats["messages_acknowledged"] == 600 for peer in nodes))
    for (source, destination), payloads in sent.items():
        got = [
            e.payload
            for e in net.events[destination]
            if isinstance(e, Delivered) and e.peer == source
        ]
        assert got == payloads
    assert all(peer.live_peers() == [p for p in (A, B, C) if p != peer.local] for peer in nodes)


def test_one_ack_covers_everything_received_in_one_go() -> None:
    a, b = node(A), node(B)
    introduce(a, b)
    ids = [a.send_message(B, bytes([index]), 0.0) for index in range(10)]
    datagrams = a.datagrams_to_send(0.0, WALL0)
    assert len(datagrams) == 10
    for _, data in [datagrams[5], *reversed(datagrams)]:  # reordered, and one held twice
        b.receive_datagram(data, 0.001, WALL0)
    assert b.stats["dropped_duplicate"] == 1
    acks = b.datagrams_to_send(0.001, WALL0)
    assert len(acks) == 1
    # recipient session, then start, cumulative, SACK bitmap, latest (the last to arrive)
    assert struct.unpack_from(">QQQQQ", acks[0][1], 58) == (1, 1, 11, 0, 1)
    assert [e.payload for e in b.events_received() if isinstance(e, Delivered)] == [
        bytes([index]) for index in range(10)
    ]
    a.receive_datagram(acks[0][1], 0.002, WALL0)
    assert a.events_received() == [Acknowledged(i) for i in ids]


def test_sack_reports_out_of_order_packets_and_triggers_fast_retransmit() -> None:
    a, b = node(A), node(B)
    introduce(a, b)
    net = Net(a, b)
    first_copy = True

    def lose_first_copy_of_packet_1(src: NodeAddress, dst: NodeAddress, data: bytes) -> bool:
        nonlocal first_copy
        if data[3] == pp.DATA and seq_of(data) == 1 and first_copy:
            first_copy = False
            return True
        return False

    net.drop = lose_first_copy_of_packet_1
    ids = [a.send_message(B, bytes([index]), net.now) for index in range(5)]
    net.run(acknowledged(a, 5))
    assert net.now < 0.01  # well before the first RTO (1 s): the SACK bitmap did it
    assert a.stats["retransmitted"] == 1
    assert net.delivered(B) == [bytes([index]) for index in range(5)]
    assert net.of(A, Acknowledged) == [Acknowledged(i) for i in ids]
    ack = next(data for src, _, data in net.sent if src == B and data[3] == pp.ACK)
    assert struct.unpack_from(">QQ", ack, 74) == (1, 0b1111)  # cumulative 1, 2..5 received


def test_retransmission_timeout_backs_off_and_samples_rtt() -> None:
    a = node(A, min_rto=0.01, max_rto=1.0)
    a.send_message(B, b"x", 0.0)
    assert len(a.datagrams_to_send(0.0, WALL0)) == 1
    assert a.next_deadline() == pytest.approx(1.0)  # no RTT sample yet: the initial RTO
    assert a.datagrams_to_send(0.999, WALL0) == []
    [(_, again)] = a.datagrams_to_send(1.0, WALL0)
    assert seq_of(again) == 1
    assert a.stats["retransmitted"] == 1
    assert a.next_deadline() == pytest.approx(2.0)  # doubled, capped at max_rto


# -- forged, replayed and broken datagrams --------------------------------------------------


def established() -> tuple[Net, PeerProtocol, PeerProtocol, PeerProtocol, bytes]:
    a, b, c = node(A), node(B), node(C)
    introduce(a, b)
    net = Net(a, b, c)
    a.send_message(B, b"first", net.now)
    net.run(acknowledged(a, 1))
    [data] = net.data_sent(A, B)
    return net, a, b, c, data


def still_works(net: Net, a: PeerProtocol, b: PeerProtocol) -> None:
    since = len(net.events[B])
    done = a.stats["messages_acknowledged"]
    a.send_message(B, b"after", net.now)
    net.run(acknowledged(a, done + 1))
    assert net.delivered(B, since) == [b"after"]


def dropped(peer: PeerProtocol) -> dict[str, int]:
    return {
        key.removeprefix("dropped_"): value
        for key, value in peer.stats.items()
        if key.startswith("dropped_") and value
    }


def test_datagram_signed_with_another_key_is_dropped() -> None:
    net, a, b, _, _ = established()
    forger = PeerProtocol(local=A, secret=b"not-the-secret-at-all", session=1)
    forger.send_message(B, b"evil", net.now)
    [(_, data)] = forger.datagrams_to_send(net.now, net.wall)
    b.receive_datagram(data, net.now, net.wall)
    assert dropped(b) == {"bad_mac": 1}
    assert b.events_received() == []
    still_works(net, a, b)


def test_replay_of_a_received_datagram_is_a_duplicate_and_reacknowledged() -> None:
    net, a, b, _, data = established()
    b.receive_datagram(data, net.now, net.wall)
    assert dropped(b) == {"duplicate": 1}
    assert b.events_received() == []
    [(destination, ack)] = b.datagrams_to_send(net.now, net.wall)
    assert (destination, ack[3]) == (A, pp.ACK)
    still_works(net, a, b)
    assert net.delivered(B) == [b"first", b"after"]


@pytest.mark.parametrize("skew", [30.01, -30.01])
def test_replay_outside_the_time_window_is_stale(skew: float) -> None:
    net, a, b, _, data = established()
    b.receive_datagram(data, net.now, net.wall + skew)
    assert dropped(b) == {"stale": 1}
    still_works(net, a, b)


def test_replay_to_another_node_is_misdirected() -> None:
    net, a, b, c, data = established()
    c.receive_datagram(data, net.now, net.wall)
    assert dropped(c) == {"misdirected": 1}
    assert c.events_received() == [] and c.tracked_peers() == 0
    # A datagram claiming to come from the receiver itself is no better.
    b.receive_datagram(forge(pp.PING, bytes(8), wall=net.wall, sender=B), net.now, net.wall)
    assert dropped(b) == {"misdirected": 1}
    still_works(net, a, b)


def test_truncated_oversized_garbage_and_tampered_datagrams_are_dropped() -> None:
    net, a, b, _, data = established()
    for bad in (b"", data[:1], data[: pp.MIN_DATAGRAM - 1]):
        b.receive_datagram(bad, net.now, net.wall)
    b.receive_datagram(bytes(1473), net.now, net.wall)
    b.receive_datagram(b"XX" + data[2:], net.now, net.wall)
    b.receive_datagram(data[:2] + b"\x01" + data[3:], net.now, net.wall)  # a v1 node's
    tampered = bytearray(data)
    tampered[90] ^= 1
    b.receive_datagram(bytes(tampered), net.now, net.wall)
    b.receive_datagram(data[:-1], net.now, net.wall)
    assert dropped(b) == {"truncated": 3, "oversized": 1, "garbage": 2, "bad_mac": 2}
    # A's ping, A's pong to B's answering ping, and the data; then the bad ones.
    assert b.stats["datagrams_received"] == 3 + 8
    still_works(net, a, b)


def test_random_bytes_never_raise() -> None:
    net, a, b, _, data = established()
    rng = random.Random(99)
    count = 0
    for size in range(0, 1600, 3):
        b.receive_datagram(rng.randbytes(size), net.now, net.wall)
        b.receive_datagram(b"WG\x02" + rng.randbytes(size), net.now, net.wall)
        mutated = bytearray(data)
        mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        b.receive_datagram(bytes(mutated), net.now, net.wall)
        count += 3
    assert sum(dropped(b).values()) == count
    assert b.events_received() == []
    still_works(net, a, b)


def test_validly_signed_but_malformed_datagrams_are_dropped() -> None:
    net, a, b, _, _ = established()
    wall = net.wall
    bad = [
        forge(9, bytes(8), wall=wall),  # unknown kind
        forge(pp.ACK, bytes(39), wall=wall),  # short body
        forge(pp.PING, bytes(9), wall=wall),  # long body
        forge(pp.DATA, struct.pack(">QQII", 5, 5, 2, 2), wall=wall),  # index beyond count
        forge(pp.DATA, struct.pack(">QQII", 6, 5, 0, 1), wall=wall),  # base after seq
        forge(pp.DATA, struct.pack(">QQII", 0, 0, 0, 1), wall=wall),  # seq 0
        forge(pp.PING, bytes(8), wall=wall, sender=D, session=0),  # sessions start at 1
    ]
    # A sender address of an unknown family, properly signed.
    signed = forge(pp.PING, bytes(8), wall=wall, sender=D)[: -pp.MAC_SIZE]
    signed = signed[:12] + b"\x07" + signed[13:]
    bad.append(signed + hmac.digest(SECRET, signed, "sha256"))
    for data in bad:
        b.receive_datagram(data, net.now, net.wall)
    assert dropped(b) == {"malformed": 8}
    assert b.tracked_peers() == 1
    still_works(net, a, b)


def test_older_session_of_a_restarted_sender_is_dropped() -> None:
    net, a1, b, _, old = established()
    net.run(duration=1.0)  # a restart takes a while
    a2 = node(A, session=2)
    net.replace(a2)
    a2.send_message(B, b"from the new run", net.now)
    net.run(acknowledged(a2, 1))
    assert net.delivered(B) == [b"first", b"from the new run"]
    assert dropped(b) == {"stale_session": 1}  # a2's first-contact probe
    b.receive_datagram(old, net.now, net.wall)  # a replay of the old run
    a1.send_message(B, b"zombie", net.now)  # the old run, still alive somehow
    for _, data in a1.datagrams_to_send(net.now, net.wall):
        b.receive_datagram(data, net.now, net.wall)
    assert dropped(b) == {"stale_session": 1 + 2}
    assert b.events_received() == []
    still_works(net, a2, b)


@pytest.mark.parametrize("kind", [pp.ACK, pp.PONG])
def test_answer_bound_to_another_run_of_ours_is_dropped(kind: int) -> None:
    net, a, _, _, _ = established()
    a.set_members([B], net.now)
    a.datagrams_to_send(net.now, net.wall)  # ping 1, whose pong is still due
    body = struct.pack(">QQQQ", 1, 2, 0, 1) if kind == pp.ACK else struct.pack(">Q", 1)
    for run in (0, 7):  # none, or one that is not ours (we are run 1)
        answer = forge(kind, body, wall=net.wall, sender=B, recipient=A, bound_to=run)
        a.receive_datagram(answer, net.now, net.wall)
    assert dropped(a) == {"stale_session": 2}
    assert a.datagrams_to_send(net.now, net.wall) == []  # answers are not answered


def test_replays_do_not_keep_a_dead_member_up() -> None:
    a, b = node(A), node(B)
    net = Net(a, b)
    a.set_members([B], net.now)
    b.set_members([A], net.now)
    net.run(duration=2.5)
    captured = [data for src, dst, data in net.sent if src == B and dst == A]
    assert {data[3] for data in captured} == {pp.PING, pp.PONG}
    net.dead.add(B)
    killed = net.now
    for _ in range(40):  # an attacker replays B's traffic every 100 ms
        for data in captured:
            a.receive_datagram(data, net.now, net.wall)
        net.run(duration=0.1)
        if not net.of(A, PeerDown):
            down_by = net.now
    assert net.of(A, PeerDown) == [PeerDown(B)]
    assert down_by - killed < 3.0  # as if nothing had been replayed
    assert net.events[A][-1] == PeerDown(B)  # and no PeerUp after it
    assert a.live_peers() == []
    assert a.reachable_peers() == []  # known down: not even a channel publish goes there
    assert a.stats["dropped_duplicate"] > 0


def hellos(net: Net, source: NodeAddress, destination: NodeAddress) -> int:
    """Pings sent (between non-members, each answers traffic bound to another run)."""
    return sum(
        1 for s, d, data in net.sent if (s, d) == (source, destination) and data[3] == pp.PING
    )


def test_data_replayed_into_a_restarted_receiver_is_not_delivered() -> None:
    """Issue 12: ECS reuses a task's IP and the peer port is fixed, so a node restarted at the
    same address starts with no state for its peers and would take DATA captured on its way to
    the previous run, within the replay window, as new: a broadcast delivered twice."""
    a, b1, c = node(A), node(B, session=1), node(C)
    net = Net(a, b1, c)
    commands = [b'{"action":"broadcast","data":"once"}', bytes(4000), b'{"action":"publish"}']
    for payload in commands:
        a.send_message(B, payload, net.now)
    net.run(acknowledged(a, len(commands)))
    captured = net.data_sent(A, B)  # the first-contact probe among them
    assert net.delivered(B) == commands and len(captured) >= 5
    captured_at = net.now
    net.run(duration=5.0)
    b2 = node(B, session=2)  # the restart: a new run at the same address
    net.replace(b2)
    since = len(net.events[B])
    c.send_message(B, b"from C", net.now)  # a well-behaved peer, during the attack
    attack_began = net.now
    for _ in range(50):  # an on-path attacker replays everything every 2 ms
        for data in captured:
            b2.receive_datagram(data, net.now, net.wall)
        net.run(duration=0.002)
    assert net.now - captured_at < b2.replay_window  # fresh enough to pass the time check
    assert net.delivered(B, since) == [b"from C"]
    assert b2.stats["dropped_stale_session"] == 50 * len(captured) + 1  # and C's probe
    assert b2.stats["messages_delivered"] == 1
    # Each replay is answered by nothing but a ping to A (its sender learns b2's run), and
    # those are bounded by one per min_rto whatever the replay rate.
    assert 1 <= hellos(net, B, A) <= 1 + (net.now - attack_began) / b2.min_rto
    # A's next command reaches the new run, once.
    a.send_message(B, b"after", net.now)
    net.run(acknowledged(a, len(commands) + 1))
    assert net.delivered(B, since) == [b"from C", b"after"]
    assert net.of(A, Failed) == [] and net.of(C, Failed) == []


def test_pings_replayed_into_a_restarted_receiver_do_not_raise_a_dead_peer() -> None:
    """Replayed pings must not make the new run see a dead node as up: those bound to the
    previous run are dropped, and the first-contact one (bound to none) is answered, once."""
    a, b1 = node(A), node(B, session=1)
    net = Net(a, b1)
    a.set_members([B], net.now)
    net.run(duration=2.5)
    sent = [data for src, dst, data in net.sent if (src, dst) == (A, B)]
    captured = [data for data in sent if data[3] == pp.PING]
    assert len(captured) == 3  # at 0, 1 and 2 s; the rest are pongs to B's own pings
    net.dead.add(A)
    b2 = node(B, session=2)
    b2.set_members([A], net.now)
    net.replace(b2)
    since, restarted = len(net.events[B]), net.now
    for _ in range(40):  # replayed every 100 ms until b2 gives A up
        for data in captured:
            b2.receive_datagram(data, net.now, net.wall)
        net.run(duration=0.1)
    assert net.events[B][since:] == [PeerDown(A)]  # never up
    assert b2.live_peers() == []
    assert b2.stats["dropped_stale_session"] == 40 * 2
    assert b2.stats["dropped_duplicate"] == 39  # the first-contact ping, answered once
    pongs = [data for src, _, data in net.sent if src == B and data[3] == pp.PONG]
    assert len(pongs) == 3 + 1  # b1's three, b2's one
    assert net.now - restarted >= 3.0
    assert [bound_to(data) for data in captured] == [0, 1, 1]  # first contact, then b1's run


# -- restarts, failures and recovery --------------------------------------------------------


def test_receiver_restart_then_sender_resumes_without_duplicates() -> None:
    a, b1 = node(A), node(B, session=1)
    net = Net(a, b1, loss=0.1, seed=2)
    first = [f"before {i}".encode() for i in range(50)]
    for payload in first:
        a.send_message(B, payload, net.now)
    net.run(acknowledged(a, 50))
    assert net.delivered(B) == first
    since = len(net.events[B])
    net.replace(node(B, session=2))
    second = [f"after {i}".encode() for i in range(50)]
    for payload in second:
        a.send_message(B, payload, net.now)
    net.run(acknowledged(a, 100))
    assert net.delivered(B, since) == second
    assert net.of(A, Failed) == []


def test_sender_reaches_a_restarted_receiver_at_once() -> None:
    """Everything in flight to the previous run, and what follows, is bound to that run: the new
    run drops it and pings, and the sender resends it all at once, without waiting for an RTO."""
    a, b1 = node(A, min_rto=0.2), node(B, session=1)
    net = Net(a, b1)
    a.send_message(B, b"before", net.now)
    net.run(acknowledged(a, 1))
    net.dead.add(B)  # b1 dies with a message on its way
    a.send_message(B, b"in flight when B died", net.now)
    net.run(duration=0.01)
    since = len(net.events[B])
    net.replace(node(B, session=2))
    net.dead.clear()
    restarted = net.now
    later = [f"after {i}".encode() for i in range(20)]
    for payload in later:
        a.send_message(B, payload, net.now)
    net.run(acknowledged(a, 2 + len(later)))
    assert net.delivered(B, since) == [b"in flight when B died", *later]
    assert net.now - restarted == pytest.approx(0.002)  # two round trips; the RTO is 0.2 s
    assert net.of(A, Failed) == []


@pytest.mark.parametrize("hello_lost", [False, True])
def test_first_contact_delivers_what_was_queued_once_the_session_is_known(hello_lost: bool) -> None:
    a, b = node(A, session=3), node(B, session=9)  # no RTT sample yet: the RTO is 1 s
    net = Net(a, b)
    lost: list[bytes] = []

    def lose_the_first_hello(src: NodeAddress, dst: NodeAddress, data: bytes) -> bool:
        if hello_lost and src == B and data[3] == pp.PING and not lost:
            lost.append(data)
            return True
        return False

    net.drop = lose_the_first_hello
    payloads = [b"small", bytes(5000), b"last"]  # the second takes 4 packets
    ids = [a.send_message(B, payload, net.now) for payload in payloads]
    net.run(acknowledged(a, len(payloads)))
    assert net.delivered(B) == payloads
    assert net.of(A, Acknowledged) == [Acknowledged(i) for i in ids]
    sent = net.data_sent(A, B)
    probes = 2 if hello_lost else 1  # the probe again after an RTO, which b answers again
    assert [bound_to(data) for data in sent] == [0] * probes + [9] * 6
    assert [seq_of(data) for data in sent] == [1] * probes + [1, 2, 3, 4, 5, 6]
    assert b.stats["dropped_stale_session"] == probes
    assert hellos(net, B, A) == probes
    if hello_lost:
        assert net.now == pytest.approx(1.0 + 0.002)  # the probe's RTO, then two round trips
    else:
        assert net.now == pytest.approx(0.002)  # two round trips, no RTO


def test_receiver_restart_mid_message_fails_that_message_and_resends_sacked_ones() -> None:
    a, b1 = node(A, max_datagram=512), node(B, session=1, max_datagram=512)
    net = Net(a, b1)
    net.drop = lambda src, dst, data: data[3] == pp.DATA and seq_of(data) == 3
    cut = a.send_message(B, bytes(1000), net.now)  # 3 fragments: packets 1..3
    after = a.send_message(B, b"next", net.now)  # packet 4, SACKed by the first run
    net.run(duration=0.005)
    assert net.delivered(B) == []
    b2 = node(B, session=2, max_datagram=512)
    net.replace(b2)
    net.drop = None
    net.run(acknowledged(a, 1))
    assert net.of(A, Failed) == [Failed(cut, B)]  # its start went down with the first run
    assert net.of(A, Acknowledged) == [Acknowledged(after)]
    assert net.delivered(B) == [b"next"]
    assert b2.stats["dropped_orphan"] == 1


@pytest.mark.parametrize("late_ack_first", [True, False])
def test_late_ack_from_the_previous_run_cannot_hide_a_lost_message(late_ack_first: bool) -> None:
    a = node(A, max_datagram=512)
    b1 = node(B, session=1, max_datagram=512)
    introduce(a, b1)
    cut = a.send_message(B, bytes(1000), 0.0)  # packets 1..3
    after = a.send_message(B, b"next", 0.0)  # packet 4
    p1, p2, p3, _ = (data for _, data in a.datagrams_to_send(0.0, WALL0))
    b1.receive_datagram(p1, 0.0005, WALL0)
    b1.receive_datagram(p2, 0.0005, WALL0)
    [(_, late_ack)] = b1.datagrams_to_send(0.0005, WALL0)  # cumulative 3; then b1 dies
    b2 = node(B, session=2, max_datagram=512)
    b2.receive_datagram(p3, 0.0005, WALL0)  # bound to b1: b2 drops it and pings a
    [(_, hello)] = b2.datagrams_to_send(0.0005, WALL0)
    for answer in [late_ack, hello] if late_ack_first else [hello, late_ack]:
        a.receive_datagram(answer, 0.001, WALL0)
    assert Acknowledged(cut) not in a.events_received()
    net = Net(a, b2)
    net.now = 0.001
    net.run(acknowledged(a, 1 if late_ack_first else 2))
    if late_ack_first:  # packets 1 and 2 went with b1: the message cannot complete at b2
        assert net.of(A, Failed) == [Failed(cut, B)]
        assert net.of(A, Acknowledged) == [Acknowledged(after)]
        assert net.delivered(B) == [b"next"]
    else:  # from an earlier run than b2's, the late ack is dropped: b2 gets all of it
        assert a.stats["dropped_stale_session"] == 1
        assert net.of(A, Acknowledged) == [Acknowledged(cut), Acknowledged(after)]
        assert net.delivered(B) == [bytes(1000), b"next"]


def kill_with_traffic(members: bool) -> tuple[Net, PeerProtocol, list[int], float]:
    a, b = node(A), node(B)
    net = Net(a, b)
    if members:
        a.set_members([B], net.now)
        b.set_members([A], net.now)
    a.send_message(B, b"warm up", net.now)
    net.run(acknowledged(a, 1))
    net.run(duration=0.5)
    net.dead.add(B)
    killed = net.now
    ids = [a.send_message(B, f"doomed {i}".encode(), net.now) for i in range(1500)]
    net.run(lambda: bool(net.of(A, PeerDown)))
    return net, a, ids, killed


@pytest.mark.parametrize("members", [False, True])
def test_killed_peer_fails_in_flight_and_queued_messages(members: bool) -> None:
    net, a, ids, killed = kill_with_traffic(members)
    # Within down_after plus one RTO (min_rto here: RTT samples are ~1 ms).
    assert net.now - killed <= 3.0 + 0.010 + 1e-9
    assert net.of(A, Failed) == [Failed(message_id, B) for message_id in ids]  # 1024 + 476
    assert net.of(A, PeerDown) == [PeerDown(B)]
    assert not a.is_up(B) and a.live_peers() == []
    assert (a.stats["peers_up"], a.stats["peers_down"]) == (0, 1)
    assert a.stats["messages_failed"] == 1500
    # Sending to it now fails at once, with nothing put on the wire.
    quick = a.send_message(B, b"too soon", net.now)
    assert [d for d in a.datagrams_to_send(net.now, net.wall) if d[1][3] == pp.DATA] == []
    assert a.events_received() == [Failed(quick, B)]


def test_down_non_member_that_comes_back_is_reached_again() -> None:
    net, a, _, _ = kill_with_traffic(members=False)
    net.dead.clear()
    since = len(net.events[B])
    assert a.send_message(B, b"too soon", net.now)
    net.run(duration=0.01)
    assert net.of(A, Failed)[-1].message_id == a.stats["messages_sent"]
    net.run(duration=3.1)  # the down mark is now older than down_after: one real attempt
    attempt = a.send_message(B, b"welcome back", net.now)
    net.run(lambda: Acknowledged(attempt) in net.events[A])
    assert net.events[A][-2:] == [PeerUp(B), Acknowledged(attempt)]
    # The receiver skipped the abandoned packets (base) and delivered only the new message.
    assert net.delivered(B, since) == [b"welcome back"]
    assert a.is_up(B)


def test_down_member_comes_back_by_itself_through_pings() -> None:
    net, a, _, _ = kill_with_traffic(members=True)
    net.dead.clear()
    revived = net.now
    net.run(lambda: a.is_up(B))
    assert net.now - revived <= 1.0 + 0.002  # the next ping, and its pong
    assert net.events[A][-1] == PeerUp(B)
    assert a.live_peers() == [B]
    since = len(net.events[B])
    a.send_message(B, b"hello again", net.now)
    net.run(acknowledged(a, 2))
    assert net.delivered(B, since) == [b"hello again"]


def test_base_skip_discards_a_partial_message() -> None:
    a, b = node(A, max_datagram=512), node(B, max_datagram=512)
    introduce(a, b)
    net = Net(a, b)
    net.drop = lambda src, dst, data: data[3] == pp.DATA and index_of(data) > 0
    cut = a.send_message(B, bytes(1000), net.now)  # 3 fragments, only the first gets through
    net.run(lambda: bool(net.of(A, PeerDown)))
    assert net.of(A, Failed) == [Failed(cut, B)]
    net.drop = None
    net.run(duration=3.1)
    whole = a.send_message(B, b"whole", net.now)
    net.run(acknowledged(a, 1))
    assert net.of(A, Acknowledged) == [Acknowledged(whole)]
    assert net.delivered(B) == [b"whole"]
    assert dropped(b) == {}


def test_too_large_message_is_dropped_and_the_stream_continues() -> None:
    a = node(A, max_message_bytes=1 << 20)
    b = node(B, max_message_bytes=1000)
    net = Net(a, b)
    a.send_message(B, bytes(100 << 10), net.now)  # many fragments
    a.send_message(B, b"small", net.now)
    a.send_message(B, bytes(1300), net.now)  # a single fragment
    a.send_message(B, b"end", net.now)
    net.run(acknowledged(a, 4))
    assert net.delivered(B) == [b"small", b"end"]
    assert b.stats["dropped_too_large"] == 2
    with pytest.raises(ValueError, match="max_message_bytes"):
        a.send_message(B, bytes((1 << 20) + 1), net.now)


def test_sending_to_ourselves_is_refused() -> None:
    a, c = node(A), node(C)
    with pytest.raises(ValueError, match="ourselves"):
        a.send_message(A, b"x", 0.0)
    with pytest.raises(ValueError, match="ourselves"):
        c.send_message(NodeAddress("2001:0db8:0::3", 9200), b"x", 0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_datagram": 511}, "max_datagram must be between 512 and 8900 (got 511)"),
        ({"max_datagram": 8901}, "max_datagram must be between 512 and 8900 (got 8901)"),
        ({"window": 0}, "window must be between"),
        ({"session": -1}, "session must be between"),
        ({"ping_interval": 3.0}, "ping_interval must be above 0 and below down_after"),
        ({"state_expiry": 30.0}, "state_expiry must exceed replay_window"),
        ({"max_rto": 0.001}, "max_rto must be between"),
    ],
)
def test_settings_are_validated(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        node(A, **options)
    with pytest.raises(ValueError, match="secret must be at least 16 bytes"):
        PeerProtocol(local=A, secret=b"short", session=1)


# -- liveness, timers and state ---------------------------------------------------------------


def test_a_node_that_starts_is_up_on_both_sides_within_a_round_trip() -> None:
    """A node running since before its peer started sees the newcomer up as soon as it pings,
    not at its own next periodic ping: a broadcast right after a start reaches it."""
    a, b = node(A), node(B)
    net = Net(a, b)
    net.dead.add(B)  # not started yet: A's pings are lost
    a.set_members([B], net.now)
    net.run(duration=0.3)
    net.dead.clear()
    b.set_members([A], net.now)  # B starts and pings A at once
    started = net.now
    net.run(lambda: a.is_up(B) and b.is_up(A))
    assert net.now - started < 0.01  # two round trips of 1 ms, not A's next ping at 1 s


def test_members_are_pinged_and_live_peers_follow_up_and_down() -> None:
    a, b, c = node(A), node(B), node(C)
    net = Net(a, b, c)
    a.set_members([A, B, C], net.now)  # ourselves is ignored
    b.set_members([A], net.now)
    c.set_members([A], net.now)
    assert a.live_peers() == []
    net.run(duration=2.5)
    assert a.live_peers() == [B, C]
    assert net.of(A, PeerUp) == [PeerUp(B), PeerUp(C)]
    pings = [dst for src, dst, data in net.sent if src == A and data[3] == pp.PING]
    # At 0, 1 and 2 s, and one at once answering each one's first-contact ping (bound to its
    # run, so that its pong proves it up within a round trip).
    assert sorted(pings, key=str) == [B] * 4 + [C] * 4
    assert a.stats["peers_up"] == 2 and net.of(A, PeerUp) == [PeerUp(B), PeerUp(C)]
    assert not any(src == A and dst == A for src, dst, _ in net.sent)
    net.dead.add(C)
    killed = net.now
    net.run(lambda: bool(net.of(A, PeerDown)))
    assert net.of(A, PeerDown) == [PeerDown(C)]
    assert net.now - killed <= 3.0
    assert a.live_peers() == [B]
    assert (a.stats["peers_up"], a.stats["peers_down"]) == (1, 1)
    net.dead.clear()
    net.run(lambda: a.is_up(C))
    assert a.live_peers() == [B, C]
    a.set_members([C], net.now)
    assert a.live_peers() == [C]


def test_member_that_never_answers_goes_down() -> None:
    a = node(A)
    net = Net(a)
    a.set_members([B], net.now)
    net.run(lambda: bool(net.of(A, PeerDown)))
    assert net.now == pytest.approx(3.0)
    assert net.events[A] == [PeerDown(B)]


def test_next_deadline_follows_retransmissions_down_detection_and_expiry() -> None:
    a = node(A)
    assert a.next_deadline() is None
    a.send_message(B, b"x", 5.0)
    assert a.next_deadline() == 5.0  # due now
    assert len(a.datagrams_to_send(5.0, WALL0)) == 1
    assert a.next_deadline() == pytest.approx(6.0)  # the first RTO
    assert len(a.datagrams_to_send(6.0, WALL0)) == 1
    assert a.next_deadline() == pytest.approx(7.0)
    assert len(a.datagrams_to_send(7.0, WALL0)) == 1
    assert a.next_deadline() == pytest.approx(8.0)  # down_after since the first send
    assert a.datagrams_to_send(8.0, WALL0) == []
    assert a.events_received() == [PeerDown(B), Failed(1, B)]
    assert a.next_deadline() == pytest.approx(65.0)  # forgetting the idle peer
    assert a.datagrams_to_send(65.0, WALL0) == []
    assert a.tracked_peers() == 0
    assert a.stats["peers_down"] == 0
    assert a.next_deadline() is None


def test_next_deadline_of_a_member_is_its_next_ping() -> None:
    a = node(A, ping_interval=0.5, down_after=2.0)
    a.set_members([B], 1.0)
    assert a.next_deadline() == 1.0
    [(_, ping)] = a.datagrams_to_send(1.0, WALL0)
    assert ping[3] == pp.PING
    assert a.next_deadline() == pytest.approx(1.5)


def test_idle_state_expires_and_sequence_numbers_are_never_reused() -> None:
    a, b = node(A), node(B)
    net = Net(a, b)
    a.send_message(B, b"one", net.now)
    net.run(acknowledged(a, 1))
    net.run(duration=61.0)
    assert (a.tracked_peers(), b.tracked_peers()) == (0, 0)
    a.send_message(B, b"two", net.now)
    net.run(acknowledged(a, 2))
    assert net.delivered(B) == [b"one", b"two"]
    # Each is a first contact (both forgot the other): its probe went out twice.
    assert [seq_of(data) for data in net.data_sent(A, B)] == [1, 1, 2, 2]


def test_tracked_peers_are_bounded() -> None:
    b = node(B, max_peers=2)
    senders = [node(A), node(C), node(D)]
    net = Net(b, *senders)
    for sender in senders:
        sender.send_message(B, str(sender.local).encode(), net.now)
    net.run(duration=0.1)
    assert b.tracked_peers() == 2
    assert b.stats["dropped_capacity"] >= 1
    assert net.delivered(B) == [str(A).encode(), str(C).encode()]
    net.run(duration=31.0)  # the first two are now idle past the replay window
    senders[2].send_message(B, b"finally", net.now)
    net.run(acknowledged(senders[2], 1))
    assert net.delivered(B)[-1] == b"finally"
    assert b.tracked_peers() <= 2


def test_stats_count_a_lossy_exchange() -> None:
    a, b = node(A), node(B)
    net = Net(a, b, loss=0.2, seed=4)
    for index in range(200):
        a.send_message(B, bytes([index % 256]) * 10, net.now)
    net.run(acknowledged(a, 200))
    assert a.stats["messages_sent"] == a.stats["messages_acknowledged"] == 200
    assert b.stats["messages_delivered"] == 200
    assert a.stats["datagrams_sent"] == len([1 for src, _, _ in net.sent if src == A])
    pongs = [1 for src, _, data in net.sent if src == A and data[3] == pp.PONG]
    assert a.stats["datagrams_sent"] == 200 + a.stats["retransmitted"] + len(pongs)
    received = sum(1 for _ in net.sent)  # upper bound: losses removed some
    assert b.stats["datagrams_received"] + a.stats["datagrams_received"] < received
    assert set(a.stats) >= {
        "datagrams_sent",
        "datagrams_received",
        "retransmitted",
        "messages_failed",
        "peers_up",
        "peers_down",
        *(f"dropped_{reason}" for reason in pp.DROP_REASONS),
    }
