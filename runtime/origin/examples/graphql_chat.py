"""GraphQL chat rooms: a GraphQL origin (runtime.origin.graphql) with a query, a mutation and a
subscription that the node re-runs on each publish.

    query        { messages(room: "lobby") { id text } }
    mutation     { post(room: "lobby", text: "hi") { id } }
    subscription { messageAdded(room: "lobby") { id text } }

A client connects with `{"token": "..."}` as its connection_init payload (refused with "missing
token" otherwise). `post` stores the message and publishes it under the key `room:<room>` with
the message `{"id", "room", "text"}` as the publish context; the node then re-runs each distinct
`messageAdded` subscription of that room once, and its resolver returns the published message.

Messages are kept in memory, so this is a demonstration: one process, no persistence. Wire it to
the gateway with a GatewayClient:

    gateway = GatewayClient()

    def publish(keys: list[str], context: Any) -> None:
        gateway.publish(keys, context)
        gateway.flush()

    handler = build_origin(publish).lambda_handler
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
)

from runtime.origin.graphql import SKIP, GraphqlOrigin, Reject, SubscriptionStart

MAX_ROOM_LENGTH = 100
KEY_PREFIX = "room:"

Message = dict[str, str]
Publish = Callable[[list[str], Any], None]


def room_key(room: str) -> str:
    return KEY_PREFIX + room


def build_schema(publish: Publish) -> GraphQLSchema:
    """The schema, its resolvers sharing one in-memory store of messages by room."""
    rooms: dict[str, list[Message]] = {}
    ids = itertools.count(1)

    def messages(_root: Any, _info: GraphQLResolveInfo, room: str) -> list[Message]:
        return rooms.get(_checked_room(room), [])

    def post(_root: Any, _info: GraphQLResolveInfo, room: str, text: str) -> Message:
        message = {"id": str(next(ids)), "room": _checked_room(room), "text": text}
        rooms.setdefault(room, []).append(message)
        publish([room_key(room)], message)
        return message

    def message_added(published: Any, _info: GraphQLResolveInfo, room: str) -> Any:
        """The publish context is the root value; a message for another room is skipped."""
        if not isinstance(published, dict) or published.get("room") != room:
            return SKIP
        return published

    message_type = GraphQLObjectType(
        "Message",
        {
            "id": GraphQLField(GraphQLNonNull(GraphQLID)),
            "room": GraphQLField(GraphQLNonNull(GraphQLString)),
            "text": GraphQLField(GraphQLNonNull(GraphQLString)),
        },
    )
    room_argument = {"room": GraphQLArgument(GraphQLNonNull(GraphQLString))}
    return GraphQLSchema(
        query=GraphQLObjectType(
            "Query",
            {
                "messages": GraphQLField(
                    GraphQLNonNull(GraphQLList(GraphQLNonNull(message_type))),
                    args=room_argument,
                    resolve=messages,
                )
            },
        ),
        mutation=GraphQLObjectType(
            "Mutation",
            {
                "post": GraphQLField(
                    GraphQLNonNull(message_type),
                    args={**room_argument, "text": GraphQLArgument(GraphQLNonNull(GraphQLString))},
                    resolve=post,
                )
            },
        ),
        subscription=GraphQLObjectType(
            "Subscription",
            {
                "messageAdded": GraphQLField(
                    GraphQLNonNull(message_type), args=room_argument, resolve=message_added
                )
            },
        ),
    )


def on_connect(payload: Any, _connect: dict[str, Any]) -> dict[str, Any]:
    """Accept a connection whose payload holds a token; its context names the user."""
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise Reject("missing token")
    return {"user": token}


def subscription_keys(start: SubscriptionStart) -> list[str]:
    """messageAdded(room) re-runs on publishes to its room."""
    return [room_key(_checked_room(start.arguments["room"]))]


def build_origin(publish: Publish) -> GraphqlOrigin:
    """The chat origin; `publish(keys, context)` must send a publish command to the gateway."""
    return GraphqlOrigin(
        build_schema(publish), on_connect=on_connect, subscription_keys=subscription_keys
    )


def _checked_room(room: str) -> str:
    if not room or len(room) > MAX_ROOM_LENGTH:
        raise GraphQLError(f"room names must be 1 to {MAX_ROOM_LENGTH} characters")
    return room
