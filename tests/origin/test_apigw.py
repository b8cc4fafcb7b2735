"""API Gateway handlers run unchanged through runtime.origin.apigw, on moto and real HTTP.

The handlers in tests/origin/apigw_handlers are written as API Gateway's documentation writes
them; they are imported as they are, from the entry point's settings, and their boto3
apigatewaymanagementapi calls come back as commands on the SNS commands topic (read back from
its queue) or as calls to a @connections API served by aiohttp on 127.0.0.1.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import socket
import sys
import threading
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from runtime.local.provision import Resources
from runtime.origin import apigw
from runtime.origin.apigw import (
    ApiGatewayOrigin,
    ApiGatewaySettings,
    HandlerSetupError,
    answer_status,
    botocore_hook,
    parse_route_handlers,
)
from runtime.origin.client import GatewayClient
from runtime.origin.events import EventFormatError
from runtime.wire.connection_id import ConnectionIdIssuer
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
from tests.origin.apigw_handlers import recorder
from tests.origin.harness import (
    CallCounter,
    EventsQueue,
    client,
    client_factory,
    commands_on,
    issuer,
    provision_region,
)

REGION = "us-east-1"
STAGE = "test"
NODE = NodeContext(stage=STAGE, region=REGION)
HANDLERS = Path(__file__).with_name("apigw_handlers")
CHAT = "tests.origin.apigw_handlers.chat.handler"
TOKEN = "open-sesame"
# What the handlers build their endpoint_url from: nothing listens there, so a call that the
# entry point failed to answer fails at once, on this machine.
HOST = "127.0.0.1:9"
WSGW_VARIABLES = (
    "WSGW_HANDLER",
    "WSGW_ROUTE_HANDLERS",
    "WSGW_GONE_ROUTE",
    "WSGW_ASYNC_CONNECT",
    "WSGW_POST_VIA",
    "WSGW_CONNECTIONS_URL",
    "WSGW_CONNECTIONS_PORT",
    "WSGW_CONNECTIONS_TOKEN",
    "WSGW_CONNECTIONS_TIMEOUT",
)


class Connection:
    """One client's events, as its node makes them."""

    def __init__(
        self, query: list[tuple[str, str]] | None = None, minted: ConnectionIdIssuer | None = None
    ) -> None:
        self.id = (minted or issuer(REGION)).issue()
        headers = [("Host", HOST), ("User-Agent", "test-client/1")]
        self.details = HandshakeDetails("/", headers, query or [], "203.0.113.9", None)
        self.fragment = connection_fragment(NODE, self.id, 1_700_000_000_000, self.details)
        self.sequence = 0

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence - 1

    def connect(self, *, handled: bool = False) -> bytes:
        return connect_event(
            self.fragment, self._next(), 1_700_000_000_000, self.details, connect_handled=handled
        )

    def message(self, route: str, data: str | bytes) -> bytes:
        return message_event(self.fragment, self._next(), 1_700_000_000_000, route, data)

    def say(self, text: str) -> bytes:
        return self.message("sendmessage", json.dumps({"action": "sendmessage", "message": text}))

    def disconnect(self) -> bytes:
        return disconnect_event(self.fragment, self._next(), 1_700_000_000_000, 1000, "")


def member(name: str) -> Connection:
    return Connection([("token", TOKEN), ("name", name)])


