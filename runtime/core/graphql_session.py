"""One GraphQL-over-WebSocket connection as a state machine, for both subprotocols, with no I/O.

Every protocol rule a client can break or an origin can answer lives here: connection_init once,
nothing before the ack, one live operation per ID, at most --graphql-max-operations held, the
init timeout, ping/pong, legacy start/stop and ka. Client messages, the origin's answers and the
time go in; out come small actions (`Send`, `Close`, `AskInit`, `RunOperation`, ...) for
`runtime.node.graphql` to carry out, so every decision is testable by feeding it messages.

Message formats are `runtime.wire.graphql_ws`'s, origin requests and answers
`runtime.wire.graphql_contract`'s.

Longer than 400 lines because it is one state machine: the two subprotocols share every state and
most transitions, and a reader checks a rule by reading it in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.wire import graphql_contract as contract
from runtime.wire import graphql_ws as gql
from runtime.wire.graphql_contract import SubscriptionSpec
from runtime.wire.graphql_ws import LEGACY, MODERN, ClientMessage, Operation

JsonObject = dict[str, Any]  # a JSON object as json.loads reads it: requests and answers
JsonValue = Any  # any JSON value (payloads, contexts) the session passes on without reading

ORIGIN_UNAVAILABLE = "origin unavailable"
# 1013 (try again later), not the protocol's 4500: graphql-ws clients never retry 4500, and an
# origin that failed once may answer the next attempt.
ORIGIN_UNAVAILABLE_CLOSE = 1013
MAX_CLOSE_REASON_BYTES = 123


# Actions: what the session asks of whoever runs it, in order.


@dataclass(frozen=True, slots=True)
class Send:
    """One text message to the client."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection, waiting for the close to be sent before reading on; always last."""

    code: int
    reason: str  # at most 123 bytes of UTF-8, as a close frame allows


@dataclass(frozen=True, slots=True)
class AskInit:
    """Ask the origin about connection_init; answer with `init_answered` or `init_failed`
    before feeding the next client message (messages after an init wait for its answer)."""

    request: JsonObject


@dataclass(frozen=True, slots=True)
class RunOperation:
    """Ask the origin to run an operation; answer with `operation_answered`,
    `operation_failed` or `operation_crashed`, then `operation_finished`, naming `token`."""

    token: int
    operation: Operation
    request: JsonObject


@dataclass(frozen=True, slots=True)
class EndOperation:
    """The client no longer wants this run: withdraw the request, or let the origin finish it.
    It counts against the connection's limit until `operation_finished(token)`."""

    token: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """The origin registered a subscription: publishes matching its keys now reach it."""

    operation: Operation
    subscription: SubscriptionSpec


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    operation_id: str


@dataclass(frozen=True, slots=True)
class Count:
    """Add one to a node counter."""

    counter: str


@dataclass(frozen=True, slots=True)
class OriginFailed:
    """The origin failed a request of this connection's (worth a warning)."""

    request: str  # connection_init or start
    error: str


@dataclass(frozen=True, slots=True)
class InitRefused:
    """The origin refused connection_init (worth an info line)."""

    message: str


Action = (
    Send
    | Close
    | AskInit
    | RunOperation
    | EndOperation
    | Subscribe
    | Unsubscribe
    | Count
    | OriginFailed
    | InitRefused
)


