"""Gateway events out of an SQS-triggered Lambda invocation, and handlers that fail per record.

Lambda hands a batch of SQS records; the node put one gateway event in each, either as is or, when
the events went through an SNS topic without raw delivery, inside an SNS notification. A handler
built with `gateway_handler` answers with a partial batch response (the event source mapping needs
ReportBatchItemFailures), so one bad event is retried alone rather than with its whole batch. On a
FIFO queue the message group is the connection: once one of its records fails, its later records
are not handled but reported too, so a connection's events are never handled out of order.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from runtime.origin.client import GatewayClient

log = logging.getLogger(__name__)

Event = dict[str, Any]
EventHandler = Callable[[Event], None]
LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class EventFormatError(ValueError):
    """A Lambda event, a record or a record body that does not hold what the node sends."""


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """One SQS record of a Lambda batch; its body is parsed when it is handled."""

    message_id: str
    body: str
    group_id: str | None
    fifo: bool

    def event(self) -> Event:
        return parse_event_body(self.body)


def read_records(lambda_event: Mapping[str, Any]) -> list[GatewayRecord]:
    """The records of an SQS-triggered invocation, checked enough to report each one."""
    records = lambda_event.get("Records") if isinstance(lambda_event, Mapping) else None
    if not isinstance(records, list):
        raise EventFormatError(
            'a Lambda event from SQS must be an object with a "Records" list '
            f"(got {_preview(lambda_event)})"
        )
    out = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise EventFormatError(f"Records[{index}] must be an object (got {_preview(record)})")
        message_id, body = record.get("messageId"), record.get("body")
        if not isinstance(message_id, str) or not isinstance(body, str):
            raise EventFormatError(
                f'Records[{index}] must have string "messageId" and "body": is it from SQS?'
            )
        attributes = record.get("attributes")
        group = attributes.get("MessageGroupId") if isinstance(attributes, Mapping) else None
        source = record.get("eventSourceARN")
        fifo = isinstance(source, str) and source.endswith(".fifo")
        out.append(GatewayRecord(message_id, body, group if isinstance(group, str) else None, fifo))
    return out


def parse_event_body(body: str | bytes) -> Event:
    """A record body as a gateway event: the event itself, or an SNS notification holding it."""
    document = _json(body, "record body")
    if isinstance(document, dict) and document.get("Type") == "Notification":
        message = document.get("Message")
        if not isinstance(message, str):
            raise EventFormatError('SNS notification has no string "Message"')
        event = _json(message, "SNS notification's Message")
        if not _is_event(event):
            raise EventFormatError(
                f"SNS notification's Message is not a gateway event: {_preview(message)}"
            )
        return event
    if not _is_event(document):
        raise EventFormatError(
            "record body is neither a gateway event (an object with requestContext.eventType) "
            f"nor an SNS notification holding one: {_preview(body)}"
        )
    return document


def read_events(lambda_event: Mapping[str, Any]) -> list[Event]:
    """Every event of an invocation, in order; raises on the first bad record."""
    return [record.event() for record in read_records(lambda_event)]


def event_type(event: Mapping[str, Any]) -> str:
    """CONNECT, MESSAGE, DISCONNECT, KEEPALIVE or GONE."""
    return str(event["requestContext"]["eventType"])


def message_data(event: Mapping[str, Any]) -> str | bytes:
    """A MESSAGE's body as the client sent it: text as str, binary as bytes."""
    body = event.get("body")
    if not isinstance(body, str):
        raise EventFormatError(f"event has no string body (got {_preview(body)})")
    if not event.get("isBase64Encoded"):
        return body
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise EventFormatError(
            "event body is not valid base64 but isBase64Encoded is true"
        ) from None


@overload
def gateway_handler(
    on_event: EventHandler, *, gateway: GatewayClient | None = None
) -> LambdaHandler: ...


@overload
def gateway_handler(
    on_event: None = None, *, gateway: GatewayClient | None = None
) -> Callable[[EventHandler], LambdaHandler]: ...


def gateway_handler(
    on_event: EventHandler | None = None, *, gateway: GatewayClient | None = None
) -> LambdaHandler | Callable[[EventHandler], LambdaHandler]:
    """Turn `on_event(event)` into a Lambda handler answering with a partial batch response.

    With `gateway`, commands it buffered for a failed record are dropped (the record comes back),
    and the rest are published once for the whole batch; if that publish fails, every handled
    record is reported too, so no event's commands are lost (they may be sent twice).
    """

    def wrap(handle: EventHandler) -> LambdaHandler:
        @functools.wraps(handle)
        def handler(lambda_event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
            failed = handle_records(read_records(lambda_event), handle, gateway)
            return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

        return handler

    return wrap if on_event is None else wrap(on_event)


def handle_records(
    records: Sequence[GatewayRecord], on_event: EventHandler, gateway: GatewayClient | None
) -> list[str]:
    """Handle each record; return the message IDs to report as failed, in record order."""
    failed: set[int] = set()
    failed_groups: set[str | None] = set()
    handled: list[int] = []
    start = gateway.savepoint() if gateway is not None else None
    for index, record in enumerate(records):
        if record.fifo and record.group_id in failed_groups:
            failed.add(index)  # an earlier event of this connection failed: keep the order
            continue
        mark = gateway.savepoint() if gateway is not None else None
        event: Event | None = None
        try:
            event = record.event()
            on_event(event)
        except Exception:
            log.exception(
                "handling a gateway event failed; its record is reported for retry",
                extra=_fields(record, event),
            )
            if gateway is not None and mark is not None:
                gateway.rollback(mark)
            failed.add(index)
            if record.fifo:
                failed_groups.add(record.group_id)
            continue
        handled.append(index)
    if gateway is not None and handled:
        try:
            gateway.flush()
        except Exception:
            log.exception(
                "publishing the batch's commands failed; its %d handled records are reported "
                "for retry",
                len(handled),
            )
            failed.update(handled)
            if start is not None:  # they come back with their events: none may linger here
                gateway.rollback(start)
    return [records[index].message_id for index in sorted(failed)]


def lazy_handler(factory: Callable[[], LambdaHandler]) -> LambdaHandler:
    """A module-level Lambda handler built at its first call, so importing needs no settings."""

    @functools.cache
    def built() -> LambdaHandler:
        return factory()

    def handler(lambda_event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        return built()(lambda_event, context)

    return handler


def _is_event(document: object) -> bool:
    if not isinstance(document, dict):
        return False
    context = document.get("requestContext")
    return (
        isinstance(context, dict)
        and isinstance(context.get("eventType"), str)
        and bool(context["eventType"])
    )


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventFormatError(f"{what} is not valid JSON ({exc}): {_preview(text)}") from None
    except RecursionError:
        raise EventFormatError(f"{what} is nested too deeply") from None


def _fields(record: GatewayRecord, event: Event | None) -> dict[str, object]:
    fields: dict[str, object] = {"messageId": record.message_id}
    if record.group_id is not None:
        fields["messageGroupId"] = record.group_id
    context = event.get("requestContext") if event is not None else None
    if isinstance(context, dict):
        fields["eventType"] = context.get("eventType")
        if "connectionId" in context:
            fields["connectionId"] = context["connectionId"]
    return fields


def _preview(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