@dataclass
class System:
    endpoint: MotoEndpoint
    environment: str
    resources: Resources
    queue: EventsQueue
    table: str
    monkeypatch: pytest.MonkeyPatch
    built: list[ApiGatewayOrigin] = field(default_factory=list)

    def origin(self, counter: CallCounter | None = None, **env: str) -> ApiGatewayOrigin:
        """The entry point, set up from the environment as in Lambda (with `env` added)."""
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        gateway_factory: Callable[[], GatewayClient] = GatewayClient
        if counter is not None:

            def gateway_factory() -> GatewayClient:
                return GatewayClient(
                    environment=self.environment,
                    account="123456789012",  # moto's
                    region=REGION,
                    client_factory=client_factory(self.endpoint, counter),
                )

        origin = ApiGatewayOrigin(
            ApiGatewaySettings.from_environ(os.environ), gateway_factory=gateway_factory
        )
        self.built.append(origin)
        return origin

    def commands(self) -> list[dict[str, Any]]:
        return commands_on(client(self.endpoint, "sqs", REGION), self.resources.commands_queue_url)[
            1
        ]

    def rows(self) -> dict[str, str]:
        items = client(self.endpoint, "dynamodb", REGION).scan(
            TableName=self.table, ConsistentRead=True
        )["Items"]
        return {item["connectionId"]["S"]: item.get("name", {}).get("S", "") for item in items}

    def put_row(self, connection_id: str, name: str) -> None:
        client(self.endpoint, "dynamodb", REGION).put_item(
            TableName=self.table,
            Item={"connectionId": {"S": connection_id}, "name": {"S": name}},
        )

    def batch(self, origin: ApiGatewayOrigin, count: int) -> tuple[dict[str, Any], list[str]]:
        """Receive `count` queued records as one Lambda batch; its response and message IDs."""
        messages: list[dict[str, Any]] = []
        for _ in range(20):
            messages += self.queue.sqs.receive_message(
                QueueUrl=self.queue.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if len(messages) >= count:
                break
        assert len(messages) == count
        return origin(self.queue.lambda_event(messages), None), [m["MessageId"] for m in messages]


@pytest.fixture
def system(
    aws_chain: MotoEndpoint, environment_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[System]:
    resources = provision_region(aws_chain, environment_name, REGION)
    table = f"{environment_name}-connections"
    client(aws_chain, "dynamodb", REGION).create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "connectionId", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for name in WSGW_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WSGW_ENVIRONMENT", environment_name)
    monkeypatch.setenv("TABLE_NAME", table)
    monkeypatch.delenv("CHAT_TOKEN", raising=False)
    sqs = client(aws_chain, "sqs", REGION)
    queue = EventsQueue(sqs, resources.events_queue_url, resources.events_queue_arn, REGION)
    recorder.events.clear()
    yield System(aws_chain, environment_name, resources, queue, table, monkeypatch)
    recorder.events.clear()


def management_client(**config: Any) -> Any:
    """A client as the handlers make one; one attempt, so a call that escapes fails fast."""
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{HOST}/{STAGE}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, **config),
    )


# Zero lines changed --------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(HANDLERS.glob("*.py")), ids=lambda path: path.name)
def test_handler_modules_know_nothing_of_the_gateway(path: Path) -> None:
    """Each handler imports only what an API Gateway handler would: boto3 and the stdlib."""
    tree = ast.parse(path.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported <= {"boto3", "botocore", "json", "logging", "os"}
    assert "runtime" not in path.read_text()


# The single-function chat --------------------------------------------------------------------


def test_single_function_chat_runs_unchanged(system: System) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)
    ann, bob, eve = member("ann"), member("bob"), Connection([("token", "wrong")])

    system.queue.put([ann.connect(), bob.connect(), eve.connect()])
    system.queue.run(origin)
    assert system.rows() == {ann.id: "ann", bob.id: "bob"}
    assert system.commands() == [  # refused by $connect after the node accepted it
        {
            "action": "close",
            "connectionIds": [eve.id],
            "code": 4401,
            "reason": "refused by $connect (401)",
        }
    ]

    system.queue.put([bob.say("hi all")])
    system.queue.run(origin)
    sent = system.commands()
    assert sorted(command["connectionIds"][0] for command in sent) == sorted([ann.id, bob.id])
    for command in sent:
        assert command["action"] == "send"
        assert command["isBase64Encoded"] is False  # UTF-8 bytes go as text, as on API Gateway
        assert json.loads(command["data"]) == {"from": "bob", "message": "hi all"}

    system.queue.put([ann.message("$default", "hello?")])
    system.queue.run(origin)
    [hint] = system.commands()
    assert hint["connectionIds"] == [ann.id]
    assert "sendmessage" in json.loads(hint["data"])["error"]

    system.queue.put([ann.disconnect()])
    system.queue.run(origin)
    assert system.rows() == {bob.id: "bob"}


def test_a_fan_out_of_many_posts_costs_one_publish(system: System) -> None:
    counter = CallCounter()
    origin = system.origin(counter, WSGW_HANDLER=CHAT)
    others = [issuer(REGION).issue() for _ in range(60)]
    for index, other in enumerate(others):
        system.put_row(other, f"user{index}")
    bob = member("bob")
    system.queue.put([bob.connect()])
    system.queue.run(origin)
    counter.calls.clear()

    system.queue.put([bob.say("to everyone")])
    system.queue.run(origin)

    assert counter.calls == {"PublishBatch": 1}
    assert sorted(c["connectionIds"][0] for c in system.commands()) == sorted([*others, bob.id])


