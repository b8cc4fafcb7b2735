"""The fault benchmark of issue 12: `python -m bench.attacks` (`--quick`, `--only N,M`).

Issue 12 fixed six attacks an outside review found; each has a pytest test. This replays each one
at a larger size against a real node process (`python -m runtime serve`, JSON logs, pinned to one
core) while well-behaved clients on the other core do ordinary work beside the attacker, and
measures what the issue's last item asks for: the attack's size, the node's RSS before and at its
peak against a budget built from its documented bounds, its buffered event bytes (GET /stats,
`bufferedEventBytes` + `reservedEventBytes`, polled every 50 ms) against `--event-buffer-bytes`,
the refusals, and the honest clients' delivered/expected counts. Anything below 100% delivered,
or any bound exceeded, fails the run (exit status 1).

1. CONNECT/DISCONNECT flood: handshakes with 56 KB of headers, closed at once, origin down.
2. Events too large for SQS: handshakes with 720 KB of headers against a 1 MiB queue on moto's
   server, then a message the queue refuses after its limit shrank.
3. permessage-deflate bursts: small frames inflating to 250 KiB each, in one write per client.
4. Forged connection IDs naming any IP:port, posted to a node with no cluster members.
5. The command port without a token: growing headers, 65,000 empty header lines, 16 MiB bodies,
   and connections trickling a byte a second.
6. GraphQL subscribe/complete loops against a slow origin that records concurrent handlers.

Everything talks to 127.0.0.1 only; every loop is bounded in count and time; all children are
killed at the end. Results: a table on stdout, bench/results/attacks[-quick].json, and, for a
full run of all six, docs/attacks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil
from botocore.config import Config
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bench import report
from bench.common import BenchFailure, progress, raise_nofile_limit, run
from bench.local import MOTO_CHILD  # moto's server alone in a child, as bench.local runs it
from bench.procs import REPO, Child, Fleet, free_port, free_udp_port, pick_cpus, wait_listening
from runtime.local.provision import provision
from runtime.names import ResourceNames
from runtime.origin.events import parse_events
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_client import HttpClient, HttpClientError
from runtime.transports.http1_server import HttpServer
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress

COMMAND = ".venv/bin/python -m bench.attacks"
KiB = 1024
MiB = 1024 * KiB
REGION = "us-east-1"  # moto's, for item 2
HEADER_LINE = 8000  # bytes per padding header line; websockets takes lines up to 8 KiB
TICK = 0.1  # seconds between rounds of honest work
ANSWER_TIMEOUT = 5.0  # an honest exchange not answered by then is lost
SETTLE_TIMEOUT = 30.0  # the most the honest clients' traffic may take to arrive once it can
SAMPLE_INTERVAL = 0.05  # RSS and GET /stats
# RSS growth allowed beyond the documented bounds: the interpreter's allocator, sockets, and
# per-connection objects of the attackers the node holds at once. Against the code before the
# fixes, this bench measured growths of 139 MiB (item 1), 234 MiB (3) and 650 MiB (5).
ALLOWANCE = 48 * MiB
ONE_READ = 256 * KiB  # what one read of the event loop's socket transport can hand a parser
IN_FLIGHT_BYTES = 4 * 4 * MiB  # origin request bodies the node builds at once, by default
REQUEST_HEAD = b"POST /commands HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no token
LONG_BODY = 64  # characters of a message body the bench's origin keeps
FORGED_FIRST_PORT = 20_000
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}  # moto's


# Plan


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    honest_clients: int = 10
    event_buffer_bytes: int = 16 * MiB
    # 1
    flood_handshakes: int = 800
    flood_header_bytes: int = 56_000
    flood_parallel: int = 8
    # 2
    oversized_handshakes: int = 40
    oversized_header_bytes: int = 720_000
    refused_message_bytes: int = 100_000
    shrunk_queue_bytes: int = 64 * KiB
    # 3
    deflate_attackers: int = 4
    deflate_burst_bytes: int = 64 * KiB
    deflate_message_bytes: int = 250 * KiB
    receive_queue_messages: int = 4
    max_message_bytes: int = 256 * KiB
    # 4
    forged_posts: int = 5
    forged_per_post: int = 1000
    forged_at_catcher: int = 10  # of each post, naming the UDP socket the bench listens on
    # 5
    header_streams: int = 4
    header_stream_bytes: int = 8 * MiB
    empty_header_floods: int = 10
    empty_header_lines: int = 65_000
    body_floods: int = 20
    body_bytes: int = 16 * MiB
    trickles: int = 1200
    trickle_seconds: float = 15.0  # each trickle gives up then; the header deadline is earlier
    command_max_connections: int = 1024  # the command port's defaults
    command_header_timeout: float = 10.0
    command_max_header_bytes: int = 64 * KiB
    # 6
    graphql_attackers: int = 2
    graphql_operations: int = 1100  # per attacker
    graphql_concurrency: int = 32
    graphql_max_operations: int = 100
    graphql_hold: float = 2.0  # seconds the origin holds each slow start


QUICK = Plan(
    quick=True,
    honest_clients=4,
    event_buffer_bytes=4 * MiB,
    flood_handshakes=80,
    flood_parallel=4,
    oversized_handshakes=6,
    deflate_attackers=2,
    forged_posts=1,
    header_streams=2,
    empty_header_floods=2,
    body_floods=4,
    trickles=80,
    trickle_seconds=6.0,
    command_max_connections=64,
    command_header_timeout=2.0,
    graphql_attackers=1,
    graphql_operations=200,
    graphql_hold=1.0,
)

ITEMS = {
    1: "CONNECT/DISCONNECT flood",
    2: "events too large for SQS",
    3: "permessage-deflate bursts",
    4: "forged connection IDs",
    5: "command port without a token",
    6: "GraphQL subscribe/complete loop",
}


# Results


@dataclass
class Check:
    """One verdict of a run: what was measured against what is wanted."""

    name: str
    measured: Any
    wanted: str
    ok: bool


@dataclass
class Outcome:
    """One attack's row: what was sent, what the node held, and what the honest clients got."""

    item: int
    attack: str  # what was sent, in a sentence
    size: str = ""  # the same, for the table
    also: str = ""  # the attack's own figure, for the table
    rss_before: int = 0
    rss_peak: int = 0
    rss_budget: int = 0
    buffered_peak: int | None = None
    buffered_bound: int | None = None
    refusals: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    expected: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    warnings: int = 0

    def check(self, name: str, measured: Any, wanted: str, ok: bool) -> None:
        self.checks.append(Check(name, measured, wanted, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


# The node


@dataclass
class Node:
    """A `python -m runtime serve` child and the handles the bench reaches it by."""

    child: Child
    ws_port: int
    command_port: int
    token: str
    flags: list[str]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    def command_client(self, path: str = "commands") -> HttpClient:
        """A keep-alive client of the command port: opened before an attack, it stays open."""
        return HttpClient(
            f"http://127.0.0.1:{self.command_port}/{path}",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            max_connections=1,
            timeout=ANSWER_TIMEOUT,
        )


def node_argv(ws_port: int, command_port: int, token: str, flags: Sequence[str]) -> list[str]:
    """`serve` with what every attacked node shares; the attack's own bounds come after."""
    return [
        "-m", "runtime", "serve",
        "--listen", f"127.0.0.1:{ws_port}",
        "--command-listen", f"127.0.0.1:{command_port}",
        "--command-token", token,
        "--log-level", "WARNING",
        "--log-format", "json",
        "--keepalive-interval", "0",
        *flags,
    ]  # fmt: skip


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Variables a child inherits at spawn (secrets stay off its command line)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Meter:
    """The node's RSS and buffered event bytes, sampled every 50 ms while an attack runs.

    The buffered figure comes from GET /stats over a connection opened before the attack, as an
    operator's dashboard would have it; polls that fail are counted, not fatal.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.rss_before = 0
        self.rss_peak = 0
        self.buffered_peak = 0
        self.polls = 0
        self.failed_polls = 0
        self._stats = node.command_client("stats")
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.stats()  # opens the keep-alive connection
        self.rss_before = await self.node.child.stable_rss(tolerance=0.005)
        self.rss_peak = self.rss_before
        self._tasks = [asyncio.create_task(self._rss()), asyncio.create_task(self._buffered())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop()
        await self._stats.close()

    async def stats(self) -> dict[str, Any]:
        response = await self._stats.request("GET")
        if response.status != 200:
            raise HttpClientError(f"GET /stats answered {response.status}")
        return dict(response.json())

    async def _rss(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):  # the node died: the checks will say so
                self.rss_peak = max(self.rss_peak, self.node.child.rss())
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def _buffered(self) -> None:
        while True:
            try:
                stats = await self.stats()
            except (HttpClientError, OSError, ValueError):
                self.failed_polls += 1
            else:
                self.polls += 1
                self.buffered_peak = max(self.buffered_peak, buffered_bytes(stats))
            await asyncio.sleep(SAMPLE_INTERVAL)


def buffered_bytes(stats: dict[str, Any]) -> int:
    """Event bytes held for the origin, and the room kept for DISCONNECTs: the bounded sum."""
    return int(stats.get("bufferedEventBytes", 0)) + int(stats.get("reservedEventBytes", 0))


# Origins


class EventOrigin:
    """The event origin of items 1 and 3 to 5, in this process: takes `POST /events` batches,
    or answers 503 while `up` is False, as an origin that is down would. Long bodies are cut to
    LONG_BODY characters: this process need not hold item 3's hundreds of megabytes."""

    def __init__(self) -> None:
        self.up = True
        self.events: list[dict[str, Any]] = []
        self.refused = 0
        self.url = ""
        self._server = HttpServer(self._route, max_body_bytes=64 * MiB, name="bench-origin")

    async def start(self) -> EventOrigin:
        port = await self._server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}/events"
        return self

    async def stop(self) -> None:
        await self._server.stop(timeout=1.0)

    async def __aenter__(self) -> EventOrigin:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _route(self, request: Request) -> Response:
        if request.method != "POST" or request.path != "/events":
            return json_response({"error": "POST /events only"}, 404)
        if not self.up:
            self.refused += 1
            return json_response({"error": "down on purpose"}, 503)
        for event in json.loads(request.body)["events"]:
            if len(event.get("body") or "") > LONG_BODY:
                event["body"] = event["body"][:LONG_BODY]  # an attacker's: its start will do
            self.events.append(event)
        return json_response({})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["requestContext"]["eventType"] == kind]

    async def messages(self) -> dict[str, list[str]]:
        return messages_by_connection(self.events)


