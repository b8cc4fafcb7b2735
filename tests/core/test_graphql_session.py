"""The GraphQL session fed messages, origin answers and times, with no sockets and no clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.core.graphql_session import (
    Action,
    AskInit,
    Close,
    Count,
    EndOperation,
    GraphqlSession,
    InitRefused,
    OriginFailed,
    RunOperation,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.graphql_ws import LEGACY, MODERN

TIMEOUT = 3.0
SUBSCRIPTION = {"subscription": {"inputDigest": "d1", "keys": ["room:a"], "inputContext": None}}


def new_session(
    protocol: str, *, max_operations: int = 3, keep_alive: bool = True
) -> GraphqlSession:
    return GraphqlSession(
        protocol,
        node="10.0.0.1:9100",
        connection_id="c1",
        connect={"headers": {}},
        now=100.0,
        init_timeout=TIMEOUT,
        max_operations=max_operations,
        keep_alive=keep_alive,
    )


def message(kind: str, id: str | None = None, payload: Any = None) -> str:
    document: dict[str, Any] = {"type": kind}
    if id is not None:
        document["id"] = id
    if payload is not None:
        document["payload"] = payload
    return json.dumps(document)


def start(protocol: str, id: str, query: str = "subscription { messages }") -> str:
    return message("subscribe" if protocol == MODERN else "start", id, {"query": query})


def sent(actions: list[Action]) -> list[Any]:
    """The messages sent, as JSON documents."""
    return [json.loads(action.text) for action in actions if isinstance(action, Send)]


def acknowledged(protocol: str, **options: Any) -> GraphqlSession:
    session = new_session(protocol, **options)
    (ask,) = session.receive(message("connection_init", payload={"token": "t"}))
    assert isinstance(ask, AskInit)
    session.init_answered({"accept": True, "context": {"user": "u"}})
    return session


def run(session: GraphqlSession, id: str) -> RunOperation:
    actions = session.receive(start(session.protocol, id))
    running = [action for action in actions if isinstance(action, RunOperation)]
    assert len(running) == 1, actions
    return running[0]


PROTOCOLS = pytest.mark.parametrize("protocol", [MODERN, LEGACY])


# connection_init


@PROTOCOLS
def test_init_asks_the_origin_with_the_payload_and_the_connect_event(protocol: str) -> None:
    session = new_session(protocol)
    assert session.receive(message("connection_init", payload={"token": "t"})) == [
        AskInit(
            {
                "type": "connection_init",
                "node": "10.0.0.1:9100",
                "connectionId": "c1",
                "subprotocol": protocol,
                "payload": {"token": "t"},
                "connect": {"headers": {}},
            }
        )
    ]


def test_an_accepted_init_is_acknowledged_and_keeps_the_context() -> None:
    session = new_session(MODERN)
    session.receive(message("connection_init"))
    actions = session.init_answered({"accept": True, "context": {"user": "u"}, "payload": {"a": 1}})
    assert sent(actions) == [{"type": "connection_ack", "payload": {"a": 1}}]
    assert session.acknowledged
    assert run(session, "1").request["context"] == {"user": "u"}


def test_a_legacy_ack_is_followed_by_a_ka_only_with_keep_alives_on() -> None:
    session = new_session(LEGACY)
    session.receive(message("connection_init"))
    assert sent(session.init_answered({"accept": True})) == [
        {"type": "connection_ack"},
        {"type": "ka"},
    ]
    quiet = new_session(LEGACY, keep_alive=False)
    quiet.receive(message("connection_init"))
    assert sent(quiet.init_answered({"accept": True})) == [{"type": "connection_ack"}]


def test_a_second_init_closes_a_modern_connection_with_4429() -> None:
    session = acknowledged(MODERN)
    assert session.receive(message("connection_init")) == [
        Close(4429, "Too many initialisation requests")
    ]
    assert session.closed


def test_a_second_init_is_a_connection_error_in_the_legacy_protocol() -> None:
    session = acknowledged(LEGACY)
    actions = session.receive(message("connection_init"))
    assert sent(actions) == [
        {"type": "connection_error", "payload": {"message": "connection already initialised"}}
    ]
    assert not session.closed


def test_a_refused_modern_init_closes_with_4403_and_the_message() -> None:
    session = new_session(MODERN)
    session.receive(message("connection_init"))
    assert session.init_answered({"accept": False, "message": "no token"}) == [
        Count("graphqlInitsRefused"),
        InitRefused("no token"),
        Close(4403, "Forbidden: no token"),
    ]


def test_a_refused_legacy_init_is_a_connection_error_then_1011() -> None:
    session = new_session(LEGACY)
    session.receive(message("connection_init"))
    actions = session.init_answered({"accept": False, "message": "no token"})
    assert sent(actions) == [{"type": "connection_error", "payload": {"message": "no token"}}]
    assert actions[-1] == Close(1011, "Forbidden: no token")


def test_a_close_reason_is_cut_to_123_bytes_on_a_character_boundary() -> None:
    session = new_session(MODERN)
    session.receive(message("connection_init"))
    actions = session.init_answered({"accept": False, "message": "é" * 200})
    close = actions[-1]
    assert isinstance(close, Close)
    assert len(close.reason.encode()) <= 123
    assert close.reason.startswith("Forbidden: éé")


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [(MODERN, [Close(1013, "origin unavailable")]), (LEGACY, [Close(1011, "origin unavailable")])],
)
def test_an_origin_that_fails_init_closes_the_connection(
    protocol: str, expected: list[Action]
) -> None:
    session = new_session(protocol)
    session.receive(message("connection_init"))
    actions = session.init_failed("timed out")
    assert actions[0] == OriginFailed("connection_init", "timed out")
    assert actions[-1:] == expected
    if protocol == LEGACY:
        assert sent(actions) == [
            {"type": "connection_error", "payload": {"message": "origin unavailable"}}
        ]


def test_an_init_answer_that_breaks_the_contract_is_an_origin_failure() -> None:
    session = new_session(MODERN)
    session.receive(message("connection_init"))
    actions = session.init_answered({"accept": "yes"})
    assert isinstance(actions[0], OriginFailed)
    assert actions[-1] == Close(1013, "origin unavailable")


# The init timeout


@pytest.mark.parametrize(
    ("protocol", "sends"),
    [
        (MODERN, []),
        (
            LEGACY,
            [
                {
                    "type": "connection_error",
                    "payload": {"message": "connection initialisation timeout"},
                }
            ],
        ),
    ],
)
def test_no_init_before_the_deadline_closes_with_4408(protocol: str, sends: list[Any]) -> None:
    session = new_session(protocol)
    assert session.next_deadline() == 100.0 + TIMEOUT
    assert session.timer(100.0 + TIMEOUT - 0.001) == []  # early: nothing yet
    actions = session.timer(100.0 + TIMEOUT)
    assert actions[0] == Count("graphqlInitTimeouts")
    assert sent(actions) == sends
    assert actions[-1] == Close(4408, "Connection initialisation timeout")
    assert session.next_deadline() is None
    assert session.timer(200.0) == []


def test_an_init_received_in_time_cancels_the_deadline_even_while_unanswered() -> None:
    session = new_session(MODERN)
    session.receive(message("connection_init"))
    assert session.next_deadline() is None
    assert session.timer(100.0 + TIMEOUT) == []


def test_a_closed_session_ignores_what_the_client_still_sends() -> None:
    session = new_session(MODERN)
    session.timer(100.0 + TIMEOUT)
    assert session.receive(message("connection_init")) == []


# Operations before the ack


def test_an_operation_before_the_ack_closes_a_modern_connection_with_4401() -> None:
    session = new_session(MODERN)
    assert session.receive(start(MODERN, "1")) == [Close(4401, "Unauthorized")]


def test_an_operation_before_the_ack_is_refused_in_the_legacy_protocol() -> None:
    session = new_session(LEGACY)
    assert sent(session.receive(start(LEGACY, "1"))) == [
        {"id": "1", "type": "error", "payload": {"message": "send connection_init first"}}
    ]


def test_an_operation_while_init_waits_for_the_origin_is_before_the_ack() -> None:
    session = new_session(MODERN)
    session.receive(message("connection_init"))
    assert session.receive(start(MODERN, "1")) == [Close(4401, "Unauthorized")]


# Running operations


@PROTOCOLS
def test_an_operation_is_asked_of_the_origin(protocol: str) -> None:
    session = acknowledged(protocol)
    action = run(session, "1")
    assert action.operation.id == "1"
    assert action.request == {
        "type": "start",
        "node": "10.0.0.1:9100",
        "connectionId": "c1",
        "operationId": "1",
        "query": "subscription { messages }",
        "variables": None,
        "operationName": None,
        "extensions": None,
        "context": {"user": "u"},
    }


@pytest.mark.parametrize(
    ("protocol", "kind"), [(MODERN, "next"), (LEGACY, "data")], ids=[MODERN, LEGACY]
)
def test_a_result_is_sent_then_completed(protocol: str, kind: str) -> None:
    session = acknowledged(protocol)
    action = run(session, "1")
    actions = session.operation_answered(action.token, {"result": {"data": {"a": 1}}})
    assert sent(actions) == [
        {"id": "1", "type": kind, "payload": {"data": {"a": 1}}},
        {"id": "1", "type": "complete"},
    ]
    assert session.held() == 0


def test_errors_are_an_error_message_in_the_modern_protocol() -> None:
    session = acknowledged(MODERN)
    action = run(session, "1")
    actions = session.operation_answered(action.token, {"errors": [{"message": "bad"}]})
    assert sent(actions) == [{"id": "1", "type": "error", "payload": [{"message": "bad"}]}]


def test_errors_are_a_data_message_then_complete_in_the_legacy_protocol() -> None:
    session = acknowledged(LEGACY)
    action = run(session, "1")
    actions = session.operation_answered(action.token, {"errors": [{"message": "bad"}]})
    assert sent(actions) == [
        {"id": "1", "type": "data", "payload": {"errors": [{"message": "bad"}]}},
        {"id": "1", "type": "complete"},
    ]


def test_a_subscription_is_registered_and_stays_live() -> None:
    session = acknowledged(MODERN)
    action = run(session, "1")
    actions = session.operation_answered(action.token, SUBSCRIPTION)
    assert len(actions) == 1
    subscribe = actions[0]
    assert isinstance(subscribe, Subscribe)
    assert subscribe.operation == action.operation
    assert subscribe.subscription.digest == "d1"
    assert subscribe.subscription.keys == ("room:a",)
    assert session.held() == 1


def test_an_origin_failure_fails_the_operation() -> None:
    session = acknowledged(MODERN)
    action = run(session, "1")
    actions = session.operation_failed(action.token, "HTTP 500")
    assert actions[0] == OriginFailed("start", "HTTP 500")
    assert sent(actions) == [
        {"id": "1", "type": "error", "payload": [{"message": "origin unavailable"}]}
    ]
    assert session.held() == 0


def test_a_start_answer_that_breaks_the_contract_fails_the_operation() -> None:
    session = acknowledged(MODERN)
    action = run(session, "1")
    actions = session.operation_answered(action.token, {"nothing": True})
    assert isinstance(actions[0], OriginFailed)
    assert sent(actions)[0]["payload"] == [{"message": "origin unavailable"}]


def test_a_crash_in_the_node_fails_the_operation_as_an_internal_error() -> None:
    session = acknowledged(LEGACY)
    action = run(session, "1")
    assert sent(session.operation_crashed(action.token)) == [
        {"id": "1", "type": "error", "payload": {"message": "internal error"}}
    ]
    assert session.operation_crashed(action.token) == []


# Ending operations


def test_complete_withdraws_a_running_operation_which_counts_until_the_origin_is_done() -> None:
    session = acknowledged(MODERN, max_operations=1)
    action = run(session, "1")
    assert session.receive(message("complete", "1")) == [EndOperation(action.token)]
    assert session.held() == 1
    # Its answer, if it still comes, is for nobody.
    assert session.operation_answered(action.token, {"result": {"data": {}}}) == []
    refused = session.receive(start(MODERN, "2"))
    assert refused[0] == Count("graphqlOperationsRefused")
    session.operation_finished(action.token)
    assert session.held() == 0
    run(session, "2")


def test_complete_of_a_subscription_unsubscribes_it() -> None:
    session = acknowledged(MODERN)
    action = run(session, "1")
    session.operation_answered(action.token, SUBSCRIPTION)
    assert session.receive(message("complete", "1")) == [Unsubscribe("1")]
    assert session.held() == 0


def test_complete_of_an_unknown_id_does_nothing_in_the_modern_protocol() -> None:
    session = acknowledged(MODERN)
    assert session.receive(message("complete", "nope")) == []
    assert not session.closed


def test_legacy_stop_is_always_answered_with_complete() -> None:
    session = acknowledged(LEGACY)
    assert sent(session.receive(message("stop", "nope"))) == [{"id": "nope", "type": "complete"}]
    action = run(session, "1")
    actions = session.receive(message("stop", "1"))
    assert actions[0] == EndOperation(action.token)
    assert sent(actions) == [{"id": "1", "type": "complete"}]


# Operation IDs and the limit


def test_a_duplicate_operation_id_closes_a_modern_connection_with_4409() -> None:
    session = acknowledged(MODERN)
    run(session, "1")
    assert session.receive(start(MODERN, "1")) == [Close(4409, "Subscriber for 1 already exists")]


def test_a_duplicate_legacy_start_replaces_the_operation() -> None:
    session = acknowledged(LEGACY)
    first = run(session, "1")
    actions = session.receive(start(LEGACY, "1"))
    assert actions[0] == EndOperation(first.token)
    second = actions[1]
    assert isinstance(second, RunOperation)
    assert second.token != first.token
    assert session.operation_answered(first.token, {"result": {"data": {}}}) == []
    assert sent(session.operation_answered(second.token, {"result": {"data": {}}}))


def test_a_duplicate_legacy_start_of_a_subscription_unsubscribes_it_first() -> None:
    session = acknowledged(LEGACY)
    action = run(session, "1")
    session.operation_answered(action.token, SUBSCRIPTION)
    actions = session.receive(start(LEGACY, "1"))
    assert actions[0] == Unsubscribe("1")
    assert isinstance(actions[1], RunOperation)


@PROTOCOLS
def test_operations_beyond_the_limit_are_refused_and_counted(protocol: str) -> None:
    session = acknowledged(protocol, max_operations=2)
    run(session, "1")
    subscribed = run(session, "2")
    session.operation_answered(subscribed.token, SUBSCRIPTION)  # subscriptions count too
    actions = session.receive(start(protocol, "3"))
    assert actions[0] == Count("graphqlOperationsRefused")
    (error,) = sent(actions)
    assert error["id"] == "3"
    assert "too many operations on this connection (the most is 2" in json.dumps(error)
    assert not session.closed


# Ping, pong, ka, terminate


def test_ping_is_answered_with_pong_echoing_its_payload() -> None:
    session = new_session(MODERN)
    assert sent(session.receive(message("ping"))) == [{"type": "pong"}]
    assert sent(session.receive(message("ping", payload={"n": 1}))) == [
        {"type": "pong", "payload": {"n": 1}}
    ]
    assert session.receive(message("pong")) == []


def test_ka_goes_to_acknowledged_legacy_connections_only() -> None:
    assert new_session(LEGACY).keep_alive() == []
    assert acknowledged(MODERN).keep_alive() == []
    assert sent(acknowledged(LEGACY).keep_alive()) == [{"type": "ka"}]


def test_connection_terminate_closes_with_1000() -> None:
    session = acknowledged(LEGACY)
    assert session.receive(message("connection_terminate")) == [Close(1000, "connection_terminate")]


# Invalid messages


def test_an_invalid_message_closes_a_modern_connection_with_4400() -> None:
    session = new_session(MODERN)
    actions = session.receive("{not json")
    assert actions[0] == Count("graphqlInvalidMessages")
    close = actions[1]
    assert isinstance(close, Close)
    assert close.code == 4400
    assert close.reason.startswith("message is not valid JSON")


def test_malformed_json_is_a_connection_error_in_the_legacy_protocol() -> None:
    session = new_session(LEGACY)
    actions = session.receive("{not json")
    assert actions[0] == Count("graphqlInvalidMessages")
    (error,) = sent(actions)
    assert error["type"] == "connection_error"
    assert not session.closed


def test_a_bad_legacy_start_is_an_error_for_its_operation() -> None:
    session = acknowledged(LEGACY)
    actions = session.receive(message("start", "7", {"query": ""}))
    assert sent(actions) == [
        {
            "id": "7",
            "type": "error",
            "payload": {"message": '"payload.query" must be a non-empty string'},
        }
    ]


# Publishes and the end of the connection


def test_a_publish_result_reaches_the_subscription_and_an_end_unsubscribes_it() -> None:
    session = acknowledged(MODERN)
    action = run(session, "1")
    session.operation_answered(action.token, SUBSCRIPTION)
    result = '{"data":{"m":1}}'
    assert sent(session.subscription_update("1", result, None, False)) == [
        {"id": "1", "type": "next", "payload": {"data": {"m": 1}}}
    ]
    # The fan-out's shortcut for a plain result says the same, and changes nothing.
    assert json.loads(session.subscription_result("1", result)) == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"m": 1}},
    }
    assert session.held() == 1
    actions = session.subscription_update("1", None, None, True)
    assert sent(actions) == [{"id": "1", "type": "complete"}]
    assert actions[-1] == Unsubscribe("1")
    assert session.held() == 0


def test_publish_errors_end_a_legacy_subscription_with_its_first_error() -> None:
    session = acknowledged(LEGACY)
    action = run(session, "1")
    session.operation_answered(action.token, SUBSCRIPTION)
    actions = session.subscription_update("1", None, [{"message": "gone"}], True)
    assert sent(actions) == [{"id": "1", "type": "error", "payload": {"message": "gone"}}]
    assert actions[-1] == Unsubscribe("1")


def test_a_lost_connection_ends_what_runs_and_what_is_subscribed() -> None:
    session = acknowledged(MODERN)
    running = run(session, "1")
    subscribed = run(session, "2")
    session.operation_answered(subscribed.token, SUBSCRIPTION)
    assert session.connection_lost() == [EndOperation(running.token), Unsubscribe("2")]
    assert session.closed
    assert session.receive(message("ping")) == []


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="protocol must be one of"):
        new_session("graphql-sse")
