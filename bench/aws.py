"""The AWS-path benchmark: `python -m bench.aws` (`--quick`: a smoke run, no report).

On AWS every event goes through SQS and every command comes back through SNS and SQS. The node
packs many events into one SQS message (`{"events": [...]}`, after a short linger) to spend less
CPU and fewer billed requests; this measures that path beside the HTTP one, in one run. The node
runs on CPU 0; everything else on CPU 1: the load generator (this process, picows clients), the
AWS stand-in (`python -m bench.aws_standin`: SQS, SNS and STS answered from memory, billed requests
counted), the HTTP origin and the simulated Lambda (both `python -m bench.aws --child ...`).

1. Events/s of one node: clients send 64-byte messages one way, as fast as the node takes them
   (a bounded number sent and not yet taken), to a FIFO events queue (default packing, then
   `--events-per-message 1`), to a standard queue, and over HTTP to an origin that answers at once
   (the baseline). Target: SQS (FIFO, packed) at least 0.50 of HTTP.
2. Node CPU per command delivery: POST /commands (10 sends a request) against the SQS commands
   queue fed with bodies as the SDK packs a Lambda's replies (100 sends a message), and with one
   send a message. Target: packed SQS at most 2x POST.
3. Billed SQS and SNS requests per 1,000 client messages answered by one reply each, end to end:
   clients -> node -> events queue -> a simulated Lambda (the SDK's `gateway_handler`, replying
   through a `GatewayClient`) -> commands topic -> commands queue -> node -> clients; FIFO and
   standard events queue, packed and not. Target: at most 150 with packing.
4. Round-trip latency at light load through the same path, with the default linger and with none.
5. The same generator against a picows echo server goes far faster: it is not the limit.

Every count is checked (each message sent reached the receiver and got its reply; each delivery
arrived, each client its share); one wrong count fails the run (exit status 1, no report). A full
run writes the "The AWS path" section of docs/performance.md and bench/results/aws.json
(bench/cost.py reads its `billed_per_1000`); a quick run writes bench/results/aws-quick.json.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import logging
import math
import os
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from picows import WSListener, WSMsgType, WSTransport

from bench import client, prices, report
from bench.aws_standin import attributes_size, billed_requests
from bench.common import (
    BenchFailure,
    finish,
    raise_nofile_limit,
    run,
    run_harness,
    serve_until_signal,
)
from bench.procs import REPO, Child, Fleet, free_port, pick_cpus, wait_listening
from bench.report import check_rows, fill, markdown_table
from bench.run import CpuWindow, Target, _node_flags, payload_text
from bench.stats import percentile
from runtime.config import Settings
from runtime.names import partition
from runtime.origin import packing
from runtime.origin.client import BOTO_CONFIG, GatewayClient
from runtime.origin.events import Event, event_type, gateway_handler, message_data, parse_events
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_client import HttpClient

SECTION = "## The AWS path"
COMMAND = ".venv/bin/python -m bench.aws"
SQS_MIN_RATIO = 0.50  # events/s to SQS (FIFO, packed) over events/s over HTTP
DELIVERY_MAX_RATIO = 2.0  # node CPU per delivery from SQS (packed) over from POST /commands
BILLED_MAX_PER_1000 = 150  # billed SQS+SNS requests per 1,000 client messages, packed
REGION = "us-east-1"
ACCOUNT = "000000000000"  # the stand-in's
INFRA_ORIGIN = REPO / "infra" / "origin.py"  # the Lambda event source mapping's settings
LONG_POLL_SECONDS = 20  # what Lambda's pollers and the node's command workers wait, at most
TICK = 0.01  # seconds between the one-way sender's looks at what the receiver took
PACE_TICK = 0.002  # the paced sender's shortest sleep: it sends whatever is due on waking
DRAIN_TIMEOUT = 30.0  # seconds everything sent may take to reach its receiver after a phase
SETTLE_TIMEOUT = 20.0
TEXT = WSMsgType.TEXT
# Dummy credentials for boto3 in the node and the simulated Lambda; the endpoint is the stand-in.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}

NODE = Settings()  # the node's defaults, which every node here keeps unless its row says
log = logging.getLogger("bench.aws")


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    rounds: int = 3  # parts 1 and 2: rounds, the order of the modes rotating
    connections: int = 100
    payload_bytes: int = 64
    warmup: float = 1.5  # part 1: seconds sent before each measured window
    window: float = 3.0  # part 1: seconds measured
    credit: int = 5000  # part 1: messages sent and not yet taken by the receiver, at most
    post_deliveries: int = 40_000  # part 2, per round
    packed_deliveries: int = 40_000
    single_deliveries: int = 8_000
    sends_per_post: int = 10
    replies_per_message: int = 100  # a Lambda invocation's replies, packed by the SDK
    billed_messages: int = 10_000  # part 3: client messages measured per pipeline
    billed_rate: float = 1000.0  # messages/s, all clients together
    latency_messages: int = 200  # part 4
    latency_rate: float = 10.0
    lambda_pollers: int = 5  # concurrent pollers of the simulated event source mapping


QUICK = Plan(
    quick=True,
    rounds=1,
    connections=10,
    warmup=0.3,
    window=0.7,
    credit=1000,
    post_deliveries=2000,
    packed_deliveries=2000,
    single_deliveries=500,
    billed_messages=300,
    latency_messages=20,
    latency_rate=20.0,
)


# The Lambda event source mapping the stack gives the example origin (infra/origin.py)


@dataclass(frozen=True)
class EventSourceMapping:
    fifo_batch_size: int
    standard_batch_size: int
    standard_window: float  # seconds; FIFO queues allow none

    def batch(self, fifo: bool) -> tuple[int, float]:
        """Batch size and batching window for a FIFO or a standard events queue."""
        if fifo:
            return self.fifo_batch_size, 0.0
        return self.standard_batch_size, self.standard_window


def event_source_mapping(path: Path = INFRA_ORIGIN) -> EventSourceMapping:
    """The batch sizes and window infra/origin.py sets, read from its source: importing it would
    start the CDK's JavaScript runtime."""
    found: dict[str, float] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name):
            value = _constant_seconds(node.value)
            if value is not None:
                found[target.id] = value
    names = ("FIFO_BATCH_SIZE", "STANDARD_BATCH_SIZE", "STANDARD_BATCHING_WINDOW")
    missing = [name for name in names if name not in found]
    if missing:
        raise BenchFailure(f"{path} no longer sets {', '.join(missing)} as constants")
    return EventSourceMapping(
        int(found["FIFO_BATCH_SIZE"]),
        int(found["STANDARD_BATCH_SIZE"]),
        found["STANDARD_BATCHING_WINDOW"],
    )


def _constant_seconds(value: ast.expr) -> float | None:
    """A number, or `cdk.Duration.seconds(n)` / `.millis(n)` / `.minutes(n)` in seconds."""
    if isinstance(value, ast.Constant) and isinstance(value.value, int | float):
        return float(value.value)
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and len(value.args) == 1
        and isinstance(value.args[0], ast.Constant)
        and isinstance(value.args[0].value, int | float)
    ):
        unit = {"seconds": 1.0, "millis": 0.001, "minutes": 60.0}.get(value.func.attr)
        if unit is not None:
            return float(value.args[0].value) * unit
    return None


# The load generator's clients


class Receiver(WSListener):
    """One client connection: counts what it receives; in a timed run, each reply's round trip."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.received = 0
        self.sent = 0

    def on_ws_frame(self, transport: WSTransport, frame) -> None:  # type: ignore[no-untyped-def]
        kind = frame.msg_type
        if kind is TEXT:
            self.received += 1
            clients = self.clients
            clients.received += 1
            if clients.sent_at:
                sent_at = clients.sent_at.pop(frame.get_payload_as_bytes(), None)
                if sent_at is None:
                    clients.stray += 1
                else:
                    clients.round_trips.append(time.perf_counter_ns() - sent_at)
        elif kind is WSMsgType.CLOSE:
            client.close_back(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.clients.closing:
            self.clients.lost += 1


class Clients:
    """The generator's connections to one server, and what came back on them."""

    def __init__(self) -> None:
        self.pairs: list[tuple[WSTransport, WSListener]] = []
        self.transports: list[WSTransport] = []
        self.receivers: list[Receiver] = []
        self.received = 0
        self.lost = 0  # connections the server closed
        self.stray = 0  # timed runs: replies to nothing this run sent
        self.closing = False
        self.sent_at: dict[bytes, int] = {}  # timed runs: payload -> perf_counter_ns() at send
        self.round_trips: list[int] = []  # nanoseconds

    async def open(self, url: str, count: int) -> None:
        self.pairs, failures = await client.open_many(url, count, lambda _: Receiver(self))
        self.transports = [transport for transport, _ in self.pairs]
        self.receivers = [listener for _, listener in self.pairs]  # type: ignore[misc]
        if failures:
            self.close()
            raise BenchFailure(f"{failures} of {count} connections to {url} failed")

    def send(self, index: int, payload: bytes) -> None:
        """Message `index` goes on connection `index` modulo their number (round robin)."""
        position = index % len(self.transports)
        self.receivers[position].sent += 1
        self.transports[position].send(TEXT, payload)

    @property
    def sent(self) -> int:
        return sum(receiver.sent for receiver in self.receivers)

    def received_each(self) -> list[int]:
        return [receiver.received for receiver in self.receivers]

    def close(self) -> None:
        self.closing = True
        client.close_all(self.pairs)


