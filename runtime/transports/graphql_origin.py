"""Requests to the GraphQL origin: one JSON object in, one JSON object out, over HTTP or Lambda.

docs/protocol.md, "Requests to the GraphQL origin", is the contract. A non-2xx status, an answer
that is not a JSON object, a Lambda FunctionError or no answer in time is an origin failure,
raised as GraphqlOriginUnavailable; the caller decides what the client sees.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.transports.http_origin import json_client, post_json
from runtime.transports.sqs_origin import describe_aws_error

# One try per invocation: a request whose answer was lost may have run (connection_init can have
# side effects), and a second try would not fit in the timeout the client is waiting on anyway.
LAMBDA_ATTEMPTS = 1
LAMBDA_CONNECT_TIMEOUT = 3.0

T = TypeVar("T")

# ASCII-escaped: text from an origin's earlier answer may hold a lone surrogate, which is valid as a
# JSON escape but cannot be encoded as UTF-8.
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class GraphqlOriginUnavailable(Exception):
    """The origin failed to answer a request; the message says how."""


class GraphqlOrigin(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, request: dict[str, Any]) -> dict[str, Any]: ...


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


class HttpGraphqlOrigin:
    """`POST <url>` per request, on at most `concurrency` kept-alive connections."""

    def __init__(
        self, url: str, *, token: str = "", concurrency: int = 32, timeout: float = 10.0
    ) -> None:
        _check_concurrency(concurrency)
        self.url = url
        self._client = json_client(url, token, concurrency, timeout)

    async def start(self) -> None:
        """Connections open on first use."""

    async def close(self) -> None:
        await self._client.close()

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        response = await post_json(
            self._client, _encoded(request), self.url, GraphqlOriginUnavailable
        )
        return _answer(response.body, self.url)


class LambdaGraphqlOrigin:
    """A synchronous (RequestResponse) invocation per request, in threads of its own."""

    def __init__(
        self,
        function_name: str,
        *,
        region: str | None = None,
        concurrency: int = 32,
        timeout: float = 10.0,
        endpoint_url: str | None = None,
    ) -> None:
        _check_concurrency(concurrency)
        self.function_name = function_name
        self.region = region
        self.endpoint_url = endpoint_url  # None: boto3's own chain (AWS_ENDPOINT_URL, or AWS)
        self.timeout = timeout
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": LAMBDA_ATTEMPTS},
            connect_timeout=min(timeout, LAMBDA_CONNECT_TIMEOUT),
            read_timeout=timeout,
            max_pool_connections=concurrency,
        )
        # Threads of its own: a slow function must not hold up other boto3 users of the node.
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="graphql-lambda")
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._closed = False

    def _lambda(self) -> Any:
        """The client, made on first need in a worker thread: making one takes tens of ms."""
        with self._client_lock:
            if self._client is None:
                session = boto3.Session()  # boto3's default session is not thread safe
                self._client = session.client(
                    "lambda",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=self._config,
                )
            return self._client

    async def start(self) -> None:
        await self._run(self._lambda)

    async def close(self) -> None:
        # A call still running finishes in its thread; nobody waits for it.
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        payload = _encoded(request)
        response = await self._run(self._invoke, payload)
        raw: bytes = response["Payload"]
        error = response.get("FunctionError")
        if error:
            raise GraphqlOriginUnavailable(
                f"function {self.function_name} failed ({error}): {_error_message(raw)}"
            )
        return _answer(raw, f"function {self.function_name}")

    def _invoke(self, payload: bytes) -> dict[str, Any]:
        """In a worker thread: the call and the read of its payload both wait on the network."""
        response: dict[str, Any] = self._lambda().invoke(
            FunctionName=self.function_name, InvocationType="RequestResponse", Payload=payload
        )
        return {**response, "Payload": response["Payload"].read()}

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise GraphqlOriginUnavailable("origin is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout + 1):  # botocore's own timeouts come first
                return await loop.run_in_executor(self._pool, function, *args)
        except TimeoutError:
            raise GraphqlOriginUnavailable(
                f"no answer from function {self.function_name} within {self.timeout}s"
            ) from None
        except (ClientError, BotoCoreError) as exc:
            action = f"invoking {self.function_name}"
            raise GraphqlOriginUnavailable(describe_aws_error(action, exc)) from exc


def _error_message(raw: bytes) -> str:
    """Lambda reports `{"errorMessage": ..., "errorType": ...}`; anything else is shown as is."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and "errorMessage" in document:
        return str(document["errorMessage"])
    return raw[:200].decode("utf-8", "replace")
