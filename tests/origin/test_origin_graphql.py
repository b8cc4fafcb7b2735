"""GraphqlOrigin against the GraphQL-mode contract, with requests exactly as the node sends them.

Most tests run the example chat schema (runtime/origin/examples/graphql_chat.py); small schemas
check what it does not show. The last tests go over real HTTP through tests/graphql_origin_server.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from graphql import GraphQLError, build_schema

from runtime.origin.examples.graphql_chat import build_origin
from runtime.origin.graphql import SKIP, BadRequest, GraphqlOrigin, Reject, SubscriptionStart
from runtime.transports.http1_client import HttpClient
from runtime.wire import graphql_contract as contract
from runtime.wire.graphql_ws import Operation
from tests.graphql_origin_server import start_graphql_origin

NODE = "10.0.1.5:9100"
CONNECTION = "AQl1cy1lYXN0LTEEfwAAASOMTsWFmt9JJy3653To49ZGgkVR-00"
CONNECT_EVENT = {
    "eventType": "CONNECT",
    "requestContext": {"connectionId": CONNECTION, "eventType": "CONNECT"},
    "headers": {"Host": "gw"},
}
ROOM_SUBSCRIPTION = "subscription Added($room: String!) { messageAdded(room: $room) { id text } }"

Published = list[tuple[list[str], Any]]


# The node's own request builders, so the SDK is tested against exactly what nodes send.


def init(payload: Any) -> dict[str, Any]:
    return contract.init_request(NODE, CONNECTION, "graphql-transport-ws", payload, CONNECT_EVENT)


def start(
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    context: Any = None,
    operation_id: str = "1",
) -> dict[str, Any]:
    operation = Operation(operation_id, query, variables, operation_name, None)
    return contract.start_request(NODE, CONNECTION, operation, context)


def subscription_query(
    query: str,
    publish_context: Any,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    input_context: Any = None,
    digest: str = "9f2c",
) -> dict[str, Any]:
    return contract.subscription_query_request(
        NODE, digest, query, variables, operation_name, input_context, publish_context
    )


@pytest.fixture
def published() -> Published:
    return []


@pytest.fixture
def chat(published: Published) -> GraphqlOrigin:
    return build_origin(lambda keys, context: published.append((keys, context)))


def wire(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as the node reads it: it must survive JSON."""
    decoded: dict[str, Any] = json.loads(json.dumps(answer))
    assert decoded == answer
    return decoded


# connection_init ---------------------------------------------------------------------------------


def test_init_with_a_token_is_accepted_and_its_context_kept(chat: GraphqlOrigin) -> None:
    assert wire(chat.handle(init({"token": "abc"}))) == {
        "accept": True,
        "context": {"user": "abc"},
    }


@pytest.mark.parametrize("payload", [None, {}, {"token": ""}, {"token": 7}, "abc"])
def test_init_without_a_token_is_refused(chat: GraphqlOrigin, payload: Any) -> None:
    assert wire(chat.handle(init(payload))) == {"accept": False, "message": "missing token"}


def test_on_connect_sees_the_payload_and_the_connect_event() -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []

    def on_connect(payload: Any, connect: dict[str, Any]) -> None:
        seen.append((payload, connect))

    origin = GraphqlOrigin(build_schema("type Query { a: Int }"), on_connect=on_connect)
    assert origin.handle(init({"x": 1})) == {"accept": True}  # no context: none kept
    assert seen == [({"x": 1}, CONNECT_EVENT)]
    assert GraphqlOrigin(build_schema("type Query { a: Int }")).handle(init(None)) == {
        "accept": True
    }


def test_on_connect_must_return_json() -> None:
    origin = GraphqlOrigin(build_schema("type Query { a: Int }"), on_connect=lambda *_: object())
    with pytest.raises(TypeError, match="on_connect must return a JSON value"):
        origin.handle(init(None))


# start: queries and mutations --------------------------------------------------------------------


