"""Memory per subscription, measured on a real node process: its RSS with N idle connections,
before and after subscribing each of them to K channels.

The channels come from a pool, as rooms do: connection i takes the K consecutive channels of
block i mod (pool / K), so every channel has about N * K / pool members (10,000 connections, 10
channels each from 1,000: 100 members a channel), the shape of the in-process measurement in
tests/core/test_channel_table.py. The subscribes go in small bodies (`commands_per_post` commands of
N / blocks IDs each), so that parsing them leaves little behind in the allocator.
"""

from __future__ import annotations

from typing import Any

from bench import client as load
from bench.channels_stage import Node, Stage
from bench.receivers import Receivers

WARM_CHANNEL = "bench:warm"


def channel_blocks(pool: int, each: int) -> list[list[str]]:
    """The pool cut into blocks of `each` channels; a connection takes one block."""
    blocks = max(1, pool // each)
    return [[f"mem:{block * each + k}" for k in range(each)] for block in range(blocks)]


async def measure(
    stage: Stage,
    node: Node,
    receivers: Receivers,
    *,
    each: int,
    pool: int,
    commands_per_post: int = 10,
) -> dict[str, Any]:
    """Open the receivers' connections to `node` (a fresh node), subscribe them, read RSS."""
    # Warm the node's code paths (handshake, events, the first commands), then let it settle.
    warm, _ = await load.open_many(node.ws_url, 50, lambda _: load.quiet_listener())
    load.close_all(warm)
    await stage.settle([node], [0])
    rss_empty = await node.child.stable_rss()
    opened = await receivers.open()
    n = receivers.opened
    await stage.settle([node], [n])
    few = node.ids[:10]
    await stage.subscribe(node, few, [WARM_CHANNEL])
    await stage.post(
        node, [{"action": "unsubscribe", "connectionIds": few, "channels": [WARM_CHANNEL]}]
    )
    rss_connections = await node.child.stable_rss()

    blocks = channel_blocks(pool, each)
    commands = [
        {"action": "subscribe", "connectionIds": node.ids[index :: len(blocks)], "channels": block}
        for index, block in enumerate(blocks)
        if node.ids[index :: len(blocks)]
    ]
    for start in range(0, len(commands), commands_per_post):
        await stage.post(node, commands[start : start + commands_per_post])
    stats = await stage.stats(node)
    rss_subscriptions = await node.child.stable_rss()
    subscriptions = n * each
    return {
        "connections": n,
        "connect_seconds": opened["seconds"],
        "channels_each": each,
        "channel_pool": pool,
        "subscriptions": subscriptions,
        "node_subscriptions": stats.get("channelSubscriptions", 0),
        "node_channels": stats.get("channels", 0),
        "expected_channels": sum(len(command["channels"]) for command in commands),
        "rss_empty": rss_empty,
        "rss_connections": rss_connections,
        "rss_subscriptions": rss_subscriptions,
        "bytes_per_connection": (rss_connections - rss_empty) / max(1, n),
        "bytes_per_subscription": (rss_subscriptions - rss_connections) / max(1, subscriptions),
    }
