"""How boto3's apigatewaymanagementapi calls reach a ManagementApi instead of the network.

botocore emits `before-call.<service>.<operation>` just before it
would send a request, and sends nothing when a handler answers with `(http_response, parsed)`:
that is how botocore's own Stubber answers calls, and `_make_api_call` then returns `parsed` or,
for a status of 300 or more, raises the client's modeled exception for its error code (so
`client.exceptions.GoneException` is caught as on API Gateway). The hook is added to
`botocore.handlers.BUILTIN_HANDLERS`, which every botocore session registers when it is created
(boto3 makes one per `boto3.session.Session()`, and its default session), and to boto3's default
session if it exists already. A client copies its session's handlers when it is made, so the
clients a handler makes (in its function, or in its module, which is imported after the hook)
are covered; a client made before the first invocation, from a session made before it, is not.
The hook answers only while an event is being handled here; at any other time it lets botocore
go on, so other code in the process keeps reaching the real API Gateway.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import boto3
import botocore.handlers
from botocore import parsers

if TYPE_CHECKING:  # a type only: the client imports nothing of this module
    from runtime.origin.client import GatewayClient
from botocore.awsrequest import AWSResponse, HeadersDict

SERVICE = "apigatewaymanagementapi"
HOOK_EVENT = f"before-call.{SERVICE}"
OPERATIONS = {"PostToConnection": "POST", "GetConnection": "GET", "DeleteConnection": "DELETE"}


@dataclass(frozen=True)
class ManagementAnswer:
    """An HTTP answer as API Gateway's management API would give it, before botocore reads it."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


class ManagementAnswerer(Protocol):
    """What the hook asks while an event is handled: a ManagementApi."""

    def answer(
        self, operation: str, connection_id: str, data: object, url: str
    ) -> ManagementAnswer: ...

    def gateway(self) -> GatewayClient:
        """This thread's client, whose commands go out with the event's posts."""
        ...


class _ApisOnThread(threading.local):
    """The ManagementApis handling events on this thread, innermost last."""

    def __init__(self) -> None:
        self.apis: list[ManagementAnswerer] = []


_this_thread = _ApisOnThread()
_handling_anywhere: list[ManagementAnswerer] = []
_handling_lock = threading.Lock()
_install_lock = threading.Lock()


def enter(api: ManagementAnswerer) -> None:
    """`api` answers this thread's calls (and other threads' with none of their own) from now."""
    _this_thread.apis = [*_this_thread.apis, api]
    with _handling_lock:
        _handling_anywhere.append(api)


def leave(api: ManagementAnswerer) -> None:
    """The event `api` was handling on this thread is done."""
    _this_thread.apis = _this_thread.apis[:-1]
    with _handling_lock:
        _handling_anywhere.remove(api)


def answering() -> ManagementAnswerer | None:
    """The API of the event handled on this thread, else of one handled on any thread (the
    function's own worker threads), else None: botocore goes on as usual."""
    apis = _this_thread.apis
    if apis:
        return apis[-1]
    with _handling_lock:
        return _handling_anywhere[-1] if _handling_anywhere else None


class _Body:
    """What AWSResponse reads its content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _before_call(
    model: Any, params: Mapping[str, Any], **_: Any
) -> tuple[AWSResponse, dict[str, Any]] | None:
    api = answering()
    if api is None or model.name not in OPERATIONS:
        return None
    connection_id = unquote(str(params.get("url_path", "")).rpartition("/")[2])
    url = str(params.get("url", ""))
    answer = api.answer(model.name, connection_id, params.get("body"), url)
    return botocore_answer(model, url, answer)


def botocore_answer(
    model: Any, url: str, answer: ManagementAnswer
) -> tuple[AWSResponse, dict[str, Any]]:
    """`answer` read by botocore's own parser for the operation's protocol, as if it had come
    over HTTP: the same parsed result, and the same error code for the modeled exception."""
    headers = HeadersDict({"x-amzn-RequestId": str(uuid.uuid4()), **answer.headers})
    parser = parsers.create_parser(model.metadata["protocol"])
    response = {"status_code": answer.status, "headers": headers, "body": answer.body}
    if answer.status < 300:
        parsed = parser.parse(response, model.output_shape)
    else:
        parsed = parser.parse(response, None)
        code = parsed.get("Error", {}).get("Code")
        shape = model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:  # the modeled error's own fields, as botocore's endpoint adds them
            parsed.update(parser.parse(response, shape))
    return AWSResponse(url, answer.status, headers, _Body(answer.body)), parsed


def install() -> None:
    """Make boto3 apigatewaymanagementapi clients made from now on ask this module first.

    Idempotent. The hook answers only while the entry point handles an event (see the module
    docstring for which clients it reaches).
    """
    with _install_lock:
        spec = (HOOK_EVENT, _before_call)
        if spec not in botocore.handlers.BUILTIN_HANDLERS:
            botocore.handlers.BUILTIN_HANDLERS.append(spec)
        session = boto3.DEFAULT_SESSION
        if session is not None:  # made before us; at most one registration either way
            session.events.unregister(HOOK_EVENT, _before_call)
            session.events.register(HOOK_EVENT, _before_call)