def test_mutation_stores_publishes_and_answers(chat: GraphqlOrigin, published: Published) -> None:
    answer = chat.handle(
        start(
            'mutation Post($text: String!) { post(room: "lobby", text: $text) { id room text } }',
            {"text": "hi"},
            "Post",
            {"user": "abc"},
        )
    )
    assert wire(answer) == {
        "result": {"data": {"post": {"id": "1", "room": "lobby", "text": "hi"}}}
    }
    assert published == [(["room:lobby"], {"id": "1", "room": "lobby", "text": "hi"})]


def test_query_result_has_no_errors_key_when_there_are_none(chat: GraphqlOrigin) -> None:
    chat.handle(start('mutation { post(room: "lobby", text: "one") { id } }'))
    chat.handle(start('mutation { post(room: "attic", text: "two") { id } }'))
    answer = chat.handle(
        start(
            "query Q($room: String!) { messages(room: $room) { id text } }", {"room": "lobby"}, "Q"
        )
    )
    assert wire(answer) == {"result": {"data": {"messages": [{"id": "1", "text": "one"}]}}}


def test_a_resolver_error_comes_back_in_the_result(chat: GraphqlOrigin) -> None:
    answer = wire(chat.handle(start('{ messages(room: "") { id } }')))
    assert answer == {
        "result": {
            "data": None,
            "errors": [
                {
                    "message": "room names must be 1 to 100 characters",
                    "locations": [{"line": 1, "column": 3}],
                    "path": ["messages"],
                }
            ],
        }
    }


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (start("{ messages(room: "), "Syntax Error: Unexpected <EOF>."),
        (start('{ messages(room: "a") { nope } }'), "Cannot query field 'nope' on type 'Message'."),
        (start("{ messages { id } }"), "argument 'room' of type 'String!' is required"),
        (start("query A { __typename } query B { __typename }"), "Must provide operation name"),
        (start("query A { __typename }", operation_name="B"), "Unknown operation named 'B'."),
        (
            start("query Q($room: String!) { messages(room: $room) { id } }", {}),
            "Variable '$room' of required type 'String!' was not provided.",
        ),
        (
            start("query Q($room: String!) { messages(room: $room) { id } }", {"room": 5}),
            "Variable '$room' got invalid value 5",
        ),
    ],
)
def test_an_operation_that_cannot_run_answers_errors(
    chat: GraphqlOrigin, request_: dict[str, Any], message: str
) -> None:
    answer = wire(chat.handle(request_))
    assert list(answer) == ["errors"]
    assert answer["errors"]
    assert message in answer["errors"][0]["message"]


def test_resolvers_get_the_connection_context_and_may_be_async() -> None:
    async def whoami(_root: Any, info: Any) -> str:
        await asyncio.sleep(0)
        return str(info.context["user"])

    schema = build_schema("type Query { whoami: String! }")
    schema.query_type.fields["whoami"].resolve = whoami  # type: ignore[union-attr]
    origin = GraphqlOrigin(schema)
    request = start("{ whoami }", context={"user": "ann"})
    assert origin.handle(request) == {"result": {"data": {"whoami": "ann"}}}


async def test_async_resolvers_work_when_called_inside_a_running_loop() -> None:
    async def answer(_root: Any, _info: Any) -> int:
        await asyncio.sleep(0)
        return 42

    schema = build_schema("type Query { answer: Int }")
    schema.query_type.fields["answer"].resolve = answer  # type: ignore[union-attr]
    assert GraphqlOrigin(schema).handle(start("{ answer }")) == {"result": {"data": {"answer": 42}}}


def test_an_operation_type_the_schema_lacks_answers_errors() -> None:
    origin = GraphqlOrigin(build_schema("type Query { a: Int }"))
    answer = origin.handle(start("mutation { a }"))
    assert list(answer) == ["errors"]  # validation or the root-type check, either refuses it


