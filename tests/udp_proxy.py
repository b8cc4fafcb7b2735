"""A UDP proxy that loses, duplicates and reorders datagrams on purpose, for cluster tests.

A node advertises the proxy's port as its peer address; the proxy forwards what it receives to
the node's real peer port. Decisions come from a seeded random generator, so a failure repeats.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any


class FaultyUdpProxy(asyncio.DatagramProtocol):
    def __init__(
        self,
        target: tuple[str, int],
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        max_delay: float = 0.005,
        seed: int = 1,
    ) -> None:
        self.target = target
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.max_delay = max_delay
        self.random = random.Random(seed)
        self.counts = {"received": 0, "lost": 0, "duplicated": 0, "delayed": 0}
        self.recent: deque[bytes] = deque(maxlen=64)  # for replay tests
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> FaultyUdpProxy:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        assert self.transport is not None
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.counts["received"] += 1
        self.recent.append(data)
        chance = self.random.random
        if chance() < self.loss:
            self.counts["lost"] += 1
            return
        copies = 1
        if chance() < self.duplicate:
            copies = 2
            self.counts["duplicated"] += 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            if chance() < self.reorder:
                self.counts["delayed"] += 1
                loop.call_later(chance() * self.max_delay, self._send, data)
            else:
                self._send(data)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, self.target)
