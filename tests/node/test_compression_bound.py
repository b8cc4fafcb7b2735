"""permessage-deflate cannot lift the per-client receive bound (issue 12, item 3).

A compressed frame of a few hundred bytes can inflate to a whole message. Whatever a client
writes, the node holds at most `--receive-queue-messages` x `--max-message-bytes` plus one message
of inflated data for it while the origin is down, and loses nothing the client sent once the
origin is back. Clients are real `websockets` clients over 127.0.0.1 that build their bursts with
their own permessage-deflate context and write each burst with a single `transport.write`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import Callable, Sequence

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import State
from websockets.streams import StreamReader

from runtime.core.registry import ConnectionEntry
from tests.conftest import RunningNode, StartNode
from tests.doubles.memory import MemoryOrigin

QUEUE = 2  # --receive-queue-messages
MAX_MESSAGE = 256 * 1024  # --max-message-bytes
MESSAGE = 250 * 1024  # what each attack frame inflates to, from about 300 bytes on the wire
BOUND = (QUEUE + 1) * MAX_MESSAGE  # the receive queue plus one message
HELLO = "hello"  # each client's first message, read before the node stops reading
BURST = 60  # messages per burst: about 20 KiB on the wire, about 15 MiB inflated
CLOSE_TIMEOUT = 1.0  # the node's --close-timeout in these tests
EVENT_BUFFER_EVENTS = 16  # room for every test's CONNECTs (and their DISCONNECTs) first


async def backed_up_node(start_node: StartNode) -> RunningNode:
    """A deflate node whose origin is down, with a small event buffer for `stop_reading` to fill."""
    origin = MemoryOrigin()
    origin.up = False
    return await start_node(
        origin=origin,
        compression="deflate",
        receive_queue_messages=QUEUE,
        max_message_bytes=MAX_MESSAGE,
        event_buffer_events=EVENT_BUFFER_EVENTS,
        origin_unavailable_seconds=60,
        close_timeout=CLOSE_TIMEOUT,
    )


def client_of(
    node: RunningNode, *, deflate: bool = True, close_timeout: float = CLOSE_TIMEOUT
) -> connect:
    """A real client (permessage-deflate unless told); a failing test need not wait 10 s each."""
    return connect(
        node.ws_url, compression="deflate" if deflate else None, close_timeout=close_timeout
    )


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.01)


async def server_entry(node: RunningNode, client: ClientConnection) -> ConnectionEntry:
    """The node's registry entry for `client` (the node registers it just after the 101)."""
    port = client.local_address[1]

    def find() -> ConnectionEntry | None:
        for entry in node.node.registry:
            if entry.handle.remote_address[1] == port:
                return entry
        return None

    await until(lambda: find() is not None, f"the node registers the client on port {port}")
    entry = find()
    assert entry is not None
    return entry


async def taken(entry: ConnectionEntry, client: ClientConnection, message: str) -> None:
    """Send `message` and wait until the node has read it from the connection."""
    before = entry.next_sequence
    await client.send(message)
    await until(lambda: entry.next_sequence > before, f"the node reads {message!r}")


async def stop_reading(
    node: RunningNode,
    filler: ClientConnection,
    clients: Sequence[tuple[ConnectionEntry, ClientConnection]],
) -> None:
    """Leave the node reading none of `clients`, as when the origin is down and the buffer full.

    The filler's messages fill the event buffer; then each client's "hello" is read by its
    relay, which was already waiting in recv() and from then on waits for room instead.
    """
    filler_entry = await server_entry(node, filler)
    for index in range(2 * EVENT_BUFFER_EVENTS):
        if not node.node.pump.has_room:
            break
        await taken(filler_entry, filler, f"filler {index}")
    assert not node.node.pump.has_room, "the event buffer never filled"
    for entry, client in clients:
        await taken(entry, client, HELLO)


def attack_messages(label: str, count: int = BURST, size: int = MESSAGE) -> list[str]:
    """Messages that compress to a few hundred bytes each; the prefix makes order checkable."""
    return [f"{label}:{index:03d}:".ljust(size, "x") for index in range(count)]


def compressed_burst(client: ClientConnection, messages: Sequence[str | bytes]) -> bytes:
    """The frames of `messages`, compressed with the client's own permessage-deflate context."""
    for message in messages:
        client.protocol.send_text(message.encode() if isinstance(message, str) else message)
    return b"".join(client.protocol.data_to_send())