def messages_by_connection(events: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Each connection's MESSAGE bodies in arrival order."""
    found: dict[str, list[str]] = {}
    for event in events:
        context = event["requestContext"]
        if context["eventType"] == "MESSAGE":
            found.setdefault(context["connectionId"], []).append(event["body"])
    return found


class QueueSink:
    """The events queue of item 2 on moto, read back as an SQS consumer would; each
    connection's bodies are put in the order of their events' sequence numbers."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.events: list[dict[str, Any]] = []

    def limit(self, size: int) -> None:
        """Set the queue's MaximumMessageSize, as an operator might under a running node."""
        self.sqs.set_queue_attributes(
            QueueUrl=self.queue_url, Attributes={"MaximumMessageSize": str(size)}
        )

    async def messages(self) -> dict[str, list[str]]:
        await asyncio.to_thread(self._drain)
        ordered = sorted(self.events, key=lambda e: e["requestContext"]["sequenceNumber"])
        return messages_by_connection(ordered)

    def _drain(self) -> None:
        for _ in range(200):  # at most 2,000 messages per look
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            received = answer.get("Messages", [])
            if not received:
                return
            # Packed or not, as the SDK reads them (the node packs events since issue 14).
            for message in received:
                self.events.extend(parse_events(message["Body"]))
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(received)
                ],
            )


