"""Requests to the GraphQL origin: one JSON object in, one JSON object out, over HTTP or Lambda.

docs/protocol.md, "Requests to the GraphQL origin", is the contract. A non-2xx status, an answer
that is not a JSON object, a Lambda FunctionError or no answer in time is an origin failure,
raised as GraphqlOriginUnavailable; the caller decides what the client sees.

Both transports hold at most `concurrency` requests at the origin at once, counted as the origin
counts them: a request keeps its place from the moment it leaves until the origin is done with
it, even when its caller stopped waiting. Places go round the connections waiting and the node's
own work in turn (`OriginSlots`), so one client cannot crowd the others out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from runtime.transports.http_origin import json_client, post_json
from runtime.transports.lambda_invoke import DEADLINE_MARGIN, LambdaFailed, LambdaInvoker
from runtime.wire.graphql_contract import requester_of

# How long an HTTP request whose caller gave up keeps its connection, waiting for the origin's
# late answer, before the connection is closed and its place goes to another request.
LATE_ANSWER_SECONDS = 60.0

T = TypeVar("T")

# ASCII-escaped: text from an origin's earlier answer may hold a lone surrogate, which is valid as a
# JSON escape but cannot be encoded as UTF-8.
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class GraphqlOriginUnavailable(Exception):
    """The origin failed to answer a request; the message says how."""


class GraphqlOriginClient(Protocol):
    """The node's client of the user's GraphQL origin: what the gateway needs of one.

    `call` waits for a free place at the origin first. Cancelled while waiting, the request is
    withdrawn and never sent. Cancelled once sent, the call still returns (raising
    CancelledError) only when the origin is done with the request, so whoever counts its calls
    counts what the origin is still working on.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def stats(self) -> dict[str, int]: ...


def _encoded(request: dict[str, Any]) -> bytes:
    """A request that cannot be encoded is a bug in the caller: let it raise."""
    return _encode(request).encode("utf-8")


def _answer(raw: bytes, source: str) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        answer = None
    if not isinstance(answer, dict):
        detail = raw[:200].decode("utf-8", "replace")
        raise GraphqlOriginUnavailable(f"{source} answered with no JSON object: {detail}")
    return answer


def _check_concurrency(concurrency: int) -> None:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1 (got {concurrency})")


Requester = str | None  # a client connection's ID, or None for the node's own work