def test_the_split_chat_runs_unchanged(system: System) -> None:
    routes = {
        "$connect": "tests.origin.apigw_handlers.routes.on_connect",
        "$disconnect": "tests.origin.apigw_handlers.routes.on_disconnect",
        "sendmessage": "tests.origin.apigw_handlers.routes.on_send_message",
        "$default": "tests.origin.apigw_handlers.routes.on_default",
    }
    origin = system.origin(WSGW_ROUTE_HANDLERS=json.dumps(routes))
    ann, bob, eve = member("ann"), member("bob"), Connection()  # eve has no token at all

    system.queue.put([ann.connect(), bob.connect(), eve.connect()])
    system.queue.run(origin)
    assert system.rows() == {ann.id: "ann", bob.id: "bob"}
    assert [c["code"] for c in system.commands()] == [4401]

    system.queue.put([ann.say("split"), bob.message("nosuchroute", "{}")])
    system.queue.run(origin)
    sent = {(c["connectionIds"][0], c["data"]) for c in system.commands()}
    to_all = json.dumps({"from": "ann", "message": "split"})
    assert sent == {(ann.id, to_all), (bob.id, to_all), (bob.id, '{"error": "unknown action"}')}

    system.queue.put([bob.disconnect()])
    system.queue.run(origin)
    assert system.rows() == {ann.id: "ann"}


# GONE ----------------------------------------------------------------------------------------


def test_gone_reaches_disconnect_and_later_posts_get_gone_exception(system: System) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)
    ann, bob = member("ann"), member("bob")
    system.queue.put([ann.connect(), bob.connect()])
    system.queue.run(origin)

    system.queue.put([gone_event(NODE, ann.id, "send", 1_700_000_000_000)])
    system.queue.run(origin)
    assert system.rows() == {bob.id: "bob"}  # the $disconnect handler deleted ann's row

    system.put_row(ann.id, "ann")  # a stale row, as a late write would leave
    system.queue.put([bob.say("anyone?")])
    system.queue.run(origin)
    assert [c["connectionIds"] for c in system.commands()] == [[bob.id]]
    assert system.rows() == {bob.id: "bob"}  # the handler's own GoneException branch ran


def test_gone_as_disconnect_looks_like_a_vanished_connection(system: System) -> None:
    origin = system.origin(WSGW_HANDLER="tests.origin.apigw_handlers.recorder.handler")
    gone_id = issuer(REGION).issue()
    system.queue.put([gone_event(NODE, gone_id, "close", 1_700_000_000_000)])
    system.queue.run(origin)
    [event] = recorder.events
    assert event["requestContext"]["eventType"] == "DISCONNECT"
    assert event["requestContext"]["routeKey"] == "$disconnect"
    assert event["requestContext"]["connectionId"] == gone_id
    assert event["requestContext"]["disconnectStatusCode"] == 1006
    assert event["requestContext"]["action"] == "close"
    assert event["disconnectStatusCode"] == 1006


@pytest.mark.parametrize(("setting", "expected"), [("none", []), ("$gone", ["GONE"])])
def test_gone_may_be_dropped_or_routed_elsewhere(
    system: System, setting: str, expected: list[str]
) -> None:
    origin = system.origin(
        WSGW_ROUTE_HANDLERS="$gone=tests.origin.apigw_handlers.recorder.handler",
        WSGW_GONE_ROUTE=setting,
    )
    system.queue.put([gone_event(NODE, issuer(REGION).issue(), "send", 1_700_000_000_000)])
    system.queue.run(origin)
    assert [event["requestContext"]["eventType"] for event in recorder.events] == expected


# What reaches a handler ----------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "handed"), [("skip", 0), ("run", 1)])
def test_connects_the_node_already_handled(system: System, setting: str, handed: int) -> None:
    origin = system.origin(
        WSGW_HANDLER="tests.origin.apigw_handlers.recorder.handler", WSGW_ASYNC_CONNECT=setting
    )
    connection = Connection()
    system.queue.put([connection.connect(handled=True)])
    system.queue.run(origin)
    assert len(recorder.events) == handed
    system.queue.put([Connection().connect()])  # not handled by the node: always handed
    system.queue.run(origin)
    assert len(recorder.events) == handed + 1


def test_keepalives_never_reach_a_handler(system: System) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)  # chat would fail on an event without an ID
    system.queue.put(keepalive_events(NODE, [issuer(REGION).issue()], 1_700_000_000_000, 100))
    system.queue.run(origin)
    assert system.commands() == []


def test_a_message_with_no_function_is_dropped(system: System) -> None:
    origin = system.origin(
        WSGW_ROUTE_HANDLERS="$connect=tests.origin.apigw_handlers.recorder.handler"
    )
    connection = Connection()
    system.queue.put([connection.connect(), connection.message("sendmessage", "{}")])
    system.queue.run(origin)  # no failure: retrying would not find a function either
    assert [event["requestContext"]["routeKey"] for event in recorder.events] == ["$connect"]


# Failures ------------------------------------------------------------------------------------


