"""Chat rooms: an origin with state, kept in DynamoDB so that the Lambda function stays stateless.

A client picks its room when it connects (`?room=name`, default "lobby") and is told its own ID
(`{"you": <connectionId>, "room": ...}`), so it can tell its messages from others'. Everyone in the
room gets each text message as `{"room": ..., "from": <connectionId>, "text": ...}`, and a system
message (`"from": null, "system": true`) when someone joins or leaves. Binary messages are not
chat and are ignored.

The table's key schema is fixed by runtime/local/provision.py (HASH `room`, RANGE `connectionId`,
TTL attribute `expiresAt`). Each connection has two items:

- member:  room=<room>, connectionId=<id>, expiresAt. A room's members are one Query.
- locator: room="#connection#<id>", connectionId=<id>, memberOf=<room>, expiresAt. A connection's
  room, needed on MESSAGE, DISCONNECT, GONE and KEEPALIVE, is one GetItem; every locator is its
  own partition, so the keep-alive writes of many connections spread over the table.

Room names starting with "#" are reserved for such keys: a client asking for one is closed (4400).

Expiry: both items live three keep-alive intervals (KEEPALIVE_INTERVAL seconds, default 60, the
nodes' setting; 0 means no expiry). Each KEEPALIVE rewrites the items of the connections it lists,
so the entries of a node that died without sending DISCONNECTs expire. DynamoDB deletes expired
items late, so queries skip them. DISCONNECT and GONE delete both items. A KEEPALIVE racing a
DISCONNECT may put a departed connection back until it expires; sending to it then brings a GONE,
which removes it again.

Settings: CHAT_TABLE (default: the chat table of WSGW_ENVIRONMENT), KEEPALIVE_INTERVAL, and the
GatewayClient's (WSGW_ENVIRONMENT, WSGW_ACCOUNT_ID). Lambda handler:
`runtime.origin.examples.chat.handler`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import boto3

from runtime.names import ResourceNames
from runtime.origin.client import BOTO_CONFIG, ENVIRONMENT_VARIABLE, GatewayClient
from runtime.origin.events import Event, LambdaHandler, event_type, gateway_handler, lazy_handler

log = logging.getLogger(__name__)

DEFAULT_ROOM = "lobby"
MAX_ROOM_LENGTH = 100
LOCATOR_PREFIX = "#connection#"
RESERVED_PREFIX = "#"
INVALID_ROOM_CODE = 4400
TTL_KEEPALIVES = 3  # entries outlive this many missed keep-alives
TABLE_VARIABLE = "CHAT_TABLE"
KEEPALIVE_VARIABLE = "KEEPALIVE_INTERVAL"
DEFAULT_KEEPALIVE_INTERVAL = 60.0

_BATCH_GET = 100  # BatchGetItem's limit
_BATCH_WRITE = 25  # BatchWriteItem's limit
_WRITE_ATTEMPTS = 5


class ChatRooms:
    """Who is in which room, in one DynamoDB table; see the module docstring for its layout."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        ttl_seconds: float | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dynamodb = dynamodb
        self.table = table
        self._ttl = ttl_seconds
        self._clock = clock

    def join(self, room: str, connection_id: str) -> None:
        self._write([{"PutRequest": {"Item": item}} for item in self._items(room, connection_id)])

    def room_of(self, connection_id: str) -> str | None:
        item = self._dynamodb.get_item(
            TableName=self.table,
            Key=_locator_key(connection_id),
            ProjectionExpression="memberOf",
            ConsistentRead=True,
        ).get("Item")
        return item["memberOf"]["S"] if item else None

    def members(self, room: str) -> list[str]:
        """The room's connections that have not expired."""
        ids: list[str] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#room = :room",
            "FilterExpression": "attribute_not_exists(expiresAt) OR expiresAt > :now",
            "ProjectionExpression": "connectionId, expiresAt",
            "ExpressionAttributeNames": {"#room": "room"},
            "ExpressionAttributeValues": {
                ":room": {"S": room},
                ":now": {"N": str(int(self._clock()))},
            },
            "ConsistentRead": True,
        }
        while True:
            page = self._dynamodb.query(**request)
            ids.extend(item["connectionId"]["S"] for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return ids
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def leave(self, connection_id: str) -> str | None:
        """Remove the connection; the room it was in, or None if it was in none."""
        room = self.room_of(connection_id)
        if room is not None:
            keys = [{"room": {"S": room}, "connectionId": {"S": connection_id}}]
            keys.append(_locator_key(connection_id))
            self._write([{"DeleteRequest": {"Key": key}} for key in keys])
        return room

    def refresh(self, connection_ids: Iterable[str]) -> int:
        """Push back the expiry of the connections that are in a room; how many were."""
        if self._ttl is None:
            return 0
        ids = list(dict.fromkeys(connection_ids))
        rooms: dict[str, str] = {}
        for start in range(0, len(ids), _BATCH_GET):
            keys = [
                _locator_key(connection_id) for connection_id in ids[start : start + _BATCH_GET]
            ]
            for item in self._get_all(keys):
                rooms[item["connectionId"]["S"]] = item["memberOf"]["S"]
        self._write(
            [
                {"PutRequest": {"Item": item}}
                for connection_id, room in rooms.items()
                for item in self._items(room, connection_id)
            ]
        )
        return len(rooms)

    def _items(self, room: str, connection_id: str) -> list[dict[str, Any]]:
        member: dict[str, Any] = {"room": {"S": room}, "connectionId": {"S": connection_id}}
        locator: dict[str, Any] = {**_locator_key(connection_id), "memberOf": {"S": room}}
        if self._ttl is not None:
            expires = {"N": str(int(self._clock() + self._ttl))}
            member["expiresAt"] = locator["expiresAt"] = expires
        return [member, locator]

    def _get_all(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            self.table: {
                "Keys": keys,
                "ProjectionExpression": "connectionId, memberOf",
                "ConsistentRead": True,
            }
        }
        for attempt in range(_WRITE_ATTEMPTS):
            if attempt:
                time.sleep(_backoff(attempt))
            response = self._dynamodb.batch_get_item(RequestItems=request)
            items.extend(response.get("Responses", {}).get(self.table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
        raise RuntimeError(
            f"DynamoDB left keys of {self.table} unread after {_WRITE_ATTEMPTS} tries"
        )

    def _write(self, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks, retrying what DynamoDB left unprocessed (throttling)."""
        for start in range(0, len(requests), _BATCH_WRITE):
            pending: dict[str, Any] = {self.table: requests[start : start + _BATCH_WRITE]}
            for attempt in range(_WRITE_ATTEMPTS):
                if attempt:
                    time.sleep(_backoff(attempt))
                pending = (
                    self._dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems")
                    or {}
                )
                if not pending:
                    break
            else:
                raise RuntimeError(
                    f"DynamoDB left writes to {self.table} unprocessed "
                    f"after {_WRITE_ATTEMPTS} tries"
                )


class ChatOrigin:
    """What each event does to the rooms, and what the room's members are sent."""

    def __init__(self, rooms: ChatRooms, gateway: GatewayClient) -> None:
        self.rooms = rooms
        self.gateway = gateway

    def on_event(self, event: Event) -> None:
        kind = event_type(event)
        if kind == "CONNECT":
            self._connect(event)
        elif kind == "MESSAGE":
            self._message(event)
        elif kind in ("DISCONNECT", "GONE"):
            self._leave(event["requestContext"]["connectionId"])
        elif kind == "KEEPALIVE":
            self.rooms.refresh(event.get("connectionIds") or [])

    def _connect(self, event: Event) -> None:
        connection_id = event["requestContext"]["connectionId"]
        room = (event.get("queryStringParameters") or {}).get("room") or DEFAULT_ROOM
        problem = room_problem(room)
        if problem is not None:
            self.gateway.close(connection_id, INVALID_ROOM_CODE, problem)
            return
        self.rooms.join(room, connection_id)
        self.gateway.send(connection_id, _json({"you": connection_id, "room": room}))
        self._post(room, None, f"{connection_id} joined")

    def _message(self, event: Event) -> None:
        connection_id = event["requestContext"]["connectionId"]
        if event.get("isBase64Encoded"):
            return
        room = self.rooms.room_of(connection_id)
        if room is None:
            log.warning(
                "message from a connection in no room", extra={"connectionId": connection_id}
            )
            return
        self._post(room, connection_id, event.get("body") or "")

    def _leave(self, connection_id: str) -> None:
        room = self.rooms.leave(connection_id)
        if room is not None:
            self._post(room, None, f"{connection_id} left")

    def _post(self, room: str, sender: str | None, text: str) -> None:
        """To everyone in the room; a message from no one (joined, left) is a system message."""
        members = self.rooms.members(room)
        if members:
            message: dict[str, object] = {"room": room, "from": sender, "text": text}
            if sender is None:
                message["system"] = True
            self.gateway.send(members, _json(message))


def room_problem(room: str) -> str | None:
    """Why a room name is refused (as a close reason), or None if it is fine."""
    if room.startswith(RESERVED_PREFIX):
        return f"room names may not start with {RESERVED_PREFIX!r}"
    if len(room) > MAX_ROOM_LENGTH:
        return f"room names may be at most {MAX_ROOM_LENGTH} characters"
    return None


def build_handler(
    *,
    environment: str | None = None,
    table_name: str | None = None,
    gateway: GatewayClient | None = None,
    dynamodb: Any | None = None,
    keepalive_interval: float | None = None,
    clock: Callable[[], float] = time.time,
) -> LambdaHandler:
    """A chat handler; what is not passed comes from the environment (see the module docstring)."""
    environment = environment or os.environ.get(ENVIRONMENT_VARIABLE) or None
    if keepalive_interval is None:
        keepalive_interval = _keepalive_interval(os.environ.get(KEEPALIVE_VARIABLE))
    elif not keepalive_interval >= 0:
        raise ValueError(f"keepalive_interval must be >= 0 seconds (got {keepalive_interval})")
    rooms = ChatRooms(
        dynamodb if dynamodb is not None else boto3.client("dynamodb", config=BOTO_CONFIG),
        table_name or _table_name(environment),
        ttl_seconds=TTL_KEEPALIVES * keepalive_interval if keepalive_interval > 0 else None,
        clock=clock,
    )
    client = gateway if gateway is not None else GatewayClient(environment=environment)
    return gateway_handler(ChatOrigin(rooms, client).on_event, gateway=client)


def _table_name(environment: str | None) -> str:
    if os.environ.get(TABLE_VARIABLE):
        return os.environ[TABLE_VARIABLE]
    if not environment:
        raise ValueError(
            f"the chat origin needs its table: set {TABLE_VARIABLE}, or {ENVIRONMENT_VARIABLE} "
            "to use that environment's chat table"
        )
    return ResourceNames(environment).chat_table


def _keepalive_interval(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_KEEPALIVE_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{KEEPALIVE_VARIABLE} must be a number of seconds >= 0 (got {raw!r})")
    return value


def _json(message: dict[str, object]) -> str:
    return json.dumps(message, ensure_ascii=False)


def _locator_key(connection_id: str) -> dict[str, Any]:
    return {"room": {"S": LOCATOR_PREFIX + connection_id}, "connectionId": {"S": connection_id}}


def _backoff(attempt: int) -> float:
    return min(1.0, 0.05 * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)


handler = lazy_handler(build_handler)
