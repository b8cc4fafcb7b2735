"""The example origins end to end on moto: events queue in, Lambda handler, commands queue out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from runtime.local.provision import Resources
from runtime.origin.client import GatewayClient
from runtime.origin.examples import chat, echo
from runtime.wire.events import (
    HandshakeDetails,
    NodeContext,
    connect_event,
    connection_fragment,
    disconnect_event,
    gone_event,
    keepalive_events,
    message_event,
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


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def system(moto_endpoint: MotoEndpoint, environment_name: str) -> tuple[Resources, EventsQueue]:
    resources = provision_region(moto_endpoint, environment_name, REGION)
    sqs = client(moto_endpoint, "sqs", REGION)
    queue = EventsQueue(sqs, resources.events_queue_url, resources.events_queue_arn, REGION)
    return resources, queue


def sdk(endpoint: MotoEndpoint, environment: str) -> GatewayClient:
    return GatewayClient(
        environment=environment,
        account="123456789012",
        region=REGION,
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


def chat_items(endpoint: MotoEndpoint, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = client(endpoint, "dynamodb", REGION).scan(TableName=table, ConsistentRead=True)
    return {(i["room"]["S"], i["connectionId"]["S"]): i for i in items["Items"]}


def test_chat_rooms_end_to_end(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    assert resources.chat_table is not None
    clock = Clock(1_700_000_000)
    handler = chat.build_handler(
        gateway=sdk(moto_endpoint, environment_name),
        table_name=resources.chat_table,
        dynamodb=client(moto_endpoint, "dynamodb", REGION),
        keepalive_interval=60,
        clock=clock,
    )
    ann, bob = Connection([("room", "A")]), Connection([("room", "A"), ("user", "bob")])
    cat = Connection([("room", "B")])

    queue.put([ann.connect(), bob.connect(), cat.connect()])
    queue.run(handler)
    sent = [
        (sorted(c["connectionIds"]), json.loads(c["data"]))
        for c in commands(moto_endpoint, resources)
    ]
    assert sorted(
        (ids, data["you"], data["room"]) for ids, data in sent if "you" in data
    ) == sorted([([ann.id], ann.id, "A"), ([bob.id], bob.id, "A"), ([cat.id], cat.id, "B")])
    joins = [(ids, data) for ids, data in sent if "you" not in data]
    assert sorted(joins, key=lambda join: len(join[0])) == [
        ([ann.id], {"room": "A", "from": None, "text": f"{ann.id} joined", "system": True}),
        ([cat.id], {"room": "B", "from": None, "text": f"{cat.id} joined", "system": True}),
        (
            sorted([ann.id, bob.id]),
            {"room": "A", "from": None, "text": f"{bob.id} joined", "system": True},
        ),
    ]
    items = chat_items(moto_endpoint, resources.chat_table)
    assert items[("A", ann.id)]["expiresAt"] == {"N": str(1_700_000_000 + 180)}
    assert items[(f"#connection#{bob.id}", bob.id)]["memberOf"] == {"S": "A"}

    queue.put([bob.message("hi room A")])
    queue.run(handler)
    [sent] = commands(moto_endpoint, resources)
    assert sorted(sent["connectionIds"]) == sorted([ann.id, bob.id])  # exactly room A
    assert json.loads(sent["data"]) == {"room": "A", "from": bob.id, "text": "hi room A"}

    clock.now += 100
    queue.put(keepalive_events(NODE, [ann.id, cat.id, ISSUER.issue()], 0, 1000))
    queue.run(handler)
    items = chat_items(moto_endpoint, resources.chat_table)
    assert items[("A", ann.id)]["expiresAt"] == {"N": str(1_700_000_100 + 180)}
    assert items[(f"#connection#{cat.id}", cat.id)]["expiresAt"] == {"N": str(1_700_000_280)}
    assert items[("A", bob.id)]["expiresAt"] == {"N": str(1_700_000_180)}  # not listed
    assert len(items) == 6  # the unknown connection was not added

    clock.now += 150  # bob's entry has expired, though DynamoDB has not deleted it yet
    queue.put([ann.message("anyone?")])
    queue.run(handler)
    [sent] = commands(moto_endpoint, resources)
    assert sent["connectionIds"] == [ann.id]

    gone = gone_event(NODE, bob.id, "send", 0)
    queue.put([ann.disconnect(), gone, cat.disconnect()])
    queue.run(handler)
    assert chat_items(moto_endpoint, resources.chat_table) == {}
    left = commands(moto_endpoint, resources)
    assert left == []  # nobody live was left to tell: bob had expired, cat was alone


def test_chat_leaving_tells_the_room(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    assert resources.chat_table is not None
    handler = chat.build_handler(
        gateway=sdk(moto_endpoint, environment_name),
        table_name=resources.chat_table,
        dynamodb=client(moto_endpoint, "dynamodb", REGION),
    )
    ann, bob = Connection(), Connection()  # no room asked: the lobby
    queue.put([ann.connect(), bob.connect(), bob.message(b"binary is not chat")])
    queue.run(handler)
    commands(moto_endpoint, resources)

    queue.put([bob.disconnect()])
    queue.run(handler)

    [sent] = commands(moto_endpoint, resources)
    assert sent["connectionIds"] == [ann.id]
    assert json.loads(sent["data"]) == {
        "room": "lobby",
        "from": None,
        "text": f"{bob.id} left",
        "system": True,
    }
    assert set(chat_items(moto_endpoint, resources.chat_table)) == {
        ("lobby", ann.id),
        (f"#connection#{ann.id}", ann.id),
    }


def test_chat_refuses_reserved_room_names(
    moto_endpoint: MotoEndpoint, environment_name: str, system: tuple[Resources, EventsQueue]
) -> None:
    resources, queue = system
    assert resources.chat_table is not None
    handler = chat.build_handler(
        gateway=sdk(moto_endpoint, environment_name),
        table_name=resources.chat_table,
        dynamodb=client(moto_endpoint, "dynamodb", REGION),
    )
    sneaky = Connection([("room", "#connection#x")])
    queue.put([sneaky.connect()])
    queue.run(handler)

    assert commands(moto_endpoint, resources) == [
        {
            "action": "close",
            "connectionIds": [sneaky.id],
            "code": 4400,
            "reason": "room names may not start with '#'",
        }
    ]
    assert chat_items(moto_endpoint, resources.chat_table) == {}


def test_chat_settings_from_the_environment(
    aws_chain: MotoEndpoint, environment_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEPALIVE_INTERVAL", "soon")
    with pytest.raises(ValueError, match="KEEPALIVE_INTERVAL must be a number of seconds"):
        chat.build_handler()
    monkeypatch.setenv("KEEPALIVE_INTERVAL", "0")
    with pytest.raises(ValueError, match="set CHAT_TABLE, or WSGW_ENVIRONMENT"):
        chat.build_handler()

    resources = provision_region(aws_chain, environment_name, REGION)
    queue = EventsQueue(
        client(aws_chain, "sqs", REGION),
        resources.events_queue_url,
        resources.events_queue_arn,
        REGION,
    )
    ann = Connection()
    queue.put([ann.connect()])
    queue.run(chat.build_handler(environment=environment_name))  # as the local system does

    assert resources.chat_table is not None
    items = chat_items(aws_chain, resources.chat_table)
    assert "expiresAt" not in items[("lobby", ann.id)]  # KEEPALIVE_INTERVAL=0: no expiry
    you, joined = commands(aws_chain, resources)
    assert json.loads(you["data"]) == {"you": ann.id, "room": "lobby"}
    assert joined["connectionIds"] == [ann.id]