def test_a_failing_record_is_reported_and_its_posts_dropped(system: System) -> None:
    origin = system.origin(WSGW_HANDLER="tests.origin.apigw_handlers.flaky.handler")
    ann, bob = Connection(), Connection()
    system.queue.put([ann.message("$default", '{"ok": 1}'), bob.message("$default", "not json")])

    response, message_ids = system.batch(origin, 2)

    failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    assert len(failed) == 1 and failed[0] in message_ids
    assert system.commands() == [
        {"action": "send", "connectionIds": [ann.id], "data": '{"ok": 1}', "isBase64Encoded": False}
    ]


def test_a_publish_that_fails_fails_its_record(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSGW_ENVIRONMENT", "no-such-environment")  # its topic does not exist
    origin = system.origin(WSGW_HANDLER="tests.origin.apigw_handlers.flaky.handler")
    system.queue.put([Connection().message("$default", "{}")])
    response, [message_id] = system.batch(origin, 1)
    assert response == {"batchItemFailures": [{"itemIdentifier": message_id}]}


# The bare event: the node's synchronous $connect ---------------------------------------------


def test_a_bare_connect_gets_the_handlers_answer(system: System) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)
    refused, accepted = Connection([("token", "wrong")]), member("ann")
    assert origin(json.loads(refused.connect()), None) == {
        "statusCode": 401,
        "body": "Unauthorized",
    }
    assert origin(json.loads(accepted.connect()), None) == {"statusCode": 200}
    assert system.rows() == {accepted.id: "ann"}
    assert system.commands() == []  # the node refuses the handshake itself: no close command


def test_a_bare_connect_without_a_function_or_answer_is_accepted(system: System) -> None:
    no_connect = system.origin(
        WSGW_ROUTE_HANDLERS="sendmessage=tests.origin.apigw_handlers.recorder.handler"
    )
    assert no_connect(json.loads(Connection().connect()), None) == {"statusCode": 200}
    answers_none = system.origin(WSGW_HANDLER="tests.origin.apigw_handlers.flaky.handler")
    assert answers_none(json.loads(Connection().connect()), None) == {"statusCode": 200}


def test_a_bare_event_whose_handler_raises_raises_and_sends_nothing(system: System) -> None:
    origin = system.origin(WSGW_HANDLER="tests.origin.apigw_handlers.flaky.handler")
    with pytest.raises(json.JSONDecodeError):
        origin(json.loads(Connection().message("$default", "not json")), None)
    assert system.commands() == []


@pytest.mark.parametrize("lambda_event", [{}, {"detail": 1}, [], "text", {"requestContext": {}}])
def test_other_invocations_are_refused_by_name(system: System, lambda_event: Any) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)
    with pytest.raises(EventFormatError, match=r"SQS batch .* or an API Gateway"):
        origin(lambda_event, None)


# apigatewaymanagementapi errors, as botocore raises them -------------------------------------


def test_errors_are_the_clients_modeled_exceptions(system: System) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)
    origin.routes()  # the first invocation's work: the hook is in place
    api = management_client()
    target = issuer(REGION).issue()
    with origin.management.handling(None):
        with pytest.raises(api.exceptions.GoneException, match="Invalid connectionId"):
            api.post_to_connection(ConnectionId="not-an-id", Data=b"x")
        with pytest.raises(api.exceptions.PayloadTooLargeException, match="cannot fit"):
            api.post_to_connection(ConnectionId=target, Data=b"x" * 300_000)
        with pytest.raises(api.exceptions.ForbiddenException, match="WSGW_CONNECTIONS_URL"):
            api.get_connection(ConnectionId=target)
        answer = api.delete_connection(ConnectionId=target)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert answer["ResponseMetadata"]["RequestId"]
    assert system.commands() == [
        {"action": "close", "connectionIds": [target], "code": 1000, "reason": ""}
    ]
    with (
        origin.management.handling(None),  # deleted, so known gone
        pytest.raises(api.exceptions.GoneException) as caught,
    ):
        api.post_to_connection(ConnectionId=target, Data=b"late")
    assert caught.value.response["Error"]["Code"] == "GoneException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410


def test_outside_a_handled_event_boto3_goes_on_as_usual(system: System) -> None:
    system.origin(WSGW_HANDLER=CHAT).routes()
    with pytest.raises(EndpointConnectionError):  # it really tried https://127.0.0.1:9
        management_client().post_to_connection(ConnectionId=issuer(REGION).issue(), Data=b"x")


