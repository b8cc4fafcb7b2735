"""The REQUEST authorizer's formats: the event, identity sources, and the policy as IAM reads it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from runtime.transports.base import Allow, Refuse
from runtime.wire.events import HandshakeDetails
from runtime.wire.request_authorizer import (
    AuthorizerAnswerInvalid,
    IdentitySource,
    authorizer_event,
    iam_match,
    identity_values,
    method_arn,
    parse_answer,
    policy_allows,
    verdict_for_error,
)

ARN = "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/prod/$connect"


def details(
    headers: list[tuple[str, str]] | None = None, query: list[tuple[str, str]] | None = None
) -> HandshakeDetails:
    return HandshakeDetails(
        path="/chat",
        headers=headers if headers is not None else [("Host", "example.com")],
        query=query or [],
        source_ip="203.0.113.7",
        subprotocol=None,
    )


def statement(effect: str = "Allow", action: Any = "execute-api:Invoke", resource: Any = ARN):
    return {"Effect": effect, "Action": action, "Resource": resource}


def answer(*statements: Any, principal: Any = "user-1", **extra: Any) -> bytes:
    document = {
        "principalId": principal,
        "policyDocument": {"Version": "2012-10-17", "Statement": list(statements)},
        **extra,
    }
    return json.dumps(document).encode()


# --- identity sources -------------------------------------------------------------------------


def test_identity_sources_parse() -> None:
    assert IdentitySource.parse("route.request.header.Authorization") == IdentitySource(
        True, "authorization"
    )
    assert IdentitySource.parse("route.request.querystring.Token") == IdentitySource(False, "Token")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Authorization",
        "route.request.header.",
        "route.request.querystring.",
        "route.request.body.token",
        "method.request.header.Authorization",
    ],
)
def test_bad_identity_sources_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"route\.request\.header\.<name>"):
        IdentitySource.parse(text)


def test_header_sources_ignore_case_and_take_the_last_value() -> None:
    sources = [IdentitySource.parse("route.request.header.Authorization")]
    sent = details([("authorization", "first"), ("AUTHORIZATION", "last"), ("Host", "h")])
    assert identity_values(sources, sent) == ("last",)


def test_query_sources_match_the_name_exactly() -> None:
    sources = [IdentitySource.parse("route.request.querystring.token")]
    assert identity_values(sources, details(query=[("token", "a"), ("token", "b")])) == ("b",)
    assert identity_values(sources, details(query=[("Token", "a")])) is None


def test_every_source_must_be_there_and_not_empty() -> None:
    sources = [
        IdentitySource.parse("route.request.header.Authorization"),
        IdentitySource.parse("route.request.querystring.room"),
    ]
    both = details([("Authorization", "t")], [("room", "r")])
    assert identity_values(sources, both) == ("t", "r")
    assert identity_values(sources, details([("Authorization", "t")])) is None
    assert identity_values(sources, details(query=[("room", "r")])) is None
    assert identity_values(sources, details([("Authorization", "")], [("room", "r")])) is None
    assert identity_values(sources, details([("Authorization", "t")], [("room", "")])) is None


# --- the event ---------------------------------------------------------------------------------


def test_method_arn_names_the_connect_route() -> None:
    assert method_arn(region="eu-west-1", api_id="abc123defg", stage="prod") == ARN
    assert (
        method_arn(
            region="cn-north-1", api_id="a", stage="s", account="123456789012", partition="aws-cn"
        )
        == "arn:aws-cn:execute-api:cn-north-1:123456789012:a/s/$connect"
    )


def test_the_event_is_api_gateways() -> None:
    context = {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "c1", "apiId": "a"}
    sent = details(
        [("Host", "example.com"), ("X-Tag", "1"), ("X-Tag", "2")],
        [("token", "t"), ("room", "a"), ("room", "b")],
    )
    event = authorizer_event(sent, context, ARN)
    assert event == {
        "type": "REQUEST",
        "methodArn": ARN,
        "headers": {"Host": "example.com", "X-Tag": "2"},
        "multiValueHeaders": {"Host": ["example.com"], "X-Tag": ["1", "2"]},
        "queryStringParameters": {"token": "t", "room": "b"},
        "multiValueQueryStringParameters": {"token": ["t"], "room": ["a", "b"]},
        "stageVariables": {},
        "requestContext": context,
    }
    assert event["requestContext"] is not context  # a copy: the caller's stays its own
    json.dumps(event)


def test_no_query_string_means_no_query_fields() -> None:
    event = authorizer_event(details(), {}, ARN)
    assert "queryStringParameters" not in event
    assert "multiValueQueryStringParameters" not in event


# --- the answer --------------------------------------------------------------------------------


def test_an_allow_carries_the_principal_and_context() -> None:
    raw = answer(statement(), context={"user": "ann", "level": 3, "admin": False, "x": 1.5})
    assert parse_answer(raw, ARN) == Allow(
        context={"principalId": "user-1", "user": "ann", "level": 3, "admin": False, "x": 1.5}
    )


def test_an_allow_without_context() -> None:
    assert parse_answer(answer(statement()), ARN) == Allow(context={"principalId": "user-1"})
    assert parse_answer(answer(statement(), context=None), ARN) == Allow({"principalId": "user-1"})


def test_a_deny_is_403() -> None:
    assert parse_answer(answer(statement("Deny")), ARN) == Refuse(403, "Forbidden")


def test_no_matching_allow_is_403() -> None:
    assert parse_answer(answer(), ARN) == Refuse(403, "Forbidden")
    other = ARN.replace("/prod/", "/dev/")
    assert parse_answer(answer(statement(resource=other)), ARN) == Refuse(403, "Forbidden")
    wrong_action = statement(action="execute-api:ManageConnections")
    assert parse_answer(answer(wrong_action), ARN) == Refuse(403, "Forbidden")


@pytest.mark.parametrize("order", ["deny first", "deny last"])
def test_a_matching_deny_wins_over_any_allow(order: str) -> None:
    statements = [statement("Allow", resource="*"), statement("Deny", resource=ARN)]
    if order == "deny first":
        statements.reverse()
    assert parse_answer(answer(*statements), ARN) == Refuse(403, "Forbidden")


def test_a_deny_for_another_resource_does_not_refuse() -> None:
    statements = [statement("Allow"), statement("Deny", resource=ARN.replace("prod", "dev"))]
    assert isinstance(parse_answer(answer(*statements), ARN), Allow)


@pytest.mark.parametrize(
    "action",
    ["execute-api:Invoke", "execute-api:*", "*", "Execute-API:invoke", "execute-api:Inv*"],
)
def test_actions_that_cover_invoke(action: str) -> None:
    assert isinstance(parse_answer(answer(statement(action=action)), ARN), Allow)
    assert isinstance(parse_answer(answer(statement(action=["s3:*", action])), ARN), Allow)


@pytest.mark.parametrize(
    "resource",
    [
        "*",
        "arn:aws:execute-api:*",
        "arn:aws:execute-api:eu-west-1:*:abc123defg/*",
        "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/*/$connect",
        "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/pro?/$connect",
        "arn:aws:execute-api:*:*:*/prod/*",
        ["arn:aws:s3:::bucket", ARN],
    ],
)
def test_resources_that_match_the_method_arn(resource: Any) -> None:
    assert isinstance(parse_answer(answer(statement(resource=resource)), ARN), Allow)


@pytest.mark.parametrize(
    "resource",
    [
        "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/prod",
        "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/pro?",
        "arn:aws:execute-api:us-east-1:*",
        "ARN:AWS:EXECUTE-API:*",  # resources are matched with their case
        "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/prod/$connect/more",
        "arn:aws:execute-api:eu-west-1:000000000000:abc123defg/p?od?/$connect",
    ],
)
def test_resources_that_do_not_match(resource: str) -> None:
    assert parse_answer(answer(statement(resource=resource)), ARN) == Refuse(403, "Forbidden")


def test_a_single_statement_object_is_a_policy_too() -> None:
    document = {"principalId": "u", "policyDocument": {"Statement": statement()}}
    assert isinstance(parse_answer(json.dumps(document).encode(), ARN), Allow)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b'{"principalId": "u", "context": {"n": NaN}}', "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'"Allow"', "must be a JSON object"),
        (b'{"policyDocument": {"Statement": []}}', "principalId must be a string"),
        (b'{"principalId": 7, "policyDocument": {"Statement": []}}', "principalId must be"),
        (b'{"principalId": "u"}', "policyDocument must be a JSON object"),
        (b'{"principalId": "u", "policyDocument": "Allow"}', "policyDocument must be"),
        (b'{"principalId": "u", "policyDocument": {}}', "Statement must be an object or a list"),
        (b'{"principalId": "u", "policyDocument": {"Statement": [1]}}', "must be an object"),
    ],
)
def test_malformed_answers_are_invalid(raw: bytes, message: str) -> None:
    with pytest.raises(AuthorizerAnswerInvalid, match=message):
        parse_answer(raw, ARN)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"Effect": "allow"}, "Effect must be Allow or Deny"),
        ({"Effect": None}, "Effect must be Allow or Deny"),
        ({"Action": None}, "Action must be a string or a non-empty list"),
        ({"Action": []}, "Action must be a string or a non-empty list"),
        ({"Action": ["execute-api:Invoke", 3]}, "Action must be"),
        ({"Resource": None}, "Resource must be a string or a non-empty list"),
        ({"Resource": {"arn": ARN}}, "Resource must be"),
        ({"Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.4/32"}}}, "holds Condition"),
        ({"NotResource": "x"}, "holds NotResource"),
        ({"NotAction": "x"}, "holds NotAction"),
    ],
)
def test_malformed_statements_are_invalid(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthorizerAnswerInvalid, match=message):
        parse_answer(answer({**statement(), **bad}), ARN)


def test_a_malformed_statement_is_invalid_even_after_a_deny() -> None:
    """The whole answer is read: a broken policy is an error, whatever came before."""
    with pytest.raises(AuthorizerAnswerInvalid):
        parse_answer(answer(statement("Deny"), {**statement(), "Effect": "Maybe"}), ARN)


@pytest.mark.parametrize(
    ("context", "kind"),
    [
        ({"nested": {"a": 1}}, "an object"),
        ({"list": [1, 2]}, "a list"),
        ({"nothing": None}, "null"),
    ],
)
def test_context_values_other_than_scalars_are_invalid(context: Any, kind: str) -> None:
    name = next(iter(context))
    with pytest.raises(
        AuthorizerAnswerInvalid, match=f"context.{name} must be .* \\(got {kind}\\)"
    ):
        parse_answer(answer(statement(), context=context), ARN)


@pytest.mark.parametrize("context", ["text", [1], 3])
def test_context_must_be_an_object(context: Any) -> None:
    with pytest.raises(AuthorizerAnswerInvalid, match="context must be a JSON object"):
        parse_answer(answer(statement(), context=context), ARN)


def test_a_bad_context_is_invalid_even_with_a_deny() -> None:
    with pytest.raises(AuthorizerAnswerInvalid):
        parse_answer(answer(statement("Deny"), context={"a": [1]}), ARN)


def test_error_messages_never_show_the_values() -> None:
    with pytest.raises(AuthorizerAnswerInvalid) as caught:
        parse_answer(b"secret-token-value", ARN)
    assert "secret" not in str(caught.value)


def test_unauthorized_is_401_only_when_exactly_so() -> None:
    assert verdict_for_error("Unauthorized") == Refuse(401, "Unauthorized")
    assert verdict_for_error("unauthorized") is None
    assert verdict_for_error("Unauthorized: expired") is None
    assert verdict_for_error(None) is None


# --- IAM wildcards -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a*", "a", True),
        ("*", "", True),
        ("", "", True),
        ("", "a", False),
        ("*c", "abc", True),
        ("*b", "*ab", True),  # a literal * in the value does not pin the pattern's *
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "axxbyy", False),
        ("**", "x", True),
    ],
)
def test_iam_match(pattern: str, value: str, matches: bool) -> None:
    assert iam_match(pattern, value) is matches


def test_iam_match_case() -> None:
    assert not iam_match("ABC", "abc")
    assert iam_match("ABC", "abc", ignore_case=True)


def test_no_pattern_makes_matching_slow() -> None:
    started = time.monotonic()
    assert not iam_match("*a" * 200 + "b", "a" * 5_000)
    assert time.monotonic() - started < 2


def test_policy_allows_reads_a_document() -> None:
    assert policy_allows({"Statement": [statement()]}, ARN)
    assert not policy_allows({"Statement": []}, ARN)
    with pytest.raises(AuthorizerAnswerInvalid):
        policy_allows(None, ARN)
