"""Peer traffic only ever goes to cluster members: forged connection IDs naming any address are
GONE at once and send nothing, and members learn each other from each other, so a node named by
no DNS answer of a peer is still reached."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from runtime.node.service import build_service
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress
from tests.conftest import RunningNode, node_settings
from tests.origin_server import RecordingOrigin
from tests.transports.test_udp_peers import SECRET, dns_node, free_udp_port, wait_until


class DatagramCatcher(asyncio.DatagramProtocol):
    """A UDP socket standing for some other service in the VPC: counts what reaches it."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


@pytest.fixture
async def lone_node(origin: RecordingOrigin) -> AsyncIterator[RunningNode]:
    """A node in cluster mode (a secret, UDP up) with no other member yet."""
    port = free_udp_port()
    settings = node_settings(
        origin_url=origin.url,
        local_only=False,
        peer_secret=SECRET,
        peer_listen=("127.0.0.1", port),
        peer_advertise=NodeAddress("127.0.0.1", port),
        peer_metrics_interval=0,
    )
    service = await build_service(settings)
    await service.start()
    yield RunningNode(service, origin)
    await service.stop()


async def test_forged_ids_naming_any_address_send_no_datagram(
    lone_node: RunningNode, origin: RecordingOrigin, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    transport, catcher = await loop.create_datagram_endpoint(
        DatagramCatcher, local_addr=("127.0.0.1", 0)
    )
    victim = NodeAddress("127.0.0.1", transport.get_extra_info("sockname")[1])
    region = lone_node.node.settings.region
    # The region is right and the CRC valid: only membership tells these from real IDs.
    forged = [ConnectionIdIssuer(region, victim).issue() for _ in range(10)] + [
        ConnectionIdIssuer(
            region, NodeAddress(f"127.0.{i // 250}.{i % 250 + 2}", 40_000 + i)
        ).issue()
        for i in range(990)
    ]
    async with connect(lone_node.ws_url) as honest:
        await origin.wait_for(lambda e: len(origin.of_type("CONNECT")) >= 1)
        honest_id = origin.of_type("CONNECT")[0]["requestContext"]["connectionId"]
        with caplog.at_level(logging.WARNING, logger="runtime"):
            status, answer = await lone_node.post_commands(
                {
                    "commands": [
                        {"action": "send", "connectionIds": forged, "data": "payload"},
                        {"action": "send", "connectionIds": [honest_id], "data": "hello"},
                    ]
                }
            )
            assert (status, answer) == (200, {"accepted": 2})
            assert await asyncio.wait_for(honest.recv(), 5) == "hello"
            await origin.wait_for(lambda e: len(origin.of_type("GONE")) >= 1000)
            await asyncio.sleep(0.5)  # any retransmission would have gone out by now
    transport.close()
    assert catcher.received == 0
    peers = lone_node.node.stats()["peers"]
    assert isinstance(peers, dict)
    assert peers["datagrams_sent"] == 0
    assert {e["requestContext"]["connectionId"] for e in origin.of_type("GONE")} == set(forged)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 2


async def test_a_node_learns_members_no_dns_answer_named(origin: RecordingOrigin) -> None:
    """DNS tells A of B, B of A, and C of A only: C learns B from A when it comes up, so B
    reaches C's clients and every broadcast reaches all three."""
    port = free_udp_port()
    a, b, c = (NodeAddress(f"127.0.0.{i}", port) for i in (2, 3, 4))
    answers = {a: {b}, b: {a}, c: {a}}

    services = []
    for own in (a, b, c):

        async def resolve(name: str, port: int, own: NodeAddress = own) -> set[NodeAddress]:
            return answers[own]

        services.append(await dns_node(origin, own, resolve))
    nodes = [RunningNode(service, origin) for service in services]
    try:
        await wait_until(
            lambda: all(len(node.node.cluster.peers()) == 2 for node in nodes),  # type: ignore[union-attr]
            timeout=10,
        )
        async with connect(nodes[2].ws_url) as on_c:
            await origin.wait_for(lambda e: len(origin.of_type("CONNECT")) >= 1)
            c_id = origin.of_type("CONNECT")[0]["requestContext"]["connectionId"]
            status, _ = await nodes[1].post_commands(
                {"commands": [{"action": "send", "connectionIds": [c_id], "data": "from B"}]}
            )
            assert status == 200
            assert await asyncio.wait_for(on_c.recv(), 5) == "from B"
        assert not origin.of_type("GONE")
    finally:
        for service in services:
            await service.stop()