# start: subscriptions ----------------------------------------------------------------------------


def test_a_subscription_start_describes_the_input(chat: GraphqlOrigin) -> None:
    answer = wire(chat.handle(start(ROOM_SUBSCRIPTION, {"room": "lobby"}, "Added", {"user": "a"})))
    spec = answer["subscription"]
    assert list(answer) == ["subscription"]
    assert re.fullmatch(r"[0-9a-f]{64}", spec["inputDigest"])
    assert spec["keys"] == ["room:lobby"]
    assert spec["inputContext"] == {"context": None}  # nothing of one subscriber's context


def test_same_query_and_variables_share_a_digest(chat: GraphqlOrigin) -> None:
    def digest(request: dict[str, Any]) -> str:
        return str(chat.handle(request)["subscription"]["inputDigest"])

    first = digest(start(ROOM_SUBSCRIPTION, {"room": "lobby"}, "Added", {"user": "a"}))
    # Other users, other operation IDs, other spacing, comments and an omitted operationName
    reformatted = (
        "# the same\nsubscription Added($room: String!) {\n"
        "  messageAdded(room: $room) {\n    id\n    text\n  }\n}\n"
    )
    assert digest(start(ROOM_SUBSCRIPTION, {"room": "lobby"}, "Added", {"user": "b"}, "7")) == first
    assert digest(start(reformatted, {"room": "lobby"})) == first

    assert digest(start(ROOM_SUBSCRIPTION, {"room": "attic"}, "Added")) != first
    other_fields = ROOM_SUBSCRIPTION.replace("id text", "text")
    assert digest(start(other_fields, {"room": "lobby"})) != first
    inline = 'subscription { messageAdded(room: "lobby") { id text } }'
    assert digest(start(inline)) == digest(start(inline, {}))  # no variables, or none given


def test_digest_context_splits_inputs_and_is_the_reexecution_context() -> None:
    schema = build_schema(
        """
        type Query { a: Int }
        type Subscription { inbox: String! }
        """
    )

    def inbox(published: Any, info: Any) -> str:
        return f"{info.context['user']}: {published['text']}"

    schema.subscription_type.fields["inbox"].resolve = inbox  # type: ignore[union-attr]
    origin = GraphqlOrigin(
        schema,
        subscription_keys=lambda start: [f"inbox:{start.context['user']}"],
        digest_context=lambda context: {"user": context["user"]},
    )
    ann = origin.handle(start("subscription { inbox }", context={"user": "ann", "token": "t1"}))
    bob = origin.handle(start("subscription { inbox }", context={"user": "bob", "token": "t2"}))
    ann_again = origin.handle(
        start("subscription { inbox }", context={"user": "ann", "token": "x"})
    )

    assert ann["subscription"]["inputDigest"] != bob["subscription"]["inputDigest"]
    assert ann["subscription"]["inputDigest"] == ann_again["subscription"]["inputDigest"]
    assert ann["subscription"]["keys"] == ["inbox:ann"]
    assert ann["subscription"]["inputContext"] == {"context": {"user": "ann"}}  # no token
    answer = origin.handle(
        subscription_query(
            "subscription { inbox }",
            {"text": "hi"},
            input_context=ann["subscription"]["inputContext"],
        )
    )
    assert answer == {"result": {"data": {"inbox": "ann: hi"}}}


def test_digest_context_must_return_json() -> None:
    schema = build_schema("type Query { a: Int } type Subscription { b: Int }")
    origin = GraphqlOrigin(
        schema, subscription_keys=lambda _: ["b"], digest_context=lambda _: {1, 2}
    )
    with pytest.raises(TypeError, match="digest_context must return a JSON value"):
        origin.handle(start("subscription { b }"))


