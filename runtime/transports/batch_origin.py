"""The delivery of event batches to SQS or SNS, shared by both: packing, planning calls, sending
them in order, resending what failed, and refusing what never can go. `sqs_origin.py` holds the two
services' own calls.

Events travel packed, many to a message (see runtime/core/sqs_batches.py), unless
`events_per_message` is 1; the pump lingers up to `linger` seconds for a call's worth to gather.

`deliver` returns once every event of the batch is in the queue or topic, or raises
OriginUnavailable; the pump then backs off and hands the same batch again, perhaps with more
events. Entries the service failed alone are resent alone, a few times, before giving up; events
already accepted are remembered, so a batch handed again sends only what is missing. A call that
failed whole may still have been carried out (its answer lost): on FIFO its packed messages go
again exactly as they were, so that their deduplication IDs drop them if they did arrive, rather
than repacked with newer events under new IDs (a standard queue may hold them twice).

Order: calls that share a message group go one after another (a chain). On a FIFO queue or
topic a call also holds at most one message of a group, so an entry the service fails is in
before anything after it in its group is sent. A standard queue keeps no order anyway (there a
group's messages may share a call); `sequenceNumber` in each event shows the order.

Longer than 400 lines because `BatchOrigin` is one algorithm (what was accepted, what is in
doubt, which call waits for which, when an entry is resent, split or refused) over shared state;
cut in pieces it would be harder to check that a batch handed again sends exactly what is missing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.core.sqs_batches import (
    ATTRIBUTE_RESERVE,
    MAX_ENTRIES_PER_CALL,
    Entry,
    bucket_group,
    entries_for,
    group_id,
    pack_entries,
    plan_calls,
    unpacked,
)
from runtime.transports.base import OriginRefused, OriginUnavailable

log = logging.getLogger("runtime.origin")

T = TypeVar("T")

DEFAULT_KEEPALIVE_GROUP = "keepalive"
ENTRY_RETRIES = 3  # resends of entries the service failed alone, within one deliver
ENTRY_BACKOFF_FIRST = 0.05
ENTRY_BACKOFF_MAX = 1.0
SDK_ATTEMPTS = 3  # botocore's own tries of one call (throttling, 5xx, connection errors)
REMEMBERED = 65_536  # message IDs of accepted events, to skip when a batch comes again
DEFAULT_PACK_BYTES = 64 << 10  # one billed request's worth
# A FIFO call holds one message of a group at most: as many groups as a call holds entries lets
# a busy node fill its calls.
DEFAULT_FIFO_GROUPS = MAX_ENTRIES_PER_CALL
# Errors with which the service refuses a whole call for what one of its messages holds (too
# long for the queue's limit, characters it does not take). Retrying the same call cannot help;
# sending its entries one by one finds the culprit. Other errors (throttling, permissions, a
# missing queue) concern every message alike and are retried.
CONTENT_ERRORS = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameter",
        "InvalidMessageContents",
        "AWS.SimpleQueueService.InvalidMessageContents",
        "MessageTooLong",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "InvalidAttributeValue",
    }
)


def describe_aws_error(action: str, exc: ClientError | BotoCoreError) -> str:
    """One line saying what failed: AWS's error code and message, or the SDK's own error."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{action} failed: {error.get('Code', '?')}: {error.get('Message', '')}"
    return f"{action} failed: {exc}"


@dataclass(frozen=True, slots=True)
class EntryFailure:
    entry: Entry
    code: str
    message: str
    sender_fault: bool


@dataclass(frozen=True, slots=True)
class Limits:
    message_bytes: int
    call_bytes: int