class OriginSlots:
    """The origin's places for requests, shared so that no connection crowds out the others.

    A free place goes to the next requester in turn, round the client connections that are
    waiting and the node's own work (publish executions, keepalives), whatever order their
    requests came in. A connection holds at most `share` places at once even when others are
    free, so another client's connection_init finds one at once while a connection floods the
    origin. The node's own work has no cap: it is bounded where it is queued.
    """

    def __init__(self, size: int, share: int) -> None:
        if not 1 <= share <= size:
            raise ValueError(f"share must be between 1 and {size} (got {share})")
        self.size = size
        self.share = share
        self.busy = 0
        self.counters: Counter[str] = Counter()
        self._held: Counter[Requester] = Counter()
        self._queues: dict[Requester, deque[asyncio.Future[None]]] = {}
        # Waiting with room in their share, in turn. Ordered, so that taking the first is O(1)
        # (a dict's first key is found past every slot deleted before it).
        self._turns: OrderedDict[Requester, None] = OrderedDict()
        self._sent: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def waiting(self) -> int:
        return sum(not waiter.done() for queue in self._queues.values() for waiter in queue)

    async def call(
        self,
        requester: Requester,
        exchange: Callable[[], Coroutine[Any, Any, T]],
        *,
        within: float,
        source: str,
    ) -> T:
        """`send` with its deadline `within` seconds from now; none by then is an origin failure
        (`source` names the origin and the timeout its caller was promised)."""
        deadline = asyncio.get_running_loop().time() + within
        try:
            return await self.send(requester, exchange, deadline)
        except TimeoutError:
            raise GraphqlOriginUnavailable(f"no answer from {source} in time") from None

    async def send(
        self, requester: Requester, exchange: Callable[[], Coroutine[Any, Any, T]], deadline: float
    ) -> T:
        """`exchange()` once a place is ours, its result by `deadline` (else TimeoutError).

        Cancelled while waiting, nothing is sent. Once sent, the exchange keeps its place until
        it ends, past the deadline too; a cancelled caller waits for that end (a second
        cancellation does not), so that counting calls counts what the origin is working on.
        """
        sent: asyncio.Task[T] | None = None
        try:
            async with asyncio.timeout_at(deadline):
                await self._acquire(requester)
                sent = self._start(requester, exchange, deadline)
                return await asyncio.shield(sent)
        except TimeoutError:
            if sent is None:
                self.counters["graphqlOriginQueueTimeouts"] += 1
            elif not sent.done():
                self._abandon(sent)
            raise
        except asyncio.CancelledError:
            if sent is None:
                self.counters["graphqlOriginCallsWithdrawn"] += 1
            elif not sent.done():
                self._abandon(sent)
                await asyncio.wait([sent])
            raise

    def close(self) -> None:
        """Fail the calls waiting for a place, and end the requests sent: callers return now."""
        self._closed = True
        for queue in self._queues.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(GraphqlOriginUnavailable("origin is closed"))
        self._queues.clear()
        self._turns.clear()
        for sent in list(self._sent):
            sent.cancel()

    def stats(self) -> dict[str, int]:
        return {
            "graphqlOriginInFlight": self.busy,
            "graphqlOriginWaiting": self.waiting,
            **{name: count for name, count in self.counters.items() if count},
        }

    async def _acquire(self, requester: Requester) -> None:
        if self._closed:
            raise GraphqlOriginUnavailable("origin is closed")
        if self.busy < self.size and not self._turns and self._has_room(requester):
            self._take(requester)  # nobody who could use a place is waiting for one
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queues.setdefault(requester, deque()).append(waiter)
        if self._has_room(requester):
            self._turns.setdefault(requester, None)
        self._hand_out()
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(requester)  # handed a place as we were cancelled: pass it on
            else:
                self._withdraw(requester, waiter)
            raise

    def _has_room(self, requester: Requester) -> bool:
        return requester is None or self._held[requester] < self.share

    def _hand_out(self) -> None:
        while self.busy < self.size and self._turns:
            requester, _ = self._turns.popitem(last=False)
            waiter = self._next_waiter(requester)
            if waiter is None:
                continue
            self._take(requester)
            waiter.set_result(None)
            if requester in self._queues and self._has_room(requester):
                self._turns[requester] = None  # to the back of the line

    def _take(self, requester: Requester) -> None:
        self.busy += 1
        self._held[requester] += 1

    def _start(
        self, requester: Requester, exchange: Callable[[], Coroutine[Any, Any, T]], deadline: float
    ) -> asyncio.Task[T]:
        """Send, holding the place until the exchange ends; a place handed over at the very
        deadline goes back unused (the caller's TimeoutError is on its way)."""
        if asyncio.get_running_loop().time() >= deadline:
            self._give_back(requester)
            raise TimeoutError
        sent = asyncio.ensure_future(exchange())
        self._sent.add(sent)
        sent.add_done_callback(lambda _: self._release(requester, sent))
        return sent

    def _next_waiter(self, requester: Requester) -> asyncio.Future[None] | None:
        queue = self._queues.get(requester)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():  # a cancelled caller may not have withdrawn yet
                if not queue:
                    del self._queues[requester]
                return waiter
        self._queues.pop(requester, None)
        return None

    def _release(self, requester: Requester, sent: asyncio.Task[Any]) -> None:
        self._sent.discard(sent)
        self._give_back(requester)

    def _give_back(self, requester: Requester) -> None:
        self.busy -= 1
        self._held[requester] -= 1
        if self._held[requester] <= 0:
            del self._held[requester]
        if requester in self._queues and self._has_room(requester):
            self._turns.setdefault(requester, None)
        self._hand_out()

    def _withdraw(self, requester: Requester, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(requester)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._queues[requester]
            self._turns.pop(requester, None)

    def _abandon(self, sent: asyncio.Task[Any]) -> None:
        """Its caller stopped waiting; the request runs on and its outcome is nobody's news."""
        self.counters["graphqlOriginCallsAbandoned"] += 1
        sent.add_done_callback(_retrieve)


def _retrieve(sent: asyncio.Future[Any]) -> None:
    if not sent.cancelled():
        sent.exception()


def _default_share(concurrency: int) -> int:
    """Half the places: a flooding connection leaves the other half to everyone else."""
    return max(1, concurrency // 2)


class HttpGraphqlOrigin:
    """`POST <url>` per request, on at most `concurrency` kept-alive connections.

    A request with no answer within `timeout` fails for its caller but is not cut off: it keeps
    its connection and its place among the `concurrency` until the origin answers (and the
    connection serves the next request), for up to `late_answer` seconds more. Closing the
    connection at once would not stop the origin's handler, and the next request, on a fresh
    connection, would run beside it: a slow origin would get ever more requests at once, just
    when it can least take them. Only an origin slower than `timeout + late_answer` can see
    more than `concurrency` requests at once (give it a shorter timeout of its own).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        concurrency: int = 32,
        timeout: float = 10.0,
        share: int | None = None,
        late_answer: float = LATE_ANSWER_SECONDS,
    ) -> None:
        _check_concurrency(concurrency)
        self.url = url
        self.timeout = timeout
        self._slots = OriginSlots(concurrency, share or _default_share(concurrency))
        # With a place per connection the client never waits for one: its timeout only ends
        # an exchange the origin never answers.
        self._client = json_client(url, token, concurrency, timeout + late_answer)

    async def start(self) -> None:
        """Connections open on first use."""

    async def close(self) -> None:
        self._slots.close()  # an exchange ended there closes its connection
        await self._client.close()

    def stats(self) -> dict[str, int]:
        return self._slots.stats()

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        body = _encoded(request)
        return await self._slots.call(
            requester_of(request),
            lambda: self._exchange(body),
            within=self.timeout,
            source=f"{self.url} within {self.timeout}s",
        )

    async def _exchange(self, body: bytes) -> dict[str, Any]:
        response = await post_json(self._client, body, self.url, GraphqlOriginUnavailable)
        return _answer(response.body, self.url)


class LambdaGraphqlOrigin:
    """A synchronous (RequestResponse) invocation per request, in threads of its own.

    A request keeps its place until its thread returns, whatever its caller does. An invocation
    still running at Lambda when botocore's read timeout (`timeout`) ends the thread cannot be
    stopped: keep the function's own timeout at most `timeout`.
    """

    def __init__(
        self,
        function_name: str,
        *,
        region: str | None = None,
        concurrency: int = 32,
        timeout: float = 10.0,
        endpoint_url: str | None = None,
        share: int | None = None,
    ) -> None:
        _check_concurrency(concurrency)
        self.function_name = function_name
        self.timeout = timeout
        # endpoint_url None: boto3's own chain (AWS_ENDPOINT_URL, or AWS).
        self._invoker = LambdaInvoker(
            function_name,
            timeout=timeout,
            concurrency=concurrency,
            endpoint_url=endpoint_url,
            region=region,
            name="graphql-lambda",
        )
        self._slots = OriginSlots(concurrency, share or _default_share(concurrency))

    async def start(self) -> None:
        try:
            await self._invoker.start()
        except LambdaFailed as exc:
            raise GraphqlOriginUnavailable(str(exc)) from exc

    async def close(self) -> None:
        # A call still running finishes in its thread; nobody waits for it.
        self._slots.close()
        await self._invoker.close()

    def stats(self) -> dict[str, int]:
        return self._slots.stats()

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        payload = _encoded(request)
        raw = await self._slots.call(
            requester_of(request),
            lambda: self._invoke(payload),
            within=self.timeout + DEADLINE_MARGIN,
            source=f"function {self.function_name} within {self.timeout}s",
        )
        return _answer(raw, f"function {self.function_name}")

    async def _invoke(self, payload: bytes) -> bytes:
        """Unbounded: the slot is held until the thread returns (the slots keep the deadline)."""
        try:
            return await self._invoker.invoke(payload, bounded=False)
        except LambdaFailed as exc:
            raise GraphqlOriginUnavailable(str(exc)) from exc