class GraphqlSession:
    """Where one connection's handshake stands and which of its operations are live."""

    def __init__(
        self,
        protocol: str,
        *,
        node: str,
        connection_id: str,
        connect: JsonValue,
        now: float,
        init_timeout: float,
        max_operations: int,
        keep_alive: bool,
    ) -> None:
        if protocol not in gql.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(gql.PROTOCOLS)} (got {protocol})")
        self.protocol = protocol
        self.node = node
        self.connection_id = connection_id
        self.connect = connect
        self.max_operations = max_operations
        self.keep_alive_enabled = keep_alive  # legacy: ka after the ack and periodically
        self.init_received = False
        self.acknowledged = False
        self.closed = False
        self.context: JsonValue = None
        self._deadline: float | None = now + init_timeout
        # Operation ID -> the token of its request at the origin, or None once subscribed.
        self._operations: dict[str, int | None] = {}
        self._at_origin: dict[int, Operation] = {}  # live requests, by token
        self._ending: set[int] = set()  # tokens the client ended that the origin still has
        self._last_token = 0

    @property
    def modern(self) -> bool:
        return self.protocol == MODERN

    def held(self) -> int:
        """What counts against --graphql-max-operations: what the origin still works on too."""
        return len(self._operations) + len(self._ending)

    def next_deadline(self) -> float | None:
        """When `timer` must be called next: the init timeout, until connection_init arrives."""
        return None if self.init_received or self.closed else self._deadline

    # Inputs

    def receive(self, data: str | bytes) -> list[Action]:
        """One message from the client."""
        if self.closed:
            return []
        try:
            message = gql.parse_client_message(self.protocol, data)
        except gql.InvalidMessage as exc:
            return self._invalid(exc)
        return self._dispatch(message)

    def timer(self, now: float) -> list[Action]:
        """The time has come (or not yet): close a connection that never sent connection_init."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        self._deadline = None
        actions: list[Action] = [Count("graphqlInitTimeouts")]
        if not self.modern:
            actions.append(Send(gql.connection_error("connection initialisation timeout")))
        actions.append(self._close(gql.INIT_TIMEOUT, "Connection initialisation timeout"))
        return actions

    def keep_alive(self) -> list[Action]:
        """The periodic legacy `ka`; the modern protocol has ping/pong instead."""
        if self.modern or not self.acknowledged or self.closed:
            return []
        return [Send(gql.KEEP_ALIVE)]

    def init_answered(self, answer: JsonObject) -> list[Action]:
        try:
            parsed = contract.parse_init_answer(answer)
        except contract.BadOriginAnswer as exc:
            return self.init_failed(str(exc))
        if not parsed.accept:
            actions: list[Action] = [Count("graphqlInitsRefused"), InitRefused(parsed.message)]
            reason = _reason("Forbidden", parsed.message)
            if self.modern:
                return [*actions, self._close(gql.FORBIDDEN, reason)]
            return [*actions, Send(gql.connection_error(parsed.message)), self._close(1011, reason)]
        self.acknowledged = True
        self.context = parsed.context
        actions = [Send(gql.connection_ack(parsed.payload))]
        if not self.modern and self.keep_alive_enabled:
            # subscriptions-transport-ws expects another ka within 30 s of its first one.
            actions.append(Send(gql.KEEP_ALIVE))
        return actions

    def init_failed(self, error: str) -> list[Action]:
        """The origin could not answer connection_init."""
        failed = OriginFailed("connection_init", error)
        if self.modern:
            return [failed, self._close(ORIGIN_UNAVAILABLE_CLOSE, ORIGIN_UNAVAILABLE)]
        return [
            failed,
            Send(gql.connection_error(ORIGIN_UNAVAILABLE)),
            self._close(1011, ORIGIN_UNAVAILABLE),
        ]

    def operation_answered(self, token: int, answer: JsonObject) -> list[Action]:
        try:
            parsed = contract.parse_start_answer(answer)
        except contract.BadOriginAnswer as exc:
            return self.operation_failed(token, str(exc))
        operation = self._at_origin.pop(token, None)
        if operation is None:
            return []  # ended by the client meanwhile
        operation_id = operation.id
        actions: list[Action] = []
        if parsed.result is not None:
            result = gql.encode_json(parsed.result)
            actions.append(Send(gql.result_message(self.protocol, operation_id, result)))
        if parsed.subscription is not None:
            self._operations[operation_id] = None
            actions.append(Subscribe(operation, parsed.subscription))
            return actions
        del self._operations[operation_id]
        if parsed.errors is not None and self.modern:
            actions.append(Send(gql.error_message(MODERN, operation_id, parsed.errors)))
            return actions
        if parsed.errors is not None:  # as the legacy server answers a document that fails
            result = gql.encode_json({"errors": parsed.errors})
            actions.append(Send(gql.result_message(LEGACY, operation_id, result)))
        actions.append(Send(gql.complete_message(operation_id)))
        return actions

    def operation_failed(self, token: int, error: str) -> list[Action]:
        """The origin could not answer a start."""
        operation = self._at_origin.pop(token, None)
        if operation is None:
            return []
        del self._operations[operation.id]
        return [
            OriginFailed("start", error),
            self._operation_error(operation.id, ORIGIN_UNAVAILABLE),
        ]

    def operation_crashed(self, token: int) -> list[Action]:
        """Running the operation failed in the node itself: the client is told it failed."""
        operation = self._at_origin.pop(token, None)
        if operation is None:
            return []
        del self._operations[operation.id]
        return [self._operation_error(operation.id, "internal error")]

    def operation_finished(self, token: int) -> None:
        """The origin is done with a request, whatever became of it."""
        self._ending.discard(token)

    def subscription_result(self, operation_id: str, result_json: str) -> str:
        """The message of a publish's plain result, the fan-out's common case: no error, no end,
        so nothing changes and no action list is built per subscriber."""
        return gql.result_message(self.protocol, operation_id, result_json)

    def subscription_update(
        self,
        operation_id: str,
        result_json: str | None,
        errors: list[JsonObject] | None,
        complete: bool,
    ) -> list[Action]:
        """A publish's result for one subscription (`result_json` encoded once for all)."""
        actions: list[Action] = []
        if result_json is not None:
            actions.append(Send(gql.result_message(self.protocol, operation_id, result_json)))
        if errors is not None:
            actions.append(Send(gql.error_message(self.protocol, operation_id, errors)))
        elif complete:
            actions.append(Send(gql.complete_message(operation_id)))
        if errors is not None or complete:
            self._operations.pop(operation_id, None)
            actions.append(Unsubscribe(operation_id))
        return actions

    def connection_lost(self) -> list[Action]:
        """The connection is gone: every request still at the origin is ended."""
        self.closed = True
        actions: list[Action] = []
        for operation_id in list(self._operations):
            actions.extend(self._end(operation_id))
        return actions

    # Client messages

    def _invalid(self, exc: gql.InvalidMessage) -> list[Action]:
        counted = Count("graphqlInvalidMessages")
        if self.modern:
            return [counted, self._close(gql.BAD_REQUEST, str(exc))]
        if isinstance(exc, gql.MalformedJson):
            return [counted, Send(gql.connection_error(str(exc)))]
        errors = gql.errors_of(str(exc))
        return [counted, Send(gql.error_message(LEGACY, exc.operation_id, errors))]

    def _dispatch(self, message: ClientMessage) -> list[Action]:
        kind = message.type
        if kind == "connection_init":
            return self._init(message.payload)
        if kind == "ping":
            return [Send(gql.pong(message.payload))]
        if kind == "pong":
            return []
        if kind == "connection_terminate":
            return [self._close(1000, "connection_terminate")]
        if message.operation is not None:
            return self._start(message.operation)
        if message.id is not None:  # complete (modern) or stop (legacy)
            actions = self._end(message.id)
            if not self.modern:
                actions.append(Send(gql.complete_message(message.id)))
            return actions
        return []

    def _init(self, payload: JsonValue) -> list[Action]:
        if self.init_received:
            if self.modern:
                return [self._close(gql.TOO_MANY_INITS, "Too many initialisation requests")]
            return [Send(gql.connection_error("connection already initialised"))]
        self.init_received = True
        request = contract.init_request(
            self.node, self.connection_id, self.protocol, payload, self.connect
        )
        return [AskInit(request)]

    def _start(self, operation: Operation) -> list[Action]:
        operation_id = operation.id
        if not self.acknowledged:
            if self.modern:
                return [self._close(gql.UNAUTHORIZED, "Unauthorized")]
            return [self._operation_error(operation_id, "send connection_init first")]
        actions: list[Action] = []
        if operation_id in self._operations:
            if self.modern:
                reason = _reason(f"Subscriber for {operation_id} already exists", "")
                return [self._close(gql.DUPLICATE_OPERATION, reason)]
            actions.extend(self._end(operation_id))  # the legacy server replaces the operation
        if self.held() >= self.max_operations:
            message = (
                f"too many operations on this connection (the most is {self.max_operations}, "
                "counting ended ones the origin is still running)"
            )
            actions += [
                Count("graphqlOperationsRefused"),
                self._operation_error(operation_id, message),
            ]
            return actions
        self._last_token += 1
        token = self._last_token
        self._operations[operation_id] = token
        self._at_origin[token] = operation
        request = contract.start_request(self.node, self.connection_id, operation, self.context)
        actions.append(RunOperation(token, operation, request))
        return actions

    def _end(self, operation_id: str) -> list[Action]:
        if operation_id not in self._operations:
            return []
        token = self._operations.pop(operation_id)
        if token is None:
            return [Unsubscribe(operation_id)]
        del self._at_origin[token]
        self._ending.add(token)
        return [EndOperation(token)]

    # Helpers

    def _close(self, code: int, reason: str) -> Close:
        self.closed = True
        return Close(code, _truncate(reason))

    def _operation_error(self, operation_id: str, message: str) -> Send:
        return Send(gql.error_message(self.protocol, operation_id, gql.errors_of(message)))


def _reason(prefix: str, detail: str) -> str:
    return f"{prefix}: {detail}" if detail else prefix


def _truncate(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