def fragmented_burst(client: ClientConnection, messages: Sequence[str], fragments: int) -> bytes:
    """Each message as `fragments` compressed frames, with a ping between the first two."""
    for message in messages:
        data = message.encode()
        size = len(data) // fragments
        parts = [data[i * size : (i + 1) * size] for i in range(fragments - 1)]
        parts.append(data[(fragments - 1) * size :])
        client.protocol.send_text(parts[0], fin=False)
        client.protocol.send_ping(b"between fragments")
        for part in parts[1:-1]:
            client.protocol.send_continuation(part, fin=False)
        client.protocol.send_continuation(parts[-1], fin=True)
    return b"".join(client.protocol.data_to_send())


class InflatedHeld:
    """The inflated bytes a server connection holds for its client, and their peak.

    Sampled at every frame the connection inflates, the only moment the amount can grow: the
    frames parsed but not yet queued, the frames in the receive queue, and the new frame.
    """

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.peak = 0
        self.frames = 0
        (extension,) = connection.protocol.extensions
        inflate = extension.decode

        def counting_decode(frame: Frame, *, max_size: int | None = None) -> Frame:
            inflated = inflate(frame, max_size=max_size)
            if inflated.opcode in DATA_OPCODES:
                self.frames += 1
                self.peak = max(self.peak, self.now() + len(inflated.data))
            return inflated

        extension.decode = counting_decode  # type: ignore[method-assign]

    def now(self) -> int:
        parsed = [event for event in self.connection.protocol.events if isinstance(event, Frame)]
        queued = list(self.connection.recv_messages.frames.queue)
        return sum(len(frame.data) for frame in parsed + queued if frame.opcode in DATA_OPCODES)


async def reading_paused(node: RunningNode, entries: Sequence[ConnectionEntry]) -> None:
    """Wait until the node stopped reading each of these clients, then a little longer."""
    assert not node.node.pump.has_room, "the event buffer must be full for the node to stop"
    for entry in entries:
        await until(lambda e=entry: e.handle.recv_messages.paused, "the receive queue is full")
    await asyncio.sleep(0.2)  # anything the node would still parse, it parses now


def bodies(origin: MemoryOrigin, entry: ConnectionEntry | str) -> list[str]:
    connection_id = entry if isinstance(entry, str) else entry.connection_id
    return [event["body"] for event in origin.of_type("MESSAGE", connection_id)]


def disconnect_code(origin: MemoryOrigin, entry: ConnectionEntry | str) -> int | None:
    connection_id = entry if isinstance(entry, str) else entry.connection_id
    found = origin.of_type("DISCONNECT", connection_id)
    return found[0]["disconnectStatusCode"] if found else None


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def test_compressed_bursts_hold_at_most_the_queue_and_one_message(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    node = await backed_up_node(start_node)
    origin = node.origin
    honest_messages = [f"honest {index}" for index in range(5)]
    async with (
        client_of(node) as filler,
        client_of(node) as attacker_a,
        client_of(node) as attacker_b,
        client_of(node) as attacker_c,
        client_of(node) as honest,
        client_of(node, deflate=False) as plain,
    ):
        attackers = [attacker_a, attacker_b, attacker_c]
        entries = [await server_entry(node, client) for client in attackers]
        honest_entry = await server_entry(node, honest)
        plain_entry = await server_entry(node, plain)
        await stop_reading(
            node,
            filler,
            [*zip(entries, attackers, strict=True), (honest_entry, honest), (plain_entry, plain)],
        )
        meters = [InflatedHeld(entry.handle) for entry in entries]
        sent: dict[str, list[str]] = {}
        for label, client in zip("abc", attackers, strict=True):
            sent[label] = attack_messages(label)
            burst = compressed_burst(client, sent[label])
            assert len(burst) < 32 * 1024  # small on the wire...
            client.transport.write(burst)  # ...and written in one go
        for message in honest_messages:
            await honest.send(message)
            await plain.send(message)
        await reading_paused(node, entries)

        for meter in meters:
            assert meter.peak <= BOUND, (
                f"held {meter.peak} inflated bytes for one client after {meter.frames} frames; "
                f"the bound is {BOUND} ({QUEUE} queued messages + 1, of {MAX_MESSAGE} bytes)"
            )
            assert meter.now() <= BOUND
        # The uncompressed path keeps the library's reader: no per-frame cost there.
        assert type(plain_entry.handle.protocol.reader) is StreamReader
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{node.http_url}/healthz") as response,
        ):
            assert response.status == 200

        origin.up = True
        everyone = [*entries, honest_entry, plain_entry]
        expected = [[HELLO, *messages] for messages in [*sent.values(), honest_messages]]
        expected.append([HELLO, *honest_messages])
        await origin.wait_for(
            lambda _: all(
                len(bodies(origin, entry)) >= len(messages)
                for entry, messages in zip(everyone, expected, strict=True)
            ),
            timeout=15,
        )
    for entry, messages in zip(everyone, expected, strict=True):
        assert bodies(origin, entry) == messages  # all of them, in order, nothing else
    assert all(meter.peak <= BOUND for meter in meters)
    assert not errors_logged(caplog)