def test_subscription_keys_get_the_field_and_coerced_arguments() -> None:
    schema = build_schema(
        "type Query { a: Int } type Subscription { ticks(every: Int = 5, tags: [String!]): Int }"
    )
    starts: list[SubscriptionStart] = []

    def keys(start_: SubscriptionStart) -> list[str]:
        starts.append(start_)
        return ["ticks", "ticks"]  # a repeated key counts once

    origin = GraphqlOrigin(schema, subscription_keys=keys)
    query = (
        "subscription S($tags: [String!]) { ...T } "
        "fragment T on Subscription { alias: ticks(tags: $tags) }"
    )
    answer = origin.handle(start(query, {"tags": "a"}, "S", {"user": "u"}))

    assert answer["subscription"]["keys"] == ["ticks"]
    assert starts == [
        SubscriptionStart(
            field_name="ticks",
            arguments={"every": 5, "tags": ["a"]},  # default applied, list coerced
            variables={"tags": "a"},
            context={"user": "u"},
            operation_name="S",
        )
    ]


@pytest.mark.parametrize(
    ("keys", "error", "message"),
    [
        ("room:lobby", TypeError, "must return a list of strings"),
        ([], ValueError, "must return 1 to 100 keys"),
        ([f"k{i}" for i in range(101)], ValueError, "must return 1 to 100 keys"),
        (["ok", "x" * 257], ValueError, "strings of 1 to 256 characters"),
        (["ok", ""], ValueError, "strings of 1 to 256 characters"),
        ([3], ValueError, "strings of 1 to 256 characters"),
    ],
)
def test_keys_breaking_the_contract_raise(keys: Any, error: type[Exception], message: str) -> None:
    schema = build_schema("type Query { a: Int } type Subscription { b: Int }")
    origin = GraphqlOrigin(schema, subscription_keys=lambda _: keys)
    with pytest.raises(error, match=message):
        origin.handle(start("subscription { b }"))
    most = GraphqlOrigin(
        schema, subscription_keys=lambda _: ["x" * 256] + [str(i) for i in range(99)]
    )
    assert len(most.handle(start("subscription { b }"))["subscription"]["keys"]) == 100


def test_a_graphql_error_from_subscription_keys_refuses_the_subscription(
    chat: GraphqlOrigin,
) -> None:
    answer = wire(chat.handle(start(ROOM_SUBSCRIPTION, {"room": ""}, "Added")))
    assert answer == {"errors": [{"message": "room names must be 1 to 100 characters"}]}


def test_a_subscription_that_selects_no_field_answers_errors() -> None:
    schema = build_schema("type Query { a: Int } type Subscription { b: Int }")
    origin = GraphqlOrigin(schema, subscription_keys=lambda _: ["b"])
    for query, variables in [
        ("subscription { b @skip(if: true) }", None),
        ("subscription S($s: Boolean!) { b @skip(if: $s) }", {"s": True}),  # validate raises
    ]:
        answer = origin.handle(start(query, variables))
        assert list(answer) == ["errors"], query


def test_a_schema_with_subscriptions_needs_keys() -> None:
    schema = build_schema("type Query { a: Int } type Subscription { b: Int }")
    with pytest.raises(ValueError, match="needs subscription_keys="):
        GraphqlOrigin(schema)


# subscription_query ------------------------------------------------------------------------------


def test_the_publish_context_is_the_subscription_field_root(
    chat: GraphqlOrigin, published: Published
) -> None:
    chat.handle(start('mutation { post(room: "lobby", text: "hi") { id } }'))
    [(keys, context)] = published
    assert keys == ["room:lobby"]

    answer = chat.handle(
        subscription_query(
            ROOM_SUBSCRIPTION, context, {"room": "lobby"}, "Added", {"context": None}
        )
    )
    assert wire(answer) == {"result": {"data": {"messageAdded": {"id": "1", "text": "hi"}}}}


def test_a_resolver_returning_skip_answers_a_null_result(chat: GraphqlOrigin) -> None:
    message = {"id": "1", "room": "attic", "text": "not for the lobby"}
    answer = chat.handle(subscription_query(ROOM_SUBSCRIPTION, message, {"room": "lobby"}))
    assert wire(answer) == {"result": None}


