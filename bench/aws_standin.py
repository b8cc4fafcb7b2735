"""A fast stand-in for the AWS calls of the node and the origin SDK, for benchmarks.

moto answers correctly but far too slowly to load-test the AWS path. This answers from memory at
once, feeds a queue at a set rate, and counts requests and *billed* requests: SQS and SNS bill each
started 64 KiB of a request's payload as one request, and an SNS delivery into a queue bills the
queue the same way. In process: `AwsStandIn`; alone: `python -m bench.aws_standin --port P`
prints `ready URL` and takes JSON control requests under /_standin/.

Implemented, in the wire formats boto3 speaks:
- SQS (JSON protocol): SendMessage[Batch], ReceiveMessage (long polling, visibility timeout,
  message and system attributes), DeleteMessage[Batch], ChangeMessageVisibility[Batch],
  GetQueueAttributes, GetQueueUrl, CreateQueue; AWS's MD5 digests and error shapes. FIFO queues:
  group required, 5-minute deduplication, sequence numbers, a group with a message in flight is
  never handed out, a group's messages come in order.
- SNS (query protocol): Publish, PublishBatch, GetTopicAttributes, CreateTopic, Subscribe (SQS
  endpoints only); raw or Notification delivery; FIFO topics pass groups on to FIFO queues.
- STS: GetCallerIdentity.
Faults, for tests of what a client does when AWS fails (`inject`, or POST /_standin/faults): every
Nth call of an action answered 500 before it is carried out, every Nth carried out and then
answered 500 (the caller cannot tell it apart: it sends again), every Nth entry of a batch failed
alone (InternalError, not the sender's fault). Every Nth, not at random, so a test is repeatable.
Not implemented: signature checks, DelaySeconds (ignored), retention, dead-letter queues, SNS
filter policies, message content checks; other actions get 400 InvalidAction.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import heapq
import itertools
import json
import re
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from aiohttp import web

from bench.common import run
from runtime.names import partition

BILLING_CHUNK = 65_536
MAX_BATCH_ENTRIES = 10
SQS_MAX_BATCH_BYTES = 1 << 20  # a SendMessageBatch's messages together, whatever the queue
SQS_DEFAULT_MESSAGE_BYTES = 1 << 20  # a new queue's MaximumMessageSize
SNS_MAX_PUBLISH_BYTES = 256 << 10  # one Publish, or a PublishBatch's messages together
DEDUPLICATION_SECONDS = 300.0
MAX_VISIBILITY_SECONDS = 43_200
SNS_NAMESPACE = "http://sns.amazonaws.com/doc/2010-03-31/"
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
CONTROL_PLANE = {"GetQueueAttributes", "GetQueueUrl", "CreateQueue", "GetTopicAttributes"}
CONTROL_PLANE |= {"CreateTopic", "Subscribe", "GetCallerIdentity"}
# SQS error shape -> the query-protocol code AWS sends in x-amzn-query-error (boto3's error Code).
SQS_QUERY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    **{
        shape: f"AWS.SimpleQueueService.{shape}"
        for shape in (
            "TooManyEntriesInBatchRequest",
            "EmptyBatchRequest",
            "BatchEntryIdsNotDistinct",
            "InvalidBatchEntryId",
            "BatchRequestTooLong",
            "MessageNotInflight",
        )
    },
}
TALLIES = ("controlPlane", "emptyReceives", "messagesSent", "messagesDelivered", "messagesFed")
TALLIES += ("bytesIn", "bytesOut", "faultsInjected")
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
_RECEIPT_PREFIX = "rh."

Attributes = dict[str, dict[str, str]]  # SQS's shape: name -> DataType and StringValue/BinaryValue


class AwsError(Exception):
    """An error AWS would answer with; `code` is SQS's shape name or SNS's query code;
    `sender`: the caller's fault (4xx), or the service's (5xx, worth retrying)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.sender = status < 500


def injected_error() -> AwsError:
    return AwsError("InternalError", "We encountered an internal error (injected).", 500)


@dataclass
class Faults:
    """Which calls and entries fail, by action name: every Nth (0 or absent: never).

    `calls`: answered 500 before anything is done; `answers`: done, then answered 500 (on a FIFO
    queue the caller's resend is deduplicated; elsewhere it is delivered twice); `entries`:
    a batch action's entries, each failing alone."""

    calls: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for kind in (self.calls, self.answers, self.entries):
            for action, every in kind.items():
                if not isinstance(every, int) or isinstance(every, bool) or every < 0:
                    raise ValueError(f"fault {action!r}: every Nth needs N >= 0 (got {every!r})")

    def hits(self, kind: str, action: str) -> bool:
        """Whether this call (or entry) of `action` is one of kind `kind` to fail; counts it."""
        every = getattr(self, kind).get(action, 0)
        if not every:
            return False
        key = f"{kind}.{action}"
        self.seen[key] += 1
        if self.seen[key] % every:
            return False
        self.injected[key] += 1
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "answers": self.answers,
            "entries": self.entries,
            "injected": dict(self.injected),
        }


