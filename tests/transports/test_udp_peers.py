"""Two in-process nodes joined over real UDP sockets on 127.0.0.1, through a faulty proxy.

Each node advertises its proxy's port, so everything one node sends the other (data, acks,
pings) crosses a proxy that loses, duplicates and reorders on demand.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from runtime.core.peer_protocol import PeerProtocol
from runtime.node.service import NodeService, build_service
from runtime.transports.udp_peers import UdpPeers
from runtime.wire.connection_id import NodeAddress, parse_connection_id
from tests.conftest import RunningNode, node_settings
from tests.origin_server import RecordingOrigin
from tests.udp_proxy import FaultyUdpProxy

SECRET = "udp-test-secret-0123456789"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Pair:
    a: RunningNode
    b: RunningNode
    to_a: FaultyUdpProxy
    to_b: FaultyUdpProxy
    origin: RecordingOrigin

    def faults(self, **rates: float) -> None:
        for proxy in (self.to_a, self.to_b):
            for name, rate in rates.items():
                setattr(proxy, name, rate)

    def peer_stats(self, node: RunningNode) -> dict[str, Any]:
        stats = node.node.stats()["peers"]
        assert isinstance(stats, dict)
        return stats


@pytest.fixture
async def pair(origin: RecordingOrigin) -> AsyncIterator[Pair]:
    ports = {"a": free_udp_port(), "b": free_udp_port()}
    to_a = await FaultyUdpProxy(("127.0.0.1", ports["a"]), seed=7).start()
    to_b = await FaultyUdpProxy(("127.0.0.1", ports["b"]), seed=11).start()
    nodes = []
    for name, own, other in (("a", to_a, to_b), ("b", to_b, to_a)):
        settings = node_settings(
            origin_url=origin.url,
            local_only=False,
            peer_secret=SECRET,
            peer_listen=("127.0.0.1", ports[name]),
            peer_advertise=NodeAddress("127.0.0.1", own.port),
            peers=(NodeAddress("127.0.0.1", other.port),),
            peer_down_seconds=2.0,
            peer_metrics_interval=0,
            send_buffer_bytes=4 << 20,
            max_message_bytes=64 * 1024,
        )
        service = await build_service(settings)
        await service.start()
        nodes.append(RunningNode(service, origin))
    pair = Pair(nodes[0], nodes[1], to_a, to_b, origin)
    await wait_until(lambda: pair.a.node.cluster.peers() and pair.b.node.cluster.peers())  # type: ignore[union-attr]
    yield pair
    for node in nodes:
        await node.service.stop()
    to_a.close()
    to_b.close()


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def clients_on(
    node: RunningNode, origin: RecordingOrigin, count: int
) -> tuple[list[ClientConnection], list[str]]:
    before = len(origin.of_type("CONNECT"))
    clients = [await connect(node.ws_url, max_size=None) for _ in range(count)]
    await origin.wait_for(lambda e: len(origin.of_type("CONNECT")) >= before + count)
    ids = [event["requestContext"]["connectionId"] for event in origin.of_type("CONNECT")[before:]]
    advertised = node.node.address
    assert all(parse_connection_id(i).node == advertised for i in ids)
    return clients, ids


async def test_10000_commands_through_loss_duplication_and_reordering(pair: Pair) -> None:
    clients, ids = await clients_on(pair.b, pair.origin, 100)
    pair.faults(loss=0.10, duplicate=0.05, reorder=0.10)

    async def sender(own: list[str]) -> None:
        # Each sender owns some connections and sends them 100 numbered messages in order;
        # the four senders run at once, so their forwards interleave on the peer link.
        for number in range(100):
            body = {
                "commands": [
                    {"action": "send", "connectionIds": [cid], "data": str(number)} for cid in own
                ]
            }
            status, answer = await pair.a.post_commands(body)
            assert (status, answer) == (200, {"accepted": len(own)})

    async def receive_all(client: ClientConnection) -> list[str]:
        return [str(await asyncio.wait_for(client.recv(), 30)) for _ in range(100)]

    receivers = [asyncio.create_task(receive_all(client)) for client in clients]
    await asyncio.gather(*(sender(ids[start : start + 25]) for start in range(0, 100, 25)))
    received = await asyncio.gather(*receivers)
    assert received == [[str(n) for n in range(100)]] * 100  # all, once each, in order
    for client in clients:  # and nothing more arrives
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.05)
    proxies = pair.to_a.counts, pair.to_b.counts
    assert all(p["lost"] and p["duplicated"] and p["delayed"] for p in proxies), proxies
    stats_a, stats_b = pair.peer_stats(pair.a), pair.peer_stats(pair.b)
    assert stats_a["retransmitted"] > 0
    assert stats_b["dropped_duplicate"] > 0
    assert stats_a["messages_failed"] == 0
    assert not pair.origin.of_type("GONE")
    for client in clients:
        await client.close()


async def test_one_mebibyte_message_to_another_node_arrives_intact(pair: Pair) -> None:
    (client,), (cid,) = await clients_on(pair.b, pair.origin, 1)
    pair.faults(loss=0.02, reorder=0.05)
    payload = os.urandom(1 << 20)
    body = {
        "commands": [
            {
                "action": "send",
                "connectionIds": [cid],
                "data": base64.b64encode(payload).decode(),
                "isBase64Encoded": True,
            }
        ]
    }
    status, answer = await pair.a.post_commands(body)
    assert (status, answer) == (200, {"accepted": 1})
    assert await asyncio.wait_for(client.recv(), 10) == payload
    stats_a = pair.peer_stats(pair.a)
    assert stats_a["datagrams_sent"] > (len(payload) * 4 / 3) / 1472  # cut into datagrams
    await client.close()


async def test_forged_datagrams_are_dropped_and_counted(pair: Pair) -> None:
    (client,), (cid,) = await clients_on(pair.b, pair.origin, 1)
    status, _ = await pair.a.post_commands(
        {"commands": [{"action": "send", "connectionIds": [cid], "data": "genuine"}]}
    )
    assert status == 200
    assert await asyncio.wait_for(client.recv(), 5) == "genuine"
    captured = list(pair.to_b.recent)  # real datagrams from A to B, the send among them
    before = dict(pair.peer_stats(pair.b))

    b_port = pair.to_b.target[1]
    a_address, b_address = pair.a.node.address, pair.b.node.address
    impostor = PeerProtocol(local=a_address, secret=b"not-the-secret-at-all", session=1)
    impostor.send_message(b_address, b'{"commands":[]}', time.monotonic())
    forged = [datagram for _, datagram in impostor.datagrams_to_send(time.monotonic(), time.time())]
    longest = max(captured, key=len)
    attacks = {
        "bad_mac": forged,
        "truncated": [longest[:30]],
        "garbage": [b"\x00" * 40 + os.urandom(200)],
        "oversized": [b"WG" + os.urandom(5000)],
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for datagrams in attacks.values():
            for datagram in datagrams:
                attacker.sendto(datagram, ("127.0.0.1", b_port))
        for datagram in captured:  # replays of the real traffic
            attacker.sendto(datagram, ("127.0.0.1", b_port))

    def dropped(reason: str) -> int:
        return int(pair.peer_stats(pair.b)[f"dropped_{reason}"] - before[f"dropped_{reason}"])

    await wait_until(lambda: all(dropped(reason) >= len(d) for reason, d in attacks.items()))
    await wait_until(lambda: dropped("duplicate") >= 1)
    with pytest.raises(TimeoutError):  # the replayed send was not executed again
        await asyncio.wait_for(client.recv(), 0.2)
    # and the node keeps serving
    status, _ = await pair.a.post_commands(
        {"commands": [{"action": "send", "connectionIds": [cid], "data": "still here"}]}
    )
    assert status == 200
    assert await asyncio.wait_for(client.recv(), 5) == "still here"
    await client.close()


async def test_unreachable_peer_yields_gone_within_the_bound(pair: Pair) -> None:
    (client,), (cid,) = await clients_on(pair.b, pair.origin, 1)
    pair.faults(loss=1.0)  # B is cut off
    started = time.monotonic()
    status, _ = await pair.a.post_commands(
        {"commands": [{"action": "send", "connectionIds": [cid], "data": "lost?"}]}
    )
    assert status == 200
    await pair.origin.wait_for(lambda e: bool(pair.origin.of_type("GONE")), timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.5  # --peer-down-seconds plus one retransmission timeout
    gone = pair.origin.of_type("GONE")[0]
    assert gone["requestContext"]["connectionId"] == cid
    assert pair.b.node.address not in pair.a.node.cluster.peers()  # type: ignore[union-attr]
    # Once the path heals, B is up again and commands flow.
    pair.faults(loss=0.0)
    await wait_until(lambda: pair.b.node.address in pair.a.node.cluster.peers(), 10)  # type: ignore[union-attr]
    status, _ = await pair.a.post_commands(
        {"commands": [{"action": "send", "connectionIds": [cid], "data": "back"}]}
    )
    assert status == 200
    assert await asyncio.wait_for(client.recv(), 5) == "back"  # and "lost?" was abandoned
    await client.close()


async def test_peers_found_by_dns(origin: RecordingOrigin) -> None:
    """`--peers-dns localhost:PORT`: every address the name resolves to is a member."""
    port_a, port_b = free_udp_port(), free_udp_port()
    services = []
    for own, other in ((port_a, port_b), (port_b, port_a)):
        settings = node_settings(
            origin_url=origin.url,
            local_only=False,
            peer_secret=SECRET,
            peer_listen=("127.0.0.1", own),
            peer_advertise=NodeAddress("127.0.0.1", own),
            peers_dns=("localhost", other),
            peers_refresh_seconds=0.5,
            peer_metrics_interval=0,
        )
        service = await build_service(settings)
        await service.start()
        services.append(service)
    a, b = (RunningNode(service, origin) for service in services)
    try:
        await wait_until(lambda: NodeAddress("127.0.0.1", port_b) in a.node.cluster.peers())  # type: ignore[union-attr]
        (client,), (cid,) = await clients_on(b, origin, 1)
        status, _ = await a.post_commands(
            {"commands": [{"action": "send", "connectionIds": [cid], "data": "via DNS"}]}
        )
        assert status == 200
        assert await asyncio.wait_for(client.recv(), 5) == "via DNS"
        await client.close()
    finally:
        for service in services:
            await service.stop()


Resolve = Callable[[str, int], Awaitable[set[NodeAddress]]]


async def dns_node(origin: RecordingOrigin, own: NodeAddress, resolve: Resolve) -> NodeService:
    """A started node on its own loopback address, finding peers through a stand-in for Cloud
    Map's DNS (`resolve`), refreshed every half second."""
    settings = node_settings(
        origin_url=origin.url,
        local_only=False,
        peer_secret=SECRET,
        listen=(own.host, 0),
        peer_listen=(own.host, own.port),
        peer_advertise=own,
        peers_dns=("nodes.test", own.port),
        peers_refresh_seconds=0.5,
        peer_metrics_interval=0,
    )
    service = await build_service(settings)
    assert isinstance(service.cluster, UdpPeers)
    service.cluster.resolve = resolve
    await service.start()
    return service