def test_skip_works_for_async_resolvers_and_nullable_fields() -> None:
    async def maybe(published: Any, _info: Any) -> Any:
        return SKIP if published is None else published["n"]

    schema = build_schema("type Query { a: Int } type Subscription { n: Int }")
    schema.subscription_type.fields["n"].resolve = maybe  # type: ignore[union-attr]
    origin = GraphqlOrigin(schema, subscription_keys=lambda _: ["n"])
    assert origin.handle(subscription_query("subscription { n }", None)) == {"result": None}
    assert origin.handle(subscription_query("subscription { n }", {"n": 2})) == {
        "result": {"data": {"n": 2}}
    }


def test_without_a_resolver_the_field_is_read_from_the_publish_context() -> None:
    """As graphql-js PubSub payloads: {"<field name>": value}."""
    schema = build_schema("type Query { a: Int } type Subscription { tick: Int! }")
    origin = GraphqlOrigin(schema, subscription_keys=lambda _: ["tick"])
    answer = origin.handle(subscription_query("subscription { tick }", {"tick": 3}))
    assert answer == {"result": {"data": {"tick": 3}}}
    broken = origin.handle(subscription_query("subscription { tick }", {"other": 1}))
    assert broken["result"]["data"] is None
    assert "Cannot return null for non-nullable field Subscription.tick." in json.dumps(broken)


def test_a_subscription_query_that_no_longer_validates_answers_errors(
    chat: GraphqlOrigin,
) -> None:
    answer = chat.handle(subscription_query("subscription { gone }", {"text": "hi"}))
    assert list(answer) == ["errors"]
    with pytest.raises(BadRequest, match="not a subscription"):
        chat.handle(subscription_query('{ messages(room: "a") { id } }', None))


# subscription_keepalive, lambda_handler, malformed requests -------------------------------------


def test_keepalive_reports_the_live_keys() -> None:
    seen: list[list[str]] = []
    origin = GraphqlOrigin(build_schema("type Query { a: Int }"), on_keepalive=seen.append)
    request = {"type": "subscription_keepalive", "node": NODE, "keys": ["room:lobby", "user:7"]}
    assert origin.handle(request) == {}
    assert seen == [["room:lobby", "user:7"]]
    assert GraphqlOrigin(build_schema("type Query { a: Int }")).handle(request) == {}


def test_lambda_handler_answers_the_event(chat: GraphqlOrigin) -> None:
    assert chat.lambda_handler(init({"token": "t"}), object()) == {
        "accept": True,
        "context": {"user": "t"},
    }


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ([], "a request must be a JSON object"),
        ({"node": NODE}, '"type" must be connection_init, start'),
        ({"type": "subscribe"}, "got 'subscribe'"),
        ({**init(None), "connect": "x"}, '"connect" must be an object'),
        ({**start("{ a }"), "query": None}, '"query" must be a string'),
        ({**start("{ a }"), "variables": [1]}, '"variables" must be an object or null'),
        ({**start("{ a }"), "operationName": 3}, '"operationName" must be a string or null'),
        ({**subscription_query("subscription { a }", None), "query": 1}, '"query" must be'),
        ({"type": "subscription_keepalive", "keys": "k"}, '"keys" must be a list of strings'),
        ({"type": "subscription_keepalive", "keys": [1]}, '"keys" must be a list of strings'),
    ],
)
def test_malformed_requests_raise_bad_request(
    chat: GraphqlOrigin, request_: Any, message: str
) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        chat.handle(request_)
    assert issubclass(BadRequest, ValueError)


def test_reject_carries_its_message() -> None:
    def refuse(_payload: Any, _connect: dict[str, Any]) -> None:
        raise Reject("bad token")

    origin = GraphqlOrigin(build_schema("type Query { a: Int }"), on_connect=refuse)
    assert origin.handle(init({"token": "x"})) == {"accept": False, "message": "bad token"}


