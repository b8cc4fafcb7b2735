"""Gateway events out of an SQS-triggered Lambda invocation, and handlers that fail per record.

Lambda hands a batch of SQS records. The node packs many events into each one, as
`{"events": [...]}` (the body an HTTP origin gets), or puts one event as is when it runs with
`--events-per-message 1`; either shape may come inside an SNS notification when the events went
through a topic without raw delivery. Handlers built with `gateway_handler` see none of this: they
get one event at a time, in order, record after record.

They answer with a partial batch response (the event source mapping needs
ReportBatchItemFailures), and SQS retries per record, not per event. So when an event fails, its
whole record is reported: the commands buffered for all of the record's events are dropped (they
are made again when it comes back), and its later events wait for that retry. On a FIFO queue
the message group is a bucket of connections: once one of its records fails, its later records
are not handled but reported too, so a connection's events are never handled out of order. The
events of a failed record that had succeeded run again on the retry: docs/redelivery.md says
which events can reach a handler twice and how to de-duplicate them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, overload

if TYPE_CHECKING:
    from runtime.origin.client import GatewayClient

log = logging.getLogger(__name__)

Event = dict[str, Any]
EventHandler = Callable[[Event], None]
LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class EventFormatError(ValueError):
    """A Lambda event, a record or a record body that does not hold what the node sends."""


class CommandBuffer(Protocol):
    """What `handle_records` needs of a GatewayClient: commands held until `flush`, and dropped
    back to a `savepoint` when the record that made them fails."""

    def savepoint(self) -> Any: ...

    def rollback(self, savepoint: Any) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    """One SQS record of a Lambda batch; its body is parsed when it is handled."""

    message_id: str
    body: str
    group_id: str | None
    fifo: bool

    def events(self) -> list[Event]:
        """The record's events in order: many if the node packed them, else one."""
        return parse_events(self.body)

    def event(self) -> Event:
        """The record's only event, for code written when a record held one."""
        events = self.events()
        if len(events) != 1:
            raise EventFormatError(
                f"record {self.message_id} holds {len(events)} packed events, not one: "
                "read them with GatewayRecord.events()"
            )
        return events[0]


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


def parse_events(body: str | bytes) -> list[Event]:
    """A record body's gateway events, in order: packed (`{"events": [...]}`) or a single event,
    either one as is or inside an SNS notification. Every event is checked before any is handed
    on, so a bad member fails its record before its first event runs."""
    document = _json(body, "record body")
    if isinstance(document, dict) and document.get("Type") == "Notification":
        message = document.get("Message")
        if not isinstance(message, str):
            raise EventFormatError('SNS notification has no string "Message"')
        inner = _json(message, "SNS notification's Message")
        if _is_packed(inner):
            return _packed_events(inner["events"], "SNS notification's Message")
        if not _is_event(inner):
            raise EventFormatError(
                "SNS notification's Message is not a gateway event nor packed events: "
                f"{_preview(message)}"
            )
        return [inner]
    if _is_packed(document):
        return _packed_events(document["events"], "record body")
    if not _is_event(document):
        raise EventFormatError(
            "record body is neither a gateway event (an object with requestContext.eventType), "
            'nor packed events ({"events": [...]}), nor an SNS notification holding either: '
            f"{_preview(body)}"
        )
    return [document]


def parse_event_body(body: str | bytes) -> Event:
    """A record body holding one gateway event (as is, packed alone, or in an SNS notification)."""
    events = parse_events(body)
    if len(events) != 1:
        raise EventFormatError(
            f"record body holds {len(events)} packed events, not one: read them with parse_events"
        )
    return events[0]


def read_events(lambda_event: Mapping[str, Any]) -> list[Event]:
    """Every event of an invocation, record after record, in order; raises on the first bad one."""
    return [event for record in read_records(lambda_event) for event in record.events()]


def event_type(event: Mapping[str, Any]) -> str:
    """CONNECT, MESSAGE, DISCONNECT, KEEPALIVE, GONE, or (channels) JOIN, LEAVE or OCCUPANCY."""
    return str(event["requestContext"]["eventType"])


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """A JOIN, LEAVE or OCCUPANCY event, read: `connection_id`, `user_info` and (LEAVE)
    `reason` for the first two, `count` and `partial` for OCCUPANCY."""

    kind: str
    channel: str
    connection_id: str | None = None
    user_info: Any = None
    reason: str | None = None
    count: int | None = None
    partial: bool = False