class SlowGraphqlOrigin:
    """The GraphQL origin of item 6: holds every `start` of the slow subscription for `hold`
    seconds, answers the rest at once, and records how many handlers ran at once, overall and
    per connection. Handlers run to their end even when the node gives up on a request, as real
    servers (and Lambda) do: that is what let dead operations pile up at the origin."""

    SLOW = "subscription Slow { slow }"

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.url = ""
        self.requests: Counter[str] = Counter()
        self.inits: list[str] = []  # connection IDs, in the order of their connection_init
        self.starts_by_connection: Counter[str] = Counter()
        self.running = 0
        self.most_running = 0
        self.running_for: Counter[str] = Counter()
        self.most_running_for: Counter[str] = Counter()
        self._handlers: set[asyncio.Task[Response]] = set()
        self._server = HttpServer(self._route, max_body_bytes=1 * MiB, name="bench-graphql")

    async def start(self) -> SlowGraphqlOrigin:
        port = await self._server.start("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def stop(self) -> None:
        await self._server.stop(timeout=1.0)
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def __aenter__(self) -> SlowGraphqlOrigin:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _route(self, request: Request) -> Response:
        document = json.loads(request.body)
        handler = asyncio.ensure_future(self._answer(document))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        return await asyncio.shield(handler)

    async def _answer(self, document: dict[str, Any]) -> Response:
        kind = str(document.get("type"))
        key = str(document.get("connectionId", ""))
        self.requests[kind] += 1
        if kind == "connection_init":
            self.inits.append(key)
        if kind == "start":
            self.starts_by_connection[key] += 1
        self.running += 1
        self.running_for[key] += 1
        self.most_running = max(self.most_running, self.running)
        self.most_running_for[key] = max(self.most_running_for[key], self.running_for[key])
        try:
            if kind == "start" and document.get("query") == self.SLOW:
                await asyncio.sleep(self.hold)
            return json_response(graphql_answer(kind, document))
        finally:
            self.running -= 1
            self.running_for[key] -= 1


def graphql_answer(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """The GraphQL-mode contract (docs/protocol.md): accept, subscribe, or echo a variable."""
    if kind == "connection_init":
        return {"accept": True}
    if kind == "start":
        if str(document.get("query", "")).startswith("subscription"):
            digest = str(document.get("operationId"))
            return {"subscription": {"inputDigest": digest, "inputContext": None, "keys": ["k"]}}
        variables = document.get("variables") or {}
        return {"result": {"data": {"echo": variables.get("value")}}}
    if kind == "subscription_query":
        return {"result": {"data": {"echo": document.get("publishContext")}}}
    return {}


# Honest clients


class HonestClient:
    """A well-behaved WebSocket client: sends numbered messages, keeps every message it gets."""

    def __init__(self, name: str, connection: ClientConnection) -> None:
        self.name = name
        self.connection = connection
        self.connection_id = ""
        self.sent: list[str] = []
        self.received: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.connection:
                self.received.append(str(message))

    async def send_next(self) -> None:
        text = f"{self.name}:{len(self.sent)}"
        self.sent.append(text)
        with contextlib.suppress(ConnectionClosed):
            await self.connection.send(text)

    async def close(self) -> None:
        await self.connection.close()
        self._reader.cancel()


MessageSource = Callable[[], Awaitable[dict[str, list[str]]]]


class HonestTraffic:
    """Ordinary work beside an attacker, every TICK: each client sends a message that must reach
    the origin in order, one `send` command must reach every client, and GET /healthz must
    answer 200. Counts what was expected and what got through."""

    def __init__(self, node: Node, messages: MessageSource, prefix: str = "honest") -> None:
        self.node = node
        self.messages = messages
        self.prefix = prefix
        self.clients: list[HonestClient] = []
        self.commands = node.command_client()
        self.health = HttpClient(f"http://127.0.0.1:{node.ws_port}/healthz", timeout=ANSWER_TIMEOUT)
        self.commands_sent: list[str] = []
        self.command_failures = 0
        self.health_checks = 0
        self.health_ok = 0
        self.health_worst = 0.0

    async def open(self, count: int, *, deflate: Sequence[bool] = ()) -> None:
        """Connect, send each client's first message, and learn its ID from the origin."""
        for index in range(count):
            compression = "deflate" if index < len(deflate) and deflate[index] else None
            connection = await connect(self.node.ws_url, compression=compression, open_timeout=10)
            client = HonestClient(f"{self.prefix}{index}", connection)
            self.clients.append(client)
            await client.send_next()
        await self._learn_ids()
        await self.tick()  # opens the command and health connections before any attack

    async def _learn_ids(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            firsts = {bodies[0]: cid for cid, bodies in (await self.messages()).items() if bodies}
            for client in self.clients:
                client.connection_id = firsts.get(client.sent[0], "")
            if all(client.connection_id for client in self.clients):
                return
            await asyncio.sleep(0.1)
        raise BenchFailure("the honest clients' first messages never reached the origin")

    async def tick(self) -> None:
        for client in self.clients:
            await client.send_next()
        await asyncio.gather(self._command(), self._healthz())

    async def _command(self) -> None:
        text = f"command:{len(self.commands_sent)}"
        self.commands_sent.append(text)
        ids = [client.connection_id for client in self.clients]
        body = {"commands": [{"action": "send", "connectionIds": ids, "data": text}]}
        try:
            answer = await self.commands.post(json.dumps(body).encode())
            ok = answer.status == 200
        except HttpClientError:
            ok = False
        if not ok:
            self.command_failures += 1

    async def _healthz(self) -> None:
        self.health_checks += 1
        started = time.monotonic()
        with contextlib.suppress(HttpClientError, OSError):
            if (await self.health.request("GET")).status == 200:
                self.health_ok += 1
        self.health_worst = max(self.health_worst, time.monotonic() - started)

    async def beside(self, attack: Awaitable[Any]) -> Any:
        return await beside(self.tick, attack)

    async def settle(self) -> None:
        """Wait (bounded) until everything sent has arrived, at the origin and at the clients."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            if self.counts(await self.messages())[0] == self.expected:
                return
            await asyncio.sleep(0.2)

    @property
    def expected(self) -> int:
        per_client = len(self.commands_sent)
        sent = sum(len(client.sent) for client in self.clients)
        return sent + per_client * len(self.clients) + self.health_checks

    def counts(self, at_origin: dict[str, list[str]]) -> tuple[int, int]:
        """(delivered, expected): messages in order at the origin, commands in order at each
        client, /healthz answered 200. A message overtaken by a later one counts as lost."""
        delivered = self.health_ok
        for client in self.clients:
            delivered += in_order(at_origin.get(client.connection_id, []), client.sent)
            delivered += in_order(client.received, self.commands_sent)
        return delivered, self.expected

    def ids(self) -> set[str]:
        return {client.connection_id for client in self.clients}

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await self.commands.close()
        await self.health.close()

    async def __aenter__(self) -> HonestTraffic:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def in_order(got: Sequence[str], wanted: Sequence[str]) -> int:
    """How many of `wanted` (distinct items) arrived in the order they were sent: the longest
    subsequence of `got` in that order. A lost or overtaken item is not counted; a repeat adds
    nothing; what was never sent is ignored."""
    place = {item: index for index, item in enumerate(wanted)}
    tails: list[int] = []  # tails[k]: the least last place of an ordered run of k + 1 items
    for item in got:
        index = place.get(item)
        if index is None:
            continue
        at = bisect.bisect_left(tails, index)
        if at == len(tails):
            tails.append(index)
        else:
            tails[at] = index
    return len(tails)


# Attackers' tools


def padding(total: int) -> list[tuple[str, str]]:
    """Request headers of about `total` bytes, in lines the handshake parser accepts."""
    return [(f"X-Pad-{index}", "p" * HEADER_LINE) for index in range(total // HEADER_LINE)]


async def handshake(url: str, headers: list[tuple[str, str]], **options: Any) -> int:
    """One handshake, closed at once: 101, the HTTP status it was refused with, or the close
    code the node sent right after the 101."""
    try:
        async with connect(url, additional_headers=headers, open_timeout=10, **options):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006
    except (WebSocketException, OSError, TimeoutError):
        return 0


async def handshake_flood(
    url: str, count: int, header_bytes: int, parallel: int, time_limit: float = 60.0
) -> list[int]:
    """`count` handshakes from `parallel` attackers, each one after the other."""
    headers = padding(header_bytes)
    statuses: list[int] = []
    deadline = time.monotonic() + time_limit

    async def attacker() -> None:
        while len(statuses) < count and time.monotonic() < deadline:
            place = len(statuses)
            statuses.append(-1)  # claimed, so that the total stays `count`
            statuses[place] = await handshake(url, headers)

    await asyncio.gather(*(attacker() for _ in range(parallel)))
    return statuses


HELD, CUT = 0, -1  # raw_exchange's "statuses" when no answer came


def status_name(status: int) -> str:
    return {HELD: "held (no answer)", CUT: "closed without an answer"}.get(status, str(status))


async def raw_exchange(
    port: int,
    head: bytes,
    more: Callable[[int], bytes | None],
    *,
    pause: float = 0.0,
    time_limit: float = 20.0,
) -> tuple[int, int]:
    """Send `head`, then `more(sent)` until it returns None, the server answers or closes, or
    the time is up. Returns the HTTP status of the answer (HELD: none by the time limit; CUT:
    closed or reset without one) and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        first = b""
        with contextlib.suppress(ConnectionError):
            first = await reader.read(64)
        if not answered.done():
            answered.set_result(first)

    reading = asyncio.ensure_future(read())
    sent = 0
    deadline = time.monotonic() + time_limit
    try:
        writer.write(head)
        sent += len(head)
        while not answered.done() and not writer.is_closing() and time.monotonic() < deadline:
            data = more(sent)
            if data is None:
                break
            writer.write(data)
            sent += len(data)
            await _drained(writer, answered)
            if pause:
                await asyncio.wait({answered}, timeout=pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(answered), max(0.1, deadline - time.monotonic()))
    except (ConnectionError, RuntimeError):  # uvloop: RuntimeError on a transport now closed
        pass
    finally:
        reading.cancel()
        writer.close()
    if not answered.done():
        return HELD, sent
    first = answered.result()
    return (int(first[9:12]) if first.startswith(b"HTTP/1.1 ") else CUT), sent


async def _drained(writer: asyncio.StreamWriter, answered: asyncio.Future[bytes]) -> None:
    """Until the kernel took the bytes, the server answered, or 3 s passed."""
    drained = asyncio.ensure_future(writer.drain())
    await asyncio.wait({drained, answered}, timeout=3, return_when="FIRST_COMPLETED")
    drained.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await drained


def pieces_up_to(total: int, piece: bytes) -> Callable[[int], bytes | None]:
    return lambda sent: piece if sent < total else None


def forged_ids(
    region: str, catcher_port: int, count: int, at_catcher: int, first_port: int
) -> list[str]:
    """IDs with the right region and a valid CRC, each naming 127.0.0.1 at some port: the first
    `at_catcher` name the bench's own UDP socket, the others a port each from `first_port`."""
    catcher = ConnectionIdIssuer(region, NodeAddress("127.0.0.1", catcher_port))
    ids = [catcher.issue() for _ in range(at_catcher)]
    ids += [
        ConnectionIdIssuer(region, NodeAddress("127.0.0.1", first_port + index)).issue()
        for index in range(count - at_catcher)
    ]
    return ids


class DatagramCatcher(asyncio.DatagramProtocol):
    """A UDP socket standing for some other service the forged IDs name: counts what arrives."""

    def __init__(self) -> None:
        self.received = 0
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1

    async def __aenter__(self) -> DatagramCatcher:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.port = int(self._transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._transport is not None:
            self._transport.close()


# The GraphQL side of item 6

MODERN = "graphql-transport-ws"
ECHO_QUERY = "query Echo($value: String!) { echo(value: $value) }"


async def graphql_client(url: str) -> ClientConnection:
    """A graphql-transport-ws client past its connection_init, or BenchFailure."""
    client = await connect(url, subprotocols=[MODERN], open_timeout=10)  # type: ignore[list-item]
    await client.send(json.dumps({"type": "connection_init", "payload": {}}))
    answer = json.loads(await asyncio.wait_for(client.recv(), ANSWER_TIMEOUT + 5))
    if answer != {"type": "connection_ack"}:
        await client.close()
        raise BenchFailure(f"connection_init answered {answer!r}")
    return client


async def graphql_query(client: ClientConnection, operation_id: str) -> bool:
    """One query; True once its result arrives (other operations' messages are skipped)."""
    payload = {"query": ECHO_QUERY, "variables": {"value": operation_id}}
    await client.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": payload}))
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while True:
            message = json.loads(await client.recv())
            if message.get("id") == operation_id and message.get("type") == "next":
                return bool(message["payload"] == {"data": {"echo": operation_id}})
            if message.get("id") == operation_id and message.get("type") == "error":
                return False


class GraphqlHonest:
    """Item 6's well-behaved clients, every TICK: each kept-open client asks a query, one new
    client connects, is acknowledged and asks a query, and GET /healthz answers 200."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.clients: list[ClientConnection] = []
        self.health = HttpClient(f"http://127.0.0.1:{node.ws_port}/healthz", timeout=ANSWER_TIMEOUT)
        self.expected = 0
        self.delivered = 0
        self.worst = 0.0  # seconds, the slowest exchange
        self.rounds = 0

    async def open(self, count: int) -> None:
        self.clients = [await graphql_client(self.node.ws_url) for _ in range(count)]
        await self.tick()

    async def tick(self) -> None:
        self.rounds += 1
        await asyncio.gather(
            *(self._timed(self._query(client)) for client in self.clients),
            self._timed(self._newcomer()),
            self._timed(self._healthz()),
        )

    async def _timed(self, exchange: Awaitable[int]) -> None:
        started = time.monotonic()
        got = await exchange  # awaited first: `+= await` would lose concurrent updates
        self.delivered += got
        self.worst = max(self.worst, time.monotonic() - started)

    async def _query(self, client: ClientConnection) -> int:
        self.expected += 1
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            return int(await graphql_query(client, f"h{self.rounds}"))
        return 0

    async def _newcomer(self) -> int:
        """connection_init acknowledged, then a query answered: two exchanges expected."""
        self.expected += 2
        try:
            client = await graphql_client(self.node.ws_url)
        except (BenchFailure, WebSocketException, OSError, TimeoutError):
            return 0
        try:
            return 1 + int(await graphql_query(client, "new"))
        except (TimeoutError, ConnectionClosed):
            return 1
        finally:
            await client.close()

    async def _healthz(self) -> int:
        self.expected += 1
        with contextlib.suppress(HttpClientError, OSError):
            return int((await self.health.request("GET")).status == 200)
        return 0

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        await self.health.close()

    async def __aenter__(self) -> GraphqlHonest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def subscribe_complete_loop(
    client: ClientConnection, operations: int, time_limit: float
) -> dict[str, int]:
    """The review's pacing: subscribe to the slow subscription, one round trip (ping/pong: the
    node has started the operation), complete it; again and again."""
    deadline = time.monotonic() + time_limit
    refused = looped = 0
    slow = {"query": SlowGraphqlOrigin.SLOW}
    for number in range(operations):
        if time.monotonic() > deadline:
            break
        await client.send(json.dumps({"id": f"a{number}", "type": "subscribe", "payload": slow}))
        await client.send('{"type":"ping"}')
        async with asyncio.timeout(ANSWER_TIMEOUT + 5):
            while True:
                message = json.loads(await client.recv())
                if message.get("type") == "pong":
                    break
                refused += message.get("type") == "error"
        await client.send(json.dumps({"id": f"a{number}", "type": "complete"}))
        looped += 1
    return {"operations": looped, "refused": refused}


async def beside(tick: Callable[[], Awaitable[None]], attack: Awaitable[Any]) -> Any:
    """Honest rounds every TICK until the attack is over, and one after it; the attack's result."""
    running = asyncio.ensure_future(attack)
    try:
        while not running.done():
            ticked = time.monotonic()
            await tick()
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - ticked)))
        await tick()
        return await running
    finally:
        running.cancel()