async def test_fragmented_compressed_messages_keep_the_bound_and_arrive_whole(
    start_node: StartNode,
) -> None:
    node = await backed_up_node(start_node)
    messages = attack_messages("f", count=20)
    async with client_of(node) as filler, client_of(node) as client:
        entry = await server_entry(node, client)
        await stop_reading(node, filler, [(entry, client)])
        meter = InflatedHeld(entry.handle)
        client.transport.write(fragmented_burst(client, messages, fragments=4))
        await reading_paused(node, [entry])
        assert meter.peak <= BOUND
        node.origin.up = True
        await node.origin.wait_for(lambda _: len(bodies(node.origin, entry)) > len(messages))
        assert bodies(node.origin, entry) == [HELLO, *messages]
        assert meter.frames == 4 * len(messages)
        assert meter.peak <= BOUND
        assert client.state is State.OPEN  # the pings between fragments were fine


async def test_ping_is_answered_at_once_then_in_order_behind_held_frames(
    start_node: StartNode,
) -> None:
    node = await backed_up_node(start_node)
    messages = attack_messages("p")
    async with client_of(node) as filler, client_of(node) as client:
        entry = await server_entry(node, client)
        await stop_reading(node, filler, [(entry, client)])
        # Nothing is held yet: a ping is answered right away.
        await asyncio.wait_for(await client.ping(b"before"), 2)
        client.transport.write(compressed_burst(client, messages))
        behind = await client.ping(b"behind the burst")
        await reading_paused(node, [entry])
        # Like unread bytes in the socket, the ping waits for the frames sent before it.
        assert not behind.done()
        node.origin.up = True
        await asyncio.wait_for(behind, 10)
        await node.origin.wait_for(lambda _: len(bodies(node.origin, entry)) > len(messages))
        assert bodies(node.origin, entry) == [HELLO, *messages]


async def test_client_close_behind_held_frames_completes_after_them(
    start_node: StartNode,
) -> None:
    node = await backed_up_node(start_node)
    messages = attack_messages("c")
    async with client_of(node) as filler, client_of(node, close_timeout=9) as client:
        entry = await server_entry(node, client)
        await stop_reading(node, filler, [(entry, client)])
        client.transport.write(compressed_burst(client, messages))
        await reading_paused(node, [entry])
        closing = asyncio.create_task(client.close())
        await asyncio.sleep(0.2)
        assert not closing.done()  # the close frame waits behind the messages
        node.origin.up = True
        await asyncio.wait_for(closing, 9)
        assert client.close_code == 1000
        await node.origin.wait_for(lambda _: disconnect_code(node.origin, entry) is not None)
    assert bodies(node.origin, entry) == [HELLO, *messages]
    assert disconnect_code(node.origin, entry) == 1000


