"""A built-in origin that sends every message back to its sender: the node, tried out alone."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from runtime.transports.base import CommandExecutor
from runtime.wire.commands import Send


class EchoOrigin:
    max_batch_events = 500
    linger = 0.0
    max_batch_bytes = 4 << 20
    max_event_bytes = 64 << 20  # in process: no message size to respect
    concurrency = 1

    def __init__(self) -> None:
        self._node: CommandExecutor | None = None

    def bind(self, node: CommandExecutor) -> None:
        self._node = node

    async def start(self) -> None:
        if self._node is None:
            raise RuntimeError("EchoOrigin needs bind(node) before start()")

    async def close(self) -> None:
        return None

    async def deliver(self, events: Sequence[bytes]) -> None:
        assert self._node is not None
        commands = []
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
