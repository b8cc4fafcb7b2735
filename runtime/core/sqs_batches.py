"""Which events go into which SQS/SNS message and call, within the services' bounds, in order.

SQS and SNS bill a request per 64 KiB of what it carries, and a consumer pays a receive and a
delete per message, so events travel packed: many to a message, as `{"events": [...]}` (the body
the HTTP origin gets). Every event of one packed message shares its `eventType` and `routeKey`,
which the message carries as attributes, so filter policies keep working exactly. On a FIFO queue a
packed message's group is a bucket of its connections (a connection always maps to the same one),
so each connection's events stay in order while the buckets spread over Lambda's parallel lanes.

SendMessageBatch and PublishBatch take at most 10 entries and a bounded sum of message sizes, where
a message's size counts its body and its attributes. A batch of events from the node becomes
`calls`; calls that share a group form a `chain`, sent one after another so a connection's
events never overtake each other, while chains run side by side. Pure: the transports only move
what this module decides.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_ENTRIES_PER_CALL = 10
SQS_MAX_CALL_BYTES = 1 << 20  # sum of the messages of one SendMessageBatch, whatever the queue
SQS_DEFAULT_MESSAGE_BYTES = 256 << 10  # assumed until the queue's MaximumMessageSize is read
SNS_DEFAULT_MESSAGE_BYTES = 256 << 10  # a topic's MaximumMessageSize unless raised (to 1 MiB)
STRING = "String"
# Most bytes the attributes of one entry take: eventType (<= 10) and routeKey (<= 128 chars).
ATTRIBUTE_RESERVE = len("eventType") + len("routeKey") + 2 * len(STRING) + 10 + 4 * 128

_CONTEXT_PREFIX = b'{"requestContext":'
_decoder = json.JSONDecoder()
# SQS takes #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF; JSON already escapes the
# control characters, which leaves the two non-characters below (valid UTF-8 a client may send).
_NOT_SQS_TEXT = re.compile("[\ufffe\uffff]")
_NOT_ATTRIBUTE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# MessageGroupId / MessageDeduplicationId: 1 to 128 of a-z A-Z 0-9 and ASCII punctuation.
_FIFO_ID = re.compile(r"[\x21-\x7e]{1,128}")
_SURROGATE_LEAD = b"\xef\xbf"  # how U+FFFE and U+FFFF begin in UTF-8
# The head of an event of a connection as runtime/wire/events.py writes it, fields in its order;
# matched from the first character, so nothing a client sends can stand in for these fields.
_EVENT_HEAD = re.compile(
    r'\{"requestContext":\{"eventType":"([A-Z]+)","routeKey":("(?:[^"\\]|\\.)*"),'
    r'"messageId":"([0-9A-Za-z_=-]+)","requestId":"[^"]*","extendedRequestId":"[^"]*",'
    r'"requestTime":"[^"]*","requestTimeEpoch":\d+,"messageDirection":"IN",'
    r'"sequenceNumber":\d+,"connectionId":"([^"\\]+)"'
)
PACK_HEAD = '{"events":['
PACK_TAIL = "]}"
PACK_OVERHEAD = len(PACK_HEAD) + len(PACK_TAIL)


@dataclass(slots=True, eq=False)
class Entry:
    """One SQS/SNS message as a batch entry: what the service gets and what it counts. Either
    one event, or (`members`) several packed as `{"events": [...]}`. Not frozen, though never
    changed after it is made: a frozen dataclass's `__init__` costs a microsecond per event."""

    index: int  # position in the batch handed to `deliver` (of the first member, if packed)
    body: str
    size: int  # bytes the service counts: body plus attribute names, types and values
    group: str  # MessageGroupId: the connection or its bucket, or the node's keep-alive group
    message_id: str  # the event's messageId, or the pack's: the MessageDeduplicationId
    event_type: str
    route_key: str
    members: tuple[Entry, ...] = ()  # the events of a packed message, in order

    def attributes(self) -> dict[str, str]:
        return {"eventType": self.event_type, "routeKey": self.route_key}

    @property
    def events(self) -> tuple[Entry, ...]:
        """The events this message carries: its members, or itself."""
        return self.members or (self,)

    @property
    def body_bytes(self) -> int:
        return self.size - attributes_size(self.event_type, self.route_key)


