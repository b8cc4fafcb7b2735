"""Writing to clients: one frame at a time, straight to the transport, and a client that reads
too slowly is closed (1013) rather than buffered for without bound.

One `ClientWriter` per node serves every path that writes to a client: commands, the
@connections API and GraphQL answers, so all of them keep the same slow-client limits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from runtime.core.registry import ConnectionEntry
from runtime.core.send_buffer import SendLimits
from runtime.node.frames import message_frame
from runtime.wire.commands import Broadcast, ChannelPublish, Send

log = logging.getLogger("runtime.node")

Entry = ConnectionEntry[ServerConnection]


class ClientWriter:
    def __init__(self, limits: SendLimits) -> None:
        self.limits = limits
        self.counters: Counter[str] = Counter()  # messagesSent, slowClientsClosed
        self._closing: set[asyncio.Task[None]] = set()

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def write(self, entry: Entry, frame: bytes, message: Send | Broadcast | ChannelPublish) -> bool:
        """Write one frame (`message` as built once for all its clients); False if the client
        is closing or closed."""
        connection = entry.handle
        protocol = connection.protocol
        if entry.closing or protocol.state is not State.OPEN:
            return False
        if protocol.extensions:
            # permessage-deflate: the library compresses, with this connection's own context.
            if message.binary:
                protocol.send_binary(message.payload)
            else:
                protocol.send_text(message.payload)
            frame = b"".join(protocol.data_to_send())
        transport = connection.transport
        transport.write(frame)
        messages, nbytes = entry.backlog.record(len(frame), transport.get_write_buffer_size())
        if messages and self.limits.exceeded(messages, nbytes):
            self.counters["slowClientsClosed"] += 1
            log.warning(
                "client too slow; closing",
                extra={
                    "connectionId": entry.connection_id,
                    "bufferedMessages": messages,
                    "bufferedBytes": nbytes,
                },
            )
            self.close(entry, 1013, "send buffer full")
        self.counters["messagesSent"] += 1
        return True

    def post(self, entry: Entry, payload: bytes, binary: bool) -> bool:
        """One @connections post to one client."""
        return self.write(entry, message_frame(payload, binary), Send((), payload, binary))

    def send_text(self, entry: Entry, text: str) -> bool:
        """One text message to one client (GraphQL answers)."""
        payload = text.encode("utf-8")
        return self.write(entry, message_frame(payload, False), Send((), payload, False))

    def close(self, entry: Entry, code: int, reason: str) -> None:
        """Start closing a client, once; nothing more is written to it meanwhile."""
        if entry.closing:
            return
        entry.closing = True
        self._spawn(entry.handle.close(code, reason))

    async def close_now(self, entry: Entry, code: int, reason: str) -> None:
        """Close and wait until the close is sent, for a caller that must not read on first."""
        entry.closing = True
        await entry.handle.close(code, reason)

    def cancel(self) -> None:
        """Stop the closes still under way (the node is stopping)."""
        for task in list(self._closing):
            task.cancel()

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