def client_config(timeout: float, pool: int, attempts: int = SDK_ATTEMPTS) -> Config:
    """Bounded waits and botocore's standard retries; the pump backs off beyond these."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=min(timeout, 5.0),
        read_timeout=timeout,
        max_pool_connections=pool,
    )


class BatchOrigin:
    """What the SQS and SNS flavours share: planning, threads, retries of failed entries."""

    service = ""
    operation = ""

    def __init__(
        self,
        target: str,
        *,
        region: str | None,
        endpoint_url: str | None,
        concurrency: int,
        timeout: float,
        keepalive_group: str,
        max_batch_events: int,
        max_batch_bytes: int | None,
        attempts: int,
        events_per_message: int,
        message_bytes: int,
        linger: float,
        fifo_groups: int,
        group_prefix: str,
    ) -> None:
        if not 1 <= concurrency <= 256:
            raise ValueError(f"concurrency must be between 1 and 256 (got {concurrency})")
        if max_batch_events < 1:
            raise ValueError(f"max_batch_events must be at least 1 (got {max_batch_events})")
        if group_id(keepalive_group) != keepalive_group:
            raise ValueError(
                "keepalive_group must be 1 to 128 ASCII letters, digits or punctuation "
                f"(got {keepalive_group!r})"
            )
        if events_per_message < 1 or fifo_groups < 1 or message_bytes < 1024 or linger < 0:
            raise ValueError(
                "events_per_message and fifo_groups must be at least 1, message_bytes at least "
                f"1024 and linger not negative (got {events_per_message}, {fifo_groups}, "
                f"{message_bytes}, {linger})"
            )
        self.target = target
        self.fifo = target.endswith(".fifo")  # FIFO queues and topics are named so
        self.events_per_message = events_per_message
        self.message_bytes = message_bytes
        self.linger = linger if events_per_message > 1 else 0.0
        self.fifo_groups = fifo_groups
        self.group_prefix = group_prefix
        if events_per_message > 1:
            max_batch_events = max(max_batch_events, events_per_message * MAX_ENTRIES_PER_CALL)
        self.concurrency = concurrency
        self.timeout = timeout
        self.keepalive_group = keepalive_group
        self.max_batch_events = max_batch_events
        self._fixed_batch_bytes = max_batch_bytes
        self.limits: Limits | None = None
        self.max_batch_bytes = max_batch_bytes or self._batch_bytes(self._assumed_limits())
        # One client for all threads (botocore clients are thread safe), one connection per thread.
        self.client: Any = boto3.client(
            self.service,
            region_name=region,
            endpoint_url=endpoint_url,
            config=client_config(timeout, concurrency, attempts),
        )
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"{self.service}-origin")
        # Oldest first. An OrderedDict, since a dict's oldest key, once many were deleted before
        # it, is found only by walking past their slots: a cost per event that grows with them.
        self._accepted: OrderedDict[str, None] = OrderedDict()
        # FIFO packs a failed call may have delivered, by deduplication basis: sent again as such.
        self._in_doubt: dict[str, Entry] = {}
        self.counters = {
            "calls": 0,
            "entriesSent": 0,
            "eventsSent": 0,
            "entriesResent": 0,
            "entriesRefused": 0,
        }

    # OriginTransport

    async def start(self) -> None:
        """Read the size limits now; if the endpoint is unreachable, on the first deliver."""
        try:
            await self._load_limits()
        except OriginUnavailable as exc:
            if isinstance(exc.__cause__, ClientError):  # it answered: wrong name, no permission
                raise
            log.warning(
                "origin limits unknown until reachable",
                extra={"target": self.target, "error": str(exc)},
            )

    async def close(self) -> None:
        # In-flight calls finish on their own; the pump stopped waiting for them.
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    async def deliver(self, events: Sequence[bytes]) -> None:
        limits = self.limits or await self._load_limits()
        entries = [
            entry
            for entry in entries_for(events, default_group=self.keepalive_group)
            if entry.message_id not in self._accepted
        ]
        if self.events_per_message > 1:
            in_doubt, entries = self._in_doubt_packs(entries)
            entries = in_doubt + self._pack(entries, limits)
        plan = plan_calls(
            entries,
            max_entries=MAX_ENTRIES_PER_CALL,
            max_call_bytes=limits.call_bytes,
            max_message_bytes=limits.message_bytes,
            one_per_group=self.fifo,
        )
        refused = [
            EntryFailure(
                entry,
                "TooLarge",
                f"{entry.size} bytes; the most a message may be is {limits.message_bytes}",
                True,
            )
            for entry in plan.refused
        ]
        deadline = time.monotonic() + self.timeout
        results = await asyncio.gather(
            *(self._send_chain(chain, deadline, refused) for chain in plan.chains),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, OriginUnavailable):
                raise result
            if isinstance(result, BaseException):
                raise OriginUnavailable(f"{self.operation} failed: {result!r}") from result
        if refused:
            self._refuse(refused)

    def _in_doubt_packs(self, entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
        """(packs in doubt whose events are all still to send, the entries left to pack). Such
        a pack holds the oldest unsent events of its group (a chain stops at a failed call), so
        it goes first; packs whose events are no longer all here are in doubt no more."""
        if not self._in_doubt:
            return [], entries
        pending = {entry.message_id: entry for entry in entries}
        again: list[Entry] = []
        for key, pack in list(self._in_doubt.items()):
            members = [pending.get(member.message_id) for member in pack.members]
            if all(member is not None for member in members):
                current = tuple(member for member in members if member is not None)
                again.append(replace(pack, index=current[0].index, members=current))
            else:
                del self._in_doubt[key]
        taken = {member.message_id for pack in again for member in pack.members}
        again.sort(key=lambda pack: pack.index)
        return again, [entry for entry in entries if entry.message_id not in taken]

    def _pack(self, entries: list[Entry], limits: Limits) -> list[Entry]:
        """Events packed into messages; on FIFO, each connection's into its bucket's group."""
        regroup = None
        if self.fifo:
            groups = {entry.group for entry in entries}
            regroup = {
                group: bucket_group(group, self.fifo_groups, self.group_prefix)
                for group in groups
                if group != self.keepalive_group
            }
            regroup[self.keepalive_group] = self.keepalive_group
        return pack_entries(
            entries,
            max_events=self.events_per_message,
            max_message_bytes=min(self.message_bytes, limits.message_bytes),
            regroup=regroup,
        )

    @property
    def max_event_bytes(self) -> int:
        """The largest event that fits one message (with its attributes), as far as known."""
        limits = self.limits or self._assumed_limits()
        return limits.message_bytes - ATTRIBUTE_RESERVE

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def _refuse(self, refused: list[EntryFailure]) -> NoReturn:
        """Name the events that can never be sent; those behind them go when handed again."""
        self.counters["entriesRefused"] += len(refused)
        refused = [
            EntryFailure(event, failure.code, failure.message, True)
            for failure in refused
            for event in failure.entry.events
        ]
        for failure in refused:
            log.error(
                "event refused by the origin transport; it can never be sent",
                extra={
                    "group": failure.entry.group,
                    "messageId": failure.entry.message_id,
                    "code": failure.code,
                    "error": failure.message,
                },
            )
        refused_at = {failure.entry.index for failure in refused}
        names = ", ".join(
            f"{failure.entry.message_id} ({failure.code}: {failure.message})"
            for failure in refused[:3]
        )
        raise OriginRefused(
            f"{self.operation} refused {len(refused)} event(s) for good: {names}",
            refused=sorted(refused_at),
        )

    # The flavours

    def _call(self, entries: list[Entry]) -> list[EntryFailure]:
        """Send one batch call (blocking); the entries the service failed, in entry order."""
        raise NotImplementedError

    def _read_limits(self) -> Limits:
        raise NotImplementedError

    def _assumed_limits(self) -> Limits:
        raise NotImplementedError

    # Shared machinery

    async def _send_chain(
        self, chain: list[list[Entry]], deadline: float, refused: list[EntryFailure]
    ) -> None:
        """Send calls in order; resend failed entries alone; a refused one stops its connection."""
        blocked: set[str] = set()
        for call in chain:
            pending = [entry for entry in call if entry.group not in blocked]
            attempt = 0
            while pending:
                failures = await self._send_call(pending)
                failed = {id(failure.entry) for failure in failures}
                for entry in pending:
                    if id(entry) not in failed:
                        self._in_doubt.pop(entry.message_id, None)
                        self.counters["entriesSent"] += 1
                        self.counters["eventsSent"] += len(entry.events)
                        for event in entry.events:
                            self._remember(event.message_id)
                retry = []
                for failure in failures:
                    self._in_doubt.pop(failure.entry.message_id, None)  # not delivered
                    if failure.sender_fault and failure.entry.members:
                        await self._send_singly(failure.entry, refused, blocked)
                    elif failure.sender_fault:
                        refused.append(failure)
                        blocked.add(failure.entry.group)
                    elif failure.entry.group not in blocked:
                        retry.append(failure.entry)
                if not retry:
                    break
                attempt += 1
                delay = min(ENTRY_BACKOFF_MAX, ENTRY_BACKOFF_FIRST * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                first = failures[0]
                if attempt > ENTRY_RETRIES or time.monotonic() + delay > deadline:
                    raise OriginUnavailable(
                        f"{self.operation} failed {len(retry)} of {len(pending)} entries "
                        f"{attempt} times ({first.code}: {first.message})"
                    )
                self.counters["entriesResent"] += len(retry)
                log.info(
                    "origin failed some entries; resending them",
                    extra={"entries": len(retry), "code": first.code, "error": first.message},
                )
                await asyncio.sleep(delay)
                pending = retry

    async def _send_singly(
        self, pack: Entry, refused: list[EntryFailure], blocked: set[str]
    ) -> None:
        """The service refused a packed message for what it holds: its events go one message
        each, in order, so only the one it refuses is refused (and the rest of its group waits
        for the batch to be handed again)."""
        for single in unpacked(pack):
            if single.group in blocked:
                return
            failures = await self._send_call([single])
            if not failures:
                self.counters["entriesSent"] += 1
                self.counters["eventsSent"] += 1
                self._remember(single.message_id)
            elif failures[0].sender_fault:
                refused.append(failures[0])
                blocked.add(single.group)
            else:
                first = failures[0]
                raise OriginUnavailable(
                    f"{self.operation} failed an event of a refused pack ({first.code}: "
                    f"{first.message})"
                )

    async def _send_call(self, entries: list[Entry]) -> list[EntryFailure]:
        """One batch call; if the service refuses the whole call for what a message holds, the
        entries go again one call each, and the ones it still refuses are refused for good."""
        self.counters["calls"] += 1
        try:
            return await self._in_thread(functools.partial(self._call, entries))
        except OriginUnavailable as exc:
            code = _content_error(exc)
            if code is None:  # carried out or not: unknown
                if self.fifo:
                    self._in_doubt.update((e.message_id, e) for e in entries if e.members)
                raise
            if len(entries) == 1:
                return [EntryFailure(entries[0], code, str(exc), True)]
        failures: list[EntryFailure] = []
        refused_groups: set[str] = set()
        for entry in entries:
            if entry.group in refused_groups:  # its connection's order stops at the refused one
                failures.append(
                    EntryFailure(entry, "Held", "behind a refused event of its connection", False)
                )
                continue
            result = await self._send_call([entry])
            failures.extend(result)
            if any(failure.sender_fault for failure in result):
                refused_groups.add(entry.group)
        return failures

    async def _in_thread(self, call: Callable[[], T]) -> T:
        """Run a blocking boto3 call on the pool; SDK errors become OriginUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, call)
        except (ClientError, BotoCoreError) as exc:
            action = f"{self.operation} to {self.target}"
            raise OriginUnavailable(describe_aws_error(action, exc)) from exc

    async def _load_limits(self) -> Limits:
        limits = await self._in_thread(self._read_limits)
        if self._fixed_batch_bytes is None:
            self.max_batch_bytes = self._batch_bytes(limits)
        self.limits = limits
        return limits

    def _batch_bytes(self, limits: Limits) -> int:
        """Event bytes the pump may put in one batch: what its calls carry, less attributes."""
        if self.events_per_message > 1:  # one call's worth of full messages
            packs = min(self.message_bytes, limits.message_bytes) * MAX_ENTRIES_PER_CALL
            return max(
                1024, min(packs, limits.call_bytes) - MAX_ENTRIES_PER_CALL * ATTRIBUTE_RESERVE
            )
        calls = math.ceil(self.max_batch_events / MAX_ENTRIES_PER_CALL)
        per_call = limits.call_bytes - MAX_ENTRIES_PER_CALL * ATTRIBUTE_RESERVE
        return max(1024, calls * per_call)

    def _remember(self, message_id: str) -> None:
        self._accepted[message_id] = None
        if len(self._accepted) > REMEMBERED:
            self._accepted.popitem(last=False)


def _content_error(exc: OriginUnavailable) -> str | None:
    """The service's error code, if it refused a call for what its messages hold."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        if code in CONTENT_ERRORS:
            return code
    return None
