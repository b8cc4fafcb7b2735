"""Attacks on the command port without (or with) the token, each against a real CommandEndpoint of a
real node on 127.0.0.1, with raw sockets, bounded in bytes and time. Each asserts the bound, and
that an honest origin meanwhile gets its commands delivered to a WebSocket client and /healthz
answers, promptly: the endpoint and the node share one event loop, so a stall shows there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httptools
import pytest
from websockets.asyncio.client import ClientConnection, connect

from runtime.transports.http1 import MAX_HEADER_BYTES
from runtime.transports.http1_client import HttpClient
from runtime.transports.http_commands import CommandEndpoint
from tests.conftest import TOKEN, RunningNode, StartNode, connect_id

# What one read of the event loop's socket transport can hand the parser at once.
ONE_READ = 256 * 1024
# An honest exchange that takes longer than this, while attacks run, counts as stalled.
PROMPT = 2.0
PIECE = 64 * 1024

_RealParser = httptools.HttpRequestParser


class CountingParser:
    """httptools' real request parser, counting the bytes it is fed."""

    def __init__(self, protocol: Any) -> None:
        self.parser = _RealParser(protocol)
        self.fed = 0
        made.append(self)

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


made: list[CountingParser] = []


@pytest.fixture
def parsers(monkeypatch: pytest.MonkeyPatch) -> list[CountingParser]:
    """Every request parser the servers create from here on, counting what it was fed."""
    made.clear()
    monkeypatch.setattr(httptools, "HttpRequestParser", CountingParser)
    return made


# --- the honest side ----------------------------------------------------------------------------


