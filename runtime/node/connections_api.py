"""API Gateway's @connections API (post, get, delete one connection), answered by the node that
holds the connection.

A request may reach any node; the connection ID names the node that holds it. Held here, the
action is carried out at once. Held by a cluster member, this node forwards an `Ask` over the
authenticated peer link and waits, at most `peer_timeout` (--peer-down-seconds), for the owner's
`Answer`. Everything else is 410 Gone, as API Gateway answers for a connection that is not
connected: an ID that does not parse, names another region, this node (the connection closed)
or a node outside the cluster, and an owner that cannot be reached in time. A down owner's
connections are lost to the cluster (commands to them are GONE too), and 410 is what API Gateway
clients act on: they forget the connection rather than retry, where a 5xx would make every SDK
retry the same wait several times. A post that times out may still arrive if the owner was only
slow; 410 then means "not known to have been delivered".

At most `max_pending` asks wait at once; more get 429 (LimitExceededException, which SDKs retry
with backoff). GraphQL connections are not the event origin's, so the API does not know them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Container, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from runtime.core.registry import ConnectionEntry, ConnectionRegistry
from runtime.logs import LogThrottle
from runtime.node.writer import ClientWriter
from runtime.wire.commands import Answer, Ask, PeerCommand
from runtime.wire.connection_id import InvalidConnectionId, NodeAddress, parse_connection_id

log = logging.getLogger("runtime.connections")

OK, NO_CONTENT, GONE, TOO_LARGE, TOO_MANY = 200, 204, 410, 413, 429
ANSWERED = frozenset((OK, NO_CONTENT, GONE, TOO_LARGE))  # what an owner may answer
MAX_PENDING_ASKS = 10_000
DELETE_CLOSE_CODE = 1000

Info = dict[str, Any]


class PeerLink(Protocol):
    """The part of the cluster transport asks and answers travel on."""

    def members(self) -> Container[NodeAddress]: ...

    async def forward(self, node: NodeAddress, commands: Sequence[PeerCommand]) -> bool: ...


def iso8601_ms(ms: int) -> str:
    """Milliseconds since the epoch as API Gateway writes times: 2026-12-04T02:51:04.123Z."""
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def connection_info(entry: ConnectionEntry[Any]) -> Info:
    """GetConnection's answer, with the names API Gateway puts on the wire (SDKs map them)."""
    return {
        "connectedAt": iso8601_ms(entry.connected_at),
        "identity": {"sourceIp": entry.source_ip, "userAgent": entry.user_agent},
        "lastActiveAt": iso8601_ms(entry.last_active_at or entry.connected_at),
    }


