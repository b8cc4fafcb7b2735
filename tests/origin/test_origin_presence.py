"""The SDK's PresenceClient against real nodes' command listeners: one node, and the three-node
UDP cluster of the channel tests. The client blocks, so its calls run in a thread while the
nodes serve on the test's loop."""

from __future__ import annotations

import asyncio

import pytest

from runtime.origin import ChannelCount, ChannelMember, PresenceClient, PresenceError
from runtime.wire.channels import ChannelRules
from tests.conftest import TOKEN, StartNode
from tests.doubles.memory import MemoryOrigin
from tests.node.test_channels import (
    Cluster,
    clients_on,
    cluster,
    commands,
    subscribe,
    wait_until,
)
from tests.node.test_presence import known_everywhere

__all__ = ["cluster"]  # the fixture, shared with the channel tests


async def test_count_and_members_of_one_node(start_node: StartNode) -> None:
    node = await start_node()
    assert isinstance(node.origin, MemoryOrigin)
    clients, ids = await clients_on(node, node.origin, 5)  # type: ignore[arg-type]
    await commands(
        node,
        subscribe(ids[:2], "room/1", userInfo={"name": "Ann", "tags": ["x"]}),
        subscribe(ids[2:], "room/1"),
    )
    client = PresenceClient(node.listener_url + "/", TOKEN)
    assert await asyncio.to_thread(client.count, "room/1") == ChannelCount("room/1", 5)
    assert await asyncio.to_thread(client.count, "empty") == ChannelCount("empty", 0)
    expected = [
        ChannelMember(i, {"name": "Ann", "tags": ["x"]} if i in ids[:2] else None)
        for i in sorted(ids)
    ]
    for page_size in (1, 2, 5, 1000):
        members = await asyncio.to_thread(lambda s=page_size: list(client.members("room/1", s)))
        assert members == expected
    pages = await asyncio.to_thread(lambda: list(client.pages("room/1", 2)))
    assert [len(page.members) for page in pages] == [2, 2, 1]
    assert [page.next for page in pages] == [
        expected[1].connection_id,
        expected[3].connection_id,
        None,
    ]
    assert not any(page.partial for page in pages)
    page = await asyncio.to_thread(client.page, "room/1", expected[3].connection_id, 10)
    assert page.members == (expected[4],) and page.next is None
    # The node of a connection, from its ID and the command port.
    port = node.service.commands.port  # type: ignore[union-attr]
    at_node = PresenceClient.at_node_of(ids[0], port, TOKEN)
    assert (await asyncio.to_thread(at_node.count, "room/1")).count == 5
    for ws in clients:
        await ws.close()


async def test_bad_calls_fail_with_the_reason(start_node: StartNode) -> None:
    node = await start_node()
    client = PresenceClient(node.listener_url, TOKEN)
    with pytest.raises(ValueError, match="holds ' '"):
        client.count("bad name")  # checked before any request
    with pytest.raises(ValueError, match="1 to 8 characters"):
        PresenceClient(node.listener_url, TOKEN, rules=ChannelRules(max_name_length=8)).count(
            "x" * 9
        )
    for limit in (0, 1001, True, 2.5):
        with pytest.raises(ValueError, match="limit"):
            client.page("room", limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http"):
        PresenceClient("ftp://node:21")
    with pytest.raises(PresenceError) as refused:
        await asyncio.to_thread(PresenceClient(node.listener_url, "wrong").count, "room")
    assert refused.value.status == 401 and "token" in refused.value.message
    with pytest.raises(PresenceError) as bad_cursor:
        await asyncio.to_thread(client.page, "room", "not a cursor")
    assert bad_cursor.value.status == 400 and "after" in bad_cursor.value.message


async def test_members_across_three_nodes(cluster: Cluster) -> None:
    groups = [await clients_on(node, cluster.origin, 3) for node in cluster.nodes]
    ids = [connection_id for _clients, group_ids in groups for connection_id in group_ids]
    await commands(cluster.nodes[1], subscribe(ids, "lobby", userInfo={"v": 1}))
    await wait_until(lambda: known_everywhere(cluster, "lobby"))
    for node in cluster.nodes:
        client = PresenceClient(node.listener_url, TOKEN)
        counted = await asyncio.to_thread(client.count, "lobby")
        assert counted == ChannelCount("lobby", 9)
        members = await asyncio.to_thread(lambda c=client: list(c.members("lobby", 4)))
        assert members == [ChannelMember(i, {"v": 1}) for i in sorted(ids)]
    for clients, _ids in groups:
        for ws in clients:
            await ws.close()