class HonestOrigin:
    """Posts commands for a connected WebSocket client, as an origin would, and checks /healthz."""

    def __init__(self, node: RunningNode, commands_port: int) -> None:
        self.node = node
        self.commands = HttpClient(
            f"http://127.0.0.1:{commands_port}/commands",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.health = HttpClient(f"{node.http_url}/healthz")
        self.rounds: list[float] = []
        self._count = 0

    async def exchange(self, client: ClientConnection, connection_id: str) -> float:
        """One command delivered and one /healthz answered; returns the seconds it took."""
        self._count += 1
        text = f"honest {self._count}"
        started = time.monotonic()
        body = {"commands": [{"action": "send", "connectionIds": [connection_id], "data": text}]}
        answer = await self.commands.post(json.dumps(body).encode())
        assert (answer.status, answer.json()) == (200, {"accepted": 1})
        assert await asyncio.wait_for(client.recv(), 5) == text
        assert (await self.health.request("GET")).status == 200
        elapsed = time.monotonic() - started
        self.rounds.append(elapsed)
        return elapsed

    async def keep_going(self, attacks: Awaitable[Any]) -> Any:
        """Exchange over and over until the attacks end; returns what the attacks returned."""
        running = asyncio.ensure_future(attacks)
        connected = len(self.node.origin.of_type("CONNECT"))
        async with connect(self.node.ws_url) as client:
            await self.node.origin.wait_for(
                lambda _: len(self.node.origin.of_type("CONNECT")) > connected
            )
            connection_id = connect_id(self.node.origin)
            while not running.done():
                await self.exchange(client, connection_id)
                await asyncio.sleep(0.05)
            await self.exchange(client, connection_id)  # and after them
        return await running

    def assert_prompt(self) -> None:
        assert len(self.rounds) >= 2, self.rounds
        assert max(self.rounds) < PROMPT, f"an honest exchange stalled: {max(self.rounds):.2f}s"

    async def close(self) -> None:
        await self.commands.close()
        await self.health.close()


EndpointFactory = Callable[..., Awaitable[tuple[CommandEndpoint, HonestOrigin]]]


@pytest.fixture
async def endpoint(start_node: StartNode) -> AsyncIterator[EndpointFactory]:
    """A command endpoint with the given limits, on a real node, and an honest origin for it."""
    started: list[tuple[CommandEndpoint, HonestOrigin]] = []

    async def start(**limits: Any) -> tuple[CommandEndpoint, HonestOrigin]:
        node = await start_node()
        commands = CommandEndpoint(
            node.node,
            "127.0.0.1",
            0,
            token=TOKEN,
            max_payload_bytes=node.service.settings.send_buffer_bytes,
            **limits,
        )
        await commands.start()
        started.append((commands, HonestOrigin(node, commands.port)))
        return started[-1]

    yield start
    for commands, honest in started:
        await honest.close()
        await commands.stop()


# --- the attacker's side ------------------------------------------------------------------------


async def send_until_answered(
    port: int, head: bytes, more: Callable[[int], bytes | None], *, pause: float = 0.0
) -> tuple[bytes, int]:
    """Send `head`, then `more(sent)` until it returns None or the server answers; returns what
    the server sent (up to its close, or within 3 s of the last byte sent) and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    answered = asyncio.Event()

    async def collect() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(PIECE):
                received.extend(chunk)
                answered.set()

    closed = asyncio.ensure_future(collect())
    first = asyncio.ensure_future(answered.wait())
    sent = 0
    try:
        writer.write(head)
        sent += len(head)
        while not answered.is_set() and (data := more(sent)) is not None:
            writer.write(data)
            sent += len(data)
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, first}, timeout=3, return_when="FIRST_COMPLETED")
            drained.cancel()
            if pause:
                await asyncio.sleep(pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), 3)
        return bytes(received), sent
    except ConnectionError:
        return bytes(received), sent
    finally:
        closed.cancel()
        first.cancel()
        writer.close()


def pieces_up_to(total: int, piece: bytes) -> Callable[[int], bytes | None]:
    return lambda sent: piece if sent < total else None


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def largest_feed(parsers: list[CountingParser]) -> int:
    return max(parser.fed for parser in parsers)


HEAD = b"POST /commands HTTP/1.1\r\nHost: 127.0.0.1\r\n"
AUTHORIZED = HEAD + f"Authorization: Bearer {TOKEN}\r\n".encode()


# --- the attacks --------------------------------------------------------------------------------


async def test_header_streamed_without_end_is_cut_at_the_bound(
    endpoint: EndpointFactory, parsers: list[CountingParser]
) -> None:
    """One header value growing to 8 MiB on each of 4 connections: each gets 431 once the head
    crosses 64 KiB; the parser is fed no more than the bound and one read, and the memory the
    process allocates meanwhile stays far below what the attackers sent."""
    commands, honest = await endpoint()
    stream = pieces_up_to(8 << 20, b"a" * PIECE)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        results = await honest.keep_going(
            asyncio.gather(
                *(send_until_answered(commands.port, HEAD + b"X-Grow: ", stream) for _ in range(4))
            )
        )
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    for answer, _ in results:
        assert status_of(answer) == 431
        assert b"larger than 65536 bytes" in answer
    assert largest_feed(parsers) <= MAX_HEADER_BYTES + ONE_READ
    assert peak < 6 << 20, f"{peak} bytes allocated at the peak of 4 x 8 MiB streamed headers"
    honest.assert_prompt()
    assert commands.open_connections == 1  # the honest origin's, kept alive


async def test_many_repeated_empty_headers_are_refused_quickly(
    endpoint: EndpointFactory, parsers: list[CountingParser]
) -> None:
    """65,000 `X:` lines (under 64 KiB of names and values) on 10 connections: refused with 431
    at the header-line cap, with no quadratic joining to stall the honest origin."""
    commands, honest = await endpoint()
    flood = HEAD + b"X:\r\n" * 65_000 + b"\r\n"
    results = await honest.keep_going(
        asyncio.gather(
            *(send_until_answered(commands.port, flood, lambda _: None) for _ in range(10))
        )
    )
    for answer, _ in results:
        assert status_of(answer) == 431
        assert b"more than 100 header lines" in answer
    honest.assert_prompt()


async def test_large_body_without_token_gets_401_before_it_is_read(
    endpoint: EndpointFactory, parsers: list[CountingParser]
) -> None:
    """A declared 16 MiB body without a token, sent in full unless answered, on 4 connections:
    each sees the 401 while still sending, and the server parsed at most a read of any body."""
    commands, honest = await endpoint()
    total = 16 << 20
    head = HEAD + f"Content-Length: {total}\r\n\r\n".encode()
    body = pieces_up_to(total + len(head), b"{" * PIECE)
    results = await honest.keep_going(
        asyncio.gather(*(send_until_answered(commands.port, head, body) for _ in range(4)))
    )
    for answer, sent in results:
        assert status_of(answer) == 401
        assert b'WWW-Authenticate: Bearer realm="commands"' in answer
        assert b'{"error":"missing or wrong bearer token"}' in answer
        assert sent < total, "the 401 came only after the whole body was sent"
    assert largest_feed(parsers) <= ONE_READ
    honest.assert_prompt()


async def test_declared_oversized_body_with_token_gets_413_at_once(
    endpoint: EndpointFactory,
) -> None:
    """With the token, a Content-Length over the limit is refused on the head alone."""
    commands, honest = await endpoint()
    head = AUTHORIZED + f"Content-Length: {(16 << 20) + 1}\r\n\r\n".encode()
    answer, _ = await honest.keep_going(
        send_until_answered(commands.port, head, lambda _: None)  # not one byte of body
    )
    assert status_of(answer) == 413
    assert b"request body larger than 16777216 bytes" in answer
    honest.assert_prompt()


async def test_slowloris_heads_and_bodies_are_cut_at_their_deadlines(
    endpoint: EndpointFactory,
) -> None:
    """A byte every 0.2 s, for at most 5 s, on 10 connections trickling a head and 10 trickling a
    body, and 5 that send nothing: all get 408 at the 1 s deadlines, trickling or not."""
    commands, honest = await endpoint(header_timeout=1, body_timeout=1)
    trickle = pieces_up_to(10_000, b"a")  # never reached: 25 bytes in 5 s
    body_head = AUTHORIZED + b"Content-Length: 1000\r\n\r\n{"
    attacks = [
        *(send_until_answered(commands.port, HEAD + b"X-", trickle, pause=0.2) for _ in range(10)),
        *(send_until_answered(commands.port, body_head, trickle, pause=0.2) for _ in range(10)),
        *(send_until_answered(commands.port, b"", lambda _: None) for _ in range(5)),
    ]
    started = time.monotonic()
    results = await honest.keep_going(asyncio.wait_for(asyncio.gather(*attacks), 8))
    assert time.monotonic() - started < 7  # well before the trickles would have ended
    for index, (answer, sent) in enumerate(results):
        assert status_of(answer) == 408
        part = b"body" if 10 <= index < 20 else b"head"
        assert b"request " + part + b" not received in full within 1 s" in answer
        assert sent - len(body_head if part == b"body" else HEAD) < 30  # a byte per 0.2 s
    honest.assert_prompt()


async def test_connections_beyond_the_cap_get_503_and_room_comes_back(
    endpoint: EndpointFactory,
) -> None:
    """8 idle connections fill a cap of 8: 4 more get 503 unread and closed, so does an honest
    request; once one idle connection closes, the honest origin gets through again."""
    commands, honest = await endpoint(max_connections=8)
    idle = [await asyncio.open_connection("127.0.0.1", commands.port) for _ in range(8)]
    await wait_until(lambda: commands.open_connections == 8)
    refused = [
        await send_until_answered(commands.port, AUTHORIZED + b"\r\n", lambda _: None)
        for _ in range(4)
    ]
    for answer, _ in refused:
        assert status_of(answer) == 503
        assert b"more than 8 connections open; retry later" in answer
    assert (await honest.commands.post(b"{}")).status == 503
    assert commands.open_connections == 8
    _, writer = idle.pop()
    writer.close()
    await wait_until(lambda: commands.open_connections < 8)
    await honest.keep_going(asyncio.sleep(0.3))
    assert commands.open_connections <= 8
    honest.assert_prompt()
    for _, writer in idle:
        writer.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_node_under_attack_on_its_command_port_stays_healthy(
    start_node: StartNode, parsers: list[CountingParser]
) -> None:
    """The node's own command endpoint, with its default limits, under the header, header-line
    and body attacks at once: every attack is refused and /healthz and honest commands answer."""
    node = await start_node()
    assert node.service.commands is not None
    port = node.service.commands.port
    honest = HonestOrigin(node, port)
    big = 16 << 20
    attacks = [
        *(
            send_until_answered(port, HEAD + b"X-Grow: ", pieces_up_to(8 << 20, b"a" * PIECE))
            for _ in range(2)
        ),
        *(
            send_until_answered(port, HEAD + b"X:\r\n" * 65_000 + b"\r\n", lambda _: None)
            for _ in range(2)
        ),
        *(
            send_until_answered(
                port,
                HEAD + f"Content-Length: {big}\r\n\r\n".encode(),
                pieces_up_to(big, b"{" * PIECE),
            )
            for _ in range(2)
        ),
    ]
    try:
        results = await honest.keep_going(asyncio.gather(*attacks))
    finally:
        await honest.close()
    assert [status_of(answer) for answer, _ in results] == [431, 431, 431, 431, 401, 401]
    assert largest_feed(parsers) <= MAX_HEADER_BYTES + ONE_READ
    honest.assert_prompt()