async def test_node_closing_a_client_with_held_frames_drops_them_and_moves_on(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    node = await backed_up_node(start_node)
    messages = attack_messages("n")
    async with (
        client_of(node) as filler,
        client_of(node) as client,
        client_of(node) as bystander,
    ):
        entry = await server_entry(node, client)
        bystander_entry = await server_entry(node, bystander)
        await stop_reading(node, filler, [(entry, client), (bystander_entry, bystander)])
        gone_id, connection = entry.connection_id, entry.handle
        client.transport.write(compressed_burst(client, messages))
        await reading_paused(node, [entry])
        del entry
        close = {"action": "close", "connectionIds": [gone_id], "code": 4000}
        status, _ = await node.post_commands({"commands": [close]})
        assert status == 200
        # The client's answer to the close is behind its burst; the node stops waiting after
        # --close-timeout and lets go of the connection, held bytes included.
        await asyncio.wait_for(client.wait_closed(), CLOSE_TIMEOUT + 5)
        assert client.close_code == 4000
        await until(lambda c=connection: c.protocol.state is State.CLOSED, "it closes")
        assert not connection.protocol.reader.buffer
        await bystander.send("still here")
        node.origin.up = True
        await node.origin.wait_for(
            lambda _: (
                disconnect_code(node.origin, gone_id) is not None
                and bodies(node.origin, bystander_entry) == [HELLO, "still here"]
            )
        )
    # What was queued before the close arrives, in order; what was never read is gone.
    received = bodies(node.origin, gone_id)
    assert received[0] == HELLO
    assert received[1:] == messages[: len(received) - 1]
    assert len(received) - 1 <= QUEUE + 1
    assert disconnect_code(node.origin, gone_id) == 4000
    await until(lambda: node.node.registry.get(gone_id) is None, "the node forgets it")
    reference = weakref.ref(connection)
    del connection
    gc.collect()
    assert reference() is None, "the closed connection is still referenced"
    assert not errors_logged(caplog)


@pytest.mark.parametrize(
    ("last", "code"),
    [("x" * (MAX_MESSAGE + 1), 1009), (b"\xff\xfe not utf-8", 1007)],
    ids=["too-big-1009", "invalid-utf8-1007"],
)
async def test_bad_message_after_held_frames_still_closes_with_its_code(
    start_node: StartNode, last: str | bytes, code: int
) -> None:
    node = await backed_up_node(start_node)
    messages = attack_messages("b", count=20)
    async with client_of(node) as filler, client_of(node) as client:
        entry = await server_entry(node, client)
        await stop_reading(node, filler, [(entry, client)])
        client.transport.write(compressed_burst(client, [*messages, last]))
        await reading_paused(node, [entry])
        assert client.state is State.OPEN  # the bad message is not parsed yet
        node.origin.up = True
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 10)
        assert client.close_code == code
        await node.origin.wait_for(lambda _: disconnect_code(node.origin, entry) is not None)
    assert bodies(node.origin, entry) == [HELLO, *messages]
    assert disconnect_code(node.origin, entry) == code


async def test_half_close_after_a_burst_delivers_every_message_before_the_eof(
    start_node: StartNode,
) -> None:
    node = await backed_up_node(start_node)
    messages = attack_messages("e")
    async with client_of(node) as filler, client_of(node) as client:
        entry = await server_entry(node, client)
        await stop_reading(node, filler, [(entry, client)])
        client.transport.write(compressed_burst(client, messages))
        client.transport.write_eof()
        await reading_paused(node, [entry])
        node.origin.up = True
        await node.origin.wait_for(lambda _: disconnect_code(node.origin, entry) is not None)
    assert bodies(node.origin, entry) == [HELLO, *messages]
    assert disconnect_code(node.origin, entry) == 1006  # EOF without a close frame


async def test_eof_reported_while_frames_are_held_waits_for_them(start_node: StartNode) -> None:
    """EOF reported while reading is paused (asyncio's selector transport never does) waits.

    The frames sent before it are then neither dropped nor inflated all at once.
    """
    node = await backed_up_node(start_node)
    messages = attack_messages("h")
    async with client_of(node) as filler, client_of(node) as client:
        entry = await server_entry(node, client)
        await stop_reading(node, filler, [(entry, client)])
        meter = InflatedHeld(entry.handle)
        client.transport.write(compressed_burst(client, messages))
        await reading_paused(node, [entry])
        assert entry.handle.eof_received() is True  # kept open: frames before the EOF wait
        assert entry.handle.protocol.state is State.OPEN
        assert meter.peak <= BOUND
        node.origin.up = True
        await node.origin.wait_for(lambda _: disconnect_code(node.origin, entry) is not None)
    assert bodies(node.origin, entry) == [HELLO, *messages]
    assert disconnect_code(node.origin, entry) == 1006
    assert meter.peak <= BOUND
