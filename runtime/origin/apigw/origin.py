"""The Lambda entry point: each event of an SQS batch, or a bare API Gateway event, handed to
its route's function as API Gateway would have called it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from runtime.origin.apigw.botocore_hook import install
from runtime.origin.apigw.management import ClosedConnections, ManagementApi
from runtime.origin.apigw.settings import ApiGatewaySettings, Event, RouteFunction, RouteTable
from runtime.origin.client import GatewayClient
from runtime.origin.events import EventFormatError, handle_records, read_records

log = logging.getLogger("runtime.origin.apigw")  # the package logs under one name

# A connection its $connect function refused in an asynchronous CONNECT is closed with 4000 + the
# status (4401 for 401), as the node's GraphQL mode does: 1008 is not a code origins may send.
REFUSED_CLOSE_BASE = 4000
GONE_CLOSE_CODE = 1006  # what a $disconnect function sees for a connection that vanished
GONE_REASON = "gone"


def gone_as_disconnect(event: Mapping[str, Any]) -> Event:
    """A GONE event as the DISCONNECT API Gateway's $disconnect would have had: the connection
    vanished (1006). `requestContext.action` still says which command found it gone."""
    context = dict(event["requestContext"])
    context.update(
        eventType="DISCONNECT",
        routeKey="$disconnect",
        disconnectStatusCode=GONE_CLOSE_CODE,
        disconnectReason=GONE_REASON,
    )
    context.setdefault("identity", {"sourceIp": None, "userAgent": None})
    return {
        "requestContext": context,
        "disconnectStatusCode": GONE_CLOSE_CODE,
        "disconnectReason": GONE_REASON,
        "isBase64Encoded": False,
    }


def answer_status(result: object) -> int:
    """A $connect function's answer as API Gateway reads it: no statusCode accepts (200), a
    statusCode (an integer, or its digits) decides, anything else is the integration failing."""
    if not isinstance(result, Mapping) or result.get("statusCode") is None:
        return 200
    status = result["statusCode"]
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return 500
    return status


def _is_bare_event(document: object) -> bool:
    if not isinstance(document, Mapping):
        return False
    context = document.get("requestContext")
    return isinstance(context, Mapping) and isinstance(context.get("eventType"), str)


class ApiGatewayOrigin:
    """The Lambda entry point for API Gateway handlers; see the package docstring.

    SQS batch: each event of each record (a record holds many when the node packs them) goes to
    its route's function, in order. A record fails (and comes back, all its events) at the first
    of its events whose function raises: its later events are not handled now, the posts and
    deletes of all its events are dropped, and on a FIFO queue its group's later records wait
    with it. The other records' posts and deletes are published once, after the batch's last
    event. A statusCode in a function's answer does not fail its event. KEEPALIVE never reaches
    a function. An asynchronous CONNECT whose $connect answers a non-2xx statusCode is refused
    as API Gateway would have refused it: the connection is closed with 4000 + the status (4401
    for 401) and the event succeeds.

    Bare event: the function's result comes back unchanged (None as {"statusCode": 200}); an
    exception goes up to the caller (the node refuses the handshake with its error status).
    """

    def __init__(
        self,
        settings: ApiGatewaySettings,
        *,
        gateway_factory: Callable[[], GatewayClient] = GatewayClient,
    ) -> None:
        self.settings = settings
        self.closed = ClosedConnections()
        self.management = ManagementApi(settings, gateway_factory, self.closed)
        self._routes: RouteTable | None = None
        self._loading = threading.Lock()

    def routes(self) -> RouteTable:
        """The user's functions, imported once, after the hook is installed."""
        with self._loading:
            if self._routes is None:
                install()
                self._routes = RouteTable.load(self.settings)
            return self._routes

    def __call__(self, lambda_event: Any, context: Any = None) -> Any:
        routes = self.routes()
        if isinstance(lambda_event, Mapping) and "Records" in lambda_event:
            records = read_records(lambda_event)

            def on_event(event: Event) -> None:
                self._handle(routes, event, context, synchronous=False)

            failed = handle_records(records, on_event, self.management)
            return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
        if _is_bare_event(lambda_event):
            result = self._handle(routes, dict(lambda_event), context, synchronous=True)
            return {"statusCode": 200} if result is None else result
        raise EventFormatError(
            "runtime.origin.apigw.handler takes an SQS batch (a Records list) or an API Gateway "
            "WebSocket event (an object with requestContext.eventType)"
        )

    def _handle(self, routes: RouteTable, event: Event, context: Any, *, synchronous: bool) -> Any:
        request = event["requestContext"]
        kind = request["eventType"]
        connection_id = request.get("connectionId")
        if kind in ("DISCONNECT", "GONE") and isinstance(connection_id, str):
            self.closed.add(connection_id)  # the node says so: posts to it are gone from now
        target = self._target(routes, event)
        if target is None:
            return None
        function, handed = target
        with self.management.handling(handed, publish=synchronous):
            result = function(handed, context)
            if kind == "CONNECT" and not synchronous:
                self._refuse_if_told(handed, result)
        return result

    def _target(self, routes: RouteTable, event: Event) -> tuple[RouteFunction, Event] | None:
        request = event["requestContext"]
        kind = request["eventType"]
        route = request.get("routeKey")
        if kind == "KEEPALIVE":
            return None
        if kind == "GONE":
            gone_route = self.settings.gone_route
            if gone_route is None:
                return None
            if gone_route == "$disconnect":
                function = routes.function_for("$disconnect")
                return None if function is None else (function, gone_as_disconnect(event))
            function = routes.function_for(gone_route)
            return None if function is None else (function, event)
        handled = kind == "CONNECT" and request.get("connectHandled") is True
        if handled and self.settings.async_connect == "skip":
            return None
        if kind not in ("CONNECT", "MESSAGE", "DISCONNECT") or not isinstance(route, str):
            log.warning(
                "an event of an unknown type or without a routeKey is not handed to any function",
                extra={"eventType": kind},
            )
            return None
        function = routes.function_for(route, message=kind == "MESSAGE")
        if function is None:
            if kind == "MESSAGE":
                log.warning(
                    "no function for route %r, and no $default: the message is dropped",
                    route,
                    extra={"connectionId": request.get("connectionId")},
                )
            return None
        return function, event

    def _refuse_if_told(self, event: Event, result: Any) -> None:
        status = answer_status(result)
        if 200 <= status < 300:
            return
        connection_id = event["requestContext"]["connectionId"]
        log.warning(
            "$connect answered %d after the node had accepted the connection; closing it with %d",
            status,
            REFUSED_CLOSE_BASE + status,
            extra={"connectionId": connection_id},
        )
        self.management.close(
            connection_id, REFUSED_CLOSE_BASE + status, f"refused by $connect ({status})"
        )


def entry_point_from_environment() -> Callable[[Any, Any], Any]:
    """A Lambda handler whose ApiGatewayOrigin is built from os.environ at its first call."""
    built: list[ApiGatewayOrigin] = []
    lock = threading.Lock()

    def entry_point(lambda_event: Any, context: Any = None) -> Any:
        with lock:
            if not built:
                built.append(ApiGatewayOrigin(ApiGatewaySettings.from_environ(os.environ)))
        return built[0](lambda_event, context)

    return entry_point
