"""Both GraphQL subprotocols' messages: what clients may send, and the exact text the node sends."""

from __future__ import annotations

import json

import pytest

from runtime.wire import graphql_ws as gql
from runtime.wire.graphql_ws import LEGACY, MODERN


def test_modern_subscribe_as_the_graphql_ws_client_sends_it() -> None:
    text = json.dumps(
        {
            "id": "0f3c",
            "type": "subscribe",
            "payload": {
                "query": "subscription S($r: String!) { messageAdded(room: $r) { text } }",
                "variables": {"r": "lobby"},
                "operationName": "S",
                "extensions": {},
            },
        }
    )
    message = gql.parse_client_message(MODERN, text)
    assert message.type == "subscribe" and message.id == "0f3c"
    assert message.operation == gql.Operation(
        "0f3c",
        "subscription S($r: String!) { messageAdded(room: $r) { text } }",
        {"r": "lobby"},
        "S",
        {},
    )


def test_legacy_start_with_nulls_as_apollo_sends_it() -> None:
    text = (
        '{"id":"1","type":"start",'
        '"payload":{"query":"{ a }","variables":null,"operationName":null}}'
    )
    message = gql.parse_client_message(LEGACY, text)
    assert message.operation == gql.Operation("1", "{ a }", None, None, None)


@pytest.mark.parametrize(
    ("protocol", "text"),
    [
        (MODERN, '{"type":"connection_init"}'),
        (MODERN, '{"type":"connection_init","payload":{"token":"t"}}'),
        (MODERN, '{"type":"ping"}'),
        (MODERN, '{"type":"pong","payload":{}}'),
        (MODERN, '{"type":"complete","id":"1"}'),
        (LEGACY, '{"type":"connection_init","payload":"any value"}'),
        (LEGACY, '{"type":"stop","id":"1"}'),
        (LEGACY, '{"type":"connection_terminate"}'),
    ],
)
def test_valid_control_messages(protocol: str, text: str) -> None:
    assert gql.parse_client_message(protocol, text).type == json.loads(text)["type"]


@pytest.mark.parametrize(
    ("protocol", "data", "error"),
    [
        (MODERN, "{not json", "not valid JSON"),
        (MODERN, b'{"type":"ping"}', "binary messages"),
        (MODERN, "[1, 2]", "JSON object"),
        (MODERN, '{"type": 5}', '"type" must be a string'),
        (MODERN, '{"type":"start","id":"1","payload":{"query":"{a}"}}', "unknown message type"),
        (MODERN, '{"type":"connection_terminate"}', "unknown message type"),
        (MODERN, '{"type":"next","id":"1","payload":{}}', "unknown message type"),
        (LEGACY, '{"type":"subscribe","id":"1","payload":{"query":"{a}"}}', "unknown"),
        (LEGACY, '{"type":"ping"}', "unknown message type"),
        (MODERN, '{"type":"subscribe","payload":{"query":"{a}"}}', '"id" must be'),
        (MODERN, '{"type":"subscribe","id":"","payload":{"query":"{a}"}}', '"id" must be'),
        (MODERN, '{"type":"subscribe","id":"' + "x" * 257 + '","payload":{"query":"{a}"}}', "256"),
        (MODERN, '{"type":"subscribe","id":"1"}', '"payload" must be an object'),
        (MODERN, '{"type":"subscribe","id":"1","payload":{"query":""}}', "payload.query"),
        (MODERN, '{"type":"subscribe","id":"1","payload":{"query":7}}', "payload.query"),
        (
            MODERN,
            '{"type":"subscribe","id":"1","payload":{"query":"{a}","variables":[1]}}',
            "payload.variables",
        ),
        (
            LEGACY,
            '{"type":"start","id":"1","payload":{"query":"{a}","operationName":3}}',
            "operationName",
        ),
        (
            LEGACY,
            '{"type":"start","id":"1","payload":{"query":"{a}","extensions":"x"}}',
            "extensions",
        ),
        (LEGACY, '{"type":"stop"}', '"id" must be'),
        (MODERN, '{"type":"connection_init","payload":"token"}', "must be an object"),
    ],
)
def test_invalid_messages_name_the_fault(protocol: str, data: str | bytes, error: str) -> None:
    with pytest.raises(gql.InvalidMessage, match=error):
        gql.parse_client_message(protocol, data)


def test_malformed_json_is_its_own_kind_for_the_legacy_answer() -> None:
    with pytest.raises(gql.MalformedJson):
        gql.parse_client_message(LEGACY, '{"type":')
    with pytest.raises(gql.InvalidMessage) as caught:
        gql.parse_client_message(LEGACY, '{"type":"nope"}')
    assert not isinstance(caught.value, gql.MalformedJson)


def test_deeply_nested_json_is_refused_not_crashed() -> None:
    with pytest.raises(gql.MalformedJson):
        gql.parse_client_message(MODERN, "[" * 100_000 + "]" * 100_000)