def test_a_worker_thread_publishes_at_once_and_a_failure_drops_the_rest(system: System) -> None:
    origin = system.origin(WSGW_HANDLER=CHAT)
    origin.routes()
    api = management_client()
    buffered, at_once = issuer(REGION).issue(), issuer(REGION).issue()

    def worker() -> None:
        management_client().post_to_connection(ConnectionId=at_once, Data=b"from a thread")

    with pytest.raises(RuntimeError), origin.management.handling(None):
        api.post_to_connection(ConnectionId=buffered, Data=b"dropped")
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        raise RuntimeError("the handler failed")
    assert [(c["connectionIds"], c["data"]) for c in system.commands()] == [
        ([at_once], "from a thread")
    ]


def test_a_default_session_made_before_install_is_covered(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    early = boto3.session.Session()
    # as if made before us
    early.events.unregister(botocore_hook.HOOK_EVENT, botocore_hook._before_call)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", early)
    apigw.install()
    origin = system.origin(WSGW_HANDLER=CHAT)
    target = issuer(REGION).issue()
    api = boto3.client("apigatewaymanagementapi", endpoint_url=f"https://{HOST}/{STAGE}")
    with origin.management.handling(None):
        api.post_to_connection(ConnectionId=target, Data="via the default session")
    assert [c["data"] for c in system.commands()] == ["via the default session"]


# The node's @connections API -----------------------------------------------------------------


@dataclass
class FakeNode:
    """A @connections API as the node serves it, recording each call."""

    live: dict[str, dict[str, Any]]
    untyped: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str | None, bytes]] = field(default_factory=list)
    port: int = 0

    async def answer(self, request: web.Request) -> web.Response:
        connection_id = request.match_info["id"]
        body = await request.read()
        token = request.headers.get("X-Gateway-Token")
        self.calls.append((request.method, request.path, token, body))
        if request.match_info["stage"] != STAGE:
            return web.json_response({"message": "Forbidden"}, status=403)
        if connection_id not in self.live:
            # Some answers lack x-amzn-ErrorType: the status alone must do.
            untyped = connection_id in self.untyped
            headers = {} if untyped else {"x-amzn-ErrorType": "GoneException"}
            return web.json_response({"message": "Gone"}, status=410, headers=headers)
        if request.method == "GET":
            return web.json_response(self.live[connection_id])
        return web.Response(status=200 if request.method == "POST" else 204)