def test_a_graphql_error_raised_in_a_resolver_keeps_its_extensions() -> None:
    def fail(_root: Any, _info: Any) -> None:
        raise GraphQLError("nope", extensions={"code": "FORBIDDEN"})

    schema = build_schema("type Query { secret: String }")
    schema.query_type.fields["secret"].resolve = fail  # type: ignore[union-attr]
    answer = GraphqlOrigin(schema).handle(start("{ secret }"))
    assert answer["result"]["data"] == {"secret": None}
    assert answer["result"]["errors"][0]["extensions"] == {"code": "FORBIDDEN"}


# Over HTTP -----------------------------------------------------------------------------------


async def test_the_chat_origin_over_http(published: Published) -> None:
    origin = await start_graphql_origin(
        build_origin(lambda keys, context: published.append((keys, context)))
    )
    client = HttpClient(origin.url)
    try:

        async def ask(request: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(json.dumps(request).encode())
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            answer: dict[str, Any] = response.json()
            return answer

        assert await ask(init({"token": "abc"})) == {"accept": True, "context": {"user": "abc"}}
        spec = (await ask(start(ROOM_SUBSCRIPTION, {"room": "lobby"}, "Added")))["subscription"]
        assert spec["keys"] == ["room:lobby"]
        await ask(start('mutation { post(room: "lobby", text: "hi") { id } }'))
        answer = await ask(
            subscription_query(
                ROOM_SUBSCRIPTION,
                published[0][1],
                {"room": "lobby"},
                "Added",
                spec["inputContext"],
                spec["inputDigest"],
            )
        )
        assert answer == {"result": {"data": {"messageAdded": {"id": "1", "text": "hi"}}}}

        requests = await origin.wait_for(lambda requests: len(requests) == 4)
        assert [request["type"] for request in requests] == [
            "connection_init",
            "start",
            "start",
            "subscription_query",
        ]
        assert origin.count("start") == 2
        assert origin.requests[0] == init({"token": "abc"})
    finally:
        await client.close()
        await origin.stop()


async def test_http_bad_requests_get_400_and_failures_the_chosen_status() -> None:
    seen: list[dict[str, Any]] = []

    def scripted(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        if request.get("type") != "connection_init":
            raise ValueError("only connection_init here")
        return {"accept": True}

    origin = await start_graphql_origin(scripted)
    client = HttpClient(origin.url, headers={"Authorization": "Bearer s3cret"})
    try:
        response = await client.post(json.dumps({"type": "start"}).encode())
        assert (response.status, response.json()) == (400, {"error": "only connection_init here"})
        response = await client.post(b"{not json")
        assert response.status == 400

        origin.fail_with = 503
        response = await client.post(json.dumps(init(None)).encode())
        assert response.status == 503
        assert origin.count("connection_init") == 1  # recorded though it failed
        assert origin.authorization == "Bearer s3cret"

        origin.fail_with = None
        response = await client.post(json.dumps(init(None)).encode())
        assert (response.status, response.json()) == (200, {"accept": True})
        assert [request["type"] for request in seen] == ["start", "connection_init"]

        with pytest.raises(AssertionError, match=r"not met in 0.05s; requests: \['start'"):
            await origin.wait_for(lambda requests: len(requests) > 10, timeout=0.05)
    finally:
        await client.close()
        await origin.stop()


async def test_a_graphql_origin_behind_http_answers_400_for_malformed_requests() -> None:
    origin = await start_graphql_origin(GraphqlOrigin(build_schema("type Query { a: Int }")))
    client = HttpClient(origin.url)
    try:
        response = await client.post(json.dumps({"type": "wave"}).encode())
        assert response.status == 400
        assert "got 'wave'" in response.json()["error"]
        assert origin.count("wave") == 1
    finally:
        await client.close()
        await origin.stop()