def entries_for(events: Sequence[bytes], *, default_group: str) -> list[Entry]:
    """Entries for encoded events, in order; `default_group` for events of no connection."""
    entries = []
    for index, event in enumerate(events):
        text = event.decode("utf-8")
        size = len(event)
        # Their lead byte first: a one-byte search is a memchr, three times faster than two.
        if b"\xef" in event and _SURROGATE_LEAD in event and _NOT_SQS_TEXT.search(text):
            # The same JSON value, in characters SQS accepts.
            text = _NOT_SQS_TEXT.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
            size = len(text.encode("utf-8"))
        head = _EVENT_HEAD.match(text)
        if head is not None:  # the node's own layout: no need to parse the whole context
            event_type, route_json, message_id, connection_id = head.groups()
            route_key = _attribute(
                json.loads(route_json) if "\\" in route_json else route_json[1:-1], "$default"
            )
            group = group_id(connection_id)
        else:
            context = _request_context(event, text)
            event_type = _attribute(context.get("eventType"), "UNKNOWN")
            route_key = _attribute(context.get("routeKey"), "$default")
            connection = context.get("connectionId")
            group = group_id(connection) if isinstance(connection, str) else default_group
            message_id = context.get("messageId")
            if not isinstance(message_id, str) or not message_id:
                message_id = hashlib.sha256(event).hexdigest()
        size += attributes_size(event_type, route_key)
        entries.append(Entry(index, text, size, group, message_id, event_type, route_key))
    return entries


@functools.lru_cache(maxsize=1024)
def attributes_size(event_type: str, route_key: str) -> int:
    return (
        len("eventType")
        + len("routeKey")
        + 2 * len(STRING)
        + len(event_type.encode("utf-8"))
        + len(route_key.encode("utf-8"))
    )


def _fifo_id(value: str) -> str:
    if _FIFO_ID.fullmatch(value):
        return value
    return "h-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=4096)  # a connection's events come in runs
def group_id(value: str) -> str:
    """A MessageGroupId for a connection ID; anything else (a GONE for junk) is hashed to fit."""
    return _fifo_id(value)


def deduplication_id(message_id: str) -> str:
    """The event's own ID, so a resent event (the node retries whole batches) is dropped."""
    return _fifo_id(message_id)  # each is new: not worth a cache


def bucket_group(connection_id: str, groups: int, prefix: str) -> str:
    """The FIFO group of a connection's packed events: the same bucket for all of them."""
    bucket = zlib.crc32(connection_id.encode("utf-8", "surrogatepass")) % groups
    return _bucket_name(prefix, bucket)


@functools.lru_cache(maxsize=4096)
def _bucket_name(prefix: str, bucket: int) -> str:
    return group_id(f"{prefix}{bucket}")


def pack_entries(
    entries: Sequence[Entry],
    *,
    max_events: int,
    max_message_bytes: int,
    regroup: dict[str, str] | None = None,
) -> list[Entry]:
    """Pack one-event entries into messages of at most `max_events` events and
    `max_message_bytes` bytes, each holding events of one (group, eventType, routeKey).

    `regroup` maps a connection's group to its bucket (FIFO); without it every entry's group
    is left out of the key, as a standard queue has no groups. Packs come out in the order they
    were opened, and an event never joins a pack opened before its connection's latest one, so
    reading packs in order (per group, on FIFO) gives each connection's events in order. An event
    too large to share a message travels alone, as itself.
    """
    packs: list[list[Entry]] = []
    sizes: list[int] = []
    open_pack: dict[tuple[str, str, str], int] = {}  # key -> index in packs
    latest: dict[str, int] = {}  # a connection's group -> index of the last pack it joined
    groups: list[str] = []
    for entry in entries:
        group = regroup.get(entry.group, entry.group) if regroup is not None else ""
        body_bytes = entry.body_bytes
        if entry.size + PACK_OVERHEAD > max_message_bytes:
            packs.append([entry])  # alone, unwrapped
            sizes.append(-1)
            groups.append(group)
            latest[entry.group] = len(packs) - 1
            continue
        key = (group, entry.event_type, entry.route_key)
        at = open_pack.get(key)
        if (
            at is None
            or at < latest.get(entry.group, -1)
            or len(packs[at]) >= max_events
            or sizes[at] + 1 + body_bytes > max_message_bytes
        ):
            at = len(packs)
            packs.append([])
            sizes.append(PACK_OVERHEAD - 1 + attributes_size(entry.event_type, entry.route_key))
            groups.append(group)
            open_pack[key] = at
        packs[at].append(entry)
        sizes[at] += 1 + body_bytes
        latest[entry.group] = at
    return [_packed(members, groups[at], sizes[at]) for at, members in enumerate(packs)]


