"""Chat rooms on channels: the origin keeps no table of who is where, and needs no storage.

A client picks its room when it connects (`?room=name`, default "lobby"), and may give a display
name (`?name=Ada`, at most 32 characters, control characters dropped). The origin subscribes it to
the channel `room:<name>` with presence events and the name as its userInfo, and tells it its own
ID (`{"you": <connectionId>, "room": ...}`) so it can tell its messages from others'. Room names
are 1 to 100 characters of the channel name characters (A-Z a-z 0-9 _ - . : @ / = + ! ~); a client
asking for another is closed with 4400.

A client talks by sending `{"room": ..., "text": ...}`: MESSAGE events do not say which room a
connection joined, and the origin keeps nothing to look it up. Everyone subscribed to that room,
the sender included, gets `{"room": ..., "from": <connectionId>, "text": ...}`. Rooms are open,
so naming a room one did not connect to gives nothing that connecting to it would not. Anything
else sent as text gets an `{"error": ...}` back; binary messages are not chat and are ignored.

The nodes' JOIN and LEAVE events become system messages to the room: `{"room": ..., "from": null,
"system": true, "joined": <connectionId>, "name": ...}` (or `"left"`; `name` when the client gave
one). With a presence source (`PresenceSource`: the nodes' member lists), a newcomer is also sent
who is already there, on its JOIN: `{"room": ..., "members": [{"id": ..., "name": ...}, ...]}`, at
most `MAX_MEMBERS_LISTED` of them. DISCONNECT, GONE and KEEPALIVE need nothing: subscriptions end
with their connection, on the node that holds it.

Settings: the GatewayClient's (WSGW_ENVIRONMENT, WSGW_ACCOUNT_ID, and WSGW_REGIONS, since a room's
members may be connected in every region). Lambda handler: `runtime.origin.examples.chat.handler`.
"""

from __future__ import annotations

import itertools
import json
import logging
import unicodedata
from collections.abc import Iterable
from typing import Protocol

from runtime.origin.channels import ChannelRules, check_channel
from runtime.origin.client import REGIONS_VARIABLE, GatewayClient
from runtime.origin.events import (
    Event,
    LambdaHandler,
    event_type,
    gateway_handler,
    lazy_handler,
    message_data,
)
from runtime.origin.presence import ChannelMember
from runtime.wire.channels import NAME_CHARACTERS

log = logging.getLogger(__name__)

DEFAULT_ROOM = "lobby"
MAX_ROOM_LENGTH = 100
MAX_NAME_LENGTH = 32
CHANNEL_PREFIX = "room:"
INVALID_ROOM_CODE = 4400
MAX_MEMBERS_LISTED = 200  # a newcomer's list stays one modest message in a crowded room
MESSAGE_FORMAT = 'send {"room": <your room>, "text": <your message>} as JSON text'


class PresenceSource(Protocol):
    """Who is subscribed to a channel, across the cluster: the nodes' presence answers.

    `members` yields each member (its connection ID, and its userInfo or None); the origin reads
    only as many as it lists, so a paged source need fetch no further. The SDK's PresenceClient
    is one.
    """

    def members(self, channel: str) -> Iterable[ChannelMember]: ...


