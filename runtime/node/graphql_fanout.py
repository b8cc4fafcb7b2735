"""GraphQL publishes: each distinct subscription input a publish's keys match is executed once at
the origin, and its result goes to every local subscriber of that input.

Executions wait in one queue per input, so an input's updates arrive in order; together they are
bounded in count and in bytes, beyond which publishes are dropped and counted rather than queued
without bound behind a slow origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

from runtime.core.graphql_session import JsonValue
from runtime.core.subscriptions import Subscriber, SubscriptionIndex, SubscriptionInput
from runtime.logs import LogThrottle
from runtime.transports.graphql_origin import GraphqlOriginClient, GraphqlOriginUnavailable
from runtime.wire import graphql_contract as contract
from runtime.wire import graphql_ws as gql
from runtime.wire.graphql_contract import OperationAnswer

log = logging.getLogger("runtime.graphql")

# Subscription executions waiting for the origin, across inputs, and the bytes of their publish
# contexts.
MAX_PENDING_EXECUTIONS = 10_000
MAX_PENDING_BYTES = 64 << 20
KEEPALIVE_KEYS_PER_REQUEST = 1_000  # at most 256 characters each: well under Lambda's 6 MB
DROP_LOG_SECONDS = 10.0

# Hands one subscriber its update (the result encoded once for all, or None); False when its
# connection is gone.
DeliverUpdate = Callable[[Subscriber, str | None, OperationAnswer], bool]


def log_origin_failure(request: str, error: str, connection_id: str | None) -> None:
    log.warning(
        "GraphQL origin failed",
        extra={"request": request, "error": error, "connectionId": connection_id},
    )


class SubscriptionFanout:
    """The node's subscriptions by input, the executions waiting for the origin, and the
    keep-alives that tell the origin which keys are still wanted."""

    def __init__(
        self,
        origin: GraphqlOriginClient,
        *,
        node_address: str,
        counters: Counter[str],
        deliver: DeliverUpdate,
        keepalive_interval: float,
    ) -> None:
        self.origin = origin
        self.node = node_address
        self.counters = counters  # the gateway's
        self.deliver = deliver
        self.keepalive_interval = keepalive_interval
        self.index = SubscriptionIndex()
        self.pending = 0
        self._pending_bytes = 0
        self._queues: dict[str, deque[tuple[JsonValue, int]]] = {}
        self._throttle = LogThrottle(DROP_LOG_SECONDS)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self.keepalive_interval > 0:
            self._keep(asyncio.create_task(self._keepalive_loop(), name="graphql-keepalive"))

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    def publish(self, keys: tuple[str, ...], context: bytes) -> int:
        """Queue one execution per distinct matching input; returns how many were queued."""
        inputs = self.index.matching(keys)
        if not inputs:
            return 0
        publish_context = json.loads(context)
        size = len(context)
        queued = 0
        for held in inputs:
            if (
                self.pending >= MAX_PENDING_EXECUTIONS
                or self._pending_bytes + size > MAX_PENDING_BYTES
            ):
                self.counters["graphqlExecutionsDropped"] += 1
                continue
            self.pending += 1
            self._pending_bytes += size
            queued += 1
            queue = self._queues.get(held.digest)
            if queue is None:
                queue = self._queues[held.digest] = deque()
                self._keep(asyncio.ensure_future(self._run_input(held.digest, queue)))
            queue.append((publish_context, size))
        if queued < len(inputs) and self._throttle.allow("dropped", time.monotonic()) is not None:
            log.warning(
                "subscription executions dropped: too many waiting for the origin",
                extra={"dropped": self.counters["graphqlExecutionsDropped"]},
            )
        return queued

    async def _run_input(self, digest: str, queue: deque[tuple[JsonValue, int]]) -> None:
        """Execute one input's publishes one after another, so updates arrive in order."""
        try:
            while queue:
                publish_context, size = queue.popleft()
                self.pending -= 1
                self._pending_bytes -= size
                held = self.index.get(digest)
                if held is None:
                    continue
                try:
                    await self._execute(held, publish_context)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad execution must not cost the publishes behind it
                    self.counters["graphqlSubscriptionQueryFailures"] += 1
                    log.exception("subscription execution failed", extra={"inputDigest": digest})
        finally:
            self.pending -= len(queue)
            self._pending_bytes -= sum(size for _, size in queue)
            del self._queues[digest]

    async def _execute(self, held: SubscriptionInput, publish_context: JsonValue) -> None:
        request = contract.subscription_query_request(
            self.node,
            held.digest,
            held.query,
            held.variables,
            held.operation_name,
            held.input_context,
            publish_context,
        )
        self.counters["graphqlSubscriptionQueries"] += 1
        try:
            answer = contract.parse_query_answer(await self.origin.call(request))
        except (GraphqlOriginUnavailable, contract.BadOriginAnswer) as exc:
            self.counters["graphqlSubscriptionQueryFailures"] += 1
            self.counters["graphqlOriginFailures"] += 1
            log_origin_failure("subscription_query", str(exc), None)
            return
        result_json = gql.encode_json(answer.result) if answer.result is not None else None
        sent = 0
        for subscriber in list(held.subscribers):
            if self.deliver(subscriber, result_json, answer) and result_json is not None:
                sent += 1
        self.counters["graphqlSubscriptionResultsSent"] += sent

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            keys = self.index.keys()
            for start in range(0, len(keys), KEEPALIVE_KEYS_PER_REQUEST):
                chunk = keys[start : start + KEEPALIVE_KEYS_PER_REQUEST]
                try:
                    await self.origin.call(contract.keepalive_request(self.node, chunk))
                except Exception as exc:  # the loop must outlive any one failure
                    self.counters["graphqlOriginFailures"] += 1
                    log_origin_failure("subscription_keepalive", str(exc), None)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
