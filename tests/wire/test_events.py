"""Events to the origin: API Gateway shapes, valid JSON for any text, and route selection."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from runtime.wire.events import (
    HandshakeDetails,
    NodeContext,
    RouteSelector,
    connect_event,
    connection_fragment,
    disconnect_event,
    disconnect_event_bound,
    gone_event,
    keepalive_events,
    message_event,
    request_time,
)

NODE = NodeContext(stage="prod", region="us-east-1", domain_name="ws.example.com")
CONNECTION_ID = "AQl1cy1lYXN0LTEECgAAASOMsgQpMNXHms0va8FPf3YV3IUXGyw"
CONNECTED_AT = 1_700_000_000_000

DETAILS = HandshakeDetails(
    path="/chat/room-1",
    headers=[
        ("Host", "gw.example.com"),
        ("User-Agent", "Mozilla/5.0 (test)"),
        ("X-Multi", "first"),
        ("X-Multi", "second"),
        ("Sec-WebSocket-Protocol", "graphql-ws"),
    ],
    query=[("room", "1"), ("tag", "a"), ("tag", "b")],
    source_ip="203.0.113.9",
    subprotocol="graphql-ws",
)


def decode(event: bytes) -> dict[str, Any]:
    assert isinstance(event, bytes)
    value = json.loads(event.decode("utf-8"))
    assert isinstance(value, dict)
    return value


def fragment(details: HandshakeDetails = DETAILS, node: NodeContext = NODE) -> str:
    return connection_fragment(node, CONNECTION_ID, CONNECTED_AT, details)


# CONNECT -------------------------------------------------------------------------------------


def test_connect_event_shape() -> None:
    event = decode(connect_event(fragment(), 0, CONNECTED_AT + 5, DETAILS))
    context = event["requestContext"]
    assert context["eventType"] == "CONNECT"
    assert context["routeKey"] == "$connect"
    assert context["connectionId"] == CONNECTION_ID
    assert context["connectedAt"] == CONNECTED_AT
    assert context["requestTimeEpoch"] == CONNECTED_AT + 5
    assert context["sequenceNumber"] == 0
    assert context["domainName"] == "gw.example.com"  # from the Host header
    assert context["stage"] == "prod"
    assert context["region"] == "us-east-1"
    identity = context["identity"]
    assert identity["sourceIp"] == "203.0.113.9"
    assert identity["userAgent"] == "Mozilla/5.0 (test)"
    # Every key API Gateway's identity has is present; those a handshake cannot tell are null.
    for key in ("accountId", "apiKey", "caller", "cognitoIdentityId", "user", "userArn"):
        assert key in identity
        assert identity[key] is None
    assert context["subprotocol"] == "graphql-ws"
    assert isinstance(context["messageId"], str)
    assert context["messageId"]

    assert event["path"] == "/chat/room-1"
    assert event["isBase64Encoded"] is False
    # As API Gateway: `headers` keeps the last value of a repeated header, the multi form all.
    assert event["headers"]["Host"] == "gw.example.com"
    assert event["headers"]["X-Multi"] == "second"
    assert event["multiValueHeaders"]["X-Multi"] == ["first", "second"]
    assert event["multiValueHeaders"]["User-Agent"] == ["Mozilla/5.0 (test)"]
    assert event["queryStringParameters"] == {"room": "1", "tag": "b"}
    assert event["multiValueQueryStringParameters"] == {"room": ["1"], "tag": ["a", "b"]}


def test_connect_without_query_host_agent_or_subprotocol() -> None:
    details = HandshakeDetails(
        path="/", headers=[], query=[], source_ip="2001:db8::9", subprotocol=None
    )
    event = decode(connect_event(fragment(details), 0, CONNECTED_AT, details))
    context = event["requestContext"]
    assert context["domainName"] == "ws.example.com"  # falls back to the node's
    assert context["identity"]["sourceIp"] == "2001:db8::9"
    assert context["identity"]["userAgent"] == ""
    assert "subprotocol" not in context
    assert "authorizer" not in context
    assert "connectHandled" not in context
    assert event["headers"] == {}
    assert event["multiValueHeaders"] == {}
    # API Gateway leaves both out when there is no query string (handlers test `in event`).
    assert "queryStringParameters" not in event
    assert "multiValueQueryStringParameters" not in event
    assert event["path"] == "/"


def test_header_lookup_is_case_insensitive() -> None:
    details = HandshakeDetails(
        path="/",
        headers=[("HOST", "h.test"), ("user-AGENT", "ua")],
        query=[],
        source_ip="1.2.3.4",
        subprotocol=None,
    )
    context = decode(connect_event(fragment(details), 0, 1, details))["requestContext"]
    assert context["domainName"] == "h.test"
    assert context["identity"]["userAgent"] == "ua"


def test_connect_with_awkward_header_and_query_values_is_valid_json() -> None:
    awkward = 'quote " backslash \\ tab \t newline \n nul \x00 é 日本 😀 \u2028'
    details = HandshakeDetails(
        path='/p"\\ath/é',
        headers=[("User-Agent", awkward), ("X-Odd", awkward)],
        query=[("q", awkward), ('k"\\', "v")],
        source_ip="203.0.113.9",
        subprotocol='sub"\\',
    )
    event = decode(connect_event(fragment(details), 0, 1, details))
    assert event["requestContext"]["identity"]["userAgent"] == awkward
    assert event["requestContext"]["subprotocol"] == 'sub"\\'
    assert event["headers"]["X-Odd"] == awkward
    assert event["queryStringParameters"] == {"q": awkward, 'k"\\': "v"}
    assert event["path"] == '/p"\\ath/é'


# MESSAGE -------------------------------------------------------------------------------------


def test_text_message_event() -> None:
    event = decode(message_event(fragment(), 3, 1_700_000_000_123, "$default", "hello"))
    context = event["requestContext"]
    assert context["eventType"] == "MESSAGE"
    assert context["routeKey"] == "$default"
    assert context["sequenceNumber"] == 3
    assert context["requestTimeEpoch"] == 1_700_000_000_123
    assert context["connectionId"] == CONNECTION_ID
    assert context["connectedAt"] == CONNECTED_AT
    assert event["body"] == "hello"
    assert event["isBase64Encoded"] is False


def test_binary_message_event_is_base64() -> None:
    data = bytes(range(256)) + b"\xff\xfe\x00"
    event = decode(message_event(fragment(), 1, 2, "$default", data))
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"], validate=True) == data


def test_empty_messages() -> None:
    assert decode(message_event(fragment(), 1, 2, "$default", ""))["body"] == ""
    event = decode(message_event(fragment(), 1, 2, "$default", b""))
    assert event["body"] == ""
    assert event["isBase64Encoded"] is True


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld ✓ 日本語 😀 𝄞",
        'say "hi" \\ and \\" and \\\\',
        "".join(chr(code) for code in range(32)) + "\x7f",
        "\u2028\u2029\ufeff\ufffd",
        '{"action": "x", "nested": {"a": [1, 2]}}',
        "</script><!--",
        '"',
        "\\",
        "a" * 100_000,
    ],
    ids=[
        "non-ascii",
        "quotes",
        "controls",
        "separators",
        "json",
        "html",
        "quote",
        "backslash",
        "big",
    ],
)
def test_any_text_encodes_to_valid_json_that_decodes_equal(text: str) -> None:
    event = decode(message_event(fragment(), 7, 8, "$default", text))
    assert event["body"] == text
    assert event["isBase64Encoded"] is False


def test_route_key_with_special_characters_round_trips() -> None:
    route = 'we"ird\\route é'
    assert (
        decode(message_event(fragment(), 1, 2, route, "x"))["requestContext"]["routeKey"] == route
    )


def test_connection_fields_shared_by_every_event() -> None:
    shared = fragment()
    for raw in (
        connect_event(shared, 0, 1, DETAILS),
        message_event(shared, 1, 2, "$default", "m"),
        disconnect_event(shared, 2, 3, 1000, ""),
    ):
        context = decode(raw)["requestContext"]
        assert context["connectionId"] == CONNECTION_ID
        assert context["stage"] == "prod"
        assert context["region"] == "us-east-1"
        assert context["identity"]["sourceIp"] == "203.0.113.9"


# DISCONNECT ----------------------------------------------------------------------------------


def test_disconnect_event_shape() -> None:
    reason = 'going "away" \\ é\n'
    event = decode(disconnect_event(fragment(), 9, 1_700_000_000_999, 1001, reason))
    context = event["requestContext"]
    assert context["eventType"] == "DISCONNECT"
    assert context["routeKey"] == "$disconnect"
    assert context["sequenceNumber"] == 9
    assert context["requestTimeEpoch"] == 1_700_000_000_999
    assert context["connectionId"] == CONNECTION_ID
    assert event["disconnectStatusCode"] == 1001
    assert event["disconnectReason"] == reason
    assert event["isBase64Encoded"] is False


# KEEPALIVE and GONE --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "per_event", "sizes"),
    [(0, 3, []), (1, 3, [1]), (3, 3, [3]), (7, 3, [3, 3, 1]), (6, 2, [2, 2, 2]), (5, 1, [1] * 5)],
)
def test_keepalive_chunks_connection_ids(count: int, per_event: int, sizes: list[int]) -> None:
    ids = [f"id-{index}" for index in range(count)]
    events = [decode(raw) for raw in keepalive_events(NODE, iter(ids), 42, per_event)]
    assert [len(event["connectionIds"]) for event in events] == sizes
    assert [cid for event in events for cid in event["connectionIds"]] == ids
    for event in events:
        context = event["requestContext"]
        assert context["eventType"] == "KEEPALIVE"
        assert context["requestTimeEpoch"] == 42
        assert context["stage"] == "prod"
        assert context["region"] == "us-east-1"
        assert context["domainName"] == "ws.example.com"
    assert len({event["requestContext"]["messageId"] for event in events}) == len(events)


def test_gone_event_shape() -> None:
    event = decode(gone_event(NODE, CONNECTION_ID, "send", 77))
    assert set(event) == {"requestContext"}
    context = event["requestContext"]
    assert context["eventType"] == "GONE"
    assert context["connectionId"] == CONNECTION_ID
    assert context["action"] == "send"
    assert context["requestTimeEpoch"] == 77
    assert context["region"] == "us-east-1"
    assert context["stage"] == "prod"
    assert context["messageId"]


def test_message_ids_are_unique() -> None:
    shared = fragment()
    raws = [message_event(shared, n, n, "$default", "x") for n in range(2000)]
    raws += [connect_event(shared, 0, 0, DETAILS), disconnect_event(shared, 1, 1, 1000, "")]
    raws += [gone_event(NODE, CONNECTION_ID, "close", 1) for _ in range(100)]
    raws += keepalive_events(NODE, [str(n) for n in range(100)], 1, 1)
    ids = [decode(raw)["requestContext"]["messageId"] for raw in raws]
    assert all(isinstance(value, str) and value for value in ids)
    assert len(set(ids)) == len(ids)


# Route selection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "data", "route"),
    [
        ("$request.body.action", '{"action": "join", "room": 1}', "join"),
        ("$request.body.action", '{"action": 12}', "12"),
        ("$request.body.action", '{"action": 1.5}', "1.5"),
        ("$request.body.action", '{"action": "é\\"q"}', 'é"q'),
        ("$request.body.meta.type", '{"meta": {"type": "ping"}}', "ping"),
        ("$request.body.a.b.c", '{"a": {"b": {"c": "deep"}}}', "deep"),
        # Fallbacks to $default.
        ("$request.body.action", "not json", "$default"),
        ("$request.body.action", "{not json", "$default"),
        ("$request.body.action", b'{"action": "join"}', "$default"),
        ("$request.body.action", '{"other": "x"}', "$default"),
        ("$request.body.action", '["action"]', "$default"),
        ("$request.body.action", '"action"', "$default"),
        ("$request.body.action", '{"action": {"x": 1}}', "$default"),
        ("$request.body.action", '{"action": ["join"]}', "$default"),
        ("$request.body.action", '{"action": null}', "$default"),
        ("$request.body.action", '{"action": true}', "$default"),
        ("$request.body.action", '{"action": false}', "$default"),
        ("$request.body.action", '{"action": ""}', "$default"),
        ("$request.body.action", '{"action": "' + "x" * 129 + '"}', "$default"),
        ("$request.body.meta.type", '{"meta": "type"}', "$default"),
        ("$request.body.meta.type", '{"meta": {"kind": "ping"}}', "$default"),
        (None, '{"action": "join"}', "$default"),
        ("", '{"action": "join"}', "$default"),
    ],
)
def test_route_selection(expression: str | None, data: str | bytes, route: str) -> None:
    assert RouteSelector(expression).select(data) == route


def test_route_key_of_128_characters_is_kept() -> None:
    key = "k" * 128
    assert RouteSelector("$request.body.action").select(json.dumps({"action": key})) == key


def test_deeply_nested_json_falls_back_to_default() -> None:
    data = '{"a":' * 5_000 + "1" + "}" * 5_000  # 30 kB, far below --max-message-bytes
    assert RouteSelector("$request.body.action").select(data) == "$default"


@pytest.mark.parametrize(
    "expression",
    [
        "action",
        "$request.body",
        "$request.body.",
        "$request.body..action",
        "$request.body.action.",
        "$request.header.action",
        "request.body.action",
    ],
)
def test_invalid_route_expressions_raise(expression: str) -> None:
    with pytest.raises(ValueError, match=r"\$request\.body\.<field>"):
        RouteSelector(expression)


def test_noncharacters_queues_refuse_travel_escaped() -> None:
    from runtime.wire import events as ev

    fragment = ev.connection_fragment(
        ev.NodeContext("s", "r"), "id", 1, ev.HandshakeDetails("/", [], [], "1.2.3.4", None)
    )
    for event in (
        ev.message_event(fragment, 1, 2, "$default", "a\ufffeb\uffff"),
        ev.disconnect_event(fragment, 2, 3, 4000, "a\ufffeb\uffff"),
    ):
        assert "\ufffe" not in event.decode() and "\uffff" not in event.decode()
        assert b"\\ufffe" in event and b"\\uffff" in event
    assert json.loads(ev.message_event(fragment, 1, 2, "$default", "\uffff"))["body"] == "\uffff"


def test_disconnect_bound_holds_for_any_reason() -> None:
    from runtime.wire import events as ev

    headers = [("Host", "ws.example.com"), ("User-Agent", "u" * 300)]
    fragment = ev.connection_fragment(
        ev.NodeContext("prod", "us-east-1"),
        "A" * 46,
        1,
        ev.HandshakeDetails("/", headers, [], "203.0.113.9", None),
    )
    bound = ev.disconnect_event_bound(fragment)
    for reason in ("", "x" * 123, "é" * 61, "\x01" * 123, "\uffff" * 41, '"\\' * 61):
        event = ev.disconnect_event(fragment, 10**12, 10**13, 4999, reason)
        assert len(event) <= bound, reason
        kept = json.loads(event)["disconnectReason"]
        assert reason.startswith(kept) and (kept == reason or not reason.isprintable())


# API Gateway fidelity -------------------------------------------------------------------------


def test_every_event_has_api_gateways_request_fields() -> None:
    node = NodeContext(stage="prod", region="us-east-1", api_id="abc123def4")
    shared = connection_fragment(node, CONNECTION_ID, CONNECTED_AT, DETAILS)
    stamp = 1_796_352_664_123  # 2026-12-04 02:51:04.123 UTC
    for raw in (
        connect_event(shared, 0, stamp, DETAILS),
        message_event(shared, 1, stamp, "$default", "x"),
        disconnect_event(shared, 2, stamp, 1000, ""),
    ):
        context = decode(raw)["requestContext"]
        assert context["apiId"] == "abc123def4"
        assert context["requestTime"] == "04/Dec/2026:02:51:04 +0000"
        assert context["requestTimeEpoch"] == stamp
        assert context["messageDirection"] == "IN"
        assert context["requestId"]
        assert context["extendedRequestId"]


def test_request_ids_differ_per_event() -> None:
    shared = fragment()
    ids = {
        decode(message_event(shared, n, 1, "$default", "x"))["requestContext"]["requestId"]
        for n in range(100)
    }
    assert len(ids) == 100


def test_request_time_formats_each_second() -> None:
    assert request_time(0) == "01/Jan/1970:00:00:00 +0000"
    assert request_time(1_796_352_664_999) == "04/Dec/2026:02:51:04 +0000"
    assert request_time(1_796_352_665_000) == "04/Dec/2026:02:51:05 +0000"
    assert request_time(951_782_400_000) == "29/Feb/2000:00:00:00 +0000"


def test_disconnect_status_sits_in_request_context_as_api_gateway_puts_it() -> None:
    event = decode(disconnect_event(fragment(), 4, 5, 1001, "going away"))
    assert event["requestContext"]["disconnectStatusCode"] == 1001
    assert event["requestContext"]["disconnectReason"] == "going away"
    # Still at the top level, for readers of our earlier events.
    assert event["disconnectStatusCode"] == 1001
    assert event["disconnectReason"] == "going away"


def test_disconnect_bound_holds_with_status_in_both_places() -> None:
    shared = fragment()
    worst = disconnect_event(shared, 1 << 62, 10**13, 4999, "é" * 61)
    assert len(worst) <= disconnect_event_bound(shared)


def test_authorizer_context_is_in_every_event_of_the_connection() -> None:
    authorizer = {"principalId": "user-1", "tier": "gold", "jwt": {"claims": {"sub": "user-1"}}}
    shared = connection_fragment(NODE, CONNECTION_ID, CONNECTED_AT, DETAILS, authorizer)
    for raw in (
        connect_event(shared, 0, 1, DETAILS),
        message_event(shared, 1, 2, "$default", "x"),
        disconnect_event(shared, 2, 3, 1000, ""),
    ):
        assert decode(raw)["requestContext"]["authorizer"] == authorizer


def test_connect_handled_marks_only_the_connect_event() -> None:
    context = decode(connect_event(fragment(), 0, 1, DETAILS, connect_handled=True))[
        "requestContext"
    ]
    assert context["connectHandled"] is True


@pytest.mark.parametrize(
    "key", ["$connect", "$disconnect", "$default", "$gone", "$keepalive", "$x"]
)
def test_a_client_cannot_select_a_reserved_route(key: str) -> None:
    selector = RouteSelector("$request.body.action")
    assert selector.select(json.dumps({"action": key})) == "$default"
    assert selector.select(json.dumps({"action": "send$message"})) == "send$message"
