"""The GraphQL benchmark's receiving clients, in the load generator (picows), and the messages
they expect.

Every client checks what it gets, so that a wrong delivery fails the run instead of passing as a
figure: a GraphQL subscriber counts only its own protocol's result of the current publish, a plain
client only the current broadcast; anything else is counted as unexpected. What a client expects
is built here too (`result_text`, `marker`), beside the code that recognises it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport

from bench import client as load
from bench.common import BenchFailure
from runtime.wire.graphql_ws import LEGACY, MODERN

QUERY = "subscription Tick($digest: String!, $key: String!) { tick }"
KEY_A, KEY_B = "tick:a", "tick:b"  # the key of scenario A's one input; of B's inputs
TEXT = WSMsgType.TEXT
SETUP_TIMEOUT = 60.0  # connecting and subscribing N clients


# Messages


def tick_context(seq: int, message_bytes: int) -> dict[str, Any]:
    """A publish context padded so that the result frame a client gets is `message_bytes` long."""
    bare = len(result_text(seq, ""))
    return {"n": seq, "pad": "x" * max(0, message_bytes - bare)}


def result_text(seq: int, pad: str) -> str:
    """The `next` message a graphql-transport-ws client gets (graphql-ws: `data`, as long)."""
    context = json.dumps({"n": seq, "pad": pad}, separators=(",", ":"))
    return '{"id":"1","type":"next","payload":{"data":{"tick":' + context + "}}}"


def marker(seq: int) -> bytes:
    """What identifies round `seq` in any frame of it (the pad follows, hence the comma)."""
    return f'"n":{seq},'.encode()


def subscribe_message(protocol: str, digest: str, key: str) -> bytes:
    kind = "subscribe" if protocol == MODERN else "start"
    payload = {"query": QUERY, "variables": {"digest": digest, "key": key}}
    return json.dumps({"id": "1", "type": kind, "payload": payload}).encode()


# The clients


@dataclass
class Watch:
    """What the clients of one kind wait for: frames carrying the current round's marker.

    One per kind of fan-out (its clients receive nothing else), armed only for that kind's rounds:
    a frame of another round, such as a broadcast reaching a GraphQL client, is unexpected.
    """

    marker: bytes = b""
    target: int = 0
    count: int = 0
    finished: asyncio.Future[float] | None = None
    acked: int = 0
    sizes: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # error / complete / connection_error frames
    unexpected: int = 0
    samples: list[str] = field(default_factory=list)  # the first few unexpected frames
    disconnected: int = 0

    def arm(self, mark: bytes, target: int) -> asyncio.Future[float]:
        self.marker, self.target, self.count = mark, target, 0
        self.finished = asyncio.get_running_loop().create_future()
        return self.finished

    def received(self, payload: bytes) -> None:
        """A frame of the current round (the caller checked the marker)."""
        self.count += 1
        self.sizes.add(len(payload))
        if self.count == self.target and self.finished and not self.finished.done():
            self.finished.set_result(time.perf_counter())

    def stray(self, payload: bytes) -> None:
        self.unexpected += 1
        if len(self.samples) < 3:
            self.samples.append(payload[:200].decode("utf-8", "replace"))


class Subscriber(WSListener):
    """A GraphQL client: init, one subscription once acknowledged, then counts the results.

    A result counts only if it is its protocol's message for its operation and carries the
    current publish's marker; anything else but an ack or a keep-alive is unexpected.
    """

    def __init__(self, watch: Watch, protocol: str, digest: str, key: str) -> None:
        self.watch = watch
        self.subscribe = subscribe_message(protocol, digest, key)
        kind = "next" if protocol == MODERN else "data"
        self.result_prefix = f'{{"id":"1","type":"{kind}","payload":'.encode()

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(TEXT, b'{"type":"connection_init","payload":{}}')

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT:
            payload = frame.get_payload_as_bytes()
            watch = self.watch
            if watch.marker and watch.marker in payload and payload.startswith(self.result_prefix):
                watch.received(payload)
            elif payload.startswith(b'{"type":"connection_ack"'):
                watch.acked += 1
                transport.send(TEXT, self.subscribe)
            elif payload == b'{"type":"ka"}':
                pass
            elif b'"type":"error"' in payload or b'"type":"co' in payload:  # complete, conn. error
                watch.errors.append(payload[:200].decode("utf-8", "replace"))
            else:  # a broadcast, another round's result, the other protocol's message
                watch.stray(payload)
        elif kind is WSMsgType.BINARY:
            self.watch.stray(b"<binary frame>")
        elif kind is WSMsgType.CLOSE:  # the node closing: counted as a disconnection
            load.close_back(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.watch.disconnected += 1


class Receiver(WSListener):
    """A plain client (no subprotocol), of the node or of the picows server: counts the frames of
    the current round; any other frame is unexpected."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        watch = self.watch
        if kind is TEXT:
            payload = frame.get_payload_as_bytes()
            if watch.marker and watch.marker in payload:
                watch.received(payload)
            else:
                watch.stray(payload)
        elif kind is WSMsgType.BINARY:
            watch.stray(b"<binary frame>")
        elif kind is WSMsgType.CLOSE:
            load.close_back(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.watch.disconnected += 1


async def open_subscribers(
    url: str, specs: list[tuple[str, str, str]], watch: Watch, time_limit: float = SETUP_TIMEOUT
) -> list[WSTransport]:
    """One connection per (protocol, digest, key), asking for that protocol, 64 handshakes at a
    time and 3 tries each (`bench.client.open_many`); BenchFailure unless all of them open."""
    opened, failures = await load.open_many(
        url,
        len(specs),
        lambda number: Subscriber(watch, *specs[number]),
        subprotocols=[protocol for protocol, _, _ in specs],
        time_limit=time_limit,
    )
    transports = [transport for transport, _ in opened]
    if failures:
        close(transports)
        raise BenchFailure(f"{failures} of {len(specs)} GraphQL connections failed to open")
    return transports


def close(transports: list[WSTransport]) -> None:
    for transport in transports:
        transport.disconnect(graceful=False)


def specs_for(count: int, digests: list[str], key: str) -> list[tuple[str, str, str]]:
    """Protocols alternate, and so do inputs, so every input has subscribers of both protocols."""
    protocols = (MODERN, LEGACY)
    return [(protocols[i % 2], digests[(i // 2) % len(digests)], key) for i in range(count)]