@pytest.fixture
async def fake_node() -> AsyncIterator[FakeNode]:
    node = FakeNode({})
    app = web.Application()
    app.router.add_route("*", "/{stage}/@connections/{id}", node.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    node.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield node
    await runner.cleanup()


INFO = {  # as the brief for the node's API spells it; API Gateway's wire names are camelCase
    "ConnectedAt": "2026-01-02T03:04:05.678Z",
    "Identity": {"SourceIp": "203.0.113.9", "UserAgent": "test-client/1"},
    "LastActiveAt": "2026-01-02T03:04:09.000Z",
}


async def test_get_connection_asks_the_node(system: System, fake_node: FakeNode) -> None:
    ann = Connection()
    fake_node.live[ann.id] = INFO
    origin = system.origin(
        WSGW_HANDLER="tests.origin.apigw_handlers.presence.handler",
        WSGW_CONNECTIONS_URL=f"http://127.0.0.1:{fake_node.port}",
        WSGW_CONNECTIONS_TOKEN="node-token",
    )
    gone = [Connection() for _ in range(4)]
    fake_node.untyped.update(other.id for other in gone[:2])
    system.queue.put([ann.message("whoami", "{}")])
    for other in gone:
        system.queue.put([ann.message("lookup", json.dumps({"connectionId": other.id}))])
    await asyncio.to_thread(system.queue.run, origin)

    answers = [json.loads(c["data"]) for c in system.commands()]
    assert {
        "connectedAt": "2026-01-02T03:04:05.678000+00:00",
        "lastActiveAt": "2026-01-02T03:04:09+00:00",
        "sourceIp": "203.0.113.9",
        "userAgent": "test-client/1",
    } in answers
    assert sorted(a["connectionId"] for a in answers if "connected" in a) == sorted(
        other.id for other in gone
    )
    assert not any(a.get("connected") for a in answers)
    method, path, token, _ = fake_node.calls[0]
    assert (method, path, token) == ("GET", f"/{STAGE}/@connections/{ann.id}", "node-token")
    assert all(other.id in origin.closed for other in gone)  # a 410 is remembered


async def test_post_via_connections_gives_the_exact_gone_exception(
    system: System, fake_node: FakeNode
) -> None:
    origin = system.origin(
        WSGW_HANDLER=CHAT,
        WSGW_POST_VIA="connections",
        WSGW_CONNECTIONS_URL=f"http://127.0.0.1:{fake_node.port}",
    )
    ann, bob = member("ann"), member("bob")
    system.put_row(ann.id, "ann")
    system.put_row(bob.id, "bob")
    fake_node.live[bob.id] = INFO  # ann is gone, though her row is still there
    system.queue.put([bob.say("hello")])
    await asyncio.to_thread(system.queue.run, origin)

    assert system.rows() == {bob.id: "bob"}  # the handler's GoneException branch deleted ann
    posts = [(path, body) for method, path, _, body in fake_node.calls if method == "POST"]
    data = json.dumps({"from": "bob", "message": "hello"}).encode()
    assert (f"/{STAGE}/@connections/{bob.id}", data) in posts
    assert system.commands() == []  # nothing went through the commands topic


async def test_connections_port_reaches_the_node_named_in_the_id(
    system: System, fake_node: FakeNode
) -> None:
    local_node = ConnectionIdIssuer(REGION, issuer(REGION, "127.0.0.1").node)
    ann = Connection(minted=local_node)
    fake_node.live[ann.id] = INFO
    origin = system.origin(
        WSGW_HANDLER="tests.origin.apigw_handlers.presence.handler",
        WSGW_CONNECTIONS_PORT=str(fake_node.port),
    )
    system.queue.put([ann.message("whoami", "{}")])
    await asyncio.to_thread(system.queue.run, origin)
    [answer] = [json.loads(c["data"]) for c in system.commands()]
    assert answer["sourceIp"] == "203.0.113.9"
    assert fake_node.calls[0][1] == f"/{STAGE}/@connections/{ann.id}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_node_that_is_not_there_means_the_connection_is_gone(system: System) -> None:
    ann, bob = Connection(minted=issuer(REGION, "127.0.0.1")), Connection()
    origin = system.origin(
        WSGW_HANDLER="tests.origin.apigw_handlers.presence.handler",
        WSGW_CONNECTIONS_PORT=str(closed_port()),
    )
    system.queue.put([bob.message("lookup", json.dumps({"connectionId": ann.id}))])
    system.queue.run(origin)
    [answer] = [json.loads(c["data"]) for c in system.commands()]
    assert answer == {"connectionId": ann.id, "connected": False}


def test_a_fixed_node_that_is_not_there_is_a_connection_error(system: System) -> None:
    origin = system.origin(
        WSGW_HANDLER=CHAT, WSGW_CONNECTIONS_URL=f"http://127.0.0.1:{closed_port()}"
    )
    origin.routes()
    with origin.management.handling(None), pytest.raises(EndpointConnectionError):
        management_client().get_connection(ConnectionId=issuer(REGION).issue())


# Settings ------------------------------------------------------------------------------------


def test_route_handlers_parse_as_json_or_pairs() -> None:
    pairs = "$connect=app.connect, sendmessage = app.send ,$default=pkg.app.default"
    expected = {"$connect": "app.connect", "sendmessage": "app.send", "$default": "pkg.app.default"}
    assert parse_route_handlers(pairs) == expected
    assert parse_route_handlers(json.dumps(expected)) == expected
    assert parse_route_handlers("") == {}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "set WSGW_HANDLER .* or WSGW_ROUTE_HANDLERS"),
        ({"WSGW_HANDLER": "handler"}, "WSGW_HANDLER must be module.function"),
        ({"WSGW_HANDLER": "app.handler()"}, "WSGW_HANDLER must be module.function"),
        ({"WSGW_ROUTE_HANDLERS": "$connect"}, "items must be route=module.function"),
        ({"WSGW_ROUTE_HANDLERS": "a=m.f,a=m.g"}, "names route 'a' twice"),
        ({"WSGW_ROUTE_HANDLERS": "=m.f"}, "route keys must be 1 to 128"),
        ({"WSGW_ROUTE_HANDLERS": "{bad json"}, "is not valid JSON"),
        ({"WSGW_ROUTE_HANDLERS": '{"a": 1}'}, "must map route keys"),
        ({"WSGW_ROUTE_HANDLERS": "a=nodot"}, r"WSGW_ROUTE_HANDLERS\['a'\] must be module"),
        ({"WSGW_HANDLER": "m.f", "WSGW_ASYNC_CONNECT": "maybe"}, "must be skip or run"),
        ({"WSGW_HANDLER": "m.f", "WSGW_POST_VIA": "carrier"}, "must be commands or connections"),
        ({"WSGW_HANDLER": "m.f", "WSGW_POST_VIA": "connections"}, "needs WSGW_CONNECTIONS_URL"),
        ({"WSGW_HANDLER": "m.f", "WSGW_CONNECTIONS_URL": "10.0.0.5:8081"}, "http:// or https://"),
        ({"WSGW_HANDLER": "m.f", "WSGW_CONNECTIONS_PORT": "eighty"}, "must be a port number"),
        ({"WSGW_HANDLER": "m.f", "WSGW_CONNECTIONS_PORT": "70000"}, "from 1 to 65535"),
        (
            {
                "WSGW_HANDLER": "m.f",
                "WSGW_CONNECTIONS_PORT": "1",
                "WSGW_CONNECTIONS_URL": "http://a",
            },
            "not both",
        ),
        ({"WSGW_HANDLER": "m.f", "WSGW_CONNECTIONS_TIMEOUT": "soon"}, "number of seconds"),
        ({"WSGW_HANDLER": "m.f", "WSGW_CONNECTIONS_TIMEOUT": "0"}, "more than 0"),
        ({"WSGW_HANDLER": "m.f", "WSGW_ENVIRONMENT": ""}, "set WSGW_ENVIRONMENT"),
    ],
)
def test_bad_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(HandlerSetupError, match=message):
        ApiGatewaySettings.from_environ({"WSGW_ENVIRONMENT": "prod", **environ})


