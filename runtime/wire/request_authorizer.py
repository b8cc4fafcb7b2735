"""API Gateway's WebSocket REQUEST authorizer, as a format: the event it sends, what it answers.

A function written for API Gateway's Lambda REQUEST authorizer works unchanged: it gets the same
event (type REQUEST, methodArn, headers, query, requestContext) and answers with the same IAM
policy, `principalId` and `context`. API Gateway's rules are kept where they decide access:
an explicit Deny that matches the methodArn wins, an Allow must match it, and a function that
fails with the message "Unauthorized" means 401. Any other answer that is not a well-formed
policy is an error of the authorizer, never an Allow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.transports.base import Allow, Refuse, Verdict
from runtime.wire.events import CONNECT_ROUTE, HandshakeDetails

DEFAULT_ACCOUNT = "000000000000"  # no AWS account is known to a self-hosted node
INVOKE_ACTION = "execute-api:Invoke"
UNAUTHORIZED = "Unauthorized"  # the errorMessage that means 401, API Gateway's convention

FORBIDDEN_VERDICT = Refuse(403, "Forbidden")
UNAUTHORIZED_VERDICT = Refuse(401, UNAUTHORIZED)

_HEADER_PREFIX = "route.request.header."
_QUERY_PREFIX = "route.request.querystring."
# What a statement may hold. Condition, NotAction and NotResource are not evaluated here, so a
# statement with one is refused as a whole rather than read as something broader than it says.
_STATEMENT_KEYS = frozenset({"Sid", "Effect", "Action", "Resource"})


class AuthorizerAnswerInvalid(ValueError):
    """The function answered something that is not an authorizer's answer; says what was wrong."""


@dataclass(frozen=True, slots=True)
class IdentitySource:
    """`route.request.header.<name>` (any case, as HTTP) or `route.request.querystring.<name>`."""

    in_header: bool
    name: str

    @classmethod
    def parse(cls, text: str) -> IdentitySource:
        for prefix, in_header in ((_HEADER_PREFIX, True), (_QUERY_PREFIX, False)):
            if text.startswith(prefix) and len(text) > len(prefix):
                name = text[len(prefix) :]
                return cls(in_header, name.lower() if in_header else name)
        raise ValueError(
            "an identity source must be route.request.header.<name> or "
            f"route.request.querystring.<name> (got {text!r})"
        )


def identity_values(
    sources: Sequence[IdentitySource], details: HandshakeDetails
) -> tuple[str, ...] | None:
    """Each source's value (the last one sent, as in the event's `headers`), or None when any
    is missing or empty: API Gateway then answers 401 without calling the function."""
    values = []
    for source in sources:
        value = None
        if source.in_header:
            for name, sent in details.headers:
                if name.lower() == source.name:
                    value = sent
        else:
            for name, sent in details.query:
                if name == source.name:
                    value = sent
        if not value:
            return None
        values.append(value)
    return tuple(values)


def method_arn(
    *,
    region: str,
    api_id: str,
    stage: str,
    account: str = DEFAULT_ACCOUNT,
    partition: str = "aws",
    route: str = CONNECT_ROUTE,
) -> str:
    """What the policy's Resource is matched against, as API Gateway names a route."""
    return f"arn:{partition}:execute-api:{region}:{account}:{api_id}/{stage}/{route}"


def authorizer_event(
    details: HandshakeDetails, request_context: Mapping[str, object], arn: str
) -> dict[str, object]:
    """The event the function gets; `request_context` is the $connect event's requestContext."""
    headers, multi_headers = _single_and_multi(details.headers)
    event: dict[str, object] = {
        "type": "REQUEST",
        "methodArn": arn,
        "headers": headers,
        "multiValueHeaders": multi_headers,
    }
    if details.query:
        query, multi_query = _single_and_multi(details.query)
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = multi_query
    event["stageVariables"] = {}
    event["requestContext"] = dict(request_context)
    return event