def channel_event(event: Mapping[str, Any]) -> ChannelEvent:
    """The channel fields of a JOIN, LEAVE or OCCUPANCY event; EventFormatError for any other."""
    context = event.get("requestContext")
    kind = context.get("eventType") if isinstance(context, Mapping) else None
    if kind not in ("JOIN", "LEAVE", "OCCUPANCY") or not isinstance(context, Mapping):
        raise EventFormatError(f"not a JOIN, LEAVE or OCCUPANCY event (eventType {kind!r})")
    channel = context.get("channel")
    if not isinstance(channel, str):
        raise EventFormatError(f"{kind} event has no channel (got {_preview(channel)})")
    if kind == "OCCUPANCY":
        count = event.get("count")
        if isinstance(count, bool) or not isinstance(count, int):
            raise EventFormatError(f"OCCUPANCY event has no count (got {_preview(count)})")
        return ChannelEvent(kind, channel, count=count, partial=event.get("partial") is True)
    connection_id = context.get("connectionId")
    if not isinstance(connection_id, str):
        raise EventFormatError(f"{kind} event has no connectionId")
    reason = context.get("reason")
    return ChannelEvent(
        kind,
        channel,
        connection_id,
        event.get("userInfo"),
        reason if isinstance(reason, str) else None,
    )


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

    `on_event` is called once per event, packed or not. With `gateway`, commands it buffered for
    a failed record (for any of its events) are dropped (the record comes back), and the rest are
    published once for the whole batch; if that publish fails, every handled record is reported
    too, so no event's commands are lost (they may be sent twice).
    """

    def wrap(handle: EventHandler) -> LambdaHandler:
        @functools.wraps(handle)
        def handler(lambda_event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
            failed = handle_records(read_records(lambda_event), handle, gateway)
            return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

        return handler

    return wrap if on_event is None else wrap(on_event)


def handle_records(
    records: Sequence[GatewayRecord], on_event: EventHandler, gateway: CommandBuffer | None
) -> list[str]:
    """Handle each record's events in order; return the message IDs to report, in record order.

    A record fails at its first event that raises (or at a body that holds no gateway events):
    its later events are not handled, and the commands buffered for all its events are rolled
    back. `gateway` is flushed once, after the last record.
    """
    failed: set[int] = set()
    failed_groups: set[str | None] = set()
    handled: list[int] = []
    start = gateway.savepoint() if gateway is not None else None
    for index, record in enumerate(records):
        if record.fifo and record.group_id in failed_groups:
            failed.add(index)  # an earlier event of this group failed: keep the order
            continue
        mark = gateway.savepoint() if gateway is not None else None
        if _handle_record(record, on_event):
            handled.append(index)
            continue
        if gateway is not None:
            gateway.rollback(mark)
        failed.add(index)
        if record.fifo:
            failed_groups.add(record.group_id)
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
            gateway.rollback(start)  # they come back with their events: none may linger here
    return [records[index].message_id for index in sorted(failed)]


def _handle_record(record: GatewayRecord, on_event: EventHandler) -> bool:
    """Hand on the record's events in order, up to the first that fails; False if one did."""
    try:
        events = record.events()
    except EventFormatError:
        log.exception(
            "a record holds no gateway events it can hand on; it is reported for retry",
            extra=_fields(record),
        )
        return False
    for index, event in enumerate(events):
        try:
            on_event(event)
        except Exception:
            later = len(events) - index - 1
            log.exception(
                "handling a gateway event failed; its record is reported for retry%s",
                f" (events[{index}] of {len(events)}: the {later} after it wait for the retry)"
                if len(events) > 1
                else "",
                extra=_fields(record, event, index, len(events)),
            )
            return False
    return True


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


def _is_packed(document: object) -> bool:
    """The node's packed shape: events under "events", and no event of its own."""
    return isinstance(document, dict) and "events" in document and "requestContext" not in document


def _packed_events(members: object, where: str) -> list[Event]:
    if not isinstance(members, list):
        raise EventFormatError(
            f'{where} has "events" but it is not a list of gateway events (got {_preview(members)})'
        )
    if not members:
        raise EventFormatError(f'{where} has an empty "events" list: the node never sends one')
    for index, member in enumerate(members):
        if not _is_event(member):
            raise EventFormatError(
                f"{where}: events[{index}] of {len(members)} is not a gateway event (an object "
                f"with requestContext.eventType): {_preview(member)}"
            )
    return members


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventFormatError(f"{what} is not valid JSON ({exc}): {_preview(text)}") from None
    except RecursionError:
        raise EventFormatError(f"{what} is nested too deeply") from None


def _fields(
    record: GatewayRecord, event: Event | None = None, index: int = 0, count: int = 1
) -> dict[str, object]:
    """Log fields naming the record (`messageId`, as in batchItemFailures) and the event."""
    fields: dict[str, object] = {"messageId": record.message_id}
    if record.group_id is not None:
        fields["messageGroupId"] = record.group_id
    context = event.get("requestContext") if event is not None else None
    if isinstance(context, dict):
        fields["eventType"] = context.get("eventType")
        if "messageId" in context:
            fields["eventMessageId"] = context["messageId"]
        if "connectionId" in context:
            fields["connectionId"] = context["connectionId"]
    if count > 1:
        fields["eventIndex"] = index
        fields["eventCount"] = count
    return fields


def _preview(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
