"""Synchronous (RequestResponse) Lambda invocations from asyncio, in threads of their own.

Shared by everything the node asks a function and waits on: the GraphQL origin, the REQUEST
authorizer. botocore blocks, so each invoker has its own threads: a slow function must not hold
up other boto3 users of the node. One try per invocation, bounded by `timeout`: a request whose
answer was lost may have run, and its caller (a handshake, a client's operation) cannot wait for
a second one.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.transports.batch_origin import describe_aws_error

LAMBDA_ATTEMPTS = 1
LAMBDA_CONNECT_TIMEOUT = 3.0
# botocore's read timeout is per read, not per call: the whole call gets this much more before
# its caller stops waiting (botocore's own timeouts come first, and say better what failed).
DEADLINE_MARGIN = 1.0

T = TypeVar("T")


class LambdaFailed(Exception):
    """The function gave no answer: an AWS or network error, a timeout, or it is closed."""


class LambdaFunctionError(LambdaFailed):
    """The function ran and failed (Lambda's FunctionError); `error_message` is its own
    `errorMessage` (None when its payload had none)."""

    def __init__(self, message: str, error_message: str | None) -> None:
        super().__init__(message)
        self.error_message = error_message


class LambdaInvoker:
    """`invoke(payload) -> answer payload` on at most `concurrency` threads and connections.

    `endpoint_url` None means boto3's own chain (AWS_ENDPOINT_URL, or AWS). A call still running
    at Lambda when its caller stopped waiting cannot be stopped: keep the function's own timeout
    at most `timeout`.
    """

    def __init__(
        self,
        function: str,
        *,
        timeout: float,
        concurrency: int,
        endpoint_url: str | None = None,
        region: str | None = None,
        name: str = "lambda",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {concurrency})")
        if not timeout > 0:
            raise ValueError(f"timeout must be above 0 seconds (got {timeout})")
        self.function = function
        self.timeout = timeout
        self.concurrency = concurrency
        self.endpoint_url = endpoint_url
        self.region = region
        self._config = Config(
            retries={"mode": "standard", "total_max_attempts": LAMBDA_ATTEMPTS},
            connect_timeout=min(timeout, LAMBDA_CONNECT_TIMEOUT),
            read_timeout=timeout,
            max_pool_connections=concurrency,
        )
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=name)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._closed = False

    async def start(self) -> None:
        """Make the client now (tens of ms): a missing region fails here, not at a handshake."""
        await self._in_thread(self._lambda)

    async def close(self) -> None:
        """Calls waiting for a thread fail; one running finishes in its thread, unawaited."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def invoke(self, payload: bytes, *, bounded: bool = True) -> bytes:
        """The function's answer to `payload`.

        Bounded (the default), the caller waits at most `timeout` plus a second, time spent
        waiting for a free thread included. Unbounded, it returns only when the thread does
        (within botocore's timeouts), so that whoever counts calls in flight counts what
        Lambda is still working on.
        """
        if not bounded:
            return await self._in_thread(self._invoke, payload)
        try:
            async with asyncio.timeout(self.timeout + DEADLINE_MARGIN):
                return await self._in_thread(self._invoke, payload)
        except TimeoutError:
            raise LambdaFailed(
                f"no answer from function {self.function} within {self.timeout}s"
            ) from None

    def _lambda(self) -> Any:
        """The client: one for every thread (botocore clients are thread safe), made once."""
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

    def _invoke(self, payload: bytes) -> bytes:
        """In a worker thread: the call and the read of its payload both wait on the network."""
        response = self._lambda().invoke(
            FunctionName=self.function, InvocationType="RequestResponse", Payload=payload
        )
        raw: bytes = response["Payload"].read()
        error = response.get("FunctionError")
        if error:
            message = _error_message(raw)
            shown = message if message is not None else raw[:200].decode("utf-8", "replace")
            raise LambdaFunctionError(
                f"function {self.function} failed ({error}): {shown}", message
            )
        return raw

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        closed = LambdaFailed(f"the invoker of function {self.function} is closed")
        if self._closed:
            raise closed
        try:
            future = self._pool.submit(function, *args)
        except RuntimeError:  # the pool is shut down
            raise closed from None
        try:
            return await asyncio.wrap_future(future)
        except (ClientError, BotoCoreError) as exc:
            raise LambdaFailed(describe_aws_error(f"invoking {self.function}", exc)) from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller's cancellation
            raise closed from None  # `close` cancelled the call waiting for a thread


def _error_message(raw: bytes) -> str | None:
    """Lambda reports `{"errorMessage": ..., "errorType": ...}`."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(document, dict) and "errorMessage" in document:
        return str(document["errorMessage"])
    return None
