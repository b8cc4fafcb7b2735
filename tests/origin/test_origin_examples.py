"""The example origins end to end on moto: events queue in, Lambda handler, commands queue out.

The chat's presence source is a stand-in here (the nodes' presence API is its real one): a fixed
member list per channel, which counts what the origin reads of it.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from runtime.local.provision import Resources
from runtime.origin.channels import ChannelRules
from runtime.origin.client import GatewayClient
from runtime.origin.examples import chat, echo
from runtime.origin.presence import ChannelMember
from runtime.wire.channels import NAME_CHARACTERS
from runtime.wire.events import (
    HandshakeDetails,
    NodeContext,
    connect_event,
    connection_fragment,
    disconnect_event,
    gone_event,
    keepalive_events,
    message_event,
    presence_event,
)
from tests.aws import MotoEndpoint
from tests.origin.harness import (
    EventsQueue,
    client,
    client_factory,
    commands_on,
    issuer,
    provision_region,
)

REGION = "us-east-1"
OTHER_REGION = "eu-west-1"
NODE = NodeContext(stage="test", region=REGION)
ISSUER = issuer(REGION)


class Connection:
    """One client's events, as its node makes them."""

    def __init__(self, query: list[tuple[str, str]] | None = None) -> None:
        self.id = ISSUER.issue()
        self.details = HandshakeDetails("/chat", [("Host", "gw")], query or [], "203.0.113.9", None)
        self.fragment = connection_fragment(NODE, self.id, 1_700_000_000_000, self.details)
        self.sequence = 0

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence - 1

    def connect(self) -> bytes:
        return connect_event(self.fragment, self._next(), 1_700_000_000_000, self.details)

    def message(self, data: str | bytes) -> bytes:
        return message_event(self.fragment, self._next(), 1_700_000_000_000, "$default", data)

    def disconnect(self) -> bytes:
        return disconnect_event(self.fragment, self._next(), 1_700_000_000_000, 1000, "")

    def join(self, channel: str, user_info: object = None) -> bytes:
        """The JOIN its node sends once a subscribe with presence events took."""
        info = b"" if user_info is None else json.dumps(user_info).encode()
        return presence_event(NODE, "JOIN", self.id, channel, info, 1_700_000_000_000)

    def leave(self, channel: str, user_info: object = None) -> bytes:
        info = b"" if user_info is None else json.dumps(user_info).encode()
        return presence_event(
            NODE, "LEAVE", self.id, channel, info, 1_700_000_000_000, "disconnected"
        )


@pytest.fixture
def system(moto_endpoint: MotoEndpoint, environment_name: str) -> tuple[Resources, EventsQueue]:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    sqs = client(moto_endpoint, "sqs", REGION)
    queue = EventsQueue(sqs, resources.events_queue_url, resources.events_queue_arn, REGION)
    return resources, queue


def sdk(
    endpoint: MotoEndpoint, environment: str, regions: tuple[str, ...] = (REGION,)
) -> GatewayClient:
    return GatewayClient(
        environment=environment,
        account="123456789012",
        region=REGION,
        regions=regions,
        client_factory=client_factory(endpoint),
    )


def commands(endpoint: MotoEndpoint, resources: Resources) -> list[dict[str, Any]]:
    return commands_on(client(endpoint, "sqs", REGION), resources.commands_queue_url)[1]


# Echo ----------------------------------------------------------------------------------------