def nested_init(depth: int, inner: str = '"x"') -> str:
    """A connection_init whose payload nests lists so that the message is `depth` levels deep."""
    lists = depth - 2  # the message and its payload are the first two
    return '{"type":"connection_init","payload":{"n":' + "[" * lists + inner + "]" * lists + "}}"


@pytest.mark.parametrize("inner", ['"x"', '"\\ud800"'], ids=["text", "lone-surrogate"])
def test_nesting_deeper_than_the_limit_is_malformed_at_every_depth(inner: str) -> None:
    # Every depth up to where the parser gives up and beyond: just under it, a document used to
    # parse and then fail (RecursionError) when it was walked again for surrogates.
    wrong: dict[int, str] = {}
    for depth in [*range(gql.MAX_NESTING + 1, 1100), 100_000]:
        for protocol in gql.PROTOCOLS:
            try:
                gql.parse_client_message(protocol, nested_init(depth, inner))
            except gql.MalformedJson as exc:
                if "nested deeper than 100 levels" not in str(exc):
                    wrong[depth] = str(exc)
            except Exception as exc:
                wrong[depth] = repr(exc)
            else:
                wrong[depth] = "accepted"
    by_outcome: dict[str, list[int]] = {}
    for depth, outcome in wrong.items():
        by_outcome.setdefault(outcome[:80], []).append(depth)
    assert not wrong, {outcome: (depths[:3], len(depths)) for outcome, depths in by_outcome.items()}


def test_nesting_up_to_the_limit_is_read() -> None:
    assert gql.parse_client_message(MODERN, nested_init(gql.MAX_NESTING)).payload is not None
    with pytest.raises(gql.InvalidMessage, match="lone surrogates") as caught:
        gql.parse_client_message(LEGACY, nested_init(gql.MAX_NESTING, '"\\ud800"'))
    assert not isinstance(caught.value, gql.MalformedJson)


def test_server_messages_per_protocol() -> None:
    result = gql.encode_json({"data": {"a": "é"}})
    assert json.loads(gql.result_message(MODERN, "q", result)) == {
        "id": "q",
        "type": "next",
        "payload": {"data": {"a": "é"}},
    }
    assert json.loads(gql.result_message(LEGACY, "q", result))["type"] == "data"
    errors = [{"message": "one"}, {"message": "two"}]
    assert json.loads(gql.error_message(MODERN, "q", errors)) == {
        "id": "q",
        "type": "error",
        "payload": errors,
    }
    assert json.loads(gql.error_message(LEGACY, "q", errors))["payload"] == {"message": "one"}
    assert json.loads(gql.error_message(LEGACY, None, errors)) == {
        "type": "error",
        "payload": {"message": "one"},
    }
    assert json.loads(gql.complete_message('a"b')) == {"id": 'a"b', "type": "complete"}
    assert json.loads(gql.connection_ack()) == {"type": "connection_ack"}
    assert json.loads(gql.connection_ack({"v": 1})) == {
        "type": "connection_ack",
        "payload": {"v": 1},
    }
    assert json.loads(gql.connection_error("no")) == {
        "type": "connection_error",
        "payload": {"message": "no"},
    }
    assert json.loads(gql.KEEP_ALIVE) == {"type": "ka"}
    assert json.loads(gql.pong()) == {"type": "pong"}
    assert json.loads(gql.pong({"t": 1})) == {"type": "pong", "payload": {"t": 1}}


def test_server_messages_are_ascii_so_a_lone_surrogate_stays_valid_json() -> None:
    result = gql.encode_json({"data": {"text": "cut \ud83d", "ok": "é ✓"}})
    message = gql.result_message(MODERN, "1", result)
    message.encode("ascii")  # nothing that UTF-8 could fail on
    assert json.loads(message)["payload"]["data"] == {"text": "cut \ud83d", "ok": "é ✓"}


def test_lone_surrogates_from_a_client_are_refused() -> None:
    with pytest.raises(gql.InvalidMessage, match="lone surrogates") as caught:
        gql.parse_client_message(
            MODERN, '{"type":"subscribe","id":"1","payload":{"query":"{ a(t: \\"\\ud83d\\") }"}}'
        )
    assert not isinstance(caught.value, gql.MalformedJson)
    with pytest.raises(gql.InvalidMessage, match="lone surrogates"):
        gql.parse_client_message(LEGACY, '{"type":"stop","id":"\\udc00"}')
    pair = gql.parse_client_message(LEGACY, '{"type":"stop","id":"\\ud83d\\ude00"}')
    assert pair.id == "😀"  # an escaped pair is fine
    with pytest.raises(gql.InvalidMessage, match="lone surrogates"):  # in a key, too
        gql.parse_client_message(MODERN, '{"type":"connection_init","payload":{"\\udc00":1}}')


def test_an_invalid_start_names_its_operation() -> None:
    with pytest.raises(gql.InvalidMessage) as caught:
        gql.parse_client_message(
            LEGACY, '{"type":"start","id":"7","payload":{"query":"{a}","variables":[]}}'
        )
    assert caught.value.operation_id == "7"