# The attacks


@dataclass
class Scene:
    """An attacked node and its meter; the node's log lines are counted from `begin` on."""

    node: Node
    meter: Meter
    log_lines_before: int = 0

    async def begin(self) -> None:
        await self.meter.start()
        self.log_lines_before = self.node.child.log_lines()

    async def end(self) -> dict[str, Any]:
        """Stop sampling; the node's counters as the attack left them ({} if it cannot say:
        the checks then fail on what is missing)."""
        await self.meter.stop()
        try:
            return await self.meter.stats()
        except (HttpClientError, OSError, ValueError):
            return {}

    @property
    def warnings(self) -> int:
        return self.node.child.log_lines() - self.log_lines_before


class AttackBench:
    def __init__(self, plan: Plan, fleet: Fleet, cpus: tuple[int | None, int | None]) -> None:
        self.plan = plan
        self.fleet = fleet
        self.node_cpu, self.harness_cpu = cpus

    async def run(self, items: Sequence[int]) -> list[Outcome]:
        outcomes = []
        for item in items:
            _say(f"item {item}: {ITEMS[item]}")
            started = time.monotonic()
            outcome = await getattr(self, f"item{item}")()
            outcome.seconds = round(time.monotonic() - started, 1)
            _say(f"item {item}: {'PASS' if outcome.ok else 'FAIL'} in {outcome.seconds:.1f} s")
            outcomes.append(outcome)
        return outcomes

    async def start_node(self, name: str, flags: Sequence[str], *, local_only: bool = True) -> Node:
        ws_port, command_port = free_port(), free_port()
        token = secrets.token_hex(16)  # hex: never read as a flag
        argv = node_argv(ws_port, command_port, token, flags)
        if local_only:
            argv += ["--local-only", "true"]
        _say(f"{name}: serve {' '.join(flags)}")
        child = self.fleet.python(name, argv, self.node_cpu)
        await wait_listening(child, ws_port)
        await wait_listening(child, command_port)
        return Node(child, ws_port, command_port, token, list(flags))

    @contextlib.asynccontextmanager
    async def attacked(
        self,
        name: str,
        flags: Sequence[str],
        *,
        local_only: bool = True,
        env: dict[str, str] | None = None,
    ) -> AsyncIterator[Scene]:
        """A node for one attack, stopped (and its meter closed) whatever happens. `env`: what
        it inherits besides this process's environment (secrets, off its command line)."""
        with environment(**(env or {})):
            node = await self.start_node(name, flags, local_only=local_only)
        meter = Meter(node)
        try:
            yield Scene(node, meter)
        finally:
            await meter.close()
            self.fleet.stop(node.child)

    async def probe(self, scene: Scene, messages: MessageSource) -> bool:
        """After the attack, once the origin has caught up: a new client's message reaches the
        origin, a command reaches it, and /healthz answers, as for any client."""
        await self.drained(scene.meter)
        async with HonestTraffic(scene.node, messages, prefix="probe") as probe:
            try:
                await probe.open(1)
            except (BenchFailure, WebSocketException, OSError, TimeoutError) as exc:
                _say(f"the node failed a new client after the attack: {exc!r}")
                return False
            await probe.settle()
            delivered, expected = probe.counts(await messages())
        return delivered == expected and scene.node.child.alive()

    async def drained(self, meter: Meter) -> None:
        """Until the node holds no event for the origin (bounded): a buffer still full of the
        attacker's events rightly refuses new clients."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if not (await meter.stats()).get("bufferedEvents", 0):
                    return
            except (HttpClientError, OSError, ValueError):
                return  # the probe will find out
            await asyncio.sleep(0.1)

    def finish(
        self, outcome: Outcome, scene: Scene, counts: tuple[int, int], healthy: bool
    ) -> Outcome:
        """The checks every attack shares: honest traffic whole, RSS and buffered bytes within
        their bounds, the node alive and serving afterwards."""
        meter = scene.meter
        delivered, expected = counts
        outcome.rss_before, outcome.rss_peak = meter.rss_before, meter.rss_peak
        outcome.delivered, outcome.expected = delivered, expected
        outcome.warnings = scene.warnings
        outcome.notes.update(
            flags=scene.node.flags, statsPolls=meter.polls, statsPollsFailed=meter.failed_polls
        )
        outcome.check(
            "honest clients: delivered / expected",
            f"{delivered:,} / {expected:,}",
            "100%",
            delivered == expected and expected > 0,
        )
        growth = meter.rss_peak - meter.rss_before
        outcome.check(
            "node RSS growth during the attack",
            _mib(growth),
            f"<= {_mib(outcome.rss_budget)}",
            growth <= outcome.rss_budget,
        )
        if outcome.buffered_bound is not None:
            outcome.buffered_peak = meter.buffered_peak
            outcome.check(
                "buffered event bytes, peak of GET /stats",
                _mib(meter.buffered_peak),
                f"<= {_mib(outcome.buffered_bound)}",
                meter.buffered_peak <= outcome.buffered_bound and meter.polls > 0,
            )
        outcome.check("alive, and serving a new client after the attack", healthy, "True", healthy)
        return outcome

    @staticmethod
    def memory_budget(*held: int) -> int:
        """What the node may hold on top of its RSS before: `held` plus the ALLOWANCE."""
        return sum(held) + ALLOWANCE

    # 1. CONNECT/DISCONNECT flood

    async def item1(self) -> Outcome:
        p = self.plan
        cap = p.event_buffer_bytes
        sent = p.flood_handshakes * p.flood_header_bytes
        outcome = Outcome(
            1,
            f"{p.flood_handshakes:,} handshakes x {p.flood_header_bytes:,} B of headers "
            f"({_mb(sent)}), {p.flood_parallel} at a time, each closed at once; origin down",
            size=f"{p.flood_handshakes:,} x {_kb(p.flood_header_bytes)} headers = {_mb(sent)}",
            buffered_bound=cap,
            rss_budget=self.memory_budget(cap, IN_FLIGHT_BYTES),
        )
        flags = [
            "--event-buffer-bytes", str(cap),
            "--origin-unavailable-seconds", "120",
        ]  # fmt: skip
        async with (
            EventOrigin() as origin,
            self.attacked("attacks-1-node", ["--origin-url", origin.url, *flags]) as scene,
            HonestTraffic(scene.node, origin.messages) as honest,
        ):
            await honest.open(p.honest_clients)
            await scene.begin()
            origin.up = False
            statuses = await honest.beside(
                handshake_flood(
                    scene.node.ws_url, p.flood_handshakes, p.flood_header_bytes, p.flood_parallel
                )
            )
            stats = await scene.end()
            origin.up = True
            await honest.settle()
            counts = honest.counts(await origin.messages())
            admitted = statuses.count(101)
            both_ways = await self._attackers_both_ways(origin, honest.ids(), admitted)
            healthy = await self.probe(scene, origin.messages)
        outcome.notes.update(
            handshakesRefusedBufferFull=stats.get("handshakesRefusedBufferFull", 0),
            healthzWorstSeconds=round(honest.health_worst, 3),
        )
        self._flood_checks(outcome, statuses, both_ways)
        return self.finish(outcome, scene, counts, healthy)

    def _flood_checks(
        self, outcome: Outcome, statuses: list[int], both_ways: tuple[int, int]
    ) -> None:
        tally = Counter(statuses)
        admitted = tally[101]
        refused = tally[503] + tally[1013]
        outcome.refusals = {str(code): tally[code] for code in (503, 1013) if tally[code]}
        outcome.also = (
            f"admitted {admitted:,}; /healthz worst {outcome.notes['healthzWorstSeconds']:.2f} s"
        )
        outcome.notes.update(
            admitted=admitted,
            statuses=dict(tally),
            attackerConnectsDelivered=both_ways[0],
            attackerDisconnectsDelivered=both_ways[1],
        )
        outcome.check(
            "handshakes answered 101, 503 or 1013 only",
            sorted(tally),
            "subset of [101, 503, 1013]",
            set(tally) <= {101, 503, 1013},
        )
        outcome.check("the flood reached the bound (handshakes refused)", refused, "> 0", refused)
        outcome.check(
            "every admitted attacker's CONNECT and DISCONNECT reached the origin",
            f"{both_ways[0]} and {both_ways[1]} of {admitted}",
            f"{admitted} and {admitted}",
            both_ways == (admitted, admitted),
        )

    async def _attackers_both_ways(
        self, origin: EventOrigin, known: set[str], admitted: int
    ) -> tuple[int, int]:
        """CONNECTs and DISCONNECTs of connections not honest, once they arrived (bounded)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            connects = {e["requestContext"]["connectionId"] for e in origin.of_type("CONNECT")}
            ends = {e["requestContext"]["connectionId"] for e in origin.of_type("DISCONNECT")}
            strangers = connects - known
            done = len(strangers) >= admitted and strangers <= ends
            if done or time.monotonic() > deadline:
                return len(strangers), len(strangers & ends)
            await asyncio.sleep(0.1)

    # 2. Events too large for SQS

    async def item2(self) -> Outcome:
        p = self.plan
        cap = p.event_buffer_bytes
        sent = p.oversized_handshakes * p.oversized_header_bytes
        outcome = Outcome(
            2,
            f"{p.oversized_handshakes:,} handshakes x {p.oversized_header_bytes:,} B of headers "
            f"({_mb(sent)}) against a 1 MiB SQS queue; then 1 message of "
            f"{p.refused_message_bytes:,} B once the queue's limit fell to "
            f"{p.shrunk_queue_bytes // KiB} KiB",
            size=(
                f"{p.oversized_handshakes:,} x {_kb(p.oversized_header_bytes)} headers = "
                f"{_mb(sent)}; 1 x {_kb(p.refused_message_bytes)}"
            ),
            buffered_bound=cap,
            rss_budget=self.memory_budget(cap, IN_FLIGHT_BYTES),
        )
        port = free_port()
        moto = self.fleet.python("attacks-2-moto", ["-c", MOTO_CHILD, str(port)], self.harness_cpu)
        try:
            await wait_listening(moto, port)
            endpoint = f"http://127.0.0.1:{port}"
            sqs, sns = (aws_client(name, endpoint) for name in ("sqs", "sns"))
            resources = await asyncio.to_thread(provision, sqs, sns, ResourceNames("bench-attacks"))
            flags = [
                "--origin-transport", "sqs",
                "--events-queue-url", resources.events_queue_url,
                "--aws-region", REGION,
                "--event-buffer-bytes", str(cap),
            ]  # fmt: skip
            env = {"AWS_ENDPOINT_URL": endpoint, **FAKE_CREDENTIALS}
            async with self.attacked("attacks-2-node", flags, env=env) as scene:
                queue = QueueSink(sqs, resources.events_queue_url)
                return await self._oversized(outcome, scene, queue)
        finally:
            self.fleet.stop(moto)

    async def _oversized(self, outcome: Outcome, scene: Scene, queue: QueueSink) -> Outcome:
        p = self.plan
        async with HonestTraffic(scene.node, queue.messages) as honest:
            await honest.open(p.honest_clients)
            big = await connect(scene.node.ws_url, open_timeout=10)
            await scene.begin()
            statuses = await honest.beside(
                handshake_flood(
                    scene.node.ws_url, p.oversized_handshakes, p.oversized_header_bytes, 2
                )
            )
            closed = await honest.beside(self._refused_later(queue, big))
            stats = await scene.end()
            await honest.settle()
            counts = honest.counts(await queue.messages())
            healthy = await self.probe(scene, queue.messages)
        tally = Counter(statuses)
        dropped = stats.get("eventsDropped", 0)
        refused_too_large = stats.get("handshakesRefusedTooLarge", 0)
        outcome.refusals = {"431": tally[431]} if tally[431] else {}
        outcome.also = f"eventsDropped {dropped}, closed {closed}"
        outcome.notes.update(
            statuses=dict(tally),
            handshakesRefusedTooLarge=refused_too_large,
            eventsDropped=dropped,
            refusedMessageClosedWith=closed,
            healthzWorstSeconds=round(honest.health_worst, 3),
        )
        wanted = p.oversized_handshakes
        outcome.check(
            "oversized handshakes answered 431",
            f"{tally[431]} of {len(statuses)}",
            f"{wanted} of {wanted}",
            tally[431] == len(statuses) == wanted,
        )
        outcome.check(
            "node counted them (handshakesRefusedTooLarge)",
            refused_too_large,
            str(wanted),
            refused_too_large == wanted,
        )
        outcome.check(
            "the refused message: dropped once, its connection closed 1011",
            f"eventsDropped {dropped}, close {closed}",
            "eventsDropped 1, close 1011",
            dropped == 1 and closed == 1011,
        )
        return self.finish(outcome, scene, counts, healthy)

    async def _refused_later(self, queue: QueueSink, big: ClientConnection) -> int | None:
        """Shrink the queue's limit under the running node, send a message that no longer fits,
        and return the close code its client gets; the limit is restored afterwards."""
        await asyncio.to_thread(queue.limit, self.plan.shrunk_queue_bytes)
        try:
            await big.send("b" * self.plan.refused_message_bytes)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(big.recv(), 15)
            return big.close_code
        finally:
            await asyncio.to_thread(queue.limit, 1 * MiB)
            await big.close()

    # 3. permessage-deflate bursts

    async def item3(self) -> Outcome:
        p = self.plan
        cap = p.event_buffer_bytes
        per_client = (p.receive_queue_messages + 1) * p.max_message_bytes
        outcome = Outcome(
            3,
            "",
            buffered_bound=cap,
            rss_budget=self.memory_budget(cap, IN_FLIGHT_BYTES, p.deflate_attackers * per_client),
        )
        outcome.notes["perClientBound"] = per_client
        flags = [
            "--compression", "deflate",
            "--receive-queue-messages", str(p.receive_queue_messages),
            "--max-message-bytes", str(p.max_message_bytes),
            "--event-buffer-bytes", str(cap),
            "--origin-unavailable-seconds", "120",
        ]  # fmt: skip
        async with (
            EventOrigin() as origin,
            self.attacked("attacks-3-node", ["--origin-url", origin.url, *flags]) as scene,
            HonestTraffic(scene.node, origin.messages) as honest,
        ):
            await honest.open(
                p.honest_clients, deflate=[i % 2 == 0 for i in range(p.honest_clients)]
            )
            attackers = [
                await connect(scene.node.ws_url, compression="deflate", open_timeout=10)
                for _ in range(p.deflate_attackers)
            ]
            await scene.begin()
            origin.up = False
            bursts = await honest.beside(self._bursts(attackers))
            await scene.end()
            for attacker in attackers:
                attacker.transport.abort()
            origin.up = True
            await honest.settle()
            counts = honest.counts(await origin.messages())
            healthy = await self.probe(scene, origin.messages)
            delivered = sum(1 for e in origin.of_type("MESSAGE") if e["body"].startswith("attack"))
        outcome.notes["healthzWorstSeconds"] = round(honest.health_worst, 3)
        self._burst_report(outcome, bursts, delivered, scene.meter)
        return self.finish(outcome, scene, counts, healthy)

    async def _bursts(self, attackers: Sequence[ClientConnection]) -> list[tuple[int, int]]:
        """Each attacker's burst in one write; then time for the node to take what it will.
        Returns each burst's frames and bytes."""
        p = self.plan
        sent = []
        for number, attacker in enumerate(attackers):
            burst, count = compressed_burst(
                attacker, f"attack{number}", p.deflate_burst_bytes, p.deflate_message_bytes
            )
            attacker.transport.write(burst)
            sent.append((count, len(burst)))
            await asyncio.sleep(0)
        await asyncio.sleep(1.0 if p.quick else 2.0)
        return sent

    def _burst_report(
        self, outcome: Outcome, bursts: list[tuple[int, int]], delivered: int, meter: Meter
    ) -> None:
        p = self.plan
        frames = sum(count for count, _ in bursts)
        wire = sum(size for _, size in bursts)
        inflated = frames * p.deflate_message_bytes
        outcome.attack = (
            f"{len(bursts)} clients x one write of {_kib(wire // len(bursts))} compressed: "
            f"{frames:,} frames x {p.deflate_message_bytes // KiB} KiB inflated "
            f"({_mb(inflated)}); origin down"
        )
        outcome.size = (
            f"{len(bursts)} x {_kib(wire // len(bursts))} sent: {frames:,} frames x "
            f"{p.deflate_message_bytes // KiB} KiB = {_mb(inflated)}"
        )
        outcome.also = (
            f"attack messages delivered once the origin was back: {delivered:,} / {frames:,}"
        )
        outcome.notes.update(
            frames=frames, wireBytes=wire, inflatedBytes=inflated, attackMessagesDelivered=delivered
        )
        outcome.check(
            "the bursts filled the event buffer (so the node had to stop reading)",
            _mib(meter.buffered_peak),
            f">= {_mib(0.9 * p.event_buffer_bytes)}",
            meter.buffered_peak >= 0.9 * p.event_buffer_bytes,
        )

    # 4. Forged connection IDs

    async def item4(self) -> Outcome:
        p = self.plan
        forged = p.forged_posts * p.forged_per_post
        outcome = Outcome(
            4,
            f"{forged:,} forged IDs (right region, valid CRC), each naming 127.0.0.1 at another "
            f"port, {p.forged_at_catcher} per post naming a UDP socket the bench listens on, in "
            f"{p.forged_posts} POST /commands of {p.forged_per_post:,}; no cluster members",
            size=f"{forged:,} forged IDs in {p.forged_posts} POST(s)",
            rss_budget=self.memory_budget(),
        )
        peer_port = free_udp_port()
        flags = ["--peer-listen", f"127.0.0.1:{peer_port}", "--peer-metrics-interval", "0"]
        secret = {"PEER_SECRET": secrets.token_hex(16)}
        async with (
            DatagramCatcher() as catcher,
            EventOrigin() as origin,
            self.attacked(
                "attacks-4-node",
                ["--origin-url", origin.url, *flags],
                local_only=False,
                env=secret,
            ) as scene,
            HonestTraffic(scene.node, origin.messages) as honest,
        ):
            await honest.open(p.honest_clients)
            await scene.begin()
            ids = await honest.beside(self._forge(scene.node, origin, catcher.port))
            stats = await scene.end()
            await honest.settle()
            counts = honest.counts(await origin.messages())
            gone = {e["requestContext"]["connectionId"] for e in origin.of_type("GONE")}
            healthy = await self.probe(scene, origin.messages)
        outcome.notes["healthzWorstSeconds"] = round(honest.health_worst, 3)
        self._forged_checks(outcome, ids, gone, catcher.received, stats.get("peers", {}), scene)
        return self.finish(outcome, scene, counts, healthy)

    def _forged_checks(
        self,
        outcome: Outcome,
        ids: list[str],
        gone: set[str],
        caught: int,
        peers: dict[str, Any],
        scene: Scene,
    ) -> None:
        sent = peers.get("datagrams_sent")
        answered = len(gone & set(ids))
        warned = scene.warnings
        outcome.refusals = {"GONE": answered}
        outcome.also = f"datagrams caught {caught}, sent {sent}; warnings {warned}"
        outcome.notes.update(
            forgedIds=len(ids),
            datagramsCaught=caught,
            datagramsSent=sent,
            refusedNonMembers=peers.get("refusedNonMembers"),
            warningsLogged=warned,
        )
        outcome.check("datagrams at the bench's UDP socket", caught, "0", caught == 0)
        outcome.check("peers.datagrams_sent in GET /stats", sent, "0", sent == 0)
        outcome.check(
            "every forged ID answered GONE at once",
            f"{answered:,} of {len(ids):,}",
            f"{len(ids):,} of {len(ids):,}",
            answered == len(ids),
        )
        most = 2 * self.plan.forged_posts
        outcome.check(
            "warnings logged during the attack", warned, f"<= {most} (2 per post)", warned <= most
        )

    async def _forge(self, node: Node, origin: EventOrigin, catcher_port: int) -> list[str]:
        """Post the forged IDs, wait for their GONE events, and a second for any retransmission.
        The ports they name start at FORGED_FIRST_PORT, below Linux's ephemeral range, where no
        port of this run (the node's, the catcher's) can be."""
        p = self.plan
        ids: list[str] = []
        poster = node.command_client()
        try:
            for number in range(p.forged_posts):
                first_port = FORGED_FIRST_PORT + number * p.forged_per_post
                batch = forged_ids(
                    "local", catcher_port, p.forged_per_post, p.forged_at_catcher, first_port
                )
                ids += batch
                body = {"commands": [{"action": "send", "connectionIds": batch, "data": "x"}]}
                await poster.post(json.dumps(body).encode())
        finally:
            await poster.close()
        await until(lambda: len(origin.of_type("GONE")) >= len(ids), SETTLE_TIMEOUT)
        await asyncio.sleep(1.0)
        return ids

    # 5. The command port without a token

    async def item5(self) -> Outcome:
        p = self.plan
        streams = p.header_streams * (p.command_max_header_bytes + ONE_READ)
        outcome = Outcome(5, "", rss_budget=self.memory_budget(streams))
        flags = [
            "--command-max-connections", str(p.command_max_connections),
            "--command-header-timeout", f"{p.command_header_timeout:g}",
            "--command-max-header-bytes", str(p.command_max_header_bytes),
        ]  # fmt: skip
        async with (
            EventOrigin() as origin,
            self.attacked("attacks-5-node", ["--origin-url", origin.url, *flags]) as scene,
            HonestTraffic(scene.node, origin.messages) as honest,
        ):
            await honest.open(p.honest_clients)
            await scene.begin()
            results = await honest.beside(self._command_port_attacks(scene.node.command_port))
            await scene.end()
            await honest.settle()
            counts = honest.counts(await origin.messages())
            healthy = await self.probe(scene, origin.messages)
        outcome.notes.update(
            healthzWorstSeconds=round(honest.health_worst, 3),
            honestCommandFailures=honest.command_failures,
        )
        self._command_port_report(outcome, results)
        return self.finish(outcome, scene, counts, healthy)

    async def _command_port_attacks(self, port: int) -> dict[str, list[tuple[int, int]]]:
        """All four attacks at once; each connection's answer status and bytes sent."""
        p = self.plan
        stream = pieces_up_to(p.header_stream_bytes, b"a" * (64 * KiB))
        flood = REQUEST_HEAD + b"X:\r\n" * p.empty_header_lines + b"\r\n"
        body_head = REQUEST_HEAD + f"Content-Length: {p.body_bytes}\r\n\r\n".encode()
        body = pieces_up_to(p.body_bytes, b"{" * (64 * KiB))
        kinds = {
            "header streams": [
                raw_exchange(port, REQUEST_HEAD + b"X-Grow: ", stream)
                for _ in range(p.header_streams)
            ],
            "empty header lines": [
                raw_exchange(port, flood, lambda _: None) for _ in range(p.empty_header_floods)
            ],
            "bodies without a token": [
                raw_exchange(port, body_head, body) for _ in range(p.body_floods)
            ],
            "trickles": [self._trickle(port, number) for number in range(p.trickles)],
        }
        gathered = {kind: asyncio.gather(*attacks) for kind, attacks in kinds.items()}
        return {kind: list(await results) for kind, results in gathered.items()}

    async def _trickle(self, port: int, number: int) -> tuple[int, int]:
        """A head one byte a second. They start after the other attacks have connected (the cap
        would turn those away otherwise), in waves of 100 so the listen backlog keeps up."""
        await asyncio.sleep(0.5 + 0.05 * (number // 100))
        return await raw_exchange(
            port,
            REQUEST_HEAD + b"X-",
            pieces_up_to(1 << 20, b"a"),
            pause=1.0,
            time_limit=self.plan.trickle_seconds,
        )

    def _command_port_report(
        self, outcome: Outcome, results: dict[str, list[tuple[int, int]]]
    ) -> None:
        p = self.plan
        tallies = {kind: Counter(st for st, _ in answers) for kind, answers in results.items()}
        refusals: Counter[str] = Counter()
        for tally in tallies.values():
            refusals.update({status_name(st): n for st, n in tally.items()})
        sent = sum(size for answers in results.values() for _, size in answers)
        outcome.refusals = dict(sorted(refusals.items()))
        outcome.attack = (
            f"{p.header_streams} connections streaming one header toward "
            f"{_mb(p.header_stream_bytes)}, {p.empty_header_floods} x "
            f"{p.empty_header_lines:,} empty header lines, {p.body_floods} x "
            f"{_mb(p.body_bytes)} bodies without a token, {p.trickles:,} connections trickling a "
            f"head a byte a second, all at once: {sum(map(len, results.values())):,} "
            f"connections, {_mb(sent)} sent"
        )
        outcome.size = f"{sum(map(len, results.values())):,} connections, {_mb(sent)} sent"
        outcome.also = f"/healthz worst {outcome.notes['healthzWorstSeconds']:.2f} s"
        if tallies["trickles"][CUT]:
            outcome.also += f"; {tallies['trickles'][CUT]} turned away by a reset, not a 503"
        outcome.notes.update(
            statuses={kind: dict(tally) for kind, tally in tallies.items()}, bytesSent=sent
        )
        for kind, wanted in (
            ("header streams", (431,)),
            ("empty header lines", (431,)),
            ("bodies without a token", (401,)),
            ("trickles", (408, 503, CUT)),  # CUT: turned away beyond the cap, no 503 seen
        ):
            outcome.check(
                f"{kind}: answered {' or '.join(map(status_name, wanted))}",
                {status_name(st): n for st, n in sorted(tallies[kind].items())},
                f"all {len(results[kind])}",
                set(tallies[kind]) <= set(wanted),
            )
        for kind, total in (
            ("bodies without a token", p.body_bytes),
            ("header streams", p.header_stream_bytes),
        ):
            most = max((sent for _, sent in results[kind]), default=0)
            outcome.check(
                f"{kind}: refused before all was sent",
                f"most sent {_mb(most)}",
                f"< {_mb(total)}",
                most < total,
            )

    # 6. GraphQL subscribe/complete loop

    async def item6(self) -> Outcome:
        p = self.plan
        operations = p.graphql_attackers * p.graphql_operations
        outcome = Outcome(
            6,
            f"{p.graphql_attackers} connection(s) x {p.graphql_operations:,} operations, each "
            f"subscribed, one round trip, completed ({operations:,}), against an origin that "
            f"holds each start {p.graphql_hold:g} s",
            size=f"{operations:,} operations looped",
            rss_budget=self.memory_budget(),
        )
        flags = [
            "--origin-transport", "none",
            "--graphql-origin-concurrency", str(p.graphql_concurrency),
            "--graphql-max-operations", str(p.graphql_max_operations),
            "--graphql-ka-interval", "0",
        ]  # fmt: skip
        async with (
            SlowGraphqlOrigin(p.graphql_hold) as origin,
            self.attacked("attacks-6-node", [*flags, "--graphql-origin-url", origin.url]) as scene,
            GraphqlHonest(scene.node) as honest,
        ):
            attackers = [
                await graphql_client(scene.node.ws_url) for _ in range(p.graphql_attackers)
            ]
            attacker_ids = set(origin.inits)  # before any honest client's
            await honest.open(p.honest_clients)
            await scene.begin()
            looped = await beside(honest.tick, self._loops_then_drain(attackers, origin))
            stats = await scene.end()
            healthy = await self._graphql_healthy(scene.node, attackers)
        outcome.notes["honestWorstSeconds"] = round(honest.worst, 3)
        self._graphql_checks(outcome, origin, attacker_ids, looped, stats)
        return self.finish(outcome, scene, (honest.delivered, honest.expected), healthy)

    async def _loops_then_drain(
        self, attackers: Sequence[ClientConnection], origin: SlowGraphqlOrigin
    ) -> list[dict[str, int]]:
        """The loops, then until the origin has answered what they left it (the honest clients
        keep working meanwhile: this is when places are scarcest)."""
        p = self.plan
        looped = await asyncio.gather(
            *(subscribe_complete_loop(a, p.graphql_operations, 60.0) for a in attackers)
        )
        await until(lambda: origin.running == 0, p.graphql_hold + 10)
        return list(looped)

    def _graphql_checks(
        self,
        outcome: Outcome,
        origin: SlowGraphqlOrigin,
        attacker_ids: set[str],
        looped: list[dict[str, int]],
        stats: dict[str, Any],
    ) -> None:
        concurrency = self.plan.graphql_concurrency
        share = max(1, concurrency // 2)
        operations = sum(result["operations"] for result in looped)
        starts = sum(origin.starts_by_connection[cid] for cid in attacker_ids)
        most_for = max((origin.most_running_for[cid] for cid in attacker_ids), default=0)
        withdrawn = stats.get("graphqlOriginCallsWithdrawn", 0)
        errors = sum(result["refused"] for result in looped)
        outcome.refusals = {"origin call withdrawn": withdrawn}
        if errors:
            outcome.refusals["operation refused"] = errors
        outcome.also = (
            f"origin peak {origin.most_running} / {concurrency}, one attacker {most_for} / "
            f"{share}; honest worst {outcome.notes['honestWorstSeconds']:.2f} s"
        )
        outcome.notes.update(
            operationsLooped=operations,
            attackerStartsAtOrigin=starts,
            originMostRunning=origin.most_running,
            originMostRunningForOneAttacker=most_for,
            graphqlOriginCallsWithdrawn=withdrawn,
            graphqlOperationsRefused=stats.get("graphqlOperationsRefused", 0),
        )
        outcome.check(
            "origin handlers running at once",
            origin.most_running,
            f"<= {concurrency} (--graphql-origin-concurrency)",
            origin.most_running <= concurrency,
        )
        outcome.check(
            "origin handlers at once for one attacker",
            most_for,
            f"<= {share} (half the places)",
            most_for <= share,
        )
        planned = self.plan.graphql_attackers * self.plan.graphql_operations
        outcome.check(
            "the loop ran (operations looped)", operations, str(planned), operations == planned
        )

    async def _graphql_healthy(self, node: Node, attackers: Sequence[ClientConnection]) -> bool:
        """The attackers' own connections and a new client are all answered."""
        try:
            for number, attacker in enumerate(attackers):
                if not await graphql_query(attacker, f"after{number}"):
                    return False
            client = await graphql_client(node.ws_url)
            try:
                return await graphql_query(client, "newcomer") and node.child.alive()
            finally:
                await client.close()
        except (BenchFailure, WebSocketException, OSError, TimeoutError):
            return False


# Small tools


def compressed_burst(
    client: ClientConnection, label: str, wire_bytes: int, message_bytes: int
) -> tuple[bytes, int]:
    """Frames of messages that compress to a few hundred bytes each, with the client's own
    permessage-deflate context, until they take `wire_bytes`; the frames and their count."""
    parts: list[bytes] = []
    size = count = 0
    while size < wire_bytes and count < 1000:
        client.protocol.send_text(f"{label}:{count:04d}:".ljust(message_bytes, "x").encode())
        data = b"".join(client.protocol.data_to_send())
        parts.append(data)
        size += len(data)
        count += 1
    return b"".join(parts), count


def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client of moto's server, with its fake credentials."""
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 2}),
    )


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` every 50 ms for at most `timeout` seconds; whether it came true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MiB:,.1f} MiB"


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def _kb(value: float) -> str:
    return f"{value / 1000:,.0f} KB"


def _kib(value: float) -> str:
    return f"{value / KiB:,.0f} KiB"


_say = progress("attacks")


# Report


HEADER = (
    "#",
    "attack",
    "size",
    "node RSS before -> peak (growth of budget)",
    "buffered peak / bound",
    "refused",
    "honest delivered / expected",
    "also",
    "result",
)


def row(outcome: Outcome) -> tuple[str, ...]:
    growth = outcome.rss_peak - outcome.rss_before
    rss = (
        f"{_mib(outcome.rss_before)} -> {_mib(outcome.rss_peak)} "
        f"(+{_mib(growth)} of {_mib(outcome.rss_budget)})"
    )
    buffered = (
        "-"
        if outcome.buffered_bound is None
        else f"{_mib(outcome.buffered_peak)} / {_mib(outcome.buffered_bound)}"
    )
    refused = ", ".join(f"{count:,} x {kind}" for kind, count in outcome.refusals.items()) or "0"
    share = 100 * outcome.delivered // outcome.expected if outcome.expected else 0  # floor
    return (
        str(outcome.item),
        ITEMS[outcome.item],
        outcome.size,
        rss,
        buffered,
        refused,
        f"{outcome.delivered:,} / {outcome.expected:,} ({share}%)",
        outcome.also,
        "PASS" if outcome.ok else "FAIL",
    )


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [row(outcome) for outcome in outcomes]
    return report.markdown_table(HEADER, rows, align=["---"] * len(HEADER))


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    return [
        f"item {outcome.item}: {check.name}: measured {check.measured}, wanted {check.wanted}"
        for outcome in outcomes
        for check in outcome.checks
        if not check.ok
    ]


def what_happened(outcome: Outcome) -> str:
    """A sentence on what the node did, from the figures of the run."""
    n = outcome.notes
    buffered = (
        f"held at most {_mib(outcome.buffered_peak)} of events against its "
        f"{_mib(outcome.buffered_bound)} bound"
        if outcome.buffered_bound is not None
        else ""
    )
    said = {
        1: lambda: (
            f"The node admitted {n['admitted']:,} handshakes, refused "
            f"{outcome.refusals.get('503', 0):,} with HTTP 503 and "
            f"{outcome.refusals.get('1013', 0):,} with 1013 just after the 101, {buffered}, "
            f"and delivered every admitted attacker's CONNECT and DISCONNECT "
            f"({n['attackerDisconnectsDelivered']:,}) once the origin was back."
        ),
        2: lambda: (
            f"The node answered {outcome.refusals.get('431', 0):,} handshakes HTTP 431 before "
            f"buffering anything, {buffered}; the message the queue refused was dropped "
            f"(eventsDropped {n['eventsDropped']}) and its connection closed "
            f"{n['refusedMessageClosedWith']}, while the honest clients' events kept reaching "
            "the queue."
        ),
        3: lambda: (
            f"The node {buffered}, held the rest of each burst compressed, with at most "
            f"{_mib(n['perClientBound'])} inflated per client allowed, and delivered "
            f"{n['attackMessagesDelivered']:,} of the {n['frames']:,} attack messages once the "
            "origin was back; its RSS grew by "
            f"{_mib(outcome.rss_peak - outcome.rss_before)} for all of it."
        ),
        4: lambda: (
            f"The node answered all {outcome.refusals['GONE']:,} forged IDs with GONE events at "
            f"once, sent {n['datagramsSent']} datagrams (the bench's socket caught "
            f"{n['datagramsCaught']}) and logged {n['warningsLogged']} warnings."
        ),
        5: lambda: (
            "The command port answered every attacking connection "
            + ", ".join(f"{count:,} x {status}" for status, count in outcome.refusals.items())
            + f"; /healthz took at most {n['healthzWorstSeconds']:.2f} s meanwhile and the "
            "honest origin's commands kept arriving."
        ),
        6: lambda: (
            f"The origin saw at most {n['originMostRunning']} handlers at once, "
            f"{n['originMostRunningForOneAttacker']} for one attacker, and "
            f"{n['attackerStartsAtOrigin']:,} start requests from the attackers for "
            f"{n['operationsLooped']:,} operations; the node withdrew "
            f"{n['graphqlOriginCallsWithdrawn']:,} calls not yet sent and refused "
            f"{n['graphqlOperationsRefused']} operations over the limit. The honest clients' "
            f"slowest exchange took {n['honestWorstSeconds']:.2f} s: with each attacker "
            "holding its half of the places, they waited for the origin to free one."
        ),
    }
    try:
        return said[outcome.item]()
    except (KeyError, TypeError, ValueError):
        return "The run did not get far enough to say."


def markdown(outcomes: Sequence[Outcome], meta: dict[str, Any], plan: Plan) -> str:
    pinning = (
        f"the node on CPU {meta['server_cpu']}; this process (attackers, honest clients, the "
        f"event and GraphQL origins) and moto's server on CPU {meta['load_cpu']} (`taskset`)"
        if meta["pinned"]
        else "not pinned"
    )
    sections = [
        "# Fault benchmark: the attacks of issue 12",
        report.fill(
            f"Generated by `{meta['command']}` on {meta['date']} in {meta['seconds']:.0f} s; "
            f"{meta['nproc']} CPUs ({meta['cpu_model']}), Python {meta['python']}, Linux "
            f"{meta['kernel']}, websockets {meta['packages'].get('websockets')}; pinning: "
            f"{pinning}. Not part of `make test`; every figure below is from this one run."
        ),
        report.fill(
            "Each attack runs against a fresh `python -m runtime serve` process with JSON logs "
            "at WARNING, its bounds set by the flags listed below, while "
            f"{plan.honest_clients} well-behaved clients work beside the attacker every "
            f"{TICK:g} s: each sends a numbered message that must reach the origin in order, "
            "one `send` command must reach every one of them in order, and `GET /healthz` must "
            "answer 200 (item 6: each asks a GraphQL query, and one new client connects, is "
            f"acknowledged and asks one). An exchange not answered within {ANSWER_TIMEOUT:g} s, "
            "or a message overtaken by a later one, counts as lost. The node's RSS is sampled "
            f"(psutil) every {SAMPLE_INTERVAL * 1000:.0f} ms from just before the attack to its "
            "end; its "
            "budget is what the node may hold by its documented bounds (the event buffer, "
            "origin requests in flight, the per-client receive bound, the command port's "
            f"header bound) plus {_mib(ALLOWANCE)} for the interpreter, sockets and "
            "per-connection state. Buffered bytes are `bufferedEventBytes` + "
            "`reservedEventBytes` from `GET /stats`, polled as often. Any honest loss, bound "
            "exceeded or failed check fails the run (exit status 1)."
        ),
        table(outcomes),
        "## What was sent, and what the node did",
        "\n".join(
            f"{o.item}. **{ITEMS[o.item]}.** Sent: {o.attack}. {what_happened(o)}" for o in outcomes
        ),
        "## Every check",
        _checks_table(outcomes),
        "## The nodes' bounds",
        "\n".join(f"- {o.item}: `{' '.join(o.notes.get('flags', []))}`" for o in outcomes),
        report.fill(
            "Every node also has `--keepalive-interval 0 --log-level WARNING --log-format json` "
            "and, but for item 4 (`PEER_SECRET` in its environment, no `--peers`), "
            "`--local-only true`; any other setting is at its default "
            "(item 5's command-port flags repeat their defaults, to print them). Raw figures: "
            "bench/results/attacks.json; the children's logs: bench/results/logs/attacks-*.log."
        ),
    ]
    return "\n\n".join(sections) + "\n"


def _checks_table(outcomes: Sequence[Outcome]) -> str:
    header = ("#", "check", "measured", "wanted", "result")
    rows = [
        (
            f"{outcome.item}",
            f"{check.name}",
            f"{check.measured}",
            f"{check.wanted}",
            "PASS" if check.ok else "FAIL",
        )
        for outcome in outcomes
        for check in outcome.checks
    ]
    return report.markdown_table(header, rows, align=["---"] * len(header))


# Entry point


def parse_items(text: str | None) -> list[int]:
    if not text:
        return sorted(ITEMS)
    try:
        items = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        items = []
    if not items or not set(items) <= set(ITEMS):
        raise ValueError(
            f"--only takes attack numbers from 1 to {len(ITEMS)}, comma-separated (got {text!r})"
        )
    return items


async def main_async(args: argparse.Namespace, items: list[int]) -> int:
    plan = QUICK if args.quick else Plan()
    # The node on one core, this process and its helpers on another, when there are two.
    pin, roles = pick_cpus(args.no_pin, ("node", "harness"))
    cpus = (roles["node"], roles["harness"])
    if pin:
        os.sched_setaffinity(0, {cpus[1]})  # type: ignore[arg-type]
    else:
        _say("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin)
    pin = fleet.pin
    started = time.monotonic()
    try:
        outcomes = await AttackBench(plan, fleet, cpus if pin else (None, None)).run(items)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.close()
    meta = report.machine(pin, cpus[0] if pin else None, cpus[1] if pin else None)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["command"] = " ".join([COMMAND, *args.argv])
    print(table(outcomes))
    for line in failures(outcomes):
        print(f"FAIL {line}")
    name = "attacks-quick.json" if plan.quick else "attacks.json"
    out = args.json or REPO / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "plan": asdict(plan), "outcomes": [asdict(o) for o in outcomes]}
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"({meta['seconds']:.0f} s; raw results in {out})")
    output = args.output or (
        REPO / "docs" / "attacks.md" if not plan.quick and items == sorted(ITEMS) else None
    )
    if output is not None:
        output.write_text(markdown(outcomes, meta, plan))
        print(f"report written to {output}")
    return 0 if all(outcome.ok for outcome in outcomes) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attacks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--only", metavar="N,M", help="attacks to run, e.g. 1,4 (default: all)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--json", type=Path, help="raw results (default bench/results/...)")
    parser.add_argument(
        "--output",
        type=Path,
        help="markdown report (default: docs/attacks.md for a full run of all six; else none)",
    )
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        items = parse_items(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    plan = QUICK if args.quick else Plan()
    limit = raise_nofile_limit()
    if 5 in items and limit < plan.trickles + 1000:
        parser.error(f"open-files limit {limit} is too low for {plan.trickles} connections")
    # SIGTERM (timeout, make) unwinds through `finally`, so the children are always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return int(run(main_async(args, items)))


if __name__ == "__main__":
    sys.exit(main())