@pytest.mark.parametrize(
    ("variable", "reference", "message"),
    [
        ("WSGW_HANDLER", "tests.origin.apigw_handlers.nope.handler", "cannot import module"),
        ("WSGW_HANDLER", "tests.origin.apigw_handlers.chat.hanlder", "has no attribute 'hanlder'"),
        (
            "WSGW_HANDLER",
            "tests.origin.apigw_handlers.recorder.events",
            "is a list, not a function",
        ),
        ("WSGW_ROUTE_HANDLERS", "$connect=tests.origin.nowhere.f", r"\['\$connect'\]=tests"),
    ],
)
def test_a_bad_function_fails_the_first_invocation_naming_its_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, reference: str, message: str
) -> None:
    for name in WSGW_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WSGW_ENVIRONMENT", "prod")
    monkeypatch.setenv(variable, reference)
    entry_point = apigw.entry_point_from_environment()  # as `runtime.origin.apigw.handler`
    for _ in range(2):  # every invocation says so, not only the first
        with pytest.raises(HandlerSetupError, match=f"{variable}.*{message}"):
            entry_point({"Records": []}, None)


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (None, 200),
        ("ok", 200),
        ({}, 200),
        ({"statusCode": 204}, 204),
        ({"statusCode": "403"}, 403),
        ({"statusCode": 401, "body": "no"}, 401),
        ({"statusCode": "abc"}, 500),
        ({"statusCode": 99}, 500),
        ({"statusCode": True}, 500),
    ],
)
def test_connect_answers_are_read_as_api_gateway_reads_them(result: Any, status: int) -> None:
    assert answer_status(result) == status


# Packed records: the node puts many events in one SQS message --------------------------------


def packed(*events: bytes) -> str:
    """A body as the node packs events: compact `{"events":[...]}` around each event's JSON."""
    return '{"events":[' + ",".join(event.decode() for event in events) + "]}"