class ConnectionsApi:
    """Post, get and delete by connection ID, here or on the owning node; answers HTTP statuses."""

    def __init__(
        self,
        registry: ConnectionRegistry[Any],
        cluster: PeerLink | None,
        address: NodeAddress,
        *,
        region: str,
        max_payload_bytes: int,
        writer: ClientWriter,
        peer_timeout: float,
        max_pending: int = MAX_PENDING_ASKS,
    ) -> None:
        self.registry = registry
        self.cluster = cluster
        self.address = address
        self.region = region
        self.max_payload_bytes = max_payload_bytes
        self.peer_timeout = peer_timeout
        self.max_pending = max_pending
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()
        self._throttle = LogThrottle()  # a peer that stops answering times out every ask

    # The API

    async def post(self, connection_id: str, payload: bytes, binary: bool) -> int:
        """200 once the message is written to the client (or its owner says so)."""
        if len(payload) > self.max_payload_bytes:
            return TOO_LARGE
        status, _ = await self._carry_out(connection_id, "post", payload, binary)
        return status

    async def get(self, connection_id: str) -> tuple[int, Info | None]:
        """200 and GetConnection's fields (connectedAt, identity, lastActiveAt)."""
        status, info = await self._carry_out(connection_id, "get", b"", False)
        if status != OK:
            return status, None
        try:
            document = json.loads(info)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            log.error(
                "unreadable connection info from a peer", extra={"connectionId": connection_id}
            )
            return GONE, None
        return OK, document

    async def delete(self, connection_id: str) -> int:
        """204 once the close (1000) has begun; the client's DISCONNECT follows as usual."""
        status, _ = await self._carry_out(connection_id, "delete", b"", False)
        return status

    # From peers (the node's execute dispatches them here)

    def ask_received(self, ask: Ask) -> None:
        """A peer asks for a connection held here: carry it out and send the answer back."""
        self.counters["connectionsApiAsksReceived"] += 1
        status, info = self._here(ask.connection_id, ask.action, ask.payload, ask.binary)
        self._spawn(self._answer(ask.reply_to, Answer(ask.request_id, status, info)))

    def answer_received(self, answer: Answer) -> None:
        """The owner answered; a request that stopped waiting (timed out) finds nothing here."""
        waiter = self._pending.get(answer.request_id)
        if waiter is None or waiter.done():
            self.counters["connectionsApiLateAnswers"] += 1
            return
        if answer.status not in ANSWERED:
            log.error("unknown status in a peer's answer", extra={"status": answer.status})
            waiter.set_result((GONE, b""))
            return
        waiter.set_result((answer.status, answer.info))

    # Lifecycle and numbers

    async def close(self) -> None:
        """Stop: every waiting request gets 410, and answers not yet sent are dropped."""
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_result((GONE, b""))
        for task in list(self._tasks):
            task.cancel()

    def stats(self) -> dict[str, int]:
        return {"connectionsApiPending": len(self._pending), **self.counters}

    @property
    def pending(self) -> int:
        return len(self._pending)

    # Inside

    async def _carry_out(
        self, connection_id: str, action: str, payload: bytes, binary: bool
    ) -> tuple[int, bytes]:
        if connection_id in self.registry:
            return self._here(connection_id, action, payload, binary)
        owner = self._owner(connection_id)
        if owner is None:
            self.counters["connectionsApiGone"] += 1
            return GONE, b""
        return await self._ask(owner, connection_id, action, payload, binary)

    def _here(
        self, connection_id: str, action: str, payload: bytes, binary: bool
    ) -> tuple[int, bytes]:
        entry = self.registry.get(connection_id)
        if entry is None or entry.closing or entry.graphql:
            self.counters["connectionsApiGone"] += 1
            return GONE, b""
        if action == "get":
            return OK, json.dumps(connection_info(entry), separators=(",", ":")).encode()
        if action == "delete":
            self._writer.close(entry, DELETE_CLOSE_CODE, "")
            return NO_CONTENT, b""
        if len(payload) > self.max_payload_bytes:  # the asking node may allow more than this one
            return TOO_LARGE, b""
        if not self._writer.post(entry, payload, binary):
            self.counters["connectionsApiGone"] += 1
            return GONE, b""
        return OK, b""

    def _owner(self, connection_id: str) -> NodeAddress | None:
        """The cluster member the ID names, if it can hold it; None when nobody can."""
        try:
            parsed = parse_connection_id(connection_id)
        except InvalidConnectionId:
            return None
        if parsed.region != self.region or parsed.node == self.address:
            return None
        if self.cluster is None or parsed.node not in self.cluster.members():
            return None  # never ask an address outside the cluster (IDs are easily forged)
        return parsed.node

    async def _ask(
        self, owner: NodeAddress, connection_id: str, action: str, payload: bytes, binary: bool
    ) -> tuple[int, bytes]:
        if len(self._pending) >= self.max_pending:
            self.counters["connectionsApiRefusedBusy"] += 1
            return TOO_MANY, b""
        ask = Ask(next(self._ids), self.address, connection_id, action, payload, binary)
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[ask.request_id] = waiter
        self.counters["connectionsApiAsksSent"] += 1
        self._spawn(self._send(owner, ask, waiter))
        try:
            return await asyncio.wait_for(waiter, self.peer_timeout)
        except TimeoutError:
            self.counters["connectionsApiAsksTimedOut"] += 1
            held = self._throttle.allow("timeout", time.monotonic())
            if held is not None:
                log.warning(
                    "no answer from the connection's node in time; answered 410",
                    extra={"peer": str(owner), "seconds": self.peer_timeout, "heldBack": held},
                )
            return GONE, b""
        finally:
            del self._pending[ask.request_id]

    async def _send(
        self, owner: NodeAddress, ask: Ask, waiter: asyncio.Future[tuple[int, bytes]]
    ) -> None:
        assert self.cluster is not None  # _owner found a member
        try:
            delivered = await self.cluster.forward(owner, [ask])
        except Exception:
            log.exception("asking a peer failed", extra={"peer": str(owner)})
            delivered = False
        if not delivered and not waiter.done():
            self.counters["connectionsApiPeerUnreachable"] += 1
            waiter.set_result((GONE, b""))

    async def _answer(self, reply_to: NodeAddress, answer: Answer) -> None:
        if self.cluster is None:
            return
        try:
            delivered = await self.cluster.forward(reply_to, [answer])
        except Exception:
            log.exception("answering a peer failed", extra={"peer": str(reply_to)})
            return
        if not delivered:
            # The asker times out and answers 410 by itself.
            self.counters["connectionsApiAnswersLost"] += 1

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