class ChatOrigin:
    """What each event does: subscriptions at CONNECT, publishes to the room's channel after."""

    def __init__(self, gateway: GatewayClient, presence: PresenceSource | None = None) -> None:
        self.gateway = gateway
        self.presence = presence

    def on_event(self, event: Event) -> None:
        kind = event_type(event)
        if kind == "CONNECT":
            self._connect(event)
        elif kind == "MESSAGE":
            self._message(event)
        elif kind in ("JOIN", "LEAVE"):
            self._presence(kind, event)

    def _connect(self, event: Event) -> None:
        connection_id = event["requestContext"]["connectionId"]
        query = event.get("queryStringParameters") or {}
        room = query.get("room") or DEFAULT_ROOM
        problem = room_problem(room, self.gateway.channel_rules)
        if problem is not None:
            self.gateway.close(connection_id, INVALID_ROOM_CODE, problem)
            return
        name = display_name(query.get("name"))
        self.gateway.subscribe(
            connection_id,
            channel_of(room),
            user_info=None if name is None else {"name": name},
            presence_events=True,
        )
        self.gateway.send(connection_id, _json({"you": connection_id, "room": room}))

    def _message(self, event: Event) -> None:
        data = message_data(event)
        if isinstance(data, bytes):
            return
        connection_id = event["requestContext"]["connectionId"]
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):  # deep nesting is no JSON we read
            message = None
        if not (
            isinstance(message, dict)
            and isinstance(message.get("room"), str)
            and isinstance(message.get("text"), str)
        ):
            self._refuse(connection_id, MESSAGE_FORMAT)
            return
        room, text = message["room"], message["text"]
        problem = room_problem(room, self.gateway.channel_rules)
        if problem is not None:
            self._refuse(connection_id, problem)
            return
        line = {"room": room, "from": connection_id, "text": text}
        self.gateway.publish_to_channel(channel_of(room), _json(line))

    def _presence(self, kind: str, event: Event) -> None:
        context = event["requestContext"]
        channel = str(context.get("channel", ""))
        if not channel.startswith(CHANNEL_PREFIX):
            return  # a channel some other origin subscribed it to
        room = channel.removeprefix(CHANNEL_PREFIX)
        connection_id = context["connectionId"]
        notice: dict[str, object] = {"room": room, "from": None, "system": True}
        notice["joined" if kind == "JOIN" else "left"] = connection_id
        name = name_of(event.get("userInfo"))
        if name is not None:
            notice["name"] = name
        self.gateway.publish_to_channel(channel, _json(notice))
        if kind == "JOIN" and self.presence is not None:
            self._list_members(connection_id, room, channel)

    def _list_members(self, connection_id: str, room: str, channel: str) -> None:
        """Tell a newcomer who is in the room; a failing source costs only this list."""
        assert self.presence is not None
        try:
            found = list(itertools.islice(self.presence.members(channel), MAX_MEMBERS_LISTED))
        except Exception:  # any source's failure: retrying the JOIN would repeat its notice
            log.exception("could not list the room's members", extra={"channel": channel})
            return
        members = []
        for found_member in found:
            member: dict[str, object] = {"id": found_member.connection_id}
            name = name_of(found_member.user_info)
            if name is not None:
                member["name"] = name
            members.append(member)
        self.gateway.send(connection_id, _json({"room": room, "members": members}))

    def _refuse(self, connection_id: str, problem: str) -> None:
        self.gateway.send(connection_id, _json({"error": problem}))


def channel_of(room: str) -> str:
    return CHANNEL_PREFIX + room


def room_problem(room: str, rules: ChannelRules) -> str | None:
    """Why a room name is refused (as a close reason, under 123 bytes), or None if it is fine."""
    longest = min(MAX_ROOM_LENGTH, rules.max_name_length - len(CHANNEL_PREFIX))
    if not 1 <= len(room) <= longest:
        return f"room names are 1 to {longest} characters"
    try:
        check_channel(channel_of(room), rules)
    except ValueError:
        return f"room names may hold only {NAME_CHARACTERS}"
    return None


def display_name(raw: object) -> str | None:
    """A client's chosen name, made safe to show: printable, single-spaced, bounded; or None."""
    if not isinstance(raw, str):
        return None
    printable = "".join(
        " " if char.isspace() else char
        for char in raw
        if char.isspace() or not unicodedata.category(char).startswith("C")
    )
    name = " ".join(printable.split())[:MAX_NAME_LENGTH].strip()
    return name or None


def name_of(user_info: object) -> str | None:
    """The display name in a subscription's userInfo, checked again: anyone may subscribe."""
    return display_name(user_info.get("name")) if isinstance(user_info, dict) else None


def build_handler(
    *,
    environment: str | None = None,
    regions: Iterable[str] | None = None,
    gateway: GatewayClient | None = None,
    presence: PresenceSource | None = None,
) -> LambdaHandler:
    """A chat handler; what is not passed comes from the environment (see the module docstring)."""
    client = (
        gateway if gateway is not None else GatewayClient(environment=environment, regions=regions)
    )
    if client.regions is None:  # every publish would fail, and every event come back
        raise ValueError(
            f"the chat origin publishes to every region of the environment: set "
            f"{REGIONS_VARIABLE} (comma-separated), or pass regions="
        )
    return gateway_handler(ChatOrigin(client, presence).on_event, gateway=client)


def _json(message: dict[str, object]) -> str:
    return json.dumps(message, ensure_ascii=False)


handler = lazy_handler(build_handler)
