"""GraphQL mode: the node speaks a GraphQL WebSocket subprotocol and asks the GraphQL origin to
run operations.

This module only moves things about: it reads a connection's messages into its
`runtime.core.graphql_session.GraphqlSession` and carries out what the session decides (writes
through the node's `ClientWriter`, requests to the origin as tasks, the init timer). Publishes
are `runtime.node.graphql_fanout`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import assert_never

from websockets.asyncio.server import ServerConnection

from runtime.core.graphql_session import (
    Action,
    AskInit,
    Close,
    Count,
    EndOperation,
    GraphqlSession,
    InitRefused,
    JsonObject,
    JsonValue,
    OriginFailed,
    RunOperation,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.core.registry import ConnectionEntry
from runtime.core.subscriptions import Subscriber
from runtime.node.graphql_fanout import SubscriptionFanout, log_origin_failure
from runtime.node.writer import ClientWriter
from runtime.transports.graphql_origin import GraphqlOriginClient, GraphqlOriginUnavailable
from runtime.wire.graphql_contract import OperationAnswer

log = logging.getLogger("runtime.graphql")

Entry = ConnectionEntry[ServerConnection]


@dataclass(slots=True, eq=False)
class ServedConnection:
    """One GraphQL connection being served: its session, and its requests at the origin."""

    entry: Entry
    session: GraphqlSession
    requests: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # by session token
    timer: asyncio.TimerHandle | None = None


class GraphqlGateway:
    def __init__(
        self,
        origin: GraphqlOriginClient,
        *,
        node_address: str,
        writer: ClientWriter,
        init_timeout: float,
        ka_interval: float,
        keepalive_interval: float,
        max_operations: int,
    ) -> None:
        self.origin = origin
        self.node = node_address
        self.writer = writer
        self.init_timeout = init_timeout
        self.ka_interval = ka_interval
        self.max_operations = max_operations
        self.counters: Counter[str] = Counter()
        self.fanout = SubscriptionFanout(
            origin,
            node_address=node_address,
            counters=self.counters,
            deliver=self._deliver_update,
            keepalive_interval=keepalive_interval,
        )
        self.index = self.fanout.index
        self.sessions: dict[str, ServedConnection] = {}
        self._ending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.origin.start()
        if self.ka_interval > 0:
            self._keep(asyncio.create_task(self._ka_loop(), name="graphql-ka"))
        self.fanout.start()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self.fanout.tasks()]
        for task in tasks:
            task.cancel()
        # Closed first: an operation cancelled once its request left waits for the request.
        await self.origin.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {
            **self.counters,
            "graphqlConnections": len(self.sessions),
            "graphqlSubscriptions": len(self.index),
            "graphqlDistinctInputs": self.index.inputs(),
            "graphqlPendingExecutions": self.fanout.pending,
            "graphqlOperationsEnding": self._ending,
            **self.origin.stats(),
        }

    def publish(self, keys: tuple[str, ...], context: bytes) -> int:
        """Queue one execution per distinct matching input; returns how many were queued."""
        return self.fanout.publish(keys, context)

    # One connection

    async def serve(
        self, entry: Entry, connection: ServerConnection, protocol: str, connect: JsonValue
    ) -> None:
        """Read the client's messages until it leaves or breaks the protocol."""
        loop = asyncio.get_running_loop()
        session = GraphqlSession(
            protocol,
            node=self.node,
            connection_id=entry.connection_id,
            connect=connect,
            now=loop.time(),
            init_timeout=self.init_timeout,
            max_operations=self.max_operations,
            keep_alive=self.ka_interval > 0,
        )
        served = ServedConnection(entry, session)
        self.sessions[entry.connection_id] = served
        self._arm_timer(served)
        try:
            while True:
                message = await connection.recv()
                self.counters["graphqlMessagesReceived"] += 1
                if not await self._act(served, session.receive(message)):
                    break
        finally:
            if served.timer is not None:
                served.timer.cancel()
            del self.sessions[entry.connection_id]
            self._apply(served, session.connection_lost())
            self.index.remove_connection(entry.connection_id)

    async def _act(self, served: ServedConnection, actions: list[Action]) -> bool:
        """Carry out what the session decided on a client message, in order, waiting for what
        must come first; False once the connection is being closed."""
        for action in actions:
            match action:
                case Close(code, reason):
                    # Awaited, so the library's own close cannot come first.
                    await self.writer.close_now(served.entry, code, reason)
                    return False
                case AskInit(request):
                    if not await self._act(served, await self._ask_init(served, request)):
                        return False
                case _:
                    self._apply(served, [action])
        return True

    async def _ask_init(self, served: ServedConnection, request: JsonObject) -> list[Action]:
        """Asked before the next message is read: what follows an init waits for its answer."""
        try:
            answer = await self.origin.call(request)
        except GraphqlOriginUnavailable as exc:
            return served.session.init_failed(str(exc))
        return served.session.init_answered(answer)

    def _apply(self, served: ServedConnection, actions: list[Action]) -> None:
        """Carry out actions that need no waiting (a close is sent by a task of its own)."""
        entry = served.entry
        for action in actions:
            match action:
                case Send(text):
                    self.writer.send_text(entry, text)
                case Count(counter):
                    self.counters[counter] += 1
                case RunOperation(token):
                    task = asyncio.ensure_future(self._run_operation(served, action))
                    served.requests[token] = task
                    self._keep(task)
                case EndOperation(token):
                    self._end_operation(served, token)
                case Subscribe(operation, spec):
                    self.index.add(
                        (entry.connection_id, operation.id),
                        spec.digest,
                        spec.keys,
                        query=operation.query,
                        variables=operation.variables,
                        operation_name=operation.operation_name,
                        input_context=spec.input_context,
                    )
                case Unsubscribe(operation_id):
                    self.index.remove((entry.connection_id, operation_id))
                case OriginFailed(request, error):
                    self.counters["graphqlOriginFailures"] += 1
                    log_origin_failure(request, error, entry.connection_id)
                case InitRefused(message):
                    log.info(
                        "connection_init refused",
                        extra={"connectionId": entry.connection_id, "reason": message},
                    )
                case Close(code, reason):
                    self.writer.close(entry, code, reason)
                case AskInit():
                    raise AssertionError("connection_init is answered in the read loop only")
                case _:
                    assert_never(action)

    # Operations

    async def _run_operation(self, served: ServedConnection, action: RunOperation) -> None:
        session, token = served.session, action.token
        try:
            self.counters["graphqlOperations"] += 1
            try:
                answer = await self.origin.call(action.request)
            except GraphqlOriginUnavailable as exc:
                actions = session.operation_failed(token, str(exc))
            else:
                actions = session.operation_answered(token, answer)
            self._apply(served, actions)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "GraphQL operation failed",
                extra={"connectionId": session.connection_id, "operationId": action.operation.id},
            )
            self._apply(served, session.operation_crashed(token))
        finally:
            served.requests.pop(token, None)

    def _end_operation(self, served: ServedConnection, token: int) -> None:
        """Cancel an operation. A request still waiting for the origin is withdrawn at once;
        one the origin has lets the task end only with it (its connection stays usable), and
        until then the operation still counts against the connection's limit."""
        task = served.requests.get(token)
        if task is None:
            served.session.operation_finished(token)
            return
        task.cancel()
        if task.done():
            served.session.operation_finished(token)
            return
        self._ending += 1

        def ended(_: asyncio.Task[None]) -> None:
            served.session.operation_finished(token)
            self._ending -= 1

        task.add_done_callback(ended)

    # Publish results and periodic work

    def _deliver_update(
        self, subscriber: Subscriber, result_json: str | None, answer: OperationAnswer
    ) -> bool:
        connection_id, operation_id = subscriber
        served = self.sessions.get(connection_id)
        if served is None:
            return False
        if result_json is not None and answer.errors is None and not answer.complete:
            text = served.session.subscription_result(operation_id, result_json)
            self.writer.send_text(served.entry, text)
            return True
        update = served.session.subscription_update(
            operation_id, result_json, answer.errors, answer.complete
        )
        self._apply(served, update)
        return True

    def _arm_timer(self, served: ServedConnection) -> None:
        deadline = served.session.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            served.timer = loop.call_at(deadline, self._timer_fired, served)

    def _timer_fired(self, served: ServedConnection) -> None:
        served.timer = None
        if served.entry.closing:
            return
        self._apply(served, served.session.timer(asyncio.get_running_loop().time()))
        self._arm_timer(served)  # called early (by the clock's resolution): once more

    async def _ka_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ka_interval)
            for served in list(self.sessions.values()):
                self._apply(served, served.session.keep_alive())

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
