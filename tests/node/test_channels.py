"""Channels on real nodes: three in-process nodes over real UDP on 127.0.0.1, each reached
through a faulty proxy, real WebSocket clients, commands over HTTP /commands.

A publish is one command to one node; it must reach every subscriber of the cluster exactly
once, in publish order, through loss, duplication and reordering, and only nodes holding the
channel are sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from runtime.node.service import build_service
from runtime.wire.connection_id import NodeAddress
from tests.conftest import RunningNode, node_settings
from tests.origin_server import RecordingOrigin
from tests.transports.test_udp_peers import free_udp_port, wait_until
from tests.udp_proxy import FaultyUdpProxy

SECRET = "channel-test-secret-0123456789"


@dataclass
class Cluster:
    nodes: list[RunningNode]
    proxies: list[FaultyUdpProxy]
    origin: RecordingOrigin

    def faults(self, **rates: float) -> None:
        for proxy in self.proxies:
            for name, rate in rates.items():
                setattr(proxy, name, rate)


async def start_node(
    origin: RecordingOrigin, port: int, own: FaultyUdpProxy, others: list[FaultyUdpProxy]
) -> RunningNode:
    settings = node_settings(
        origin_url=origin.url,
        local_only=False,
        peer_secret=SECRET,
        peer_listen=("127.0.0.1", port),
        peer_advertise=NodeAddress("127.0.0.1", own.port),
        peers=tuple(NodeAddress("127.0.0.1", proxy.port) for proxy in others),
        peer_down_seconds=2.0,
        peer_metrics_interval=0,
        occupancy_interval=0.3,
    )
    service = await build_service(settings)
    await service.start()
    return RunningNode(service, origin)


@pytest.fixture
async def cluster(origin: RecordingOrigin) -> AsyncIterator[Cluster]:
    ports = [free_udp_port() for _ in range(3)]
    proxies = [
        await FaultyUdpProxy(("127.0.0.1", port), seed=seed).start()
        for port, seed in zip(ports, (3, 5, 7), strict=True)
    ]
    nodes = []
    for index, port in enumerate(ports):
        others = [proxy for other, proxy in enumerate(proxies) if other != index]
        nodes.append(await start_node(origin, port, proxies[index], others))
    await wait_until(lambda: all(len(n.node.cluster.peers()) == 2 for n in nodes))  # type: ignore[union-attr]
    yield Cluster(nodes, proxies, origin)
    for node in nodes:
        await node.service.stop()
    for proxy in proxies:
        proxy.close()


async def clients_on(
    node: RunningNode, origin: RecordingOrigin, count: int
) -> tuple[list[ClientConnection], list[str]]:
    before = len(origin.of_type("CONNECT"))
    clients = [await connect(node.ws_url) for _ in range(count)]
    await origin.wait_for(lambda e: len(origin.of_type("CONNECT")) >= before + count)
    ids = [event["requestContext"]["connectionId"] for event in origin.of_type("CONNECT")[before:]]
    return clients, ids


async def received(client: ClientConnection, count: int, timeout: float = 10.0) -> list[str]:
    got = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(got) < count:
                got.append(str(await client.recv()))
    return got


async def nothing_more(client: ClientConnection, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait):
            message = await client.recv()
            raise AssertionError(f"unexpected message {message!r}")


def subscribe(ids: list[str], *channels: str, **fields: Any) -> dict[str, Any]:
    return {"action": "subscribe", "connectionIds": ids, "channels": list(channels), **fields}


def publish(channel: str, data: str, **fields: Any) -> dict[str, Any]:
    return {"action": "publish", "channel": channel, "data": data, **fields}


async def commands(node: RunningNode, *items: dict[str, Any]) -> dict[str, Any]:
    """POST /commands; the body, with "rejected" ([] when every command was taken)."""
    status, body = await node.post_commands({"commands": list(items)})
    assert status == (400 if body.get("rejected") else 200), body
    return {"rejected": [], **body}


async def test_subscribe_publish_unsubscribe_across_three_nodes(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    per_node = [await clients_on(node, cluster.origin, 3) for node in (a, b, c)]
    clients = [client for group, _ids in per_node for client in group]
    ids = [connection_id for _group, group_ids in per_node for connection_id in group_ids]
    # Subscribed through node a, for connections of all three nodes; a node-c client elsewhere.
    body = await commands(a, subscribe(ids[:8], "room:1"), subscribe(ids[8:], "room:2"))
    assert body["rejected"] == [], body
    await commands(a, publish("room:1", "hello", exceptConnectionIds=[ids[0]]))
    for index, client in enumerate(clients):
        if index in (0, 8):
            await nothing_more(client)
        else:
            assert await received(client, 1) == ["hello"], index
    # Only the channel's nodes: room:2 lives on c alone, so a and b forward it nowhere else.
    forwarded = a.node.channels.counters["channelPublishesForwarded"]
    await commands(b, publish("room:2", "second room"))
    assert await received(clients[8], 1) == ["second room"]
    for client in clients[:8]:
        await nothing_more(client, 0.1)
    assert a.node.channels.counters["channelPublishesForwarded"] == forwarded
    # Unsubscribing the node-b clients: a publish no longer reaches them.
    await commands(c, {"action": "unsubscribe", "connectionIds": ids[3:6], "channels": ["room:1"]})
    await commands(a, publish("room:1", "after"))
    for index in (1, 2, 6, 7):
        assert await received(clients[index], 1) == ["after"], index
    for index in (3, 4, 5):
        await nothing_more(clients[index], 0.1)
    for client in clients:
        await client.close()


async def test_exactly_once_and_in_order_through_loss_duplication_and_reordering(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.nodes
    groups = [await clients_on(node, cluster.origin, 5) for node in (a, b, c)]
    ids = [connection_id for _clients, group_ids in groups for connection_id in group_ids]
    await commands(a, subscribe(ids, "news"))
    cluster.faults(loss=0.2, duplicate=0.2, reorder=0.2)
    count = 300
    for start in range(0, count, 50):
        await commands(a, *(publish("news", f"m{i}") for i in range(start, start + 50)))
    expected = [f"m{i}" for i in range(count)]
    results = await asyncio.gather(
        *(received(client, count, 30) for clients, _ids in groups for client in clients)
    )
    for got in results:
        assert got == expected  # every one, once, in publish order
    cluster.faults(loss=0, duplicate=0, reorder=0)
    for clients, _ids in groups:
        for client in clients:
            await nothing_more(client, 0.2)
            await client.close()


async def test_closing_ends_subscriptions_and_the_channel_leaves_the_cluster(
    cluster: Cluster,
) -> None:
    a, b, _c = cluster.nodes
    clients, ids = await clients_on(b, cluster.origin, 2)
    await commands(a, subscribe(ids, "room"))
    await wait_until(lambda: "room" in a.node.channels.interest.channels_of(b.node.address))
    for client in clients:
        await client.close()
    await wait_until(lambda: b.node.channels.table.total == 0)
    await wait_until(lambda: "room" not in a.node.channels.interest.channels_of(b.node.address))


async def test_bad_channel_commands_are_refused_one_by_one(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    clients, ids = await clients_on(a, cluster.origin, 1)
    body = await commands(
        a,
        subscribe(ids, "bad name"),
        subscribe(ids, ""),
        subscribe(ids, "x" * 129),
        subscribe(ids, "ok", userInfo="u" * 2000),
        publish("room", "x", keys=["k"]),
        {"action": "unsubscribe", "connectionIds": ids},
        subscribe(ids, "fine"),
        publish("fine", "y"),
    )
    assert [rejection["index"] for rejection in body["rejected"]] == [0, 1, 2, 3, 4, 5]
    assert await received(clients[0], 1) == ["y"]  # the good ones went through
    await clients[0].close()


async def test_subscribe_for_a_gone_connection_answers_gone(cluster: Cluster) -> None:
    a = cluster.nodes[0]
    clients, ids = await clients_on(a, cluster.origin, 1)
    await clients[0].close()
    await cluster.origin.wait_for(lambda e: len(cluster.origin.of_type("DISCONNECT")) >= 1)
    await commands(a, subscribe(ids, "room"))
    await cluster.origin.wait_for(lambda e: len(cluster.origin.of_type("GONE")) >= 1)
    assert cluster.origin.of_type("GONE")[-1]["requestContext"]["connectionId"] == ids[0]


async def test_a_connection_past_its_subscription_limit_is_refused(origin: RecordingOrigin) -> None:
    settings = node_settings(origin_url=origin.url, max_subscriptions_per_connection=3)
    service = await build_service(settings)
    await service.start()
    node = RunningNode(service, origin)
    try:
        clients, ids = await clients_on(node, origin, 1)
        body = await commands(
            node, subscribe(ids, "a", "b"), subscribe(ids, "c", "d"), subscribe(ids, "b", "c")
        )
        assert [r["index"] for r in body["rejected"]] == [1]
        assert "3" in body["rejected"][0]["error"]
        assert set(service.node.channels.table.of(ids[0])) == {"a", "b", "c"}
        await clients[0].close()
    finally:
        await service.stop()


async def test_a_late_node_learns_every_channel_before_its_first_publish_counts(
    origin: RecordingOrigin,
) -> None:
    ports = [free_udp_port() for _ in range(2)]
    proxies = [await FaultyUdpProxy(("127.0.0.1", port)).start() for port in ports]
    first = await start_node(origin, ports[0], proxies[0], [proxies[1]])
    late: RunningNode | None = None
    try:
        clients, ids = await clients_on(first, origin, 3)
        await commands(first, subscribe(ids, "early"))
        late = await start_node(origin, ports[1], proxies[1], [proxies[0]])
        # At once, before the peers even met: the late node forwards to an unsynced peer.
        await commands(late, publish("early", "from the late node"))
        for client in clients:
            assert await received(client, 1) == ["from the late node"]
        await wait_until(lambda: late.node.channels.interest.channels_of(first.node.address))
        assert late.node.channels.interest.channels_of(first.node.address) == {"early"}
        for client in clients:
            await client.close()
    finally:
        for node in (late, first):
            if node is not None:
                await node.service.stop()
        for proxy in proxies:
            proxy.close()


async def test_graphql_connections_cannot_subscribe(cluster: Cluster) -> None:
    """A GraphQL connection never receives a plain publish: it cannot subscribe (see
    tests/node/test_graphql.py for the GraphQL side); a missing connection ID is GONE."""
    a = cluster.nodes[0]
    assert a.node.graphql is None  # these nodes have no GraphQL origin: nothing to subscribe
    body = await commands(a, subscribe(["not-an-id"], "room"))
    assert body["rejected"] and "connection ID" in body["rejected"][0]["error"]


async def test_100000_subscriptions_on_one_node(origin: RecordingOrigin) -> None:
    settings = node_settings(origin_url=origin.url, max_subscriptions_per_connection=1000)
    service = await build_service(settings)
    await service.start()
    node = RunningNode(service, origin)
    try:
        clients, ids = await clients_on(node, origin, 100)
        channels = [f"c{i}" for i in range(100)]
        for offset in range(0, 1000, 100):
            batch = [subscribe([i], *(f"{ch}-{offset}" for ch in channels)) for i in ids]
            body = await commands(node, *batch)
            assert body["rejected"] == []
        assert service.node.channels.table.total == 100_000
        await commands(node, publish("c7-300", json.dumps({"n": 1})))
        for client in clients:
            assert await received(client, 1) == ['{"n": 1}']
        for client in clients:
            await client.close()
        await wait_until(lambda: service.node.channels.table.total == 0)
    finally:
        await service.stop()


async def test_a_silenced_peer_is_forgotten_and_resyncs_when_it_comes_back(
    cluster: Cluster,
) -> None:
    a, b, _c = cluster.nodes
    clients, ids = await clients_on(b, cluster.origin, 1)
    await commands(b, subscribe(ids, "room"))
    b_address = b.node.address
    await wait_until(lambda: a.node.channels.interest.channels_of(b_address) == {"room"})
    cluster.faults(loss=1.0)  # every link goes silent: a declares b down, b still holds "room"
    await wait_until(lambda: b_address not in a.node.cluster.peers(), 10)  # type: ignore[union-attr]
    assert a.node.channels.interest.channels_of(b_address) == set()
    assert not a.node.channels.interest.synced(b_address)
    cluster.faults(loss=0.0)  # back: b's full list arrives again, and publishes reach it
    await wait_until(lambda: a.node.channels.interest.synced(b_address), 10)
    assert a.node.channels.interest.channels_of(b_address) == {"room"}
    await commands(a, publish("room", "after the outage"))
    assert await received(clients[0], 1) == ["after the outage"]
    await clients[0].close()


async def test_join_and_leave_events_for_subscriptions_that_ask(cluster: Cluster) -> None:
    a, b, _c = cluster.nodes
    origin = cluster.origin
    clients, ids = await clients_on(b, origin, 3)
    info = {"name": "Ada", "role": "admin"}
    await commands(
        a,
        subscribe(ids[:2], "room", userInfo=info, presenceEvents=True),
        subscribe(ids[2:], "room"),  # no presence events for this one
    )
    await origin.wait_for(lambda e: len(origin.of_type("JOIN")) >= 2)
    joins = origin.of_type("JOIN")
    assert sorted(j["requestContext"]["connectionId"] for j in joins) == sorted(ids[:2])
    for join in joins:
        assert join["requestContext"]["channel"] == "room"
        assert join["requestContext"]["routeKey"] == "$join"
        assert join["userInfo"] == info
    # Subscribing again updates, and is no second JOIN.
    await commands(a, subscribe(ids[:1], "room", presenceEvents=True))
    await commands(a, {"action": "unsubscribe", "connectionIds": ids[:1], "channels": ["room"]})
    await origin.wait_for(lambda e: len(origin.of_type("LEAVE")) >= 1)
    leave = origin.of_type("LEAVE")[0]
    assert leave["requestContext"]["connectionId"] == ids[0]
    assert leave["requestContext"]["reason"] == "unsubscribed"
    assert "userInfo" not in leave  # the re-subscribe gave none
    for client in clients:
        await client.close()
    await origin.wait_for(lambda e: len(origin.of_type("LEAVE")) >= 2)
    await asyncio.sleep(0.2)
    leaves = origin.of_type("LEAVE")
    assert len(leaves) == 2 and len(origin.of_type("JOIN")) == 2
    assert leaves[1]["requestContext"]["connectionId"] == ids[1]
    assert leaves[1]["requestContext"]["reason"] == "disconnected"
    assert leaves[1]["userInfo"] == info


async def test_occupancy_events_for_channels_that_ask_from_one_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    origin = cluster.origin
    on_a, ids_a = await clients_on(a, origin, 2)
    on_b, ids_b = await clients_on(b, origin, 3)
    await commands(
        c,
        subscribe(ids_a, "busy", occupancyEvents=True),
        subscribe(ids_b, "busy", occupancyEvents=True),
        subscribe(ids_a + ids_b, "quiet"),
    )
    # One reporter for the channel: the lowest-addressed of the nodes whose subscribers asked.
    await wait_until(
        lambda: (
            [n for n in (a, b) if "busy" in n.node.channels.occupancy_channels()]
            == [min((a, b), key=lambda n: str(n.node.address))]
        )
    )
    assert not c.node.channels.occupancy_channels()
    before = len(origin.of_type("OCCUPANCY"))
    await origin.wait_for(lambda e: len(origin.of_type("OCCUPANCY")) >= before + 2)
    latest = origin.of_type("OCCUPANCY")[-1]
    assert latest["requestContext"]["channel"] == "busy"
    assert latest["requestContext"]["routeKey"] == "$occupancy"
    assert latest["count"] == 5 and "partial" not in latest
    assert {e["requestContext"]["channel"] for e in origin.of_type("OCCUPANCY")} == {"busy"}
    # The reporter's subscribers leave: the other asking node takes over, counting what is left.
    reporter = min((a, b), key=lambda n: str(n.node.address))
    leaving = on_a if reporter is a else on_b
    for client in leaving:
        await client.close()
    other = b if reporter is a else a
    await wait_until(lambda: other.node.channels.occupancy_channels() == ["busy"])
    remaining = 3 if reporter is a else 2
    await origin.wait_for(lambda e: origin.of_type("OCCUPANCY")[-1]["count"] == remaining)
    for client in on_a + on_b:
        await client.close()


async def test_a_node_restarted_faster_than_the_liveness_timeout_resyncs_both_ways(
    cluster: Cluster,
) -> None:
    """The survivor sees no peer down and up (same address, new run), so it is the restarted
    node's full list, asking for an answer, that makes both sides sync again."""
    a, b, c = cluster.nodes
    a_clients, a_ids = await clients_on(a, cluster.origin, 1)
    await commands(a, subscribe(a_ids, "before"))
    await wait_until(lambda: b.node.channels.interest.channels_of(a.node.address) == {"before"})
    # b's process is replaced at once: same ports, empty tables, a new run of the peer protocol.
    settings = b.service.settings
    await b.service.stop()
    await asyncio.sleep(0.1)  # the closed socket's port is free once the loop has run
    restarted = await build_service(settings)
    await restarted.start()
    cluster.nodes[1] = b = RunningNode(restarted, cluster.origin)
    await wait_until(lambda: b.node.channels.interest.synced(a.node.address), 10)
    assert b.node.channels.interest.channels_of(a.node.address) == {"before"}
    b_clients, b_ids = await clients_on(b, cluster.origin, 1)
    await commands(b, subscribe(b_ids, "after"))
    await wait_until(lambda: "after" in a.node.channels.interest.channels_of(b.node.address))
    await commands(c, publish("after", "to the restarted node"), publish("before", "to a"))
    assert await received(b_clients[0], 1) == ["to the restarted node"]
    assert await received(a_clients[0], 1) == ["to a"]
    for client in a_clients + b_clients:
        await client.close()