def _packed(members: list[Entry], group: str, size: int) -> Entry:
    first = members[0]
    if size < 0:  # too large to share: the event itself
        return Entry(
            first.index,
            first.body,
            first.size,
            group or first.group,
            first.message_id,
            first.event_type,
            first.route_key,
        )
    body = PACK_HEAD + ",".join(member.body for member in members) + PACK_TAIL
    pack_id = hashlib.sha256(",".join(m.message_id for m in members).encode()).hexdigest()
    return Entry(
        first.index,
        body,
        size,
        group or first.group,
        pack_id,
        first.event_type,
        first.route_key,
        tuple(members),
    )


def unpacked(entry: Entry) -> list[Entry]:
    """A packed message's events as messages of their own, in its group (to find, when the
    service refuses the pack, which event it refuses)."""
    return [
        Entry(
            member.index,
            member.body,
            member.size,
            entry.group,
            member.message_id,
            member.event_type,
            member.route_key,
        )
        for member in entry.events
    ]


@dataclass(slots=True)
class Plan:
    """What one `deliver` sends: chains of calls, and what it must not send."""

    chains: list[list[list[Entry]]] = field(default_factory=list)
    refused: list[Entry] = field(default_factory=list)  # larger than a message may be: never
    held: list[Entry] = field(default_factory=list)  # behind a refused one of their connection


def plan_calls(
    entries: Iterable[Entry],
    *,
    max_entries: int,
    max_call_bytes: int,
    max_message_bytes: int,
    one_per_group: bool = False,
) -> Plan:
    """Pack entries in order into calls within the bounds, then link calls that share a group.

    `one_per_group` (FIFO queues and topics): a call holds at most one entry of a group, each
    in a later call than the one before it. The service may fail one entry of a call and accept
    the next; were both of one group, the resent one would land behind its successor. Apart, the
    chain sends the later call only once the earlier one is wholly in."""
    plan = Plan()
    blocked: set[str] = set()
    calls: list[list[Entry]] = []
    sizes: list[int] = []
    next_call: dict[str, int] = {}  # one_per_group: the first call a group's next entry may join
    for entry in entries:
        if entry.group in blocked:
            plan.held.append(entry)
            continue
        if entry.size > max_message_bytes:
            plan.refused.append(entry)
            blocked.add(entry.group)
            continue
        index = next_call.get(entry.group, 0) if one_per_group else max(0, len(calls) - 1)
        while index < len(calls) and (
            len(calls[index]) >= max_entries or sizes[index] + entry.size > max_call_bytes
        ):
            index += 1
        if index == len(calls):
            calls.append([])
            sizes.append(0)
        calls[index].append(entry)
        sizes[index] += entry.size
        if one_per_group:
            next_call[entry.group] = index + 1
    plan.chains = chain_calls(calls)
    return plan


def chain_calls(calls: Sequence[list[Entry]]) -> list[list[list[Entry]]]:
    """Group calls that share a message group (transitively); each chain keeps call order."""
    parent = list(range(len(calls)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_call: dict[str, int] = {}
    for index, call in enumerate(calls):
        for entry in call:
            earlier = first_call.setdefault(entry.group, index)
            if earlier != index:
                a, b = root(earlier), root(index)
                parent[max(a, b)] = min(a, b)
    chains: dict[int, list[list[Entry]]] = {}
    for index, call in enumerate(calls):
        chains.setdefault(root(index), []).append(call)
    return list(chains.values())


def _request_context(event: bytes, text: str) -> dict[str, object]:
    """The event's requestContext, read without decoding a body that may be a megabyte."""
    try:
        if event.startswith(_CONTEXT_PREFIX):
            context, _ = _decoder.raw_decode(text, len(_CONTEXT_PREFIX))
        else:
            context = json.loads(text).get("requestContext")
    except (ValueError, AttributeError):
        context = None
    if not isinstance(context, dict):
        raise ValueError(f"not an event (no requestContext object): {text[:80]!r}")
    return context


def _attribute(value: object, default: str) -> str:
    """A message attribute value: non-empty, in characters SQS accepts."""
    if not isinstance(value, str) or not value:
        return default
    return _attribute_text(value)


@functools.lru_cache(maxsize=1024)  # route keys repeat: the node's and the app's few
def _attribute_text(value: str) -> str:
    return _NOT_ATTRIBUTE_TEXT.sub("\ufffd", value)
