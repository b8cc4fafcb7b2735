"""A client that stops reading is closed with 1013 once its send buffer fills; memory is bounded."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartNode, connect_id

CHUNK = 64 * 1024


@pytest.mark.parametrize(
    ("limits", "message_bytes"),
    [
        ({"send_buffer_bytes": 256 * 1024, "send_buffer_messages": 100_000}, CHUNK),
        ({"send_buffer_bytes": 64 * 1024 * 1024, "send_buffer_messages": 8}, CHUNK),
    ],
    ids=["bytes-limit", "messages-limit"],
)
async def test_slow_client_closed_1013_and_memory_bounded(
    start_node: StartNode, limits: dict[str, int], message_bytes: int
) -> None:
    node = await start_node(close_timeout=10, **limits)
    async with connect(node.ws_url, max_size=None) as slow, connect(node.ws_url) as fast:
        await node.origin.wait_for(lambda e: len(e) >= 2)
        slow_id, fast_id = connect_id(node.origin, 0), connect_id(node.origin, 1)
        slow.transport.pause_reading()  # the client stops reading; TCP buffers fill up
        entry = node.node.registry.get(slow_id)
        assert entry is not None
        transport = entry.handle.transport
        bound = limits["send_buffer_bytes"] + message_bytes + 64
        peak = 0
        sent = 0
        for _ in range(400):  # bounded: at most 400 x 20 x 64 KiB
            body = {
                "commands": [
                    {"action": "send", "connectionIds": [slow_id], "data": "s" * message_bytes}
                    for _ in range(20)
                ]
                + [{"action": "send", "connectionIds": [fast_id], "data": "ok"}]
            }
            status, _ = await node.post_commands(body)
            assert status == 200
            sent += 20
            peak = max(peak, transport.get_write_buffer_size())
            assert await asyncio.wait_for(fast.recv(), 2) == "ok"  # others unaffected
            if node.node.stats().get("slowClientsClosed", 0):
                break
        assert node.node.stats().get("slowClientsClosed", 0) == 1
        assert peak <= bound
        # Further sends are not buffered for a closing client.
        await node.post_commands(
            {"commands": [{"action": "send", "connectionIds": [slow_id], "data": "s" * CHUNK}]}
        )
        assert transport.get_write_buffer_size() <= bound + 16
        slow.transport.resume_reading()
        received = 0
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 10)
                received += 1
        assert slow.close_code == 1013
        assert 0 < received < sent
    events = await node.origin.wait_for(
        lambda e: any(x["requestContext"]["eventType"] == "DISCONNECT" for x in e)
    )
    disconnect = next(x for x in events if x["requestContext"]["eventType"] == "DISCONNECT")
    assert disconnect["requestContext"]["connectionId"] == slow_id
    assert disconnect["disconnectStatusCode"] == 1013
