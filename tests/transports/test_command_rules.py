"""The command endpoint checks channel commands by the rules it was given (the node's settings),
on a real node's CommandEndpoint on 127.0.0.1."""

from __future__ import annotations

import json

from runtime.transports.http1_client import HttpClient
from runtime.transports.http_commands import CommandEndpoint
from runtime.wire.channels import ChannelRules
from tests.conftest import TOKEN, StartNode


async def test_the_endpoint_refuses_what_its_rules_refuse(start_node: StartNode) -> None:
    node = await start_node()
    endpoint = CommandEndpoint(
        node.node,
        "127.0.0.1",
        0,
        token=TOKEN,
        max_payload_bytes=node.service.settings.send_buffer_bytes,
        channel_rules=ChannelRules(max_name_length=4, max_user_info_bytes=2),
    )
    await endpoint.start()
    client = HttpClient(
        f"http://127.0.0.1:{endpoint.port}/commands",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5.0,
    )
    try:
        body = {
            "commands": [
                {"action": "subscribe", "connectionIds": ["a"], "channels": ["abcde"]},
                {
                    "action": "subscribe",
                    "connectionIds": ["a"],
                    "channels": ["abcd"],
                    "userInfo": "long",
                },
                {"action": "publish", "channel": "a b", "data": "x"},
            ]
        }
        response = await client.post(json.dumps(body).encode())
        assert response.status == 400
        answer = json.loads(response.body)
        assert answer["accepted"] == 0
        assert [entry["index"] for entry in answer["rejected"]] == [0, 1, 2]
        errors = [entry["error"] for entry in answer["rejected"]]
        assert "a channel name of 1 to 4 characters (got 5)" in errors[0]
        assert '"userInfo" is 6 bytes of JSON; the most it may be is 2' in errors[1]
        assert "\"channel\" holds ' '" in errors[2]
    finally:
        await client.close()
        await endpoint.stop()