def _single_and_multi(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """API Gateway's two views of repeated names: the last value, and all of them in order."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def verdict_for_error(error_message: str | None) -> Verdict | None:
    """A function error that means 401 (its errorMessage is exactly "Unauthorized"); None for
    any other, which is a failure of the authorizer."""
    return UNAUTHORIZED_VERDICT if error_message == UNAUTHORIZED else None


def parse_answer(raw: bytes, arn: str) -> Verdict:
    """The function's answer as a verdict for `arn`; AuthorizerAnswerInvalid if it is none."""
    try:
        answer = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        raise AuthorizerAnswerInvalid(f"the answer is not JSON ({len(raw)} bytes)") from None
    if not isinstance(answer, dict):
        raise AuthorizerAnswerInvalid(f"the answer must be a JSON object (got {_kind(answer)})")
    principal = answer.get("principalId")
    if not isinstance(principal, str):
        raise AuthorizerAnswerInvalid(f"principalId must be a string (got {_kind(principal)})")
    context = _context(answer.get("context"))
    if not policy_allows(answer.get("policyDocument"), arn):
        return FORBIDDEN_VERDICT
    return Allow(context={"principalId": principal, **context})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _context(context: object) -> dict[str, object]:
    """API Gateway passes on only strings, numbers and booleans: anything else is an error."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise AuthorizerAnswerInvalid(f"context must be a JSON object (got {_kind(context)})")
    for key, value in context.items():
        if not isinstance(value, str | int | float):  # bool is an int
            raise AuthorizerAnswerInvalid(
                f"context.{key} must be a string, number or boolean (got {_kind(value)})"
            )
    return context


def policy_allows(document: object, arn: str) -> bool:
    """IAM's evaluation for one action on one resource: a matching Deny wins, else a matching
    Allow is needed. AuthorizerAnswerInvalid if `document` is not a policy."""
    if not isinstance(document, dict):
        raise AuthorizerAnswerInvalid(
            f"policyDocument must be a JSON object (got {_kind(document)})"
        )
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        raise AuthorizerAnswerInvalid(
            f"policyDocument.Statement must be an object or a list (got {_kind(statements)})"
        )
    allowed = denied = False
    for number, statement in enumerate(statements):
        where = f"policyDocument.Statement[{number}]"
        if not isinstance(statement, dict):
            raise AuthorizerAnswerInvalid(f"{where} must be an object (got {_kind(statement)})")
        unknown = sorted(set(statement) - _STATEMENT_KEYS)
        if unknown:
            raise AuthorizerAnswerInvalid(
                f"{where} holds {', '.join(unknown)}: only Effect, Action, Resource and Sid "
                "are understood"
            )
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise AuthorizerAnswerInvalid(f"{where}.Effect must be Allow or Deny (got {effect!r})")
        actions = _patterns(statement.get("Action"), f"{where}.Action")
        resources = _patterns(statement.get("Resource"), f"{where}.Resource")
        if not any(iam_match(action, INVOKE_ACTION, ignore_case=True) for action in actions):
            continue
        if not any(iam_match(resource, arn) for resource in resources):
            continue
        if effect == "Deny":
            denied = True  # an explicit Deny wins, wherever it is
        else:
            allowed = True
    return allowed and not denied


def _patterns(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    raise AuthorizerAnswerInvalid(
        f"{where} must be a string or a non-empty list of strings (got {_kind(value)})"
    )


def iam_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcards: `*` any run of characters (colons and slashes too), `?` any one.

    Linear backtracking (to the last `*` only), so no pattern can make it slow.
    """
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    p = v = 0
    star = -1  # where the last `*` is in the pattern
    resume = 0  # where in the value that `*` has matched up to
    while v < len(value):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, v
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", value[v]):
            p += 1
            v += 1
        elif star >= 0:
            resume += 1
            p, v = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _kind(value: object) -> str:
    """A JSON value's kind, for error messages (never the value: it may be a secret)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
