"""Commands from the environment's SQS commands queue, long-polled by every node.

A message is deleted only after the node carried its commands out (local writes done, peers
acknowledged), so a node that dies mid-command leaves it to come back: at-least-once. Deletes of
messages done one after another wait up to `delete_linger` to go ten to a call (a busy node
receives a message or two at a time: a DeleteMessageBatch each would cost as much again). A body
that cannot be read at all is left alone for the queue's redrive policy to move to the dead-letter
queue; it never holds up the messages beside it. Slow work keeps its messages hidden by extending
their visibility while it runs.

Longer than 400 lines because receiving, extending visibility and the coalesced deletes work on
one set of in-flight messages; split, each part would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.core.execution import CommandExecutor
from runtime.wire.channels import DEFAULT_RULES, ChannelRules
from runtime.wire.commands import CommandBodyError, parse_body

log = logging.getLogger("runtime.commands")

T = TypeVar("T")

MAX_MESSAGES = 10  # ReceiveMessage and DeleteMessageBatch both take at most 10
MAX_WAIT_SECONDS = 20
DEFAULT_VISIBILITY_TIMEOUT = 30  # SQS's default, assumed if the queue cannot be read at start
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
SDK_ATTEMPTS = 3
RELEASE_TIMEOUT = 5.0
DELETE_LINGER = 0.25  # seconds a done message may wait for others to share its delete call
COUNTERS = (
    "received",
    "executed",
    "deleted",
    "malformed",
    "rejected",
    "extended",
    "released",
    "errors",
)


class SqsCommandPoller:
    """`workers` long-polling loops feeding the node's `execute`; see the module docstring."""

    def __init__(
        self,
        queue_url: str,
        executor: CommandExecutor,
        *,
        max_payload_bytes: int,
        channel_rules: ChannelRules = DEFAULT_RULES,
        workers: int = 2,
        wait_seconds: int = MAX_WAIT_SECONDS,
        visibility_timeout: int | None = None,
        stop_timeout: float = 10.0,
        region: str | None = None,
        endpoint_url: str | None = None,
        attempts: int = SDK_ATTEMPTS,
        delete_linger: float = DELETE_LINGER,
    ) -> None:
        if not 1 <= workers <= 64:
            raise ValueError(f"workers must be between 1 and 64 (got {workers})")
        if not 1 <= wait_seconds <= MAX_WAIT_SECONDS:  # 0 would spin on an empty queue
            raise ValueError(f"wait_seconds must be between 1 and 20 (got {wait_seconds})")
        if visibility_timeout is not None and not 2 <= visibility_timeout <= 43_200:
            raise ValueError(
                f"visibility_timeout must be between 2 and 43200 seconds (got {visibility_timeout})"
            )
        if not 0 <= delete_linger <= 1:  # well inside the shortest visibility timeout
            raise ValueError(f"delete_linger must be between 0 and 1 second (got {delete_linger})")
        self.queue_url = queue_url
        self.executor = executor
        self.max_payload_bytes = max_payload_bytes
        self.channel_rules = channel_rules
        self.workers = workers
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.stop_timeout = stop_timeout
        self.delete_linger = delete_linger
        self.client: Any = boto3.client(
            "sqs",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": attempts},
                connect_timeout=5.0,
                read_timeout=wait_seconds + 10.0,  # a long poll holds the response that long
                max_pool_connections=2 * workers + 2,
            ),
        )
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self._stopping = threading.Event()  # read by receive threads too
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[Any]] = set()
        self._abandoned: list[dict[str, Any]] = []
        self._to_delete: list[dict[str, Any]] = []  # done, fewer than ten, waiting for more
        self._lingering: asyncio.Task[None] | None = None
        self._delete_calls: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Learn the visibility timeout (unless given), then poll. A wrong queue fails here."""
        if self.visibility_timeout is None:
            self.visibility_timeout = await self._queue_visibility_timeout()
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._poll(number), name=f"sqs-commands-{number}")
            for number in range(self.workers)
        ]
        log.info(
            "polling the commands queue",
            extra={
                "queueUrl": self.queue_url,
                "workers": self.workers,
                "visibilityTimeout": self.visibility_timeout,
            },
        )

    async def stop(self) -> None:
        """Stop receiving; give executes in flight `stop_timeout` to finish, then abandon them.

        Messages not deleted come back (at-least-once); abandoned ones are made visible at once.
        """
        self._stopping.set()
        idle = [task for task in self._tasks if task not in self._busy]
        for task in idle:
            task.cancel()  # a long poll in flight ends on its own thread; see _receive
        busy = [task for task in self._tasks if task not in idle and not task.done()]
        if busy:
            _, late = await asyncio.wait(busy, timeout=self.stop_timeout)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._flush_deletes()
        if self._abandoned:  # let another node have them now, not a visibility timeout later
            abandoned, self._abandoned = self._abandoned, []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    _in_thread(functools.partial(self._release, abandoned)), RELEASE_TIMEOUT
                )
        self.client.close()

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    # Polling

    async def _poll(self, number: int) -> None:
        failures = 0
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping.is_set():
            try:
                messages = await _in_thread(self._receive)
            except (BotoCoreError, ClientError) as exc:
                failures += 1
                self.counters["errors"] += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                log.warning(
                    "receiving commands failed; will retry",
                    extra={"worker": number, "error": str(exc), "retryInSeconds": round(delay, 3)},
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                continue
            if failures:
                log.info("commands queue reachable again", extra={"worker": number})
                failures = 0
            if not messages:
                continue
            self._busy.add(task)
            try:
                await self._handle(messages)
            except Exception:  # a bug must not end the worker; the messages come back
                self.counters["errors"] += 1
                log.exception("handling command messages failed", extra={"worker": number})
            finally:
                self._busy.discard(task)

    def _receive(self) -> list[dict[str, Any]]:
        """One long poll (blocking). Messages that arrive after stop go straight back."""
        messages: list[dict[str, Any]] = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=MAX_MESSAGES,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if messages and self._stopping.is_set():
            self._release(messages)
            return []
        return messages

    async def _handle(self, messages: list[dict[str, Any]]) -> None:
        """Execute the messages side by side, extend their visibility meanwhile, delete the done."""
        self.counters["received"] += len(messages)
        held = {message["MessageId"]: message for message in messages}
        heartbeat = asyncio.create_task(self._extend(held))
        try:
            outcomes = await asyncio.gather(*(self._execute(message, held) for message in messages))
            await self._delete_soon([m for m, done in zip(messages, outcomes, strict=True) if done])
        except asyncio.CancelledError:
            self._abandoned.extend(held.values())  # stop() hands them back
            raise
        finally:
            heartbeat.cancel()

    async def _execute(self, message: dict[str, Any], held: dict[str, dict[str, Any]]) -> bool:
        """True once the message's commands are carried out (or can never be)."""
        message_id = message["MessageId"]
        try:
            commands, rejections = parse_body(
                unwrap_notification(message.get("Body", "")),
                max_payload_bytes=self.max_payload_bytes,
                rules=self.channel_rules,
            )
        except CommandBodyError as exc:
            self.counters["malformed"] += 1
            held.pop(message_id, None)  # comes back after its visibility timeout, then the DLQ
            log.warning(
                "command message unreadable; left for the dead-letter queue",
                extra={
                    "messageId": message_id,
                    "receiveCount": message.get("Attributes", {}).get("ApproximateReceiveCount"),
                    "error": str(exc),
                },
            )
            return False
        for rejection in rejections:
            self.counters["rejected"] += 1
            log.warning(
                "command rejected",
                extra={"messageId": message_id, "index": rejection.index, "error": rejection.error},
            )
        if commands:
            try:
                outcome = await self.executor.execute(commands)
            except Exception:
                self.counters["errors"] += 1
                held.pop(message_id, None)
                log.exception("executing commands failed", extra={"messageId": message_id})
                return False
            # The node logs its own rejections (e.g. a malformed connection ID); count them.
            self.counters["rejected"] += len(outcome.rejections)
        self.counters["executed"] += 1
        return True

    async def _extend(self, held: dict[str, dict[str, Any]]) -> None:
        """Every half visibility timeout, hide the messages still held for another timeout."""
        assert self.visibility_timeout is not None
        while True:
            await asyncio.sleep(self.visibility_timeout / 2)
            if not held:
                continue
            entries = [
                {
                    "Id": str(position),
                    "ReceiptHandle": message["ReceiptHandle"],
                    "VisibilityTimeout": self.visibility_timeout,
                }
                for position, message in enumerate(held.values())
            ]
            try:
                response = await _in_thread(
                    functools.partial(
                        self.client.change_message_visibility_batch,
                        QueueUrl=self.queue_url,
                        Entries=entries,
                    )
                )
            except Exception as exc:  # the next beat tries again; the timeout is the backstop
                self.counters["errors"] += 1
                log.warning("extending command visibility failed", extra={"error": str(exc)})
                continue
            self.counters["extended"] += len(response.get("Successful", ()))
            self._log_failed("extending command visibility failed", response)

    async def _delete_soon(self, messages: Sequence[dict[str, Any]]) -> None:
        """Delete done messages ten to a call: a full call goes now, fewer wait the linger for
        more. Returns once the delete calls in flight are fewer than the workers (a queue that
        deletes more slowly than it receives must not pile up calls)."""
        self._to_delete.extend(messages)
        self._start_deletes(everything=not self.delete_linger)
        if self._to_delete and self._lingering is None:
            self._lingering = asyncio.create_task(self._delete_after_linger())
        while len(self._delete_calls) >= self.workers:
            await asyncio.wait(self._delete_calls, return_when=asyncio.FIRST_COMPLETED)

    def _start_deletes(self, *, everything: bool) -> None:
        """A delete call for each ten waiting and, if `everything`, for the rest too."""
        while len(self._to_delete) >= MAX_MESSAGES or (everything and self._to_delete):
            batch = self._to_delete[:MAX_MESSAGES]
            del self._to_delete[:MAX_MESSAGES]
            task = asyncio.create_task(self._delete(batch), name="sqs-commands-delete")
            self._delete_calls.add(task)
            task.add_done_callback(self._delete_calls.discard)

    async def _delete_after_linger(self) -> None:
        try:
            await asyncio.sleep(self.delete_linger)
        finally:
            self._lingering = None
        self._start_deletes(everything=True)

    async def _flush_deletes(self) -> None:
        """At stop: what waits for its delete call goes now (it would come back otherwise)."""
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        self._start_deletes(everything=True)
        if self._delete_calls:
            await asyncio.wait(self._delete_calls, timeout=RELEASE_TIMEOUT)

    async def _delete(self, messages: Sequence[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [
            {"Id": str(position), "ReceiptHandle": message["ReceiptHandle"]}
            for position, message in enumerate(messages)
        ]
        try:
            response = await _in_thread(
                functools.partial(
                    self.client.delete_message_batch, QueueUrl=self.queue_url, Entries=entries
                )
            )
        except (BotoCoreError, ClientError) as exc:  # they come back and run again
            self.counters["errors"] += 1
            log.warning(
                "deleting commands failed; they will be delivered again",
                extra={"messages": len(messages), "error": str(exc)},
            )
            return
        self.counters["deleted"] += len(response.get("Successful", ()))
        self._log_failed("deleting a command failed; it will be delivered again", response)

    def _release(self, messages: list[dict[str, Any]]) -> None:
        """Make messages visible now (blocking, best effort): this node will not do them."""
        try:
            self.client.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(position),
                        "ReceiptHandle": message["ReceiptHandle"],
                        "VisibilityTimeout": 0,
                    }
                    for position, message in enumerate(messages)
                ],
            )
            self.counters["released"] += len(messages)
        except Exception as exc:  # best effort: they come back after their timeout anyway
            log.warning("releasing commands failed", extra={"error": str(exc)})

    def _log_failed(self, what: str, response: dict[str, Any]) -> None:
        for failed in response.get("Failed", ()):
            self.counters["errors"] += 1
            log.warning(what, extra={"code": failed.get("Code"), "error": failed.get("Message")})

    async def _queue_visibility_timeout(self) -> int:
        try:
            attributes = await _in_thread(
                functools.partial(
                    self.client.get_queue_attributes,
                    QueueUrl=self.queue_url,
                    AttributeNames=["VisibilityTimeout"],
                )
            )
        except ClientError as exc:  # it answered: no such queue, or no permission
            raise RuntimeError(f"cannot read the commands queue {self.queue_url}: {exc}") from exc
        except BotoCoreError as exc:
            log.warning(
                "commands queue unreachable at start; assuming its visibility timeout",
                extra={"seconds": DEFAULT_VISIBILITY_TIMEOUT, "error": str(exc)},
            )
            return DEFAULT_VISIBILITY_TIMEOUT
        return max(2, int(attributes["Attributes"]["VisibilityTimeout"]))


def unwrap_notification(body: str) -> str:
    """The commands inside an SNS envelope (a subscription without raw delivery), else the body."""
    if '"Notification"' not in body or '"TopicArn"' not in body:
        return body
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if (
        isinstance(document, dict)
        and document.get("Type") == "Notification"
        and isinstance(document.get("Message"), str)
        and "commands" not in document
    ):
        message: str = document["Message"]
        return message
    return body


async def _in_thread(call: Callable[[], T]) -> T:
    """Run a blocking call on a daemon thread: a long poll in flight never delays process exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T) -> None:
        if not future.done():  # else the caller was cancelled meanwhile
            future.set_result(result)

    def fail(error: Exception) -> None:
        if not future.done():
            future.set_exception(error)

    def run() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            try:
                result = call()
            except Exception as exc:
                loop.call_soon_threadsafe(fail, exc)
            else:
                loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=run, name="sqs-commands", daemon=True).start()
    return await future