async def until(
    check: Callable[[], bool | Awaitable[bool]], seconds: float, what: str, every: float = 0.01
) -> None:
    """Wait until `check()` holds; after `seconds`, fail the run saying `what` did not happen."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise BenchFailure(f"{what} within {seconds:g} s")
        await asyncio.sleep(every)


async def paced(
    clients: Clients,
    count: int,
    rate: float,
    payload: Callable[[int], bytes],
    *,
    timed: bool = False,
) -> float:
    """Send `count` messages at `rate` a second, round robin over the clients, scheduled against
    the start (no drift, at most PACE_TICK late); `timed` records each send for its round trip.
    Returns the seconds."""
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while sent < count:
        due = min(count, int((loop.time() - started) * rate) + 1)
        for index in range(sent, due):
            data = payload(index)
            if timed:
                clients.sent_at[data] = time.perf_counter_ns()
            clients.send(index, data)
        sent = due
        if sent < count:  # uvloop fires shorter timers at once: sleeping less would spin
            await asyncio.sleep(max(PACE_TICK, started + sent / rate - loop.time()))
    return loop.time() - started


@dataclass
class OneWay:
    """One run of one-way sending, as the receiver acknowledged it."""

    sent: int = 0
    acknowledged: int = 0  # taken by the receiver, warm-up and drain included
    messages: int = 0  # taken within the measured window
    seconds: float = 0.0
    rate: float = 0.0


async def one_way(
    clients: Clients,
    payload: bytes,
    plan: Plan,
    acknowledged: Callable[[], Awaitable[int]],
    window: CpuWindow,
) -> OneWay:
    """Send one way as fast as the receiver takes the messages: never more than `plan.credit`
    sent and not yet acknowledged, so the backlog (and the drain after the window) stays small
    however slow the receiver. The rate is what the receiver took within the window."""
    result = OneWay()
    base = await acknowledged()
    started = time.perf_counter()
    opened: tuple[float, int] | None = None
    while True:
        taken = await acknowledged() - base
        now = time.perf_counter()
        if opened is None and now - started >= plan.warmup:
            window.start()
            opened = (now, taken)
        elif opened is not None and now - opened[0] >= plan.window:
            window.stop()
            result.seconds, result.messages = now - opened[0], taken - opened[1]
            break
        for _ in range(taken + plan.credit - result.sent):
            clients.send(result.sent, payload)
            result.sent += 1
        await asyncio.sleep(TICK)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while taken < result.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        taken = await acknowledged() - base
    result.acknowledged = taken
    result.rate = result.messages / result.seconds if result.seconds else 0.0
    return result


# The processes under the generator: the stand-in, the nodes, the HTTP origin, the Lambda


@dataclass
class Drained:
    """What the harness read out of a queue after a phase: messages and their events by type."""

    messages: int = 0
    events: Counter[str] = field(default_factory=Counter)
    connection_ids: list[str] = field(default_factory=list)  # of CONNECT events, in order


class StandIn:
    """The AWS stand-in process and its control endpoints (interfaces: bench/aws_standin.py),
    and the few SQS calls the harness makes itself, over the JSON protocol."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.url = f"http://127.0.0.1:{port}"
        # Feeds answer when done: one connection each, side by side (one feed per client).
        self.http = HttpClient(self.url + "/", max_connections=128, timeout=120.0)

    async def control(self, path: str, document: Any = None) -> Any:
        body = b"" if document is None else json.dumps(document).encode()
        answer = await self.http.request(
            "POST" if document is not None else "GET", body, target=f"/_standin/{path}"
        )
        if answer.status != 200:
            raise BenchFailure(f"stand-in /_standin/{path}: {answer.status} {answer.body[:200]!r}")
        return answer.json()

    async def create_queue(self, name: str) -> str:
        return str((await self.control("queues", {"name": name}))["url"])

    async def create_topic(self, name: str) -> str:
        return str((await self.control("topics", {"name": name}))["arn"])

    async def subscribe(self, topic_arn: str, queue_url: str) -> None:
        await self.control("subscriptions", {"topicArn": topic_arn, "queueUrl": queue_url})

    async def feed(self, queue_url: str, body: str, rate: float, count: int) -> int:
        spec = {"queueUrl": queue_url, "body": body, "rate": rate, "count": count}
        return int((await self.control("feed", spec))["fed"])

    async def counts(self) -> dict[str, Any]:
        return dict(await self.control("counts"))

    async def reset(self) -> None:
        await self.control("reset", {})

    async def depth(self, queue_url: str) -> int:
        return int((await self.control(f"depth?queueUrl={quote(queue_url, safe='')}"))["depth"])

    async def sqs(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "X-Amz-Target": f"AmazonSQS.{action}",
            "Content-Type": "application/x-amz-json-1.0",
        }
        answer = await self.http.request("POST", json.dumps(args).encode(), headers=headers)
        if answer.status != 200:
            raise BenchFailure(f"stand-in {action}: {answer.status} {answer.body[:200]!r}")
        return dict(answer.json())

    async def drain(self, queue_url: str, workers: int = 4) -> Drained:
        """Receive and delete every message of the queue, counting the gateway events it holds
        with the SDK's own parser: the receiving side's count, after a phase."""
        drained = Drained()
        deadline = time.monotonic() + DRAIN_TIMEOUT

        async def worker() -> None:
            while time.monotonic() < deadline:
                answer = await self.sqs(
                    "ReceiveMessage",
                    {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 600},
                )
                messages = answer.get("Messages", [])
                if not messages:
                    return
                for message in messages:
                    drained.messages += 1
                    for event in parse_events(message["Body"]):
                        kind = event_type(event)
                        drained.events[kind] += 1
                        if kind == "CONNECT":
                            drained.connection_ids.append(event["requestContext"]["connectionId"])
                entries = [
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(messages)
                ]
                await self.sqs("DeleteMessageBatch", {"QueueUrl": queue_url, "Entries": entries})

        # A FIFO group in flight with one worker looks empty to the others: go until none is left.
        while await self.depth(queue_url):
            if time.monotonic() > deadline:
                raise BenchFailure(f"could not drain {queue_url} within {DRAIN_TIMEOUT:g} s")
            await asyncio.gather(*(worker() for _ in range(workers)))
        return drained

    async def close(self) -> None:
        await self.http.close()


@dataclass
class Node:
    """A `python -m runtime serve` process on CPU 0, with its /stats and /commands endpoint."""

    key: str
    child: Child
    url: str
    http: HttpClient  # the command port, with the token
    ports: tuple[int, int]  # WebSocket, commands

    async def stats(self) -> dict[str, Any]:
        answer = await self.http.request("GET", target="/stats")
        return dict(answer.json())

    async def delivered(self) -> int:
        """Events the origin transport got accepted (an HTTP 200, SQS's answer)."""
        return int((await self.stats())["eventsDelivered"])

    async def settled(self, connections: int) -> None:
        """Until the node holds `connections` and has no event left to send."""

        async def check() -> bool:
            stats = await self.stats()
            return bool(stats["connections"] == connections and stats["bufferedEvents"] == 0)

        await until(check, SETTLE_TIMEOUT, f"node {self.key} did not settle at {connections}")

    async def post(self, body: bytes) -> int:
        answer = await self.http.request(
            "POST", body, target="/commands", headers={"Content-Type": "application/json"}
        )
        return answer.status