def billed_requests(payload: int) -> int:
    """What AWS bills a request carrying `payload` bytes: one per started 64 KiB chunk."""
    return max(1, -(-payload // BILLING_CHUNK))


def attributes_size(attributes: Attributes) -> int:
    """The bytes SQS and SNS count for attributes: names, data types and values."""
    size = 0
    for name, value in attributes.items():
        text = value.get("StringValue")
        data = text.encode() if text is not None else base64.b64decode(value.get("BinaryValue", ""))
        size += len(name.encode()) + len(value["DataType"].encode()) + len(data)
    return size


def attributes_md5(attributes: Attributes) -> str:
    """AWS's MD5OfMessageAttributes: per name in order, length-prefixed name, type and value, the
    value after a transport byte (1 string, 2 binary)."""
    digest = hashlib.md5(usedforsecurity=False)

    def add(data: bytes) -> None:
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)

    for name in sorted(attributes):
        value = attributes[name]
        add(name.encode())
        add(value["DataType"].encode())
        if "StringValue" in value:
            digest.update(b"\x01")
            add(value["StringValue"].encode())
        else:
            digest.update(b"\x02")
            add(base64.b64decode(value.get("BinaryValue", "")))
    return digest.hexdigest()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(slots=True, eq=False)
class Message:
    body: str
    attributes: Attributes
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    sent_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    group: str | None = None
    deduplication_id: str | None = None
    sequence: str = ""
    receive_count: int = 0
    first_receive_ms: int = 0
    receipt: str = ""
    visible_at: float = 0.0

    @property
    def size(self) -> int:
        """As AWS counts it: body and attributes."""
        return len(self.body.encode()) + attributes_size(self.attributes)


class DeduplicationWindow:
    """What a FIFO queue or topic accepted under each deduplication ID in the last 5 minutes."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, Any]] = {}
        self._order: deque[tuple[float, str]] = deque()

    def get(self, key: str, now: float) -> Any:
        while self._order and self._order[0][0] <= now:
            expiry, old = self._order.popleft()
            if self._seen.get(old, (None,))[0] == expiry:
                del self._seen[old]
        return self._seen.get(key, (0.0, None))[1]

    def remember(self, key: str, value: Any, now: float) -> None:
        expiry = now + DEDUPLICATION_SECONDS
        self._seen[key] = (expiry, value)
        self._order.append((expiry, key))


class Queue:
    """One queue in memory: O(1) sends and receives, in-flight messages by receipt handle,
    visibility expiries on a heap (stale entries skipped), long pollers woken one at a time."""

    def __init__(self, name: str, url: str, arn: str, attributes: dict[str, str]) -> None:
        self.name, self.url, self.fifo = name, url, name.endswith(".fifo")
        now = str(int(time.time()))
        self.attributes = {
            "QueueArn": arn,
            "VisibilityTimeout": "30",
            "MaximumMessageSize": str(SQS_DEFAULT_MESSAGE_BYTES),
            "MessageRetentionPeriod": "345600",
            "DelaySeconds": "0",
            "ReceiveMessageWaitTimeSeconds": "0",
            "CreatedTimestamp": now,
            "LastModifiedTimestamp": now,
            **({"FifoQueue": "true", "ContentBasedDeduplication": "false"} if self.fifo else {}),
            **attributes,
        }
        self.max_message_bytes = int(self.attributes["MaximumMessageSize"])
        self.visible: deque[Message] = deque()  # standard queues
        self.groups: dict[str, deque[Message]] = {}  # FIFO: each group's visible messages
        self.ready: dict[str, None] = {}  # FIFO: groups with visible messages and none in flight
        self.busy: Counter[str] = Counter()  # FIFO: messages in flight per group
        self.visible_count = 0
        self.inflight: dict[str, Message] = {}
        self.deduplication = DeduplicationWindow()
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._expiries: list[tuple[float, int, str]] = []
        self._ticket = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def put(self, message: Message) -> None:
        if self.fifo:
            assert message.group is not None
            self.groups.setdefault(message.group, deque()).append(message)
            if not self.busy[message.group]:
                self.ready[message.group] = None
        else:
            self.visible.append(message)
        self.visible_count += 1
        self.wake()

    def receivable(self) -> bool:
        return bool(self.ready if self.fifo else self.visible)

    def take(self, limit: int, visibility: float, now: float) -> list[Message]:
        """Up to `limit` visible messages, now in flight for `visibility` seconds."""
        self._reclaim(now)
        taken: list[Message] = []
        if self.fifo:
            while self.ready and len(taken) < limit:
                name = next(iter(self.ready))
                del self.ready[name]
                group, before = self.groups[name], len(taken)
                while group and len(taken) < limit:
                    taken.append(group.popleft())
                self.busy[name] += len(taken) - before  # the rest waits for these to settle
        else:
            while self.visible and len(taken) < limit:
                taken.append(self.visible.popleft())
        now_ms = int(time.time() * 1000)
        for message in taken:
            message.receive_count += 1
            message.first_receive_ms = message.first_receive_ms or now_ms
            message.receipt = f"{_RECEIPT_PREFIX}{message.id}.{message.receive_count}"
            self.inflight[message.receipt] = message
            self._hide(message, now + visibility)
        self.visible_count -= len(taken)
        if taken and self.receivable():
            self.wake()
        return taken

    def delete(self, receipt: str) -> bool:
        message = self.inflight.pop(receipt, None)
        if message is not None and self.fifo:
            self._unlock_one(message.group)
        return message is not None

    def change_visibility(self, receipt: str, seconds: float, now: float) -> bool:
        message = self.inflight.get(receipt)
        if message is not None:
            self._hide(message, now + seconds)
        return message is not None

    def depth(self) -> int:
        return self.visible_count + len(self.inflight)

    def wake(self) -> None:
        """Wake one long poller; it wakes the next if messages are left after its receive."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _hide(self, message: Message, until: float) -> None:
        message.visible_at = until
        heapq.heappush(self._expiries, (until, next(self._ticket), message.receipt))
        if self._timer is None or until < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(until, self._on_expiry)

    def _on_expiry(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        self._reclaim(loop.time())
        if self.receivable():
            self.wake()
        while self._expiries and not self._live(self._expiries[0]):
            heapq.heappop(self._expiries)
        if self._expiries:
            self._timer = loop.call_at(self._expiries[0][0], self._on_expiry)

    def _live(self, expiry: tuple[float, int, str]) -> bool:
        message = self.inflight.get(expiry[2])
        return message is not None and message.visible_at == expiry[0]

    def _reclaim(self, now: float) -> None:
        """Messages whose visibility timeout ended become visible again, first in line."""
        while self._expiries and self._expiries[0][0] <= now:
            expiry = heapq.heappop(self._expiries)
            if self._live(expiry):
                self._requeue(self.inflight.pop(expiry[2]))

    def _requeue(self, message: Message) -> None:
        self.visible_count += 1
        if not self.fifo:
            self.visible.appendleft(message)
            return
        assert message.group is not None
        group = self.groups[message.group]
        position = 0  # in flight is a prefix of the group: back in front, in sequence order
        while position < len(group) and group[position].sequence < message.sequence:
            position += 1
        group.insert(position, message)
        self._unlock_one(message.group)

    def _unlock_one(self, name: str | None) -> None:
        assert name is not None
        self.busy[name] -= 1
        if self.busy[name] > 0:
            return
        del self.busy[name]
        if self.groups[name]:
            self.ready[name] = None
            self.wake()
        else:
            del self.groups[name]


@dataclass(eq=False)
class Subscription:
    arn: str
    queue: Queue
    raw: bool


@dataclass(eq=False)
class Topic:
    name: str
    arn: str
    attributes: dict[str, str]
    subscriptions: list[Subscription] = field(default_factory=list)
    deduplication: DeduplicationWindow = field(default_factory=DeduplicationWindow)

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


class AwsStandIn:
    """SQS, SNS and STS on one port, in memory; see the module docstring for what it answers."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        account: str = "000000000000",
    ) -> None:
        self.host, self.port, self.region, self.account = host, port, region, account
        self.partition = partition(region)  # its ARNs say arn:aws-cn: in cn-north-1, as AWS's do
        self.queues: dict[str, Queue] = {}
        self.topics: dict[str, Topic] = {}
        self._runner: web.AppRunner | None = None
        self._sequence = itertools.count(10**19)
        self.faults = Faults()
        # SendMessage, DeleteMessage and ChangeMessageVisibility, one entry (their Batch too).
        self._per_entry: dict[str, Callable[[Queue, dict[str, Any]], dict[str, str]]] = {
            "SendMessage": self._send_entry,
            "DeleteMessage": self._delete_entry,
            "ChangeMessageVisibility": self._change_visibility_entry,
        }
        self._sns: dict[str, Callable[[dict[str, str]], tuple[str, int]]] = {
            "Publish": self._publish,
            "PublishBatch": self._publish_batch,
            "GetTopicAttributes": self._get_topic_attributes,
            "CreateTopic": self._create_topic,
            "Subscribe": self._subscribe,
        }
        self.reset_counts()

    # The in-process interface ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/_standin/{name}", self._control)
        app.router.add_post("/{path:.*}", self._aws)
        # A stop does not wait for long polls to end.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def create_queue(self, name: str, *, attributes: dict[str, str] | None = None) -> str:
        """The queue's URL; a name ending in .fifo makes a FIFO queue. Idempotent by name."""
        if not _QUEUE_NAME.fullmatch(name):
            raise AwsError("InvalidParameterValue", f"Invalid queue name {name!r}")
        if name not in self.queues:
            arn = f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"
            url = f"{self.url}/{self.account}/{name}"
            self.queues[name] = Queue(name, url, arn, dict(attributes or {}))
        return self.queues[name].url

    def create_topic(self, name: str, *, attributes: dict[str, str] | None = None) -> str:
        """The topic's ARN; a name ending in .fifo makes a FIFO topic. Idempotent by name."""
        arn = f"arn:{self.partition}:sns:{self.region}:{self.account}:{name}"
        if arn not in self.topics:
            known = {"TopicArn": arn, "Owner": self.account}
            if name.endswith(".fifo"):
                known |= {"FifoTopic": "true", "ContentBasedDeduplication": "false"}
            self.topics[arn] = Topic(name, arn, known | (attributes or {}))
        return arn

    def subscribe(self, topic_arn: str, queue_url: str, *, raw: bool = True) -> str:
        """SNS delivers every message of the topic into the queue from now on."""
        topic, queue = self._topic(topic_arn), self._queue(queue_url)
        if queue.fifo and not topic.fifo:
            raise AwsError("InvalidParameter", "Invalid parameter: a FIFO queue needs a FIFO topic")
        subscription = Subscription(f"{topic_arn}:{uuid.uuid4()}", queue, raw)
        topic.subscriptions.append(subscription)
        return subscription.arn

    def feed(
        self, queue_url: str, body: Callable[[int], str], *, rate: float, count: int
    ) -> asyncio.Task[int]:
        """Put `count` messages `body(i)` into the queue, `rate` a second, evenly spaced against
        the start time (no drift); the task's result is how many were fed."""
        if rate <= 0 or count < 0:
            raise ValueError(f"feed needs rate > 0 and count >= 0 (got {rate}, {count})")
        queue = self._queue(queue_url)
        return asyncio.get_running_loop().create_task(self._feed(queue, body, rate, count))

    def inject(
        self,
        *,
        calls: dict[str, int] | None = None,
        answers: dict[str, int] | None = None,
        entries: dict[str, int] | None = None,
    ) -> None:
        """Fail from now on every Nth call, answer or batch entry of the named actions (see
        `Faults`); replaces what was injected before. `inject()` alone stops every fault."""
        self.faults = Faults(dict(calls or {}), dict(answers or {}), dict(entries or {}))

    def counts(self) -> dict[str, Any]:
        return {"requests": dict(self._requests), "billed": dict(self._billed), **self._tallies}

    def reset_counts(self) -> None:
        self._requests: Counter[str] = Counter()
        self._billed = {"sqs": 0, "sns": 0, "snsDeliveries": 0}
        self._tallies = dict.fromkeys(TALLIES, 0)

    def depth(self, queue_url: str) -> int:
        """Visible and in-flight messages."""
        return self._queue(queue_url).depth()

    # Requests ----------------------------------------------------------------------------------

    async def _aws(self, request: web.Request) -> web.Response:
        """One AWS API call: SQS by its X-Amz-Target header, SNS and STS by their Action."""
        body = await request.read()
        target = request.headers.get("X-Amz-Target")
        if target is not None:
            response = await self._sqs_call(target.rpartition(".")[2], body)
        else:
            response = self._query_call(dict(parse_qsl(body.decode(), keep_blank_values=True)))
        self._tallies["bytesIn"] += len(body)
        self._tallies["bytesOut"] += len(response.body)  # type: ignore[arg-type]
        return response

    def _count(self, service: str, action: str, payload: int) -> None:
        self._requests[f"{service}.{action}"] += 1
        self._tallies["controlPlane"] += action in CONTROL_PLANE
        if service != "sts":
            self._billed[service] += billed_requests(payload)

    async def _sqs_call(self, action: str, body: bytes) -> web.Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        try:
            if self._fault("calls", action):
                raise injected_error()
            result, payload = await self._sqs_action(action, json.loads(body or b"{}"))
            if self._fault("answers", action):
                raise injected_error()
        except AwsError as error:
            self._count("sqs", action, 0)
            code = SQS_QUERY_CODES.get(error.code, error.code)
            headers["x-amzn-query-error"] = f"{code};{'Sender' if error.sender else 'Receiver'}"
            result = {"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message}
            text, status = json.dumps(result), error.status
        else:
            self._count("sqs", action, payload)
            text, status = json.dumps(result), 200
        return web.Response(
            status=status, text=text, content_type="application/x-amz-json-1.0", headers=headers
        )

    async def _sqs_action(self, action: str, args: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The answer to one SQS call, and its payload (bytes of messages carried) for billing."""
        if action == "GetQueueUrl":
            return {"QueueUrl": self._queue(str(args.get("QueueName"))).url}, 0
        if action == "CreateQueue":
            name, attributes = str(args.get("QueueName")), args.get("Attributes")
            return {"QueueUrl": self.create_queue(name, attributes=attributes)}, 0
        queue = self._queue(args.get("QueueUrl"))
        if action == "ReceiveMessage":
            return await self._receive_message(queue, args)
        if action == "GetQueueAttributes":
            return self._queue_attributes(queue, args.get("AttributeNames") or []), 0
        single = action.removesuffix("Batch")
        handle = self._per_entry.get(single)
        if handle is None:
            raise AwsError("InvalidAction", f"The stand-in does not implement {action}.")
        entries = [args] if single == action else _batch_entries(args.get("Entries"))
        payload = sum(_entry_size(entry) for entry in entries) if single == "SendMessage" else 0
        if single == action:
            return handle(queue, args), payload
        if payload > SQS_MAX_BATCH_BYTES:
            raise AwsError(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {SQS_MAX_BATCH_BYTES} bytes. "
                f"You have sent {payload} bytes.",
            )
        return _batch_result(
            entries, lambda entry: self._entry(action, handle, queue, entry)
        ), payload

    def _fault(self, kind: str, action: str) -> bool:
        hit = self.faults.hits(kind, action)
        self._tallies["faultsInjected"] += hit
        return hit

    def _entry(
        self,
        action: str,
        handle: Callable[[Queue, dict[str, Any]], dict[str, str]],
        queue: Queue,
        entry: dict[str, Any],
    ) -> dict[str, str]:
        if self._fault("entries", action):
            raise injected_error()
        return handle(queue, entry)

    def _query_call(self, params: dict[str, str]) -> web.Response:
        action = params.get("Action", "")
        sts = action == "GetCallerIdentity"
        service, namespace = ("sts", STS_NAMESPACE) if sts else ("sns", SNS_NAMESPACE)
        request_id = _tag("RequestId", str(uuid.uuid4()))
        try:
            if self._fault("calls", action):
                raise injected_error()
            if sts:
                result, payload = self._caller_identity(), 0
            elif action in self._sns:
                result, payload = self._sns[action](params)
            else:
                raise AwsError("InvalidAction", f"The stand-in does not implement {action!r}.")
            if self._fault("answers", action):
                raise injected_error()
        except AwsError as error:
            self._count(service, action, 0)
            error_tags = _tag("Code", error.code) + _tag("Message", error.message)
            fault = "Sender" if error.sender else "Receiver"
            text = (
                f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type>{error_tags}'
                f"</Error>{request_id}</ErrorResponse>"
            )
            return web.Response(status=error.status, text=text, content_type="text/xml")
        self._count(service, action, payload)
        text = (
            f'<{action}Response xmlns="{namespace}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata>{request_id}</ResponseMetadata></{action}Response>"
        )
        return web.Response(text=text, content_type="text/xml")

    # SQS ---------------------------------------------------------------------------------------

    def _queue(self, url: str | None) -> Queue:
        queue = self.queues.get(str(url).rstrip("/").rpartition("/")[2])
        if queue is None:
            raise AwsError("QueueDoesNotExist", "The specified queue does not exist.")
        return queue

    def _enqueue(self, queue: Queue, message: Message) -> Message:
        """Put the message in the queue; on a FIFO queue, a repeat within 5 minutes is dropped and
        the message first sent under its deduplication ID returned instead."""
        if queue.fifo:
            assert message.deduplication_id is not None
            now = time.monotonic()
            first = queue.deduplication.get(message.deduplication_id, now)
            if first is not None:
                return first  # type: ignore[no-any-return]
            message.sequence = str(next(self._sequence))
            queue.deduplication.remember(message.deduplication_id, message, now)
        queue.put(message)
        return message

    def _send_entry(self, queue: Queue, entry: dict[str, Any]) -> dict[str, str]:
        """SendMessage, checked as SQS checks it: size, FIFO group and deduplication ID."""
        body = entry.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise AwsError("MissingParameter", "The request must contain MessageBody.")
        message = Message(body, entry.get("MessageAttributes") or {})
        if message.size > queue.max_message_bytes:
            raise AwsError(
                "InvalidParameterValue",
                "One or more parameters are invalid. Reason: Message must be shorter than "
                f"{queue.max_message_bytes} bytes.",
            )
        if queue.fifo:
            content_based = queue.attributes.get("ContentBasedDeduplication") == "true"
            message.group, message.deduplication_id = _fifo_ids(
                entry, body, content_based, ("MissingParameter", "InvalidParameterValue")
            )
        message = self._enqueue(queue, message)
        self._tallies["messagesSent"] += 1
        result = {"MessageId": message.id, "MD5OfMessageBody": _md5(message.body)}
        if message.attributes:
            result["MD5OfMessageAttributes"] = attributes_md5(message.attributes)
        if message.sequence:
            result["SequenceNumber"] = message.sequence
        return result

    async def _receive_message(
        self, queue: Queue, args: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        limit = args.get("MaxNumberOfMessages", 1)
        if not 1 <= limit <= MAX_BATCH_ENTRIES:
            raise AwsError("InvalidParameterValue", f"MaxNumberOfMessages {limit} is not 1..10.")
        wait = args.get("WaitTimeSeconds")
        if wait is None:
            wait = int(queue.attributes["ReceiveMessageWaitTimeSeconds"])
        visibility = args.get("VisibilityTimeout")
        if visibility is None:
            visibility = int(queue.attributes["VisibilityTimeout"])
        messages = await _long_poll(queue, limit, visibility, wait)
        system_names = {
            *(args.get("AttributeNames") or ()),
            *(args.get("MessageSystemAttributeNames") or ()),
        }
        answers, payload = [], 0
        for message in messages:
            answer: dict[str, Any] = {
                "MessageId": message.id,
                "ReceiptHandle": message.receipt,
                "MD5OfBody": _md5(message.body),
                "Body": message.body,
            }
            system = self._system_attributes(message, system_names) if system_names else {}
            if system:
                answer["Attributes"] = system
            attributes = _selected(message.attributes, args.get("MessageAttributeNames") or [])
            if attributes:
                answer["MessageAttributes"] = attributes
                answer["MD5OfMessageAttributes"] = attributes_md5(attributes)
            payload += len(message.body.encode()) + attributes_size(attributes)
            answers.append(answer)
        self._tallies["messagesDelivered"] += len(answers)
        self._tallies["emptyReceives"] += not answers
        return ({"Messages": answers} if answers else {}), payload

    def _system_attributes(self, message: Message, names: set[str]) -> dict[str, str]:
        every = {
            "SenderId": self.account,
            "SentTimestamp": str(message.sent_ms),
            "ApproximateReceiveCount": str(message.receive_count),
            "ApproximateFirstReceiveTimestamp": str(message.first_receive_ms),
            "MessageGroupId": message.group,
            "MessageDeduplicationId": message.deduplication_id,
            "SequenceNumber": message.sequence or None,
        }
        every_set = {key: value for key, value in every.items() if value is not None}
        if "All" in names:
            return every_set
        return {key: value for key, value in every_set.items() if key in names}

    def _delete_entry(self, queue: Queue, entry: dict[str, Any]) -> dict[str, str]:
        """A handle of ours no longer in flight deletes nothing, and that is no error (as SQS)."""
        receipt = str(entry.get("ReceiptHandle"))
        if not queue.delete(receipt):
            _check_receipt(receipt)
        return {}

    def _change_visibility_entry(self, queue: Queue, entry: dict[str, Any]) -> dict[str, str]:
        seconds, receipt = entry.get("VisibilityTimeout"), str(entry.get("ReceiptHandle"))
        if not isinstance(seconds, int) or not 0 <= seconds <= MAX_VISIBILITY_SECONDS:
            raise AwsError(
                "InvalidParameterValue",
                f"VisibilityTimeout {seconds} is not 0..{MAX_VISIBILITY_SECONDS}.",
            )
        if not queue.change_visibility(receipt, seconds, asyncio.get_running_loop().time()):
            _check_receipt(receipt)
            raise AwsError("MessageNotInflight", "Message does not exist or is not in flight.")
        return {}

    def _queue_attributes(self, queue: Queue, names: list[str]) -> dict[str, Any]:
        every = queue.attributes | {
            "ApproximateNumberOfMessages": str(queue.visible_count),
            "ApproximateNumberOfMessagesNotVisible": str(len(queue.inflight)),
            "ApproximateNumberOfMessagesDelayed": "0",
        }
        chosen = every if "All" in names else {name: every[name] for name in names if name in every}
        return {"Attributes": chosen} if chosen else {}

    # SNS and STS -------------------------------------------------------------------------------

    def _topic(self, arn: str | None) -> Topic:
        topic = self.topics.get(str(arn))
        if topic is None:
            raise AwsError("NotFound", "Topic does not exist", 404)
        return topic

    def _publish(self, params: dict[str, str]) -> tuple[str, int]:
        topic = self._topic(params.get("TopicArn") or params.get("TargetArn"))
        message_id, sequence = self._published(topic, params)
        return _tag("MessageId", message_id) + _sequence_tag(sequence), _entry_size(params)

    def _publish_batch(self, params: dict[str, str]) -> tuple[str, int]:
        topic = self._topic(params.get("TopicArn"))
        entries = _batch_entries(_indexed(params, "PublishBatchRequestEntries.member."))
        payload = sum(_entry_size(entry) for entry in entries)
        if payload > SNS_MAX_PUBLISH_BYTES:
            raise AwsError(
                "BatchRequestTooLong",
                f"The batch's messages together are longer than {SNS_MAX_PUBLISH_BYTES} bytes.",
            )
        successful, failed = [], []
        for entry in entries:
            try:
                if self._fault("entries", "PublishBatch"):
                    raise injected_error()
                message_id, sequence = self._published(topic, entry)
            except AwsError as error:
                failed.append(
                    _tag("Id", entry["Id"])
                    + _tag("Code", error.code)
                    + _tag("Message", error.message)
                    + _tag("SenderFault", "true" if error.sender else "false")
                )
            else:
                successful.append(
                    _tag("Id", entry["Id"])
                    + _tag("MessageId", message_id)
                    + _sequence_tag(sequence)
                )
        successful_xml, failed_xml = (_members(part) for part in (successful, failed))
        return f"<Successful>{successful_xml}</Successful><Failed>{failed_xml}</Failed>", payload

    def _published(self, topic: Topic, entry: dict[str, str]) -> tuple[str, str]:
        """Accept one message (checked as SNS does) and deliver it into every subscribed queue;
        its message ID and, on a FIFO topic, sequence number."""
        text = entry.get("Message", "")
        if not text:
            raise AwsError("InvalidParameter", "Invalid parameter: Empty message")
        if _entry_size(entry) > SNS_MAX_PUBLISH_BYTES:
            raise AwsError("InvalidParameter", "Invalid parameter: Message too long")
        message_id, sequence, group, deduplication_id = str(uuid.uuid4()), "", None, None
        if topic.fifo:
            content_based = topic.attributes.get("ContentBasedDeduplication") == "true"
            group, deduplication_id = _fifo_ids(
                entry, text, content_based, ("InvalidParameter", "InvalidParameter")
            )
            now = time.monotonic()
            first = topic.deduplication.get(deduplication_id, now)
            if first is not None:
                return first  # type: ignore[no-any-return]
            sequence = str(next(self._sequence))
            topic.deduplication.remember(deduplication_id, (message_id, sequence), now)
        self._tallies["messagesSent"] += 1
        attributes, notification = _query_attributes(entry), ""
        for subscription in topic.subscriptions:
            if subscription.raw:
                message = Message(text, attributes)
            else:
                notification = notification or self._notification(
                    topic, subscription, message_id, sequence, entry
                )
                message = Message(notification, {})
            if subscription.queue.fifo:
                message.group, message.deduplication_id = group, deduplication_id
            self._enqueue(subscription.queue, message)
            self._billed["snsDeliveries"] += billed_requests(message.size)
        return message_id, sequence

    def _notification(
        self,
        topic: Topic,
        subscription: Subscription,
        message_id: str,
        sequence: str,
        entry: dict[str, str],
    ) -> str:
        """The JSON body SNS delivers into a queue without raw message delivery."""
        endpoint = f"https://sns.{self.region}.amazonaws.com"
        fields = {
            "Type": "Notification",
            "MessageId": message_id,
            "SequenceNumber": sequence or None,
            "TopicArn": topic.arn,
            "Subject": entry.get("Subject") or None,
            "Message": entry["Message"],
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "SignatureVersion": "1",
            "Signature": "c3RhbmQtaW4=",
            "SigningCertURL": f"{endpoint}/SimpleNotificationService-0000.pem",
            "UnsubscribeURL": f"{endpoint}/?Action=Unsubscribe&SubscriptionArn={subscription.arn}",
            "MessageAttributes": {
                name: {
                    "Type": value["DataType"],
                    "Value": value.get("StringValue", value.get("BinaryValue")),
                }
                for name, value in _query_attributes(entry).items()
            }
            or None,
        }
        return json.dumps({key: value for key, value in fields.items() if value is not None})

    def _get_topic_attributes(self, params: dict[str, str]) -> tuple[str, int]:
        topic = self._topic(params.get("TopicArn"))
        attributes = topic.attributes | {
            "SubscriptionsConfirmed": str(len(topic.subscriptions)),
            "SubscriptionsPending": "0",
            "SubscriptionsDeleted": "0",
        }
        entries = "".join(
            f"<entry>{_tag('key', key)}{_tag('value', value)}</entry>"
            for key, value in attributes.items()
        )
        return f"<Attributes>{entries}</Attributes>", 0

    def _create_topic(self, params: dict[str, str]) -> tuple[str, int]:
        attributes = {item["key"]: item["value"] for item in _indexed(params, "Attributes.entry.")}
        return _tag("TopicArn", self.create_topic(params.get("Name", ""), attributes=attributes)), 0

    def _subscribe(self, params: dict[str, str]) -> tuple[str, int]:
        if params.get("Protocol") != "sqs":
            raise AwsError("InvalidParameter", "Invalid parameter: the stand-in delivers to sqs")
        attributes = {item["key"]: item["value"] for item in _indexed(params, "Attributes.entry.")}
        raw = attributes.get("RawMessageDelivery", "false").lower() == "true"
        queue_name = params.get("Endpoint", "").rpartition(":")[2]
        arn = self.subscribe(params.get("TopicArn", ""), queue_name, raw=raw)
        return _tag("SubscriptionArn", arn), 0

    def _caller_identity(self) -> str:
        arn = f"arn:{self.partition}:iam::{self.account}:root"
        return _tag("Arn", arn) + _tag("UserId", self.account) + _tag("Account", self.account)

    # Feeding and control -----------------------------------------------------------------------

    async def _feed(self, queue: Queue, body: Callable[[int], str], rate: float, count: int) -> int:
        loop = asyncio.get_running_loop()
        start, fed = loop.time(), 0
        while fed < count:
            due = min(count, int((loop.time() - start) * rate) + 1)
            for index in range(fed, due):
                message = Message(body(index), {})
                if queue.fifo:
                    message.group, message.deduplication_id = "feed", message.id
                self._enqueue(queue, message)
                self._tallies["messagesFed"] += 1
            fed = due
            if fed < count:
                await asyncio.sleep(max(0.0, start + fed / rate - loop.time()))
        return fed

    async def _control(self, request: web.Request) -> web.Response:
        """/_standin/NAME: JSON in and out; a bad request gets 400 and what was wrong."""
        name = request.match_info["name"]
        try:
            spec = await request.json() if request.method == "POST" else dict(request.query)
            if name == "queues":
                answer: dict[str, Any] = {
                    "url": self.create_queue(spec["name"], attributes=spec.get("attributes"))
                }
            elif name == "topics":
                answer = {"arn": self.create_topic(spec["name"])}
            elif name == "subscriptions":
                raw = bool(spec.get("raw", True))
                answer = {"arn": self.subscribe(spec["topicArn"], spec["queueUrl"], raw=raw)}
            elif name == "feed":
                template = str(spec["body"])
                task = self.feed(
                    spec["queueUrl"],
                    lambda index: template.replace("{i}", str(index)),
                    rate=float(spec["rate"]),
                    count=int(spec["count"]),
                )
                answer = {"fed": await task}
            elif name == "faults":
                if request.method == "POST":
                    self.inject(
                        calls=spec.get("calls"),
                        answers=spec.get("answers"),
                        entries=spec.get("entries"),
                    )
                answer = self.faults.describe()
            elif name == "counts":
                answer = self.counts()
            elif name == "reset":
                self.reset_counts()
                answer = {}
            elif name == "depth":
                answer = {"depth": self.depth(spec["queueUrl"])}
            else:
                return web.json_response({"error": f"no control endpoint {name!r}"}, status=404)
        except AwsError as error:
            return web.json_response({"error": f"{error.code}: {error.message}"}, status=400)
        except (KeyError, ValueError, TypeError) as error:
            return web.json_response({"error": f"bad request: {error!r}"}, status=400)
        return web.json_response(answer)


# Helpers ---------------------------------------------------------------------------------------


async def _long_poll(queue: Queue, limit: int, visibility: float, wait: float) -> list[Message]:
    """Messages as soon as any is visible, or none once `wait` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        messages = queue.take(limit, visibility, loop.time())
        if messages or loop.time() >= deadline:
            return messages
        waiter: asyncio.Future[None] = loop.create_future()
        queue.waiters.append(waiter)
        timer = loop.call_at(deadline, lambda w=waiter: w.done() or w.set_result(None))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                queue.wake()  # this poller was woken but will not receive: pass it on
            raise
        finally:
            timer.cancel()
            if waiter in queue.waiters:
                queue.waiters.remove(waiter)


def _fifo_ids(
    entry: dict[str, Any], body: str, content_based: bool, codes: tuple[str, str]
) -> tuple[str, str]:
    """A FIFO message's group (required) and deduplication ID (given, or the body's SHA-256 when
    content-based deduplication is on); `codes`: the service's error codes for each missing."""
    group, deduplication_id = entry.get("MessageGroupId"), entry.get("MessageDeduplicationId")
    if not group:
        raise AwsError(codes[0], "The request must contain MessageGroupId.")
    if not deduplication_id:
        if not content_based:
            raise AwsError(
                codes[1],
                "The queue or topic should either have ContentBasedDeduplication enabled or "
                "MessageDeduplicationId provided explicitly",
            )
        deduplication_id = hashlib.sha256(body.encode()).hexdigest()
    return str(group), str(deduplication_id)


def _batch_entries(entries: Any) -> list[dict[str, Any]]:
    """A batch's entries, refused as SQS and SNS refuse them: none, too many, bad or repeated Id."""
    if not entries:
        raise AwsError("EmptyBatchRequest", "There should be at least one entry in the request.")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise AwsError(
            "TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are 10. You have sent {len(entries)}.",
        )
    ids = [str(entry.get("Id", "")) for entry in entries]
    if not all(_BATCH_ID.fullmatch(entry_id) for entry_id in ids):
        raise AwsError("InvalidBatchEntryId", "A batch entry id is not 1-80 of A-Z a-z 0-9 - _.")
    if len(set(ids)) != len(ids):
        raise AwsError("BatchEntryIdsNotDistinct", "Two or more batch entries have the same Id.")
    return list(entries)


def _batch_result(
    entries: list[dict[str, Any]], handle: Callable[[dict[str, Any]], dict[str, str]]
) -> dict[str, Any]:
    """Each entry handled alone: its own failure does not fail the others."""
    successful, failed = [], []
    for entry in entries:
        try:
            successful.append({"Id": entry["Id"], **handle(entry)})
        except AwsError as error:
            failure = {"Id": entry["Id"], "SenderFault": error.sender, "Code": error.code}
            failed.append(failure | {"Message": error.message})
    return {"Successful": successful, "Failed": failed}


def _check_receipt(receipt: str) -> None:
    if not receipt.startswith(_RECEIPT_PREFIX):
        raise AwsError("ReceiptHandleIsInvalid", f'The receipt handle "{receipt}" is not valid.')


def _selected(attributes: Attributes, names: list[str]) -> Attributes:
    """The attributes ReceiveMessage asked for: All, .*, exact names or `prefix.*`."""
    if not attributes or not names:
        return {}
    if "All" in names or ".*" in names:
        return attributes
    prefixes = tuple(name[:-1] for name in names if name.endswith(".*"))
    return {
        name: value
        for name, value in attributes.items()
        if name in names or (prefixes and name.startswith(prefixes))
    }


def _entry_size(entry: dict[str, Any]) -> int:
    """A message's size as AWS counts it, from an SQS entry (JSON) or an SNS one (query)."""
    if "MessageBody" in entry:
        body, attributes = entry["MessageBody"], entry.get("MessageAttributes") or {}
    else:
        body, attributes = entry.get("Message", ""), _query_attributes(entry)
    return len(str(body).encode()) + attributes_size(attributes)


def _indexed(params: dict[str, str], prefix: str) -> list[dict[str, str]]:
    """Query-protocol lists: `prefix.N.rest=value` as one dict of `rest` per N, in order."""
    members: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            members.setdefault(int(index), {})[rest] = value
    return [members[index] for index in sorted(members)]


def _query_attributes(params: dict[str, str]) -> Attributes:
    """SNS's MessageAttributes.entry.N.{Name, Value.DataType, Value.StringValue|BinaryValue}."""
    attributes: Attributes = {}
    for entry in _indexed(params, "MessageAttributes.entry."):
        kind = "BinaryValue" if "Value.BinaryValue" in entry else "StringValue"
        value = entry.get(f"Value.{kind}", "")
        attributes[entry["Name"]] = {"DataType": entry.get("Value.DataType", "String"), kind: value}
    return attributes


def _tag(name: str, value: str) -> str:
    return f"<{name}>{escape(value)}</{name}>"


def _sequence_tag(sequence: str) -> str:
    return _tag("SequenceNumber", sequence) if sequence else ""


def _members(items: list[str]) -> str:
    return "".join(f"<member>{item}</member>" for item in items)


async def _serve(host: str, port: int, region: str, account: str) -> None:
    standin = AwsStandIn(host, port, region, account)
    await standin.start()
    print(f"ready {standin.url}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aws_standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--account", default="000000000000")
    args = parser.parse_args()
    run(_serve(args.host, args.port, args.region, args.account))


if __name__ == "__main__":
    main()