def test_echo_sends_each_message_back_as_it_came(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    ann, bob = Connection(), Connection()
    queue.put([ann.connect(), bob.connect(), ann.message("hello ✓"), bob.message(b"\x00\xff")])
    queue.put([ann.disconnect()])

    queue.run(echo.build_handler(gateway=sdk(moto_endpoint, environment_name)))

    sent = sorted(commands(moto_endpoint, resources), key=lambda c: c["connectionIds"][0] != ann.id)
    assert sent == [
        {"action": "send", "connectionIds": [ann.id], "data": "hello ✓", "isBase64Encoded": False},
        {
            "action": "send",
            "connectionIds": [bob.id],
            "data": base64.b64encode(b"\x00\xff").decode(),
            "isBase64Encoded": True,
        },
    ]


def test_echo_module_handler_is_configured_by_the_environment(
    aws_chain: MotoEndpoint,
    environment_name: str,
    system: tuple[Resources, EventsQueue],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources, queue = system
    monkeypatch.setenv("WSGW_ENVIRONMENT", environment_name)
    monkeypatch.setattr(echo, "handler", echo.lazy_handler(echo.build_handler))  # a fresh one
    ann = Connection()
    queue.put([ann.message("via env")])

    queue.run(echo.handler)

    assert [c["data"] for c in commands(aws_chain, resources)] == ["via env"]


# Chat ----------------------------------------------------------------------------------------


class Members:
    """A presence source with fixed members per channel; it counts the members read."""

    def __init__(self, members: dict[str, list[tuple[str, Any]]], endless: bool = False) -> None:
        self._members = members
        self._endless = endless
        self.asked: list[str] = []
        self.read = 0

    def members(self, channel: str) -> Iterable[ChannelMember]:
        self.asked.append(channel)
        return self._each(channel)

    def _each(self, channel: str) -> Iterator[ChannelMember]:
        listed = self._members.get(channel, [])
        source = itertools.cycle(listed) if self._endless else iter(listed)
        for connection_id, user_info in source:
            self.read += 1
            yield ChannelMember(connection_id, user_info)


class BrokenMembers:
    def members(self, channel: str) -> Iterable[ChannelMember]:
        raise ConnectionError("the nodes' presence API is down")


def by_action(sent: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for command in sent:
        grouped.setdefault(command["action"], []).append(command)
    return grouped


def test_chat_connect_subscribes_each_client_to_its_room(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    handler = chat.build_handler(gateway=sdk(moto_endpoint, environment_name))
    ann = Connection([("room", "A"), ("name", "Ann")])
    bob = Connection()  # no room asked: the lobby, and no name
    cat = Connection([("room", "A"), ("name", "  Cat\x00\n\u202e the " + "great " * 10)])

    queue.put(
        [ann.connect(), bob.connect(), cat.connect(), *keepalive_events(NODE, [ann.id], 0, 1)]
    )
    queue.run(handler)

    sent = by_action(commands(moto_endpoint, resources))
    assert sorted(sent) == ["send", "subscribe"]  # KEEPALIVE needs nothing
    subscribes = {command["connectionIds"][0]: command for command in sent["subscribe"]}
    assert subscribes[ann.id] == {
        "action": "subscribe",
        "connectionIds": [ann.id],
        "channels": ["room:A"],
        "userInfo": {"name": "Ann"},
        "presenceEvents": True,
    }
    assert subscribes[bob.id] == {
        "action": "subscribe",
        "connectionIds": [bob.id],
        "channels": ["room:lobby"],
        "presenceEvents": True,
    }
    # Control and format characters go, spaces collapse, 32 characters at most.
    assert subscribes[cat.id]["userInfo"] == {"name": "Cat the great great great great"}
    told = {command["connectionIds"][0]: json.loads(command["data"]) for command in sent["send"]}
    assert told == {
        ann.id: {"you": ann.id, "room": "A"},
        bob.id: {"you": bob.id, "room": "lobby"},
        cat.id: {"you": cat.id, "room": "A"},
    }


def test_chat_messages_are_published_to_the_room_in_every_region(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    other = provision_region(moto_endpoint, environment_name, OTHER_REGION)
    gateway = sdk(moto_endpoint, environment_name, regions=(REGION, OTHER_REGION))
    handler = chat.build_handler(gateway=gateway)
    ann = Connection([("room", "A")])
    queue.put(
        [
            ann.message(json.dumps({"room": "A", "text": "hi room A ✓"})),
            ann.message(b"binary is not chat"),
        ]
    )
    queue.run(handler)

    line = {
        "action": "publish",
        "channel": "room:A",
        "data": json.dumps(
            {"room": "A", "from": ann.id, "text": "hi room A ✓"}, ensure_ascii=False
        ),
        "isBase64Encoded": False,
    }
    assert commands(moto_endpoint, resources) == [line]  # the sender hears it too, as a member
    other_sqs = client(moto_endpoint, "sqs", OTHER_REGION)
    assert commands_on(other_sqs, other.commands_queue_url)[1] == [line]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("just text", chat.MESSAGE_FORMAT),
        ('{"room": "A"}', chat.MESSAGE_FORMAT),
        ('{"room": 7, "text": "x"}', chat.MESSAGE_FORMAT),
        ('["room", "text"]', chat.MESSAGE_FORMAT),
        ("[" * 100_000, chat.MESSAGE_FORMAT),  # nested too deep for the parser
        ('{"room": "no spaces", "text": "x"}', "room names may hold only " + NAME_CHARACTERS),
        ('{"room": "", "text": "x"}', "room names are 1 to 100 characters"),
    ],
)
def test_chat_answers_a_message_it_cannot_place_with_an_error(
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    system: tuple[Resources, EventsQueue],
    body: str,
    error: str,
) -> None:
    resources, queue = system
    ann = Connection()
    queue.put([ann.message(body)])
    queue.run(chat.build_handler(gateway=sdk(moto_endpoint, environment_name)))

    [sent] = commands(moto_endpoint, resources)
    assert sent["action"] == "send" and sent["connectionIds"] == [ann.id]
    assert json.loads(sent["data"]) == {"error": error}


def test_chat_joins_and_leaves_become_notices_to_the_room(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    handler = chat.build_handler(gateway=sdk(moto_endpoint, environment_name))
    ann, bob = Connection(), Connection()
    queue.put(
        [
            ann.join("room:A", {"name": "Ann"}),
            bob.join("room:lobby"),
            bob.join("user:7"),  # a channel this origin did not make: not a room
            ann.leave("room:A", {"name": "Ann"}),
            bob.disconnect(),
            gone_event(NODE, bob.id, "subscribe", 0),
        ]
    )
    queue.run(handler)

    def notice(**fields: Any) -> dict[str, Any]:
        return {"from": None, "system": True, **fields}

    sent = commands(moto_endpoint, resources)
    assert {command["action"] for command in sent} == {"publish"}  # no members without a source
    notices = sorted(
        ((command["channel"], json.loads(command["data"])) for command in sent), key=str
    )
    assert notices == sorted(
        [
            ("room:A", notice(room="A", joined=ann.id, name="Ann")),
            ("room:lobby", notice(room="lobby", joined=bob.id)),
            ("room:A", notice(room="A", left=ann.id, name="Ann")),
        ],
        key=str,
    )


def test_chat_tells_a_newcomer_who_is_there_from_presence(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    ann, bob = Connection(), Connection()
    presence = Members({"room:A": [(ann.id, {"name": "Ann"}), (bob.id, None)]})
    handler = chat.build_handler(gateway=sdk(moto_endpoint, environment_name), presence=presence)
    queue.put([bob.join("room:A"), ann.leave("room:A")])
    queue.run(handler)

    assert presence.asked == ["room:A"]  # on a JOIN only
    sent = by_action(commands(moto_endpoint, resources))
    [listing] = sent["send"]
    assert listing["connectionIds"] == [bob.id]
    assert json.loads(listing["data"]) == {
        "room": "A",
        "members": [{"id": ann.id, "name": "Ann"}, {"id": bob.id}],
    }
    assert [json.loads(command["data"]).get("joined") for command in sent["publish"]] == [
        bob.id,
        None,
    ]


def test_chat_lists_a_bounded_number_of_members_and_survives_a_failing_source(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    ann = Connection()
    crowd = Members({"room:big": [(ISSUER.issue(), {"name": "x"})]}, endless=True)
    gateway = sdk(moto_endpoint, environment_name)
    queue.put([ann.join("room:big")])
    queue.run(chat.build_handler(gateway=gateway, presence=crowd))

    sent = by_action(commands(moto_endpoint, resources))
    [listing] = sent["send"]
    assert len(json.loads(listing["data"])["members"]) == chat.MAX_MEMBERS_LISTED
    assert crowd.read == chat.MAX_MEMBERS_LISTED  # read no further than it lists

    # The source fails: the room still hears of the newcomer, and the JOIN is not retried.
    queue.put([ann.join("room:A")])
    responses = queue.run(chat.build_handler(gateway=gateway, presence=BrokenMembers()))
    assert responses == [{"batchItemFailures": []}]
    [notice] = commands(moto_endpoint, resources)
    assert notice["action"] == "publish" and json.loads(notice["data"])["joined"] == ann.id


@pytest.mark.parametrize(
    ("room", "reason"),
    [
        ("#connection#x", "room names may hold only " + NAME_CHARACTERS),
        ("two words", "room names may hold only " + NAME_CHARACTERS),
        ("r" * 101, "room names are 1 to 100 characters"),
    ],
)
def test_chat_closes_a_client_asking_for_an_invalid_room(
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    system: tuple[Resources, EventsQueue],
    room: str,
    reason: str,
) -> None:
    resources, queue = system
    sneaky = Connection([("room", room)])
    queue.put([sneaky.connect()])
    queue.run(chat.build_handler(gateway=sdk(moto_endpoint, environment_name)))

    assert commands(moto_endpoint, resources) == [
        {"action": "close", "connectionIds": [sneaky.id], "code": 4400, "reason": reason}
    ]


def test_chat_room_length_follows_the_nodes_channel_rules() -> None:
    short = ChannelRules(max_name_length=20)
    assert chat.room_problem("r" * 15, short) is None
    assert chat.room_problem("r" * 16, short) == "room names are 1 to 15 characters"
    assert chat.room_problem("r" * 100, ChannelRules()) is None


def test_chat_settings_from_the_environment(
    aws_chain: MotoEndpoint, environment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSGW_ENVIRONMENT", environment_name)
    with pytest.raises(ValueError, match="set WSGW_REGIONS"):
        chat.build_handler()  # every publish would fail

    monkeypatch.setenv("WSGW_REGIONS", REGION)
    resources = provision_region(aws_chain, environment_name, REGION)
    queue = EventsQueue(
        client(aws_chain, "sqs", REGION),
        resources.events_queue_url,
        resources.events_queue_arn,
        REGION,
    )
    ann = Connection()
    queue.put([ann.join("room:lobby")])
    monkeypatch.setattr(chat, "handler", chat.lazy_handler(chat.build_handler))  # a fresh one
    queue.run(chat.handler)

    [notice] = commands(aws_chain, resources)
    assert notice["channel"] == "room:lobby"
    assert json.loads(notice["data"])["joined"] == ann.id