def batch_of(system: System, *bodies: tuple[str, str]) -> dict[str, Any]:
    """A Lambda batch from the FIFO events queue: one record per (message group, body)."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"handle-{index}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": group},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": system.queue.arn,
                "awsRegion": REGION,
            }
            for index, (group, body) in enumerate(bodies)
        ]
    }


def failed_ids(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def test_a_packed_record_runs_each_event_through_its_function(system: System) -> None:
    counter = CallCounter()
    origin = system.origin(counter, WSGW_HANDLER=CHAT)
    ann, bob, eve = member("ann"), member("bob"), Connection([("token", "wrong")])
    system.queue.put([packed(ann.connect(), bob.connect(), eve.connect())])
    system.queue.run(origin)
    assert system.rows() == {ann.id: "ann", bob.id: "bob"}
    assert [(c["connectionIds"], c["code"]) for c in system.commands()] == [([eve.id], 4401)]
    counter.calls.clear()

    system.queue.put([packed(ann.say("one"), bob.say("two"), ann.say("three"))])
    system.queue.run(origin)

    sent = [(c["connectionIds"][0], json.loads(c["data"])) for c in system.commands()]
    said = [(data["from"], data["message"]) for _, data in sent]
    assert said == [("ann", "one")] * 2 + [("bob", "two")] * 2 + [("ann", "three")] * 2
    assert sorted(target for target, _ in sent[:2]) == sorted([ann.id, bob.id])
    assert counter.calls == {"PublishBatch": 1}  # the whole batch's posts in one publish


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A handler module, importable by name for WSGW_HANDLER, whose bodies say what to do:
    `delete:<id>`, `post:<id>` (a GoneException is noted, as a handler would clean up), `fail`,
    anything else is echoed. It notes every attempt."""
    module = types.ModuleType("scripted_apigw_handler")
    attempts: list[str] = []
    gone: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request = event["requestContext"]
        body = event["body"]
        attempts.append(body)
        apigw = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=f"https://{request['domainName']}/{request['stage']}",
        )
        command, _, target = body.partition(":")
        if command == "delete":
            apigw.delete_connection(ConnectionId=target)
        elif command == "post":
            try:
                apigw.post_to_connection(ConnectionId=target, Data=body.encode())
            except apigw.exceptions.GoneException:
                gone.append(target)
        elif command == "fail":
            raise RuntimeError("the handler failed")
        else:
            apigw.post_to_connection(ConnectionId=request["connectionId"], Data=body.encode())
        return {"statusCode": 200}

    module.handler = handler  # type: ignore[attr-defined]
    module.attempts = attempts  # type: ignore[attr-defined]
    module.gone = gone  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def test_a_failing_event_fails_its_packed_record_and_drops_all_its_posts(
    system: System, scripted: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    counter = CallCounter()
    origin = system.origin(counter, WSGW_HANDLER="scripted_apigw_handler.handler")
    ann, bob = Connection(), Connection()
    failing = packed(
        ann.message("$default", "one"),
        ann.message("$default", "fail"),
        ann.message("$default", "three"),
    )
    batch = batch_of(system, ("b-1", failing), ("b-2", bob.message("$default", "four").decode()))

    response = origin(batch, None)

    assert failed_ids(response) == [batch["Records"][0]["messageId"]]
    assert scripted.attempts == ["one", "fail", "four"]  # "three" waits for the retry
    assert [(c["connectionIds"], c["data"]) for c in system.commands()] == [([bob.id], "four")]
    assert counter.calls == {"PublishBatch": 1}
    [failure] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert getattr(failure, "eventIndex", None) == 1
    assert getattr(failure, "connectionId", None) == ann.id


def test_a_delete_counts_within_the_batch_and_is_forgotten_with_its_failed_record(
    system: System, scripted: types.ModuleType
) -> None:
    origin = system.origin(WSGW_HANDLER="scripted_apigw_handler.handler")
    ann, target = Connection(), issuer(REGION).issue()

    def say(*bodies: str) -> dict[str, Any]:
        texts = [ann.message("$default", body) for body in bodies]
        return batch_of(system, ("b-1", packed(*texts)))

    response = origin(say(f"delete:{target}", f"post:{target}", "fail"), None)
    assert len(failed_ids(response)) == 1
    assert scripted.gone == [target]  # as on API Gateway: deleted, then gone at once
    assert system.commands() == []  # the delete went with its record: the retry makes it again

    response = origin(say(f"post:{target}"), None)
    assert failed_ids(response) == []
    assert scripted.gone == [target]  # not gone: the failed record's delete was forgotten
    assert [(c["action"], c["connectionIds"]) for c in system.commands()] == [("send", [target])]

    response = origin(say(f"delete:{target}", f"post:{target}"), None)
    assert failed_ids(response) == []
    assert scripted.gone == [target, target]
    assert [(c["action"], c["connectionIds"]) for c in system.commands()] == [("close", [target])]

    origin(say(f"post:{target}"), None)
    assert scripted.gone == [target, target, target]  # published, so known gone for good
    assert system.commands() == []


def test_a_ported_handler_adds_channels_through_the_same_buffer(system: System) -> None:
    """runtime.origin.apigw.gateway(): channel commands go out with the event's posts, and are
    dropped with them when its record fails."""
    origin = system.origin(WSGW_HANDLER="tests.origin.apigw_channel_handler.handler")
    ann, bob = Connection(), Connection()
    system.queue.put(
        [
            ann.message("$default", '{"room": "lobby", "text": "hi"}'),
            bob.message("$default", '{"room": "lobby", "text": "lost", "fail": true}'),
        ]
    )
    response, _ids = system.batch(origin, 2)
    assert len(response["batchItemFailures"]) == 1
    assert system.commands() == [
        {"action": "subscribe", "connectionIds": [ann.id], "channels": ["room:lobby"]},
        {"action": "send", "connectionIds": [ann.id], "data": "joined", "isBase64Encoded": False},
        {"action": "publish", "channel": "room:lobby", "data": "hi", "isBase64Encoded": False},
    ]


def test_gateway_outside_a_handled_event_says_where_it_belongs() -> None:
    from runtime.origin import apigw

    with pytest.raises(RuntimeError, match=r"runtime.origin.apigw.handler runs"):
        apigw.gateway()
