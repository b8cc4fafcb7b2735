"""GraphQL mode: the node speaks a GraphQL WebSocket subprotocol and asks the GraphQL origin to
run operations; a publish re-executes each distinct subscription input once and fans the result
out to its local subscribers.

Message formats live in `runtime.wire.graphql_ws`, the origin's contract in
`runtime.wire.graphql_contract`, and the subscription index in `runtime.core.subscriptions`; this
module runs them against one connection's messages and the origin's answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from runtime.core.registry import ConnectionEntry
from runtime.core.subscriptions import SubscriptionIndex, SubscriptionInput
from runtime.logs import LogThrottle
from runtime.transports.graphql_origin import GraphqlOrigin, GraphqlOriginUnavailable
from runtime.wire import graphql_contract as contract
from runtime.wire import graphql_ws as gql
from runtime.wire.graphql_ws import LEGACY, MODERN, ClientMessage, Operation

log = logging.getLogger("runtime.graphql")

Entry = ConnectionEntry[ServerConnection]
SendText = Callable[[Entry, str], bool]

ORIGIN_UNAVAILABLE = "origin unavailable"
# 1013 (try again later), not the protocol's 4500: graphql-ws clients never retry 4500, and an
# origin that failed once may answer the next attempt.
ORIGIN_UNAVAILABLE_CLOSE = 1013
# Subscription executions waiting for the origin, across inputs, and the bytes of their publish
# contexts; beyond either, publishes are dropped and counted rather than queued without bound
# behind a slow origin.
MAX_PENDING_EXECUTIONS = 10_000
MAX_PENDING_BYTES = 64 << 20
KEEPALIVE_KEYS_PER_REQUEST = 1_000  # at most 256 characters each: well under Lambda's 6 MB
DROP_LOG_SECONDS = 10.0
MAX_CLOSE_REASON_BYTES = 123


@dataclass(slots=True)
class Session:
    """One GraphQL connection: where its handshake stands and which operations are live."""

    entry: Entry
    protocol: str
    init_received: bool = False
    acknowledged: bool = False
    context: Any = None
    # Operation ID -> the task asking the origin, or None once it is a registered subscription.
    operations: dict[str, asyncio.Task[None] | None] = field(default_factory=dict)
    # Tasks of operations the client ended whose request is still at the origin.
    ending: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def connection_id(self) -> str:
        return self.entry.connection_id

    def held(self) -> int:
        """What counts against --graphql-max-operations: what the origin still works on too."""
        return len(self.operations) + len(self.ending)


class GraphqlGateway:
    def __init__(
        self,
        origin: GraphqlOrigin,
        *,
        node_address: str,
        send_text: SendText,
        counters: Counter[str],
        init_timeout: float,
        ka_interval: float,
        keepalive_interval: float,
        max_operations: int,
    ) -> None:
        self.origin = origin
        self.node = node_address
        self.send_text = send_text
        self.counters = counters
        self.init_timeout = init_timeout
        self.ka_interval = ka_interval
        self.keepalive_interval = keepalive_interval
        self.max_operations = max_operations
        self.index = SubscriptionIndex()
        self.sessions: dict[str, Session] = {}
        self._queues: dict[str, deque[tuple[Any, int]]] = {}
        self._pending = 0
        self._pending_bytes = 0
        self._throttle = LogThrottle(DROP_LOG_SECONDS)
        self._ending = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.origin.start()
        if self.ka_interval > 0:
            self._loops.append(asyncio.create_task(self._ka_loop(), name="graphql-ka"))
        if self.keepalive_interval > 0:
            self._loops.append(
                asyncio.create_task(self._origin_keepalive_loop(), name="graphql-keepalive")
            )

    async def stop(self) -> None:
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        # Closed first: an operation cancelled once its request left waits for the request.
        await self.origin.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {
            "graphqlConnections": len(self.sessions),
            "graphqlSubscriptions": len(self.index),
            "graphqlDistinctInputs": self.index.inputs(),
            "graphqlPendingExecutions": self._pending,
            "graphqlOperationsEnding": self._ending,
            **self.origin.stats(),
        }

    # One connection

    async def serve(
        self, entry: Entry, connection: ServerConnection, protocol: str, connect: Any
    ) -> None:
        """Read the client's messages until it leaves or breaks the protocol."""
        session = Session(entry, protocol)
        self.sessions[entry.connection_id] = session
        timer = asyncio.get_running_loop().call_later(
            self.init_timeout, self._init_timed_out, session, connection
        )
        try:
            while True:
                data = await connection.recv()
                try:
                    message = gql.parse_client_message(protocol, data)
                except gql.InvalidMessage as exc:
                    self.counters["graphqlInvalidMessages"] += 1
                    if protocol == MODERN:
                        await _close(entry, connection, gql.BAD_REQUEST, str(exc))
                        return
                    if isinstance(exc, gql.MalformedJson):
                        self._send(session, gql.connection_error(str(exc)))
                    else:
                        errors = gql.errors_of(str(exc))
                        self._send(session, gql.error_message(LEGACY, exc.operation_id, errors))
                    continue
                if not await self._dispatch(session, connection, message, connect):
                    return
        finally:
            timer.cancel()
            del self.sessions[entry.connection_id]
            for task in session.operations.values():
                if task is not None:
                    self._let_end(session, task)
            self.index.remove_connection(entry.connection_id)

    async def _dispatch(
        self, session: Session, connection: ServerConnection, message: ClientMessage, connect: Any
    ) -> bool:
        """Act on one valid message; False once the connection is being closed."""
        kind = message.type
        if kind == "connection_init":
            return await self._init(session, connection, message.payload, connect)
        if kind == "ping":
            self._send(session, gql.pong(message.payload))
        elif kind == "pong":
            pass
        elif kind == "connection_terminate":
            await _close(session.entry, connection, 1000, "connection_terminate")
            return False
        elif message.operation is not None:
            return await self._start(session, connection, message.operation)
        elif message.id is not None:  # complete (modern) or stop (legacy)
            self._end(session, message.id)
            if session.protocol == LEGACY:
                self._send(session, gql.complete_message(message.id))
        return True

    async def _init(
        self, session: Session, connection: ServerConnection, payload: Any, connect: Any
    ) -> bool:
        entry, modern = session.entry, session.protocol == MODERN
        if session.init_received:
            if modern:
                await _close(
                    entry, connection, gql.TOO_MANY_INITS, "Too many initialisation requests"
                )
                return False
            self._send(session, gql.connection_error("connection already initialised"))
            return True
        session.init_received = True
        request = contract.init_request(
            self.node, entry.connection_id, session.protocol, payload, connect
        )
        try:
            answer = contract.parse_init_answer(await self.origin.call(request))
        except (GraphqlOriginUnavailable, contract.BadOriginAnswer) as exc:
            self._origin_failed("connection_init", exc, entry.connection_id)
            if modern:
                await _close(entry, connection, ORIGIN_UNAVAILABLE_CLOSE, ORIGIN_UNAVAILABLE)
            else:
                self._send(session, gql.connection_error(ORIGIN_UNAVAILABLE))
                await _close(entry, connection, 1011, ORIGIN_UNAVAILABLE)
            return False
        if not answer.accept:
            self.counters["graphqlInitsRefused"] += 1
            log.info(
                "connection_init refused",
                extra={"connectionId": entry.connection_id, "reason": answer.message},
            )
            if modern:
                await _close(entry, connection, gql.FORBIDDEN, _reason("Forbidden", answer.message))
            else:
                self._send(session, gql.connection_error(answer.message))
                await _close(entry, connection, 1011, _reason("Forbidden", answer.message))
            return False
        session.acknowledged = True
        session.context = answer.context
        self._send(session, gql.connection_ack(answer.payload))
        if not modern and self.ka_interval > 0:
            # subscriptions-transport-ws expects another ka within 30 s of its first one.
            self._send(session, gql.KEEP_ALIVE)
        return True

    def _init_timed_out(self, session: Session, connection: ServerConnection) -> None:
        if session.init_received or session.entry.closing:
            return
        self.counters["graphqlInitTimeouts"] += 1
        if session.protocol == LEGACY:
            self._send(session, gql.connection_error("connection initialisation timeout"))
        task = asyncio.ensure_future(
            _close(session.entry, connection, gql.INIT_TIMEOUT, "Connection initialisation timeout")
        )
        self._keep(task)

    async def _start(
        self, session: Session, connection: ServerConnection, operation: Operation
    ) -> bool:
        protocol, operation_id = session.protocol, operation.id
        if not session.acknowledged:
            if protocol == MODERN:
                await _close(session.entry, connection, gql.UNAUTHORIZED, "Unauthorized")
                return False
            self._fail_operation(session, operation_id, "send connection_init first")
            return True
        if operation_id in session.operations:
            if protocol == MODERN:
                reason = _reason(f"Subscriber for {operation_id} already exists", "")
                await _close(session.entry, connection, gql.DUPLICATE_OPERATION, reason)
                return False
            self._end(session, operation_id)  # the legacy server replaces the operation
        if session.held() >= self.max_operations:
            self.counters["graphqlOperationsRefused"] += 1
            self._fail_operation(
                session,
                operation_id,
                f"too many operations on this connection (the most is {self.max_operations}, "
                "counting ended ones the origin is still running)",
            )
            return True
        task = asyncio.ensure_future(self._run_operation(session, operation))
        session.operations[operation_id] = task
        self._keep(task)
        return True

    async def _run_operation(self, session: Session, operation: Operation) -> None:
        try:
            await self._operation(session, operation)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "GraphQL operation failed",
                extra={"connectionId": session.connection_id, "operationId": operation.id},
            )
            if session.operations.get(operation.id) is asyncio.current_task():
                del session.operations[operation.id]
                self._fail_operation(session, operation.id, "internal error")

    async def _operation(self, session: Session, operation: Operation) -> None:
        operation_id = operation.id
        self.counters["graphqlOperations"] += 1
        request = contract.start_request(
            self.node, session.connection_id, operation, session.context
        )
        try:
            answer = contract.parse_start_answer(await self.origin.call(request))
        except (GraphqlOriginUnavailable, contract.BadOriginAnswer) as exc:
            self._origin_failed("start", exc, session.connection_id)
            session.operations.pop(operation_id, None)
            self._fail_operation(session, operation_id, ORIGIN_UNAVAILABLE)
            return
        if session.operations.get(operation_id) is not asyncio.current_task():
            return  # ended by the client meanwhile
        if answer.result is not None:
            self._send(
                session,
                gql.result_message(session.protocol, operation_id, gql.encode_json(answer.result)),
            )
        if answer.subscription is not None:
            spec = answer.subscription
            session.operations[operation_id] = None
            self.index.add(
                (session.connection_id, operation_id),
                spec.digest,
                spec.keys,
                query=operation.query,
                variables=operation.variables,
                operation_name=operation.operation_name,
                input_context=spec.input_context,
            )
            return
        session.operations.pop(operation_id, None)
        if answer.errors is not None and session.protocol == MODERN:
            self._send(session, gql.error_message(MODERN, operation_id, answer.errors))
            return
        if answer.errors is not None:  # as the legacy server answers a document that fails
            result = gql.encode_json({"errors": answer.errors})
            self._send(session, gql.result_message(LEGACY, operation_id, result))
        self._send(session, gql.complete_message(operation_id))

    def _end(self, session: Session, operation_id: str) -> None:
        task = session.operations.pop(operation_id, None)
        if task is not None:
            self._let_end(session, task)
        self.index.remove((session.connection_id, operation_id))

    def _let_end(self, session: Session, task: asyncio.Task[None]) -> None:
        """Cancel an operation. A request still waiting for the origin is withdrawn at once;
        one the origin has lets the task end only with it (its connection stays usable), and
        until then the operation still counts against the connection's limit."""
        task.cancel()
        if task.done():
            return
        session.ending.add(task)
        self._ending += 1

        def ended(_: asyncio.Task[None]) -> None:
            session.ending.discard(task)
            self._ending -= 1

        task.add_done_callback(ended)

    def _fail_operation(self, session: Session, operation_id: str, message: str) -> None:
        self._send(
            session, gql.error_message(session.protocol, operation_id, gql.errors_of(message))
        )

    # Publish

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
                self._pending >= MAX_PENDING_EXECUTIONS
                or self._pending_bytes + size > MAX_PENDING_BYTES
            ):
                self.counters["graphqlExecutionsDropped"] += 1
                continue
            self._pending += 1
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

    async def _run_input(self, digest: str, queue: deque[tuple[Any, int]]) -> None:
        """Execute one input's publishes one after another, so updates arrive in order."""
        try:
            while queue:
                publish_context, size = queue.popleft()
                self._pending -= 1
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
            self._pending -= len(queue)
            self._pending_bytes -= sum(size for _, size in queue)
            del self._queues[digest]

    async def _execute(self, held: SubscriptionInput, publish_context: Any) -> None:
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
            self._origin_failed("subscription_query", exc, None)
            return
        result_json = gql.encode_json(answer.result) if answer.result is not None else None
        sent = 0
        for connection_id, operation_id in list(held.subscribers):
            session = self.sessions.get(connection_id)
            if session is None:
                continue
            if result_json is not None:
                self._send(session, gql.result_message(session.protocol, operation_id, result_json))
                sent += 1
            if answer.errors is not None:
                self._send(
                    session, gql.error_message(session.protocol, operation_id, answer.errors)
                )
            elif answer.complete:
                self._send(session, gql.complete_message(operation_id))
            if answer.errors is not None or answer.complete:
                session.operations.pop(operation_id, None)
                self.index.remove((connection_id, operation_id))
        self.counters["graphqlSubscriptionResultsSent"] += sent

    # Periodic work

    async def _ka_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ka_interval)
            for session in list(self.sessions.values()):
                if session.protocol == LEGACY and session.acknowledged:
                    self._send(session, gql.KEEP_ALIVE)

    async def _origin_keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            keys = self.index.keys()
            for start in range(0, len(keys), KEEPALIVE_KEYS_PER_REQUEST):
                chunk = keys[start : start + KEEPALIVE_KEYS_PER_REQUEST]
                try:
                    await self.origin.call(contract.keepalive_request(self.node, chunk))
                except Exception as exc:  # the loop must outlive any one failure
                    self._origin_failed("subscription_keepalive", exc, None)

    # Helpers

    def _send(self, session: Session, text: str) -> None:
        self.send_text(session.entry, text)

    def _origin_failed(self, request: str, exc: Exception, connection_id: str | None) -> None:
        self.counters["graphqlOriginFailures"] += 1
        log.warning(
            "GraphQL origin failed",
            extra={"request": request, "error": str(exc), "connectionId": connection_id},
        )

    def _keep(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]


async def _close(entry: Entry, connection: ServerConnection, code: int, reason: str) -> None:
    """Close with the protocol's code; awaited, so the library's own close cannot come first."""
    entry.closing = True
    await connection.close(code, _truncate(reason))


def _reason(prefix: str, detail: str) -> str:
    return _truncate(f"{prefix}: {detail}" if detail else prefix)


def _truncate(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