async def test_nodes_mesh_beyond_partial_dns_answers(origin: RecordingOrigin) -> None:
    """Cloud Map names at most 8 nodes per answer; here DNS names 1 of 3 others each time, and
    every node still comes to know every other, so a broadcast reaches them all."""
    port = free_udp_port()
    hosts = [f"127.0.0.{i}" for i in range(2, 6)]
    everyone = [NodeAddress(host, port) for host in hosts]
    rng = random.Random(5)

    async def partial_answer(name: str, answer_port: int) -> set[NodeAddress]:
        return {rng.choice(everyone)}

    services = [await dns_node(origin, address, partial_answer) for address in everyone]
    nodes = [RunningNode(service, origin) for service in services]
    try:
        await wait_until(
            lambda: all(len(node.node.cluster.peers()) == 3 for node in nodes),  # type: ignore[union-attr]
            timeout=15,
        )
        clients = [await connect(node.ws_url) for node in nodes]
        await origin.wait_for(lambda e: len(origin.of_type("CONNECT")) >= 4)
        status, _ = await nodes[0].post_commands(
            {"commands": [{"action": "broadcast", "data": "to all four"}]}
        )
        assert status == 200
        for client in clients:
            assert await asyncio.wait_for(client.recv(), 5) == "to all four"
            await client.close()
    finally:
        for service in services:
            await service.stop()
