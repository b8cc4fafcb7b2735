"""A built-in origin that sends every message back to its sender: the node, tried out alone."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from runtime.core.execution import CommandExecutor
from runtime.wire.commands import Send


class EchoOrigin:
    """Each MESSAGE goes back to its sender as a send command, executed by `node`.

    The node builds it with itself as the executor (`--origin-transport echo`), since the two
    need each other.
    """

    max_batch_events = 500
    linger = 0.0
    max_batch_bytes = 4 << 20
    max_event_bytes = 64 << 20  # in process: no message size to respect
    concurrency = 1

    def __init__(self, node: CommandExecutor) -> None:
        self._node = node

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def deliver(self, events: Sequence[bytes]) -> None:
        commands: list[Send] = []
        for raw in events:
            event = json.loads(raw)
            context = event["requestContext"]
            if context["eventType"] != "MESSAGE":
                continue
            binary = event["isBase64Encoded"]
            body = event["body"]
            payload = base64.b64decode(body) if binary else body.encode()
            commands.append(Send((context["connectionId"],), payload, binary))
        if commands:
            await self._node.execute(commands)