class Control:
    """The JSON control endpoint of a child of ours (the HTTP origin, the simulated Lambda)."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port
        self.http = HttpClient(f"http://127.0.0.1:{port}/counts", timeout=30.0)

    async def counts(self) -> dict[str, Any]:
        return dict((await self.http.request("GET")).json())

    async def reset(self) -> None:
        await self.http.request("POST", b"{}", target="/reset")


# Part 1's HTTP origin: takes every batch at once, replies with nothing (child process)


class EventSink:
    """An HTTP origin that answers each event batch 200 at once and counts its events by type:
    the receiving side of the HTTP path, one way (bench/origin.py replies to every message)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    async def route(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/events":
            events = json.loads(request.body)["events"]
            self.counts["requests"] += 1
            for event in events:
                self.counts[event["requestContext"]["eventType"]] += 1
            return Response(200, b"{}", {"Content-Type": "application/json"})
        if request.path == "/counts":
            return json_response(dict(self.counts))
        if request.path == "/reset":
            self.counts.clear()
            return json_response({})
        return json_response({"error": "not found"}, 404)


# Part 3's simulated Lambda (child process)


@dataclass(frozen=True)
class LambdaSpec:
    port: int  # its control endpoint
    queue_url: str
    queue_arn: str
    topic_arn: str
    region: str  # the nodes' region, as connection IDs name it
    batch_size: int
    window: float
    pollers: int


class LambdaTally:
    """What the simulated Lambda did, for the report and the checks; shared by its pollers."""

    FIELDS = (
        "receives",
        "receiveBilled",
        "emptyReceives",
        "messages",
        "invocations",
        "recordsFailed",
        "replies",
        "deleteCalls",
        "deleted",
        "deleteFailed",
        "publishCalls",
        "publishMessages",
        "publishBytes",
        "errors",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.figures: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    def add(self, **figures: int) -> None:
        with self.lock:
            self.figures.update(figures)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                **{name: self.figures[name] for name in self.FIELDS},
                "events": dict(self.events),
            }

    def reset(self) -> None:
        with self.lock:
            self.figures.clear()
            self.events.clear()


class CountingSns:
    """The SDK's SNS client, counting what it publishes (cross-checked against the stand-in)."""

    def __init__(self, sns: Any, tally: LambdaTally) -> None:
        self.sns = sns
        self.tally = tally

    def publish_batch(self, **request: Any) -> Any:
        entries = request["PublishBatchRequestEntries"]
        self.tally.add(
            publishCalls=1,
            publishMessages=len(entries),
            publishBytes=sum(len(entry["Message"].encode()) for entry in entries),
        )
        return self.sns.publish_batch(**request)


class LambdaPoller(threading.Thread):
    """One poller of the modelled event source mapping: long-polls the events queue (10 messages
    a receive) until the batch is full or its window ends (FIFO: no window), invokes a handler
    made with the SDK's `gateway_handler` (each MESSAGE answered with one `send` to its sender
    through a `GatewayClient`), then deletes the records that did not fail."""

    def __init__(self, spec: LambdaSpec, tally: LambdaTally, number: int) -> None:
        super().__init__(name=f"lambda-poller-{number}", daemon=True)
        self.spec = spec
        self.tally = tally
        self.sqs = boto3.client("sqs", region_name=REGION, config=BOTO_CONFIG)
        sns = CountingSns(boto3.client("sns", region_name=REGION, config=BOTO_CONFIG), tally)
        self.gateway = GatewayClient(
            region=spec.region,
            topic_arns={spec.region: spec.topic_arn},
            client_factory=lambda service, region: sns,
        )
        self.handler = gateway_handler(self.on_event, gateway=self.gateway)

    def on_event(self, event: Event) -> None:
        kind = event_type(event)
        with self.tally.lock:
            self.tally.events[kind] += 1
        if kind == "MESSAGE":
            self.gateway.send(event["requestContext"]["connectionId"], message_data(event))
            self.tally.add(replies=1)

    def run(self) -> None:
        while True:  # until the harness stops the process
            try:
                messages = self.gather()
                if messages:
                    self.invoke(messages)
            except Exception:
                self.tally.add(errors=1)
                log.exception("simulated Lambda poller failed")
                time.sleep(0.1)

    def gather(self) -> list[dict[str, Any]]:
        """One batch: the first receive waits up to 20 s; the window starts at the first message."""
        spec = self.spec
        messages: list[dict[str, Any]] = []
        deadline: float | None = None
        while len(messages) < spec.batch_size:
            if deadline is None:
                wait = LONG_POLL_SECONDS
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(LONG_POLL_SECONDS, math.ceil(remaining))
            got = self.sqs.receive_message(
                QueueUrl=spec.queue_url,
                MaxNumberOfMessages=min(10, spec.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            payload = sum(
                len(message["Body"].encode())
                + attributes_size(message.get("MessageAttributes", {}))
                for message in got
            )
            self.tally.add(
                receives=1,
                receiveBilled=billed_requests(payload),
                emptyReceives=int(not got),
                messages=len(got),
            )
            if got:
                messages += got
                if deadline is None:
                    deadline = time.monotonic() + spec.window
            if spec.window <= 0 and messages:
                break
        return messages

    def invoke(self, messages: list[dict[str, Any]]) -> None:
        spec = self.spec
        answer = self.handler({"Records": [lambda_record(m, spec) for m in messages]}, None)
        failed = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
        done = [message for message in messages if message["MessageId"] not in failed]
        self.tally.add(invocations=1, recordsFailed=len(failed))
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            response = self.sqs.delete_message_batch(
                QueueUrl=spec.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(chunk)
                ],
            )
            self.tally.add(
                deleteCalls=1,
                deleted=len(response.get("Successful", [])),
                deleteFailed=len(response.get("Failed", [])),
            )


def lambda_record(message: Mapping[str, Any], spec: LambdaSpec) -> dict[str, Any]:
    """An SQS message as Lambda hands it to a function, in its record shape."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": spec.queue_arn,
        "awsRegion": REGION,
    }


class LambdaControl:
    """The simulated Lambda's control endpoint: GET /counts, POST /reset."""

    def __init__(self, tally: LambdaTally) -> None:
        self.tally = tally

    async def route(self, request: Request) -> Response:
        if request.path == "/counts":
            return json_response(self.tally.snapshot())
        if request.path == "/reset":
            self.tally.reset()
            return json_response({})
        return json_response({"error": "not found"}, 404)


CHILD_SERVER: dict[str, Any] = {"name": "bench-aws-child", "max_body_bytes": 64 << 20}


def child_main(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.child == "sink":
        run(serve_until_signal(EventSink().route, args.listen, **CHILD_SERVER))
        return 0
    spec = LambdaSpec(**json.loads(args.spec))
    tally = LambdaTally()
    for poller in [LambdaPoller(spec, tally, number) for number in range(spec.pollers)]:
        poller.start()
    control = LambdaControl(tally).route
    run(serve_until_signal(control, f"127.0.0.1:{spec.port}", **CHILD_SERVER))
    return 0


# Bodies of commands, as the SDK packs them


def send_bodies(
    connection_ids: Sequence[str], data: str, per_message: int, count: int, first: int = 0
) -> list[str]:
    """`count` bodies of `per_message` sends each, to connection IDs taken round robin from
    `first` on, one ID a send: what GatewayClient.flush publishes for as many `send` calls
    (runtime/origin/packing.py), bounded by the SDK's default message size."""
    data_json, binary = packing.payload_json(data)
    bound = packing.DEFAULT_MAX_MESSAGE_BYTES
    bodies = []
    for number in range(count):
        start = first + number * per_message
        targets = [connection_ids[(start + j) % len(connection_ids)] for j in range(per_message)]
        commands = [
            command
            for target in targets
            for command in packing.send_commands([target], data_json, binary, bound)
        ]
        packed = packing.pack_messages(commands, bound)
        if len(packed) != 1:
            raise BenchFailure(f"{per_message} sends do not fit one SDK message")
        bodies.append(packed[0])
    return bodies


# The benchmark


@dataclass(frozen=True)
class EventMode:
    key: str
    label: str
    queue: str = ""  # SQS modes: the events queue's name
    flags: tuple[str, ...] = ()


EVENT_MODES = (
    EventMode("http", "HTTP origin (baseline)"),
    EventMode("sqs", "SQS FIFO, packed (default)", "bench-events.fifo"),
    EventMode(
        "sqs-single",
        "SQS FIFO, --events-per-message 1",
        "bench-events-single.fifo",
        ("--events-per-message", "1"),
    ),
    EventMode("sqs-standard", "SQS standard, packed (default)", "bench-events-standard"),
    EventMode("picows", "picows echo server (generator check)"),
)
DELIVERY_MODES = (
    ("post", "POST /commands, 10 sends a request"),
    ("sqs-packed", "SQS commands queue, 100 sends a message (SDK-packed)"),
    ("sqs-single", "SQS commands queue, 1 send a message"),
)


@dataclass(frozen=True)
class Pipeline:
    key: str
    label: str
    fifo: bool
    flags: tuple[str, ...] = ()
    billing: bool = True
    latency: bool = False

    @property
    def packed(self) -> bool:
        return "--events-per-message" not in self.flags


PIPELINES = (
    Pipeline("fifo", "FIFO events queue, packed (default)", True, latency=True),
    Pipeline("fifo-single", "FIFO, --events-per-message 1", True, ("--events-per-message", "1")),
    Pipeline("standard", "standard events queue, packed (default)", False),
    Pipeline(
        "standard-single", "standard, --events-per-message 1", False, ("--events-per-message", "1")
    ),
    Pipeline(
        "fifo-linger-100",
        "FIFO, packed, --events-linger-ms 100",
        True,
        ("--events-linger-ms", "100"),
    ),
    Pipeline(
        "fifo-linger-0",
        "FIFO, packed, --events-linger-ms 0",
        True,
        ("--events-linger-ms", "0"),
        billing=False,
        latency=True,
    ),
)
BILLED_ITEMS = (
    "node send",
    "Lambda receive",
    "Lambda delete",
    "SDK publish",
    "SNS delivery",
    "node receive",
    "node delete",
)
KNOWN_SQS_ACTIONS = frozenset(("SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch"))


def with_aws(argv: list[str], endpoint: str | None) -> list[str]:
    """The command with boto3 pointed at the stand-in: `env` execs it, so the pid (and its CPU
    time) stays the child's."""
    if endpoint is None:
        return argv
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": endpoint}
    return ["env", *(f"{name}={value}" for name, value in env.items()), *argv]


def rotate(items: Sequence[Any], number: int) -> list[Any]:
    shift = number % len(items)
    return [*items[shift:], *items[:shift]]


class AwsBench:
    def __init__(self, plan: Plan, fleet: Fleet, cpus: dict[str, int | None]) -> None:
        self.plan = plan
        self.fleet = fleet
        self.cpus = cpus
        self.token = secrets.token_hex(16)
        self.mapping = event_source_mapping()
        self.payload = payload_text(plan.payload_bytes)
        self._closers: list[Callable[[], Awaitable[None]]] = []

    # Processes

    async def start_standin(self, label: str) -> StandIn:
        port = free_port()
        child = self.fleet.python(
            f"aws-standin-{label}",
            ["-m", "bench.aws_standin", "--port", str(port), "--region", REGION],
            self.cpus["generator"],
        )
        await wait_listening(child, port)
        standin = StandIn(child, port)
        self._closers.append(standin.close)
        return standin

    def spawn_node(self, key: str, flags: Sequence[str], aws: str | None = None) -> Node:
        ws_port, command_port = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "runtime",
            *_node_flags(ws_port, command_port, self.token),
            "--keepalive-interval",
            "0",
            *flags,
        ]
        child = self.fleet.spawn(f"aws-node-{key}", with_aws(argv, aws), self.cpus["server"])
        http = HttpClient(
            f"http://127.0.0.1:{command_port}/stats",
            headers={"Authorization": f"Bearer {self.token}"},
            max_connections=8,
            timeout=30.0,
        )
        self._closers.append(http.close)
        return Node(key, child, f"ws://127.0.0.1:{ws_port}/", http, (ws_port, command_port))

    async def ready(self, node: Node) -> None:
        for port in node.ports:
            await wait_listening(node.child, port)

    def spawn_control(
        self, name: str, args: Callable[[int], list[str]], aws: str | None = None
    ) -> Control:
        """A child of ours (`python -m bench.aws --child ...`) on CPU 1; `args(port)` names
        the port of its control endpoint."""
        port = free_port()
        argv = [sys.executable, "-m", "bench.aws", "--child", *args(port)]
        child = self.fleet.spawn(name, with_aws(argv, aws), self.cpus["generator"])
        control = Control(child, port)
        self._closers.append(control.http.close)
        return control

    def stop(self, *children: Child) -> None:
        for child in children:
            self.fleet.stop(child)

    async def close(self) -> None:
        for closer in self._closers:
            await closer()

    # Part 1 (and 5): events/s one way

    async def events_part(self, standin: StandIn) -> dict[str, Any]:
        plan = self.plan
        sink = self.spawn_control(
            "aws-sink", lambda port: ["sink", "--listen", f"127.0.0.1:{port}"]
        )
        queues = {
            mode.key: await standin.create_queue(mode.queue) for mode in EVENT_MODES if mode.queue
        }
        nodes: dict[str, Node] = {}
        for mode in EVENT_MODES:
            if mode.key == "http":
                flags = ["--origin-url", f"http://127.0.0.1:{sink.port}/events"]
                nodes[mode.key] = self.spawn_node(mode.key, flags)
            elif mode.queue:
                flags = [
                    "--origin-transport", "sqs",
                    "--events-queue-url", queues[mode.key],
                    "--aws-region", REGION,
                    *mode.flags,
                ]  # fmt: skip
                nodes[mode.key] = self.spawn_node(mode.key, flags, standin.url)
        picows_port = free_port()
        picows = self.fleet.python(
            "aws-picows",
            ["-m", "bench.servers", "picows", "--listen", f"127.0.0.1:{picows_port}"],
            self.cpus["server"],
        )
        try:
            await wait_listening(sink.child, sink.port)
            await wait_listening(picows, picows_port)
            for node in nodes.values():
                await self.ready(node)
            rounds: dict[str, list[dict[str, Any]]] = {mode.key: [] for mode in EVENT_MODES}
            for number in range(plan.rounds):
                log.info("events/s, round %d of %d", number + 1, plan.rounds)
                for mode in rotate(EVENT_MODES, number):
                    if mode.key == "picows":
                        result = await self.one_way_picows(picows, picows_port)
                    else:
                        receiver = sink.child if mode.key == "http" else standin.child
                        result = await self.one_way_node(
                            nodes[mode.key], receiver, sink, standin, queues.get(mode.key)
                        )
                    rounds[mode.key].append(result)
        finally:
            self.stop(sink.child, picows, *(node.child for node in nodes.values()))
        return {key: combine_one_way(results) for key, results in rounds.items()}

    async def one_way_node(
        self,
        node: Node,
        receiver: Child,
        sink: Control,
        standin: StandIn,
        queue_url: str | None,
    ) -> dict[str, Any]:
        clients = Clients()
        await clients.open(node.url, self.plan.connections)
        try:
            await node.settled(self.plan.connections)
            before = await sink.counts() if queue_url is None else {}
            window = CpuWindow(Target(node.key, node.url, node.child, origin=receiver))
            result = await one_way(clients, self.payload, self.plan, node.delivered, window)
        finally:
            clients.close()
        await node.settled(0)
        if queue_url is None:
            after = await sink.counts()
            events = Counter({kind: after[kind] - before.get(kind, 0) for kind in after})
            messages = events.pop("requests", 0)
        else:
            drained = await standin.drain(queue_url)
            events, messages = drained.events, drained.messages
        return one_way_figures(result, window, clients, events, messages)

    async def one_way_picows(self, server: Child, port: int) -> dict[str, Any]:
        url = f"ws://127.0.0.1:{port}/"
        clients = Clients()
        await clients.open(url, self.plan.connections)

        async def echoed() -> int:
            return clients.received

        try:
            window = CpuWindow(Target("picows", url, server))
            result = await one_way(clients, self.payload, self.plan, echoed, window)
        finally:
            clients.close()
        return one_way_figures(result, window, clients, Counter(MESSAGE=clients.received), 0)

    # Part 2: node CPU per command delivery

    async def deliveries_part(self, standin: StandIn) -> dict[str, Any]:
        plan = self.plan
        events_url = await standin.create_queue("bench-deliveries-events.fifo")
        commands_url = await standin.create_queue("bench-commands")
        flags = [
            "--origin-transport", "sqs",
            "--events-queue-url", events_url,
            "--commands-queue-url", commands_url,
            "--aws-region", REGION,
        ]  # fmt: skip
        node = self.spawn_node("deliveries", flags, standin.url)
        clients = Clients()
        try:
            await self.ready(node)
            await clients.open(node.url, plan.connections)
            await node.settled(plan.connections)
            ids = (await standin.drain(events_url)).connection_ids
            if len(ids) != plan.connections:
                raise BenchFailure(f"{len(ids)} CONNECT events for {plan.connections} clients")
            data = self.payload.decode()
            posts = plan.post_deliveries // plan.sends_per_post
            post_bodies = [
                body.encode() for body in send_bodies(ids, data, plan.sends_per_post, posts)
            ]
            packed_body = send_bodies(ids, data, plan.replies_per_message, 1)[0]
            single_bodies = [send_bodies(ids, data, 1, 1, first=i)[0] for i in range(len(ids))]
            fed = plan.packed_deliveries // plan.replies_per_message
            each = plan.single_deliveries // len(ids)

            async def post() -> int:
                return await self.post_all(node, post_bodies)

            async def feed_packed() -> int:
                await standin.feed(commands_url, packed_body, max(1.0, fed / 0.05), fed)
                return 0

            async def feed_single() -> int:
                rate = max(1.0, each / 0.05)
                await asyncio.gather(
                    *(standin.feed(commands_url, body, rate, each) for body in single_bodies)
                )
                return 0

            sources: dict[str, tuple[int, Callable[[], Awaitable[int]]]] = {
                "post": (posts * plan.sends_per_post, post),
                "sqs-packed": (fed * plan.replies_per_message, feed_packed),
                "sqs-single": (each * len(ids), feed_single),
            }
            rounds: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in DELIVERY_MODES}
            for number in range(plan.rounds):
                log.info("deliveries, round %d of %d", number + 1, plan.rounds)
                for key, _ in rotate(DELIVERY_MODES, number):
                    expected, send = sources[key]
                    result = await self.deliver(node, standin, clients, expected, send)
                    result["left_in_queue"] = await self.settled_depth(standin, commands_url)
                    rounds[key].append(result)
        finally:
            clients.close()
            self.stop(node.child)
        return {key: combine_deliveries(results) for key, results in rounds.items()}

    async def settled_depth(self, standin: StandIn, queue_url: str) -> int:
        """The queue's depth once the node's last deletes had time to go (they wait up to a
        quarter of a second to share a call): what is left then is stuck."""
        deadline = time.monotonic() + 2.0
        depth = await standin.depth(queue_url)
        while depth and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            depth = await standin.depth(queue_url)
        return depth

    async def post_all(self, node: Node, bodies: Sequence[bytes], in_flight: int = 4) -> int:
        """POST every body, `in_flight` at a time; returns how many were not answered 200."""
        failures = 0
        queue = iter(bodies)

        async def worker() -> None:
            nonlocal failures
            for body in queue:
                if await node.post(body) != 200:
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return failures

    async def deliver(
        self,
        node: Node,
        standin: StandIn,
        clients: Clients,
        expected: int,
        send: Callable[[], Awaitable[int]],
    ) -> dict[str, Any]:
        """Node CPU from the first command sent until the clients have every delivery."""
        before = clients.received_each()
        window = CpuWindow(Target(node.key, node.url, node.child, origin=standin.child))
        window.start()
        started = time.perf_counter()
        failures = await send()
        await until(
            lambda: clients.received - sum(before) >= expected,
            DRAIN_TIMEOUT + expected / 500,
            f"{expected} deliveries did not arrive",
            every=0.002,
        )
        seconds = time.perf_counter() - started
        window.stop()
        cpu = window.result()
        each = [after - first for after, first in zip(clients.received_each(), before, strict=True)]
        await asyncio.sleep(0.05)  # a delivery beyond the expected would show now
        extra = clients.received - sum(before) - expected
        return {
            "expected": expected,
            "delivered": sum(each) + extra,
            "per_client": {"min": min(each), "max": max(each), "want": expected // len(each)},
            "seconds": seconds,
            "rate": expected / seconds,
            "node_cpu_us": 1e6 * cpu["seconds"]["server"] / expected,
            "cpu": cpu,
            "post_failures": failures,
        }

    # Parts 3 and 4: billed requests end to end, and latency

    async def pipelines_part(self) -> dict[str, Any]:
        results = {}
        for pipeline in PIPELINES:
            log.info("end to end: %s", pipeline.label)
            results[pipeline.key] = await self.pipeline(pipeline)
        return results

    async def pipeline(self, pipeline: Pipeline) -> dict[str, Any]:
        """One stand-in, node and Lambda of their own (a long poll of an earlier pipeline cannot
        land in this one's counts), clients connected throughout."""
        plan = self.plan
        standin = await self.start_standin(pipeline.key)
        name = "bench-events.fifo" if pipeline.fifo else "bench-events"
        events_url = await standin.create_queue(name)
        commands_url = await standin.create_queue("bench-commands")
        topic_arn = await standin.create_topic("bench-commands")
        await standin.subscribe(topic_arn, commands_url)
        flags = [
            "--origin-transport", "sqs",
            "--events-queue-url", events_url,
            "--commands-queue-url", commands_url,
            "--aws-region", REGION,
            "--region", REGION,
            *pipeline.flags,
        ]  # fmt: skip
        node = self.spawn_node(pipeline.key, flags, standin.url)
        batch_size, window = self.mapping.batch(pipeline.fifo)
        spec = {
            "queue_url": events_url,
            "queue_arn": f"arn:{partition(REGION)}:sqs:{REGION}:{ACCOUNT}:{name}",
            "topic_arn": topic_arn,
            "region": REGION,
            "batch_size": batch_size,
            "window": window,
            "pollers": plan.lambda_pollers,
        }
        lambda_ = self.spawn_control(
            f"aws-lambda-{pipeline.key}",
            lambda port: ["lambda", "--spec", json.dumps({**spec, "port": port})],
            standin.url,
        )
        clients = Clients()
        out: dict[str, Any] = {"batch_size": batch_size, "window": window}
        try:
            await self.ready(node)
            await wait_listening(lambda_.child, lambda_.port)
            await clients.open(node.url, plan.connections)
            await node.settled(plan.connections)
            queues = (events_url, commands_url)
            await self.quiet(standin, queues)
            await paced(clients, plan.connections, plan.billed_rate, lambda _: self.payload)
            await until(
                lambda: clients.received >= plan.connections,
                DRAIN_TIMEOUT,
                f"{pipeline.key}: the warm-up replies did not arrive",
            )
            await self.quiet(standin, queues)
            if pipeline.billing:
                out["billing"] = await self.billing(
                    pipeline, node, standin, queues, lambda_, clients
                )
                await self.quiet(standin, queues)
            if pipeline.latency:
                out["latency"] = await self.latency(clients)
            out["lost"] = clients.lost
        finally:
            clients.close()
            self.stop(node.child, lambda_.child, standin.child)
        return out

    async def quiet(self, standin: StandIn, queues: Sequence[str]) -> None:
        """Until every queue is empty: the Lambda and the node deleted all they were given."""

        async def empty() -> bool:
            return all([await standin.depth(url) == 0 for url in queues])

        await until(empty, DRAIN_TIMEOUT, "the queues did not empty", every=0.05)

    async def billing(
        self,
        pipeline: Pipeline,
        node: Node,
        standin: StandIn,
        queues: Sequence[str],
        lambda_: Control,
        clients: Clients,
    ) -> dict[str, Any]:
        """Billed requests for `billed_messages` round trips: counted from empty queues (after
        the warm-up) to empty queues again, every reply in."""
        plan = self.plan
        count = plan.billed_messages
        before_each = clients.received_each()
        sent_each = [receiver.sent for receiver in clients.receivers]
        before = clients.received
        await standin.reset()
        await lambda_.reset()
        window = CpuWindow(Target(node.key, node.url, node.child, origin=lambda_.child))
        window.children["standin"] = standin.child
        window.start()
        started = time.perf_counter()
        await paced(clients, count, plan.billed_rate, lambda _: self.payload)
        await until(
            lambda: clients.received - before >= count,
            DRAIN_TIMEOUT + count / plan.billed_rate,
            f"{pipeline.key}: replies did not all arrive",
        )
        seconds = time.perf_counter() - started
        await self.quiet(standin, queues)
        window.stop()
        lambda_counts = await lambda_.counts()
        standin_counts = await standin.counts()
        replies_each = [
            after - first for after, first in zip(clients.received_each(), before_each, strict=True)
        ]
        sent = [r.sent - first for r, first in zip(clients.receivers, sent_each, strict=True)]
        cpu = window.result()
        return {
            "sent": count,
            "replies": clients.received - before,
            "clients_short": sum(
                1 for got, want in zip(replies_each, sent, strict=True) if got != want
            ),
            "seconds": seconds,
            "lambda": lambda_counts,
            "standin": standin_counts,
            "cpu": cpu,
            "node_cpu_us_per_round_trip": 1e6 * cpu["seconds"]["server"] / count,
            # CPU 1 holds the Lambda, the stand-in and the generator: saturated, the Lambda
            # would lag and take fuller batches than Lambda would (fewer billed requests).
            "load_cpu_busy_percent": sum(
                cpu["percent"][name] for name in ("origin", "standin", "generator")
            ),
        }

    async def latency(self, clients: Clients) -> dict[str, Any]:
        plan = self.plan
        clients.round_trips.clear()
        clients.stray = 0

        def payload(index: int) -> bytes:
            return payload_text(plan.payload_bytes, f"t{index}")

        await paced(clients, plan.latency_messages, plan.latency_rate, payload, timed=True)
        await until(
            lambda: len(clients.round_trips) >= plan.latency_messages,
            DRAIN_TIMEOUT,
            "latency replies did not all arrive",
        )
        samples = sorted(ns / 1e6 for ns in clients.round_trips)
        clients.sent_at.clear()
        return {
            "sent": plan.latency_messages,
            "replies": len(samples),
            "stray": clients.stray,
            "p50_ms": percentile(samples, 0.50),
            "p99_ms": percentile(samples, 0.99),
            "max_ms": samples[-1],
        }

    # The whole run

    async def measure(self) -> dict[str, Any]:
        try:
            standin = await self.start_standin("shared")
            started = time.monotonic()
            events = await self.events_part(standin)
            log.info("events/s took %.0f s", time.monotonic() - started)
            started = time.monotonic()
            deliveries = await self.deliveries_part(standin)
            log.info("deliveries took %.0f s", time.monotonic() - started)
            self.stop(standin.child)
            started = time.monotonic()
            pipelines = await self.pipelines_part()
            log.info("end to end took %.0f s", time.monotonic() - started)
        finally:
            await self.close()
        return {
            "events": events,
            "deliveries": deliveries,
            "pipelines": pipelines,
            "event_source_mapping": asdict(self.mapping),
            "node": {  # what bench.cost models the measured counts at
                "events_linger_ms": NODE.events_linger_ms,
                "events_per_message": NODE.events_per_message,
                "events_message_bytes": NODE.events_message_bytes,
                "events_fifo_groups": NODE.events_fifo_groups,
                "commands_workers": NODE.commands_workers,
            },
        }


def one_way_figures(
    result: OneWay, window: CpuWindow, clients: Clients, events: Counter[str], messages: int
) -> dict[str, Any]:
    """One run of part 1: rate, CPU per message by process, and the counts the checks compare;
    `events` by type and `messages` (SQS messages or HTTP requests) as the receiver holds them."""
    cpu = window.result()
    return {
        "rate": result.rate,
        "messages": result.messages,
        "seconds": result.seconds,
        "cpu": cpu,
        "cpu_us": {
            name: 1e6 * seconds / max(1, result.messages)
            for name, seconds in cpu["seconds"].items()
        },
        "sent": result.sent,
        "acknowledged": result.acknowledged,
        "received": events["MESSAGE"],
        "receiver_events": sum(events.values()),  # CONNECT and DISCONNECT too
        "receiver_messages": messages,
        "lost": clients.lost,
    }


def combine_one_way(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rounds (a busy spell of the shared machine moves one round, not the
    figure); counts summed for the checks."""
    return {
        "rate": statistics.median(r["rate"] for r in rounds),
        "cpu_us": {
            name: statistics.median(r["cpu_us"][name] for r in rounds)
            for name in rounds[0]["cpu_us"]
        },
        "busy_percent": {
            name: statistics.median(r["cpu"]["percent"][name] for r in rounds)
            for name in rounds[0]["cpu"]["percent"]
        },
        "others_percent": max(r["cpu"]["others_percent"] for r in rounds),
        "messages": sum(r["messages"] for r in rounds),
        "sent": sum(r["sent"] for r in rounds),
        "acknowledged": sum(r["acknowledged"] for r in rounds),
        "received": sum(r["received"] for r in rounds),
        "receiver_events": sum(r["receiver_events"] for r in rounds),
        "receiver_messages": sum(r["receiver_messages"] for r in rounds),
        "lost": sum(r["lost"] for r in rounds),
        "rounds": rounds,
    }


def combine_deliveries(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rounds' rates and CPU per delivery; counts summed for the checks."""
    return {
        "rate": statistics.median(r["rate"] for r in rounds),
        "node_cpu_us": statistics.median(r["node_cpu_us"] for r in rounds),
        "others_percent": max(r["cpu"]["others_percent"] for r in rounds),
        "expected": sum(r["expected"] for r in rounds),
        "delivered": sum(r["delivered"] for r in rounds),
        "uneven_rounds": sum(
            1
            for r in rounds
            if not r["per_client"]["min"] == r["per_client"]["max"] == r["per_client"]["want"]
        ),
        "post_failures": sum(r["post_failures"] for r in rounds),
        "left_in_queue": sum(r["left_in_queue"] for r in rounds),
        "rounds": rounds,
    }


# Billed requests, item by item


def billed(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Billed requests per item, from the stand-in's counts and the simulated Lambda's own.

    The stand-in counts calls per action and bills per service. A call bills one request, plus
    one per 64 KiB of payload beyond the first (its extra chunks). The Lambda knows its receives'
    extra chunks (it bills them by the stand-in's rule), deletes carry no payload, and the SDK's
    publishes are the only SNS requests; so each item is exact but for extra chunks the SQS bill
    holds beyond those (`unattributed`): node sends or node receives over 64 KiB, counted here
    as node sends. The total is exact whatever they are.
    """
    counts, lam = figures["standin"], figures["lambda"]
    requests, bill = counts["requests"], counts["billed"]
    sqs = {name[4:]: value for name, value in requests.items() if name.startswith("sqs.")}
    other = sum(value for name, value in sqs.items() if name not in KNOWN_SQS_ACTIONS)
    calls = {
        "node send": sqs.get("SendMessageBatch", 0),
        "Lambda receive": lam["receives"],
        "Lambda delete": lam["deleteCalls"],
        "node receive": sqs.get("ReceiveMessage", 0) - lam["receives"],
        "node delete": sqs.get("DeleteMessageBatch", 0) - lam["deleteCalls"],
    }
    lambda_extra = lam["receiveBilled"] - lam["receives"]
    unattributed = bill["sqs"] - sum(calls.values()) - other - lambda_extra
    items = {
        "node send": calls["node send"] + unattributed,
        "Lambda receive": lam["receiveBilled"],
        "Lambda delete": calls["Lambda delete"],
        "SDK publish": bill["sns"],
        "SNS delivery": bill["snsDeliveries"],
        "node receive": calls["node receive"],
        "node delete": calls["node delete"],
    }
    if other:
        items["other SQS"] = other
    return {
        "items": items,
        "total": sum(items.values()),
        "calls": calls,
        "unattributed": unattributed,
        "invocations": lam["invocations"],
        "sns_messages": lam["publishMessages"],
        "events_per_message": figures["sent"] / max(1, lam["messages"]),
    }


def dollars_per_million(items: Mapping[str, float], fifo: bool) -> float:
    """Per million client messages, from billed requests per 1,000: the events queue's own
    price for what touches it, the standard commands queue's and SNS's for the rest."""
    events_queue = (prices.SQS_FIFO_MILLION if fifo else prices.SQS_STANDARD_MILLION).usd
    price = {
        "node send": events_queue,
        "Lambda receive": events_queue,
        "Lambda delete": events_queue,
        "SDK publish": prices.SNS_STANDARD_PUBLISH_MILLION.usd,
        "SNS delivery": prices.SQS_STANDARD_MILLION.usd,
        "node receive": prices.SQS_STANDARD_MILLION.usd,
        "node delete": prices.SQS_STANDARD_MILLION.usd,
        "other SQS": prices.SQS_STANDARD_MILLION.usd,
    }
    # per 1,000 client messages x 1,000 = per million; requests x $/million requests / 10^6
    return sum(per_1000 * price[item] for item, per_1000 in items.items()) / 1000


def summarize(r: dict[str, Any]) -> None:
    """Figures derived from the raw counts: billed per 1,000, ratios, round trips per second."""
    for key, figures in r["pipelines"].items():
        billing = figures.get("billing")
        if billing is None:
            continue
        fifo = next(p.fifo for p in PIPELINES if p.key == key)
        bill = billed(billing)
        scale = 1000 / billing["sent"]
        per_1000 = {item: value * scale for item, value in bill["items"].items()}
        billing["billed"] = bill
        billing["per_1000"] = per_1000
        billing["per_1000_total"] = sum(per_1000.values())
        billing["dollars_per_million"] = dollars_per_million(per_1000, fifo)
    events, deliveries, pipelines = r["events"], r["deliveries"], r["pipelines"]
    r["ratios"] = {
        "sqs_over_http": events["sqs"]["rate"] / (events["http"]["rate"] or 1e-9),
        "sqs_packed_over_post": deliveries["sqs-packed"]["node_cpu_us"]
        / (deliveries["post"]["node_cpu_us"] or 1e-9),
        "picows_over_fastest_node": events["picows"]["rate"]
        / (max(events[m.key]["rate"] for m in EVENT_MODES if m.key != "picows") or 1e-9),
    }
    r["billed_per_1000"] = {
        "fifo": round(pipelines["fifo"]["billing"]["per_1000_total"], 1),
        "standard": round(pipelines["standard"]["billing"]["per_1000_total"], 1),
    }
    # One node's capacity in client messages with one reply each (one vCPU): CPU per event to
    # the queue plus CPU per delivery from it, both measured at saturation above.
    delivery = deliveries["sqs-packed"]["node_cpu_us"]
    r["round_trips_per_second"] = {
        kind: round(1e6 / (events[mode]["cpu_us"]["server"] + delivery))
        for kind, mode in (("fifo", "sqs"), ("standard", "sqs-standard"))
    }
    latency = {key: p["latency"] for key, p in pipelines.items() if "latency" in p}
    r["linger_added_ms"] = {
        name: latency["fifo"][name] - latency["fifo-linger-0"][name]
        for name in ("p50_ms", "p99_ms")
    }


# Checks and verdicts


def check_counts(r: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    """Every message reached its receiver, every delivery its client, every message its reply,
    the queues emptied and the counts of the stand-in, the Lambda and the node agree: a count
    that disagrees fails the run."""
    checks: list[dict[str, Any]] = []

    def check(name: str, measured: Any, expected: Any, ok: bool | None = None) -> None:
        good = measured == expected if ok is None else bool(ok)
        checks.append({"name": name, "measured": measured, "expected": expected, "ok": good})

    for mode in EVENT_MODES:
        figures = r["events"][mode.key]
        taker = "echoes" if mode.key == "picows" else "node eventsDelivered"
        check(f"{mode.key}: messages taken ({taker})", figures["acknowledged"], figures["sent"])
        check(f"{mode.key}: MESSAGE events the receiver got", figures["received"], figures["sent"])
        check(f"{mode.key}: connections the server closed", figures["lost"], 0)
        check(f"{mode.key}: measured", figures["messages"] > 0, True)
    for key, _ in DELIVERY_MODES:
        figures = r["deliveries"][key]
        check(f"{key}: deliveries at the clients", figures["delivered"], figures["expected"])
        check(f"{key}: rounds with a client given too many or too few", figures["uneven_rounds"], 0)
        check(f"{key}: POSTs not answered 200", figures["post_failures"], 0)
        check(f"{key}: commands left in the queue", figures["left_in_queue"], 0)
    for pipeline in PIPELINES:
        figures = r["pipelines"][pipeline.key]
        check(f"{pipeline.key}: connections the node closed", figures["lost"], 0)
        billing = figures.get("billing")
        if pipeline.billing and billing is None:
            check(f"{pipeline.key}: billing measured", False, True)
        if billing is not None:
            lam, counts = billing["lambda"], billing["standin"]
            sent = billing["sent"]
            check(f"{pipeline.key}: replies", billing["replies"], sent)
            check(f"{pipeline.key}: clients short of a reply", billing["clients_short"], 0)
            check(
                f"{pipeline.key}: MESSAGE events the Lambda handled",
                lam["events"].get("MESSAGE", 0),
                sent,
            )
            check(f"{pipeline.key}: replies the Lambda sent", lam["replies"], sent)
            check(
                f"{pipeline.key}: records failed or poller errors",
                lam["recordsFailed"] + lam["errors"],
                0,
            )
            check(f"{pipeline.key}: Lambda deletes failed", lam["deleteFailed"], 0)
            check(
                f"{pipeline.key}: PublishBatch calls the stand-in saw",
                counts["requests"].get("sns.PublishBatch", 0),
                lam["publishCalls"],
            )
            check(
                f"{pipeline.key}: messages received = deleted (Lambda)",
                lam["deleted"],
                lam["messages"],
            )
            bill = billed(billing)
            calls = bill["calls"]
            check(
                f"{pipeline.key}: SQS chunks beyond 64 KiB not accounted for",
                bill["unattributed"],
                ">= 0",
                bill["unattributed"] >= 0,
            )
            check(
                f"{pipeline.key}: calls of the node (send, receive, delete)",
                [calls["node send"], calls["node receive"], calls["node delete"]],
                "each >= 1",
                min(calls["node send"], calls["node receive"], calls["node delete"]) >= 1,
            )
        latency = figures.get("latency")
        if pipeline.latency:
            got = latency["replies"] if latency else 0
            check(f"{pipeline.key}: latency replies", got, plan.latency_messages)
            check(f"{pipeline.key}: stray replies", latency["stray"] if latency else -1, 0)
    return checks


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    """Each target met or not (a missed target does not fail the run; a wrong count does)."""
    ratios = r["ratios"]
    return {
        "events": ratios["sqs_over_http"] >= SQS_MIN_RATIO,
        "deliveries": ratios["sqs_packed_over_post"] <= DELIVERY_MAX_RATIO,
        "billed-fifo": r["billed_per_1000"]["fifo"] <= BILLED_MAX_PER_1000,
        "billed-standard": r["billed_per_1000"]["standard"] <= BILLED_MAX_PER_1000,
    }


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# Report


EVENTS_HEADER = (
    "path",
    "events/s",
    "vs HTTP",
    "node busy",
    "node CPU (us/event)",
    "HTTP's CPU/event over this",
    "events per message (HTTP: request)",
    "target",
    "result",
)
DELIVERIES_HEADER = (
    "commands from",
    "deliveries/s",
    "node CPU (us/delivery)",
    "vs POST",
    "target",
    "result",
)
BILLED_HEADER = (
    "events queue",
    *BILLED_ITEMS,
    "total",
    "$ per million messages",
    "target",
    "result",
)
LATENCY_HEADER = ("linger", "round trips", "p50 (ms)", "p99 (ms)", "max (ms)")


def events_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    events, met = r["events"], verdicts(r)
    http = events["http"]["rate"] or 1e-9
    http_cpu = events["http"]["cpu_us"]["server"]
    out = []
    for mode in EVENT_MODES:
        if mode.key == "picows":
            continue
        figures = events[mode.key]
        per_message = f"{figures['receiver_events'] / max(1, figures['receiver_messages']):,.1f}"
        target = mode.key == "sqs"
        out.append(
            (
                mode.label,
                f"{figures['rate']:,.0f}",
                f"{figures['rate'] / http:.2f}",
                f"{figures['busy_percent']['server']:.0f}%",
                f"{figures['cpu_us']['server']:.1f}",
                f"{http_cpu / (figures['cpu_us']['server'] or 1e-9):.2f}",
                per_message,
                f">= {SQS_MIN_RATIO:.2f}" if target else "-",
                _mark(met["events"]) if target else "-",
            )
        )
    return out


def deliveries_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    deliveries, met = r["deliveries"], verdicts(r)
    post = deliveries["post"]["node_cpu_us"] or 1e-9
    out = []
    for key, label in DELIVERY_MODES:
        figures = deliveries[key]
        target = key == "sqs-packed"
        out.append(
            (
                label,
                f"{figures['rate']:,.0f}",
                f"{figures['node_cpu_us']:.1f}",
                f"{figures['node_cpu_us'] / post:.2f}x",
                f"<= {DELIVERY_MAX_RATIO:g}x" if target else "-",
                _mark(met["deliveries"]) if target else "-",
            )
        )
    return out


def fifo_note(r: dict[str, Any]) -> str:
    """Why a FIFO events queue bills what it does, from this run's counts."""
    pipelines = r["pipelines"]
    fifo = pipelines["fifo"]["billing"]
    per_1000, lingering = fifo["per_1000"], pipelines["fifo-linger-100"]["billing"]
    invocations = 1000 * fifo["lambda"]["invocations"] / fifo["sent"]
    verdict = "misses" if fifo["per_1000_total"] > BILLED_MAX_PER_1000 else "meets"
    return (
        f"**Why the FIFO row {verdict} {BILLED_MAX_PER_1000}.** Lambda takes no batching window "
        'on a FIFO queue (its documentation: "Batching window is not supported for FIFO '
        'queues"), so each batch the node sends is an invocation of its own: '
        f"{invocations:.1f} invocations per 1,000 messages for {per_1000['node send']:.1f} "
        "sends, and each invocation costs a receive, a delete, a publish of its replies, their "
        "delivery and the node's receive and delete: seven billed requests a batch. At "
        f"{r['plan']['billed_rate']:,.0f} messages/s a linger of {NODE.events_linger_ms} ms "
        "makes a batch of about "
        f"{1 + r['plan']['billed_rate'] * NODE.events_linger_ms / 1000:.0f} events, so about "
        f"{7 * per_1000['node send']:.0f} requests per 1,000 messages is the floor whatever "
        "the packing. The linger is the one lever: at 100 ms the same pipeline bills "
        f"{lingering['per_1000_total']:.1f} (its row in the first table above), for up to 100 "
        "ms more before an "
        "event leaves the node at light load. A standard queue, whose 1 s batching window "
        "gathers many sends into an invocation, stays under the target at the default linger."
    )


def billed_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    met = verdicts(r)
    out = []
    for pipeline in PIPELINES:
        billing = r["pipelines"][pipeline.key].get("billing")
        if billing is None:
            continue
        per_1000 = billing["per_1000"]
        target = pipeline.key in ("fifo", "standard")
        out.append(
            (
                pipeline.label,
                *(f"{per_1000.get(item, 0):.1f}" for item in BILLED_ITEMS),
                f"{billing['per_1000_total']:.1f}",
                f"${billing['dollars_per_million']:.3f}",
                f"<= {BILLED_MAX_PER_1000}" if target else "-",
                _mark(met[f"billed-{pipeline.key}"]) if target else "-",
            )
        )
    return out


def latency_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    out = []
    default = f"default ({NODE.events_linger_ms} ms)"
    for key, label in (("fifo", default), ("fifo-linger-0", "--events-linger-ms 0")):
        figures = r["pipelines"][key]["latency"]
        out.append(
            (
                label,
                f"{figures['replies']}",
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{figures['max_ms']:.2f}",
            )
        )
    return out


def generator_verdict(r: dict[str, Any]) -> tuple[str, str]:
    """Is the generator the bottleneck? Not when the same clients, one way, go
    GENERATOR_HEADROOM times as fast against a picows echo server (which also sends every message
    back) as against any node; nor when, short of that, in every node row the generator cost that
    many times less CPU per message than the node and was less than half busy."""
    events = r["events"]
    wanted = report.GENERATOR_HEADROOM
    picows, headroom = events["picows"], r["ratios"]["picows_over_fastest_node"]
    nodes = [events[mode.key] for mode in EVENT_MODES if mode.key != "picows"]
    cheaper = min(e["cpu_us"]["server"] / (e["cpu_us"]["generator"] or 1e-9) for e in nodes)
    busiest = max(e["busy_percent"]["generator"] for e in nodes)
    facts = (
        f"The same {r['plan']['connections']} clients, sending one way with the same bound on "
        f"what is in flight, reached {picows['rate']:,.0f} messages/s against a picows echo "
        f"server on CPU {r['machine']['server_cpu']} (which also sends each one back), "
        f"{headroom:.1f}x the fastest node row. In the node rows the generator cost at least "
        f"{cheaper:.1f}x less CPU per message than the node (against the node to SQS: "
        f"{events['sqs']['cpu_us']['generator']:.1f} us, the node "
        f"{events['sqs']['cpu_us']['server']:.1f} us) and was at most {busiest:.0f}% busy."
    )
    if headroom >= wanted:
        return "No", facts + " The node set the pace."
    if cheaper >= wanted and busiest < 50:
        return "No", (
            facts + f" The picows rate is under the {wanted:g}x wanted because the generator "
            "also reads every echo there; against the nodes it had time to spare, and the "
            "node set the pace."
        )
    return "Possibly", (
        facts + f" That is under the {wanted:g}x wanted: read the node's CPU per event, which "
        "does not depend on the generator, rather than the rates."
    )


def events_per_send(r: dict[str, Any]) -> float:
    """Events in one SendMessageBatch of the standard queue's packed pipeline."""
    billing = r["pipelines"]["standard"]["billing"]
    return float(billing["sent"] / max(1, billing["billed"]["calls"]["node send"]))


CALLS_HEADER = (
    "events queue",
    "events a message",
    "SendMessageBatch calls",
    "Lambda receives",
    "Lambda invocations",
    "records an invocation",
    "SNS messages",
    "node receives",
    "node CPU (us/round trip)",
    "CPU 1 busy",
)


def calls_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """What the billed requests were, per 1,000 client messages, and what the node spent."""
    out = []
    for pipeline in PIPELINES:
        billing = r["pipelines"][pipeline.key].get("billing")
        if billing is None:
            continue
        bill, scale = billing["billed"], 1000 / billing["sent"]
        calls = bill["calls"]
        out.append(
            (
                pipeline.label,
                f"{bill['events_per_message']:.1f}",
                f"{calls['node send'] * scale:.1f}",
                f"{calls['Lambda receive'] * scale:.1f}",
                f"{bill['invocations'] * scale:.1f}",
                f"{billing['lambda']['messages'] / max(1, bill['invocations']):.1f}",
                f"{bill['sns_messages'] * scale:.1f}",
                f"{calls['node receive'] * scale:.1f}",
                f"{billing['node_cpu_us_per_round_trip']:.0f}",
                f"{billing['load_cpu_busy_percent']:.0f}%",
            )
        )
    return out


def unattributed_note(r: dict[str, Any]) -> str:
    """Billed chunks over 64 KiB that could be the node's sends or its receives, if any."""
    notes = []
    for key, figures in r["pipelines"].items():
        billing = figures.get("billing")
        if billing and billing["billed"]["unattributed"]:
            per_1000 = billing["billed"]["unattributed"] * 1000 / billing["sent"]
            notes.append(f"{key}: {per_1000:.1f}")
    if not notes:
        return ""
    return (
        " Billed chunks beyond 64 KiB that the counts cannot tell between the node's sends and "
        f"its receives, counted as sends, per 1,000: {'; '.join(notes)}."
    )


def checks_summary(checks: Sequence[dict[str, Any]]) -> str:
    """What the counts checked, in a sentence (the list is in the raw results)."""
    kinds = sorted({check["name"].split(": ", 1)[1] for check in checks})
    passed = sum(1 for check in checks if check["ok"])
    return (
        f"{passed} of {len(checks)} counts agreed, over every path and row: "
        + "; ".join(kinds)
        + ". Each is listed in bench/results/aws.json (`checks`)."
    )


def markdown(r: dict[str, Any]) -> str:
    plan, meta, mapping = r["plan"], r["machine"], r["event_source_mapping"]
    pin = (
        f"pinned with `taskset`: the node on CPU {meta['server_cpu']}; the load generator, the "
        f"AWS stand-in, the HTTP origin and the simulated Lambda on CPU {meta['load_cpu']}"
        if meta["pinned"]
        else "not pinned"
    )
    gain_events = r["events"]["sqs"]["rate"] / (r["events"]["sqs-single"]["rate"] or 1e-9)
    head = [
        f"Generated by `{r['command']}` on {meta['date']} in {r['seconds']:.0f} s; "
        f"{meta['nproc']} CPUs ({meta['cpu_model']}), Python {meta['python']}, picows "
        f"{meta['packages'].get('picows')}; {pin}. Every figure below is from this one run; a "
        "count that disagrees (an event lost, a reply or a delivery missing) fails the run and "
        "writes no report. AWS is `bench/aws_standin.py`: SQS, SNS and STS answered from memory, "
        "each request billed as AWS bills it (one request per started 64 KiB of the messages it "
        "carries or returns, an SNS delivery billing the queue likewise). Every node runs "
        "`python -m runtime serve --keepalive-interval 0 --local-only true`, the rest default "
        f"(packing: {NODE.events_per_message:,} events and {NODE.events_message_bytes // 1024} "
        f"KiB a message at most, a {NODE.events_linger_ms} ms linger, "
        f"{NODE.events_fifo_groups} FIFO groups).",
    ]
    events_text = [
        f"**Events to the origin, one way.** {plan['connections']} clients send "
        f"{plan['payload_bytes']}-byte text messages and expect no reply; at most "
        f"{plan['credit']:,} are sent and not yet taken by the receiver, so the node always has "
        f"work and never a long backlog. {plan['rounds']} rounds, the paths rotating, each "
        f"{plan['warmup']:g} s of warm-up then {plan['window']:g} s measured; events/s and node "
        "CPU per event are the median round's. The rate counts what the receiver took, as the "
        "node's `eventsDelivered` "
        "shows it (SQS answered the SendMessageBatch, the origin answered 200); after each round "
        "the harness checks the receiving side holds every message: the HTTP origin's count of "
        "MESSAGE events, or the events drained from the queue and read with the SDK's parser. "
        "The HTTP origin (`python -m bench.aws --child sink`) answers each batch at once with no "
        "command. A node less than fully busy was waiting on its origin (HTTP keeps 4 requests "
        "in flight), so the ratio of CPU per event is the fairer comparison of the work done; "
        f"the target is on events/s. Packing takes {gain_events:.1f}x the events/s of one event "
        "a message.",
    ]
    deliveries_text = [
        "**Commands to the clients.** The same node (events to a FIFO queue) gets commands from "
        f"POST /commands, {plan['sends_per_post']} `send`s a request ({plan['post_deliveries']:,} "
        "deliveries a round, 4 requests in flight), and from its commands queue, which the "
        f"stand-in fills at once with {plan['packed_deliveries']:,} deliveries a round: bodies "
        f"of {plan['replies_per_message']} sends as the SDK packs a Lambda's replies "
        "(`runtime/origin/packing.py`), or one send a body "
        f"({plan['single_deliveries']:,}). The clients count every delivery; node CPU is from "
        "the first command to the last delivery, per delivery (the median round's).",
    ]
    billed_text = [
        "**Billed requests, end to end.** Each row is its own stand-in, node and simulated "
        f"Lambda. {plan['connections']} clients send {plan['billed_messages']:,} messages, "
        f"{plan['billed_rate']:,.0f}/s in all, and every one must get its reply. At that rate "
        f"the {NODE.events_linger_ms} ms linger gathers about {events_per_send(r):.0f} events a "
        "SendMessageBatch (on FIFO spread over the messages of their groups). The node sends "
        "events to the events queue; the simulated Lambda (a process on CPU 1) answers each "
        "MESSAGE with one `send` to its sender through a `GatewayClient`, from a handler built "
        "with the SDK's `gateway_handler`; the commands topic delivers raw into the commands "
        "queue, which the node long-polls (2 workers). The counts are taken from when the "
        "queues were empty to when they were empty again, all replies in."
        + unattributed_note(r)
        + " Prices: SQS standard "
        f"${prices.SQS_STANDARD_MILLION.usd:.2f}, FIFO ${prices.SQS_FIFO_MILLION.usd:.2f}, SNS "
        f"${prices.SNS_STANDARD_PUBLISH_MILLION.usd:.2f} per million requests (bench/prices.py); "
        "the commands queue and topic are standard, as the stack makes them; an SNS delivery is "
        "billed as a request of the commands queue.",
        "**The Lambda poller is a model**, not Lambda: AWS does not document its pollers fully. "
        f"{plan['lambda_pollers']} pollers, as Lambda starts with, each long-polling the events "
        "queue (ReceiveMessage, 10 messages at most, all attributes, the first wait 20 s) until "
        "the batch is full or its batching window, which starts at its first message, ends; "
        "then one invocation, then DeleteMessageBatch of the records that did not fail. The "
        f"settings are read from infra/origin.py: a FIFO queue batch of "
        f"{mapping['fifo_batch_size']} with no window, a standard queue batch of "
        f"{mapping['standard_batch_size']} within {mapping['standard_window']:g} s. Real Lambda "
        "may poll more or less often; a poller's receive returns as soon as a message is "
        "there, so Lambda receive counts follow how many messages the node sends.",
    ]
    latency = r["linger_added_ms"]
    latency_text = [
        "**Latency added by the linger.** At light load, "
        f"{plan['latency_rate']:g} messages/s, {plan['latency_messages']} round trips each "
        "(client send to reply), through the FIFO pipeline above (no batching window, so the "
        "linger is not hidden behind Lambda's): the default linger adds "
        f"{latency['p50_ms']:+.2f} ms at p50 and {latency['p99_ms']:+.2f} ms at p99 against "
        "`--events-linger-ms 0`. The stand-in answers at once, so these round trips are the "
        "node's, the SDK's and the poller model's own, not AWS's.",
    ]
    verdict, reason = generator_verdict(r)
    paragraphs = "\n\n".join(fill(p) for p in head)
    return (
        f"{SECTION}\n\n{paragraphs}\n\n"
        f"{fill(events_text[0])}\n\n{markdown_table(EVENTS_HEADER, events_rows(r))}\n\n"
        f"{fill(deliveries_text[0])}\n\n{markdown_table(DELIVERIES_HEADER, deliveries_rows(r))}\n\n"
        + "\n\n".join(fill(p) for p in billed_text)
        + f"\n\n{markdown_table(BILLED_HEADER, billed_rows(r))}\n\n"
        "What those requests were, per 1,000 client messages:\n\n"
        f"{markdown_table(CALLS_HEADER, calls_rows(r))}\n\n"
        f"{fill(fifo_note(r))}\n\n"
        f"{fill(latency_text[0])}\n\n{markdown_table(LATENCY_HEADER, latency_rows(r))}\n\n"
        f"### Is the load generator the bottleneck? {verdict}\n\n{fill(reason)}\n\n"
        + (fill("Noise: " + "; ".join(noise(r)) + ".") + "\n\n" if noise(r) else "")
        + fill(checks_summary(r["checks"]))
        + "\n"
    )


NOISY_OTHERS_PERCENT = 25.0  # other processes' share of a CPU that makes a round suspect
BUSY_LOAD_CPU_PERCENT = 90.0


def noise(r: dict[str, Any]) -> list[str]:
    """What may have distorted this run's figures: other processes on the shared machine, or
    CPU 1 too busy for the simulated Lambda to keep pace."""
    notes = []
    for part, figures in (("events/s", r["events"]), ("deliveries", r["deliveries"])):
        for key, entry in figures.items():
            if entry["others_percent"] > NOISY_OTHERS_PERCENT:
                notes.append(
                    f"{part}, {key}: other processes took up to {entry['others_percent']:.0f}% "
                    "of a CPU in a round (the median round is reported)"
                )
    for key, figures in r["pipelines"].items():
        billing = figures.get("billing")
        if billing and billing["load_cpu_busy_percent"] > BUSY_LOAD_CPU_PERCENT:
            notes.append(
                f"end to end, {key}: CPU 1 was {billing['load_cpu_busy_percent']:.0f}% busy; the "
                "simulated Lambda may have lagged into fuller batches than Lambda would take"
            )
    return notes


def print_summary(r: dict[str, Any]) -> None:
    print(markdown_table(EVENTS_HEADER, events_rows(r)))
    print()
    print(markdown_table(DELIVERIES_HEADER, deliveries_rows(r)))
    print()
    print(markdown_table(BILLED_HEADER, billed_rows(r)))
    print()
    print(markdown_table(LATENCY_HEADER, latency_rows(r)))
    added = r["linger_added_ms"]
    print(f"linger adds {added['p50_ms']:+.2f} ms at p50, {added['p99_ms']:+.2f} ms at p99")
    print("is the load generator the bottleneck? " + " - ".join(generator_verdict(r)))
    for note in noise(r):
        print(f"warning: {note}")
    for row in check_rows(r["checks"]):
        if row[-1] != "PASS":
            print("FAIL " + " | ".join(row))


# Entry points


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else Plan()
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    pin, cpus = pick_cpus(args.no_pin, ("server", "generator"))
    if pin:
        os.sched_setaffinity(0, {cpus["generator"]})  # type: ignore[arg-type]
    else:
        log.warning("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin)
    pin = fleet.pin
    started = time.monotonic()
    try:
        results = await AwsBench(plan, fleet, cpus).measure()
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.close()
    results.update(
        {
            "plan": asdict(plan),
            "machine": report.machine(pin, cpus["server"], cpus["generator"]),
            "seconds": round(time.monotonic() - started, 1),
            "command": " ".join([COMMAND, *args.argv]),
        }
    )
    results["checks"] = check_counts(results, plan)
    if all(check["ok"] for check in results["checks"]):
        summarize(results)
        results["targets"] = verdicts(results)
        print_summary(results)
    else:
        for row in check_rows(results["checks"]):
            if row[-1] != "PASS":
                print("FAIL " + " | ".join(row))
    return finish(
        results,
        name="aws",
        quick=plan.quick,
        out=args.json,
        section=markdown,
        strict=args.strict,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aws", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--rounds", type=int, help="rounds of parts 1 and 2 (3; quick 1)")
    parser.add_argument("--json", type=Path, help="raw results (default bench/results/aws.json)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", choices=("sink", "lambda"), help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    args.argv = sys.argv[1:] if argv is None else argv
    return run_harness(log, "aws", main_async(args))


if __name__ == "__main__":
    sys.exit(main())
