"""The GraphQL origin's answers: what the contract allows is read, anything else is a fault."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.wire import graphql_contract as contract


def test_init_answers() -> None:
    assert contract.parse_init_answer({"accept": True}) == contract.InitAnswer(True)
    assert contract.parse_init_answer(
        {"accept": True, "context": {"user": "u"}, "payload": {"v": 1}}
    ) == contract.InitAnswer(True, {"user": "u"}, {"v": 1})
    refused = contract.parse_init_answer({"accept": False, "message": "bad token"})
    assert refused == contract.InitAnswer(False, message="bad token")
    assert contract.parse_init_answer({"accept": False}).message == "connection refused"


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"accept": "yes"},
        {"accept": 1},
        {"accept": False, "message": 3},
        {"accept": True, "payload": "welcome"},  # graphql-ws clients need an object here
    ],
)
def test_bad_init_answers(answer: dict[str, Any]) -> None:
    with pytest.raises(contract.BadOriginAnswer):
        contract.parse_init_answer(answer)


def test_start_answers() -> None:
    result = {"data": {"a": 1}}
    assert contract.parse_start_answer({"result": result}) == contract.OperationAnswer(
        result=result, complete=True
    )
    errors = [{"message": "Cannot query field"}]
    assert contract.parse_start_answer({"errors": errors}).errors == errors
    subscribed = contract.parse_start_answer(
        {"subscription": {"inputDigest": "d", "inputContext": {"x": 1}, "keys": ["a", "b", "a"]}}
    )
    assert subscribed.subscription == contract.SubscriptionSpec("d", {"x": 1}, ("a", "b"))
    assert not subscribed.complete and subscribed.result is None


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"result": None},
        {"result": {"nothing": 1}},
        {"result": [1]},
        {"errors": []},
        {"errors": [{"no": "message"}]},
        {"errors": "boom"},
        {"subscription": "x"},
        {"subscription": {"inputDigest": "", "keys": ["a"]}},
        {"subscription": {"inputDigest": "d" * 257, "keys": ["a"]}},
        {"subscription": {"inputDigest": "d", "keys": []}},
        {"subscription": {"inputDigest": "d", "keys": ["k"] * 101}},
        {"subscription": {"inputDigest": "d", "keys": ["k" * 257]}},
        {"subscription": {"inputDigest": "d", "keys": [1]}},
    ],
)
def test_bad_start_answers(answer: dict[str, Any]) -> None:
    with pytest.raises(contract.BadOriginAnswer):
        contract.parse_start_answer(answer)


def test_subscription_query_answers() -> None:
    assert contract.parse_query_answer({}) == contract.OperationAnswer()
    assert contract.parse_query_answer({"result": None}) == contract.OperationAnswer()
    assert contract.parse_query_answer({"result": {"data": 1}}).result == {"data": 1}
    ended = contract.parse_query_answer({"complete": True})
    assert ended.complete and ended.result is None
    failed = contract.parse_query_answer({"errors": [{"message": "gone"}]})
    assert failed.complete and failed.errors == [{"message": "gone"}]
    with pytest.raises(contract.BadOriginAnswer):
        contract.parse_query_answer({"complete": "yes"})
