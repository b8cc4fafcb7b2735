"""The apigatewaymanagementapi calls answered as API Gateway would: posts and deletes become the
gateway's commands (or calls to a node's @connections API), and connections known to be closed
answer GoneException at once."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

from botocore.exceptions import EndpointConnectionError

from runtime.origin.apigw.botocore_hook import OPERATIONS, ManagementAnswer, enter, leave
from runtime.origin.apigw.settings import (
    CONNECTIONS_PORT_VARIABLE,
    CONNECTIONS_URL_VARIABLE,
    ApiGatewaySettings,
)
from runtime.origin.client import GatewayClient, MessageTooLarge, Savepoint
from runtime.wire.connection_id import InvalidConnectionId, parse_connection_id

log = logging.getLogger("runtime.origin.apigw")  # the package logs under one name

MAX_NODE_ANSWER_BYTES = 1 << 20
CLOSED_REMEMBERED = 10_000
# The status of an API Gateway error, for a node's answer that lacks x-amzn-ErrorType.
ERROR_TYPES = {
    400: "BadRequestException",
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
}


class ClosedConnections:
    """IDs this container knows are closed (a DISCONNECT or GONE it handled, a delete it sent, a
    410 it was told), the oldest forgotten past `limit`. IDs are never reused, so a call naming
    one may answer GoneException at once, as API Gateway would."""

    def __init__(self, limit: int = CLOSED_REMEMBERED) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, connection_id: str) -> None:
        with self._lock:
            self._ids[connection_id] = None
            self._ids.move_to_end(connection_id)
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)

    def __contains__(self, connection_id: object) -> bool:
        with self._lock:
            return connection_id in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


def error_answer(status: int, code: str, message: str) -> ManagementAnswer:
    return ManagementAnswer(
        status,
        {"x-amzn-ErrorType": code, "Content-Type": "application/json"},
        json.dumps({"message": message}).encode(),
    )


@dataclass
class _Handling:
    """One event being handled on a thread: its calls are buffered until its function returns."""

    event: Mapping[str, Any] | None
    closing: list[str] = field(default_factory=list)  # deleted: closed once published


class _ThreadState(threading.local):
    """One thread's share of a ManagementApi: its client, the event it handles, and the closes
    it made that are not published yet."""

    def __init__(self) -> None:
        self.gateway: GatewayClient | None = None
        self.handling: _Handling | None = None
        self.unpublished_closes: list[str] | None = None


class ManagementApi:
    """Answers the apigatewaymanagementapi calls of the functions the entry point runs.

    Posts and deletes go into this thread's GatewayClient (one per thread: it is not
    thread-safe); while an event is handled on the thread they wait for its function to return,
    and in an SQS batch for the batch's end, else (a thread the function started) they are
    published at once. For an SQS batch it is `handle_records`' CommandBuffer: a connection a
    function deleted counts as closed (GoneException) for the rest of the batch, and from the
    batch's publish on for good; if its record fails instead, the delete is forgotten with it.
    """

    def __init__(
        self,
        settings: ApiGatewaySettings,
        gateway_factory: Callable[[], GatewayClient],
        closed: ClosedConnections,
    ) -> None:
        self.settings = settings
        self.closed = closed
        self._gateway_factory = gateway_factory
        self._local = _ThreadState()

    def gateway(self) -> GatewayClient:
        gateway = self._local.gateway
        if gateway is None:
            gateway = self._local.gateway = self._gateway_factory()
        return gateway

    @contextmanager
    def handling(self, event: Mapping[str, Any] | None, *, publish: bool = True) -> Iterator[None]:
        """Buffer the calls made while one event is handled, or drop them if it fails (its record
        comes back and makes them again). With `publish`, publish them when it is done; without
        (an event of an SQS batch), leave them to `flush` after the batch's last event."""
        gateway = self.gateway()
        mark = gateway.savepoint()
        outer = self._local.handling
        handling = self._local.handling = _Handling(event)
        enter(self)
        try:
            yield
            if publish:
                gateway.flush()
        except BaseException:
            gateway.rollback(mark)
            raise
        finally:
            self._local.handling = outer
            leave(self)
        if publish:
            for connection_id in handling.closing:
                self.closed.add(connection_id)
        else:
            self._unpublished_closes().extend(handling.closing)

    # The batch's commands, as handle_records' CommandBuffer ------------------------------------

    def savepoint(self) -> tuple[Savepoint, int]:
        """A mark in this thread's buffered commands and in the deletes among them."""
        return self.gateway().savepoint(), len(self._unpublished_closes())

    def rollback(self, mark: tuple[Savepoint, int]) -> None:
        """Drop what was buffered since `mark`: the record that made it comes back."""
        savepoint, closes = mark
        self.gateway().rollback(savepoint)
        del self._unpublished_closes()[closes:]

    def flush(self) -> None:
        """Publish this thread's buffered commands; the connections they delete are closed."""
        closes = self._unpublished_closes()
        self.gateway().flush()
        for connection_id in closes:
            self.closed.add(connection_id)
        closes.clear()

    def _unpublished_closes(self) -> list[str]:
        """Connections deleted by handled events of this thread's batch, not yet published."""
        closes = self._local.unpublished_closes
        if closes is None:
            closes = self._local.unpublished_closes = []
        return closes

    def close(self, connection_id: str, code: int, reason: str) -> None:
        """A close of our own (a refused CONNECT), buffered with the event's other calls."""
        self.gateway().close(connection_id, code, reason)
        self._closing(connection_id)

    def answer(
        self, operation: str, connection_id: str, data: object, url: str
    ) -> ManagementAnswer:
        """What API Gateway would answer this call; posts and deletes are sent as commands."""
        try:
            parse_connection_id(connection_id)
        except InvalidConnectionId as exc:
            return error_answer(410, "GoneException", f"Invalid connectionId: {exc}")
        if connection_id in self.closed or connection_id in self._unpublished_closes():
            return error_answer(410, "GoneException", f"connection {connection_id} is gone")
        if operation == "GetConnection" or self.settings.post_via == "connections":
            return self._over_http(operation, connection_id, _payload(data), url)
        if operation == "PostToConnection":
            return self._post(connection_id, _payload(data))
        return self._delete(connection_id)

    def _post(self, connection_id: str, payload: bytes) -> ManagementAnswer:
        try:  # API Gateway sends Data as text: bytes that are UTF-8 go as text here too
            data: str | bytes = payload.decode("utf-8")
        except UnicodeDecodeError:
            data = payload
        try:
            self.gateway().send(connection_id, data)
        except MessageTooLarge as exc:
            return error_answer(413, "PayloadTooLargeException", str(exc))
        return self._sent(ManagementAnswer(200, {"Content-Type": "application/json"}, b"{}"))

    def _delete(self, connection_id: str) -> ManagementAnswer:
        self.gateway().close(connection_id)
        answer = self._sent(ManagementAnswer(204, {}))
        if answer.status < 300:
            self._closing(connection_id)
        return answer

    def _closing(self, connection_id: str) -> None:
        handling = self._local.handling
        if handling is not None:
            handling.closing.append(connection_id)
        else:
            self.closed.add(connection_id)

    def _sent(self, answer: ManagementAnswer) -> ManagementAnswer:
        """Outside an event being handled nothing publishes later: publish now."""
        if self._local.handling is not None:
            return answer
        try:
            self.gateway().flush()
        except Exception as exc:
            log.exception("publishing an apigatewaymanagementapi call's command failed")
            return error_answer(500, "InternalServerErrorException", str(exc))
        return answer

    # The node's @connections API ---------------------------------------------------------------

    def _over_http(
        self, operation: str, connection_id: str, payload: bytes, url: str
    ) -> ManagementAnswer:
        settings = self.settings
        if settings.connections_url:
            parts = urlsplit(settings.connections_url)
            scheme, host = parts.scheme, parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
            prefix = parts.path.rstrip("/")
        elif settings.connections_port is not None:
            scheme, host = "http", parse_connection_id(connection_id).node.host
            port, prefix = settings.connections_port, ""
        else:
            return error_answer(
                403,
                "ForbiddenException",
                f"{operation} needs the node's @connections API: set {CONNECTIONS_URL_VARIABLE} "
                f"(a node's command listener, e.g. http://10.0.0.5:8081) or "
                f"{CONNECTIONS_PORT_VARIABLE} (the command port of every node)",
            )
        path = f"{prefix}/{quote(self._stage(url), safe='')}/@connections/"
        path += quote(connection_id, safe="")
        headers = {"Content-Type": "application/octet-stream"} if payload else {}
        if settings.connections_token:
            headers["X-Gateway-Token"] = settings.connections_token
        factory = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        connection = factory(host, port, timeout=settings.connections_timeout)
        try:
            connection.request(OPERATIONS[operation], path, body=payload or None, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_NODE_ANSWER_BYTES)
            status, answer_headers = response.status, dict(response.getheaders())
        except ConnectionRefusedError:
            if settings.connections_port is None:
                raise EndpointConnectionError(endpoint_url=settings.connections_url) from None
            # Nothing listens where the connection's node was: the node, and the connection,
            # are gone.
            self.closed.add(connection_id)
            return error_answer(410, "GoneException", f"connection {connection_id} is gone")
        except (OSError, http.client.HTTPException) as exc:
            raise EndpointConnectionError(
                endpoint_url=f"{scheme}://{host}:{port}", error=exc
            ) from exc
        finally:
            connection.close()
        if status == 410:
            self.closed.add(connection_id)
        if status == 200 and operation == "GetConnection":
            body = _connection_info_on_the_wire(body)
        if status >= 300 and not any(name.lower() == "x-amzn-errortype" for name in answer_headers):
            code = ERROR_TYPES.get(status)
            if code is not None:
                answer_headers["x-amzn-ErrorType"] = code
        return ManagementAnswer(status, answer_headers, body)

    def _stage(self, url: str) -> str:
        """The stage of the event being handled (the node's own), else the client's URL's."""
        handling = self._local.handling
        if handling is not None and handling.event is not None:
            stage = handling.event.get("requestContext", {}).get("stage")
            if isinstance(stage, str) and stage:
                return stage
        path = urlsplit(url).path
        return path.partition("/@connections/")[0].strip("/")


@runtime_checkable
class _Readable(Protocol):
    """A file botocore was given as Data."""

    def read(self) -> bytes | str: ...


def _payload(data: object) -> bytes:
    """PostToConnection's Data as botocore serialized it: bytes, a bytearray or a file."""
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, _Readable):
        chunk = data.read()
        return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
    raise TypeError(f"PostToConnection Data must be bytes, str or a file (got {type(data)})")


_WIRE_NAMES = {
    "ConnectedAt": "connectedAt",
    "LastActiveAt": "lastActiveAt",
    "Identity": "identity",
    "SourceIp": "sourceIp",
    "UserAgent": "userAgent",
}


def _connection_info_on_the_wire(body: bytes) -> bytes:
    """GetConnection's JSON with API Gateway's member names (connectedAt, identity.sourceIp),
    which botocore's model reads, whichever spelling the node used."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict):
        return body

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {_WIRE_NAMES.get(key, key): rename(item) for key, item in value.items()}
        return value

    return json.dumps(rename(document)).encode()
