"""The door end to end, part two: the Lambda REQUEST authorizer (a function on moto's simple
backend, which answers with queued results) and the JWT authorizer (a key set served by aiohttp,
keys made here), on real nodes with real WebSocket clients over 127.0.0.1, alone and in front of
a $connect handler.

moto's simple backend echoes the payload when nothing is queued: an authorizer event is not a
policy, so an unexpected call shows up as the error status rather than passing unnoticed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from runtime.wire.request_authorizer import method_arn
from tests.aws import MotoEndpoint, queue_lambda_results
from tests.conftest import RunningNode, StartNode
from tests.node.test_door import (
    door_handler,
    get_stats,
    one_accepted_connection,
    refused,
    seen,
)
from tests.transports.test_connect_handler import HandlerServer
from tests.transports.test_jwt_authorizer import (
    AUDIENCE,
    ISSUER,
    RSA_KEY,
    RSA_NEXT,
    JwksServer,
    claims,
    forged,
    public_jwk,
    token,
)

pytestmark = pytest.mark.timeout(30)

IDENTITY = "route.request.header.Authorization"
ERROR = 502  # --authorizer-error-status here


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, moto_endpoint: MotoEndpoint) -> MotoEndpoint:
    """boto3's own chain (what the node uses) pointed at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint.url)
    return moto_endpoint


@pytest.fixture
async def handler() -> AsyncIterator[HandlerServer]:
    """The $connect handler of tests/node/test_door.py."""
    async with door_handler() as server:
        yield server


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = await JwksServer([public_jwk(RSA_KEY, "rsa-1", "RS256")]).start()
    yield server
    await server.stop()


# --- the Lambda authorizer ----------------------------------------------------------------------


async def lambda_node(
    start_node: StartNode, aws: MotoEndpoint, function: str, **overrides: Any
) -> RunningNode:
    settings: dict[str, Any] = {
        "authorizer_function": function,
        "authorizer_identity_sources": (IDENTITY,),
        "authorizer_error_status": ERROR,
        "aws_region": aws.region,
    }
    return await start_node(**(settings | overrides))


def policy(node: RunningNode, effect: str, context: dict[str, Any] | None = None) -> str:
    """An answer as a function written for API Gateway gives, for this node's $connect."""
    settings = node.node.settings
    arn = method_arn(region=settings.region, api_id=node.node.context.api_id, stage=settings.stage)
    answer: dict[str, Any] = {
        "principalId": "ann",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Action": "execute-api:Invoke", "Resource": arn}],
        },
    }
    if context is not None:
        answer["context"] = context
    return json.dumps(answer)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": value}


def authorizer_stats(node: RunningNode) -> dict[str, int]:
    return node.node.stats()["authorizer"]  # type: ignore[return-value]


async def test_lambda_allow_rides_in_every_event(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    node = await lambda_node(start_node, aws, simple_function)
    await queue_lambda_results(aws, policy(node, "Allow", {"room": "lobby", "level": 2}))
    async with connect(node.ws_url, additional_headers=bearer("good")) as client:
        await client.send("hello")
    events = await node.origin.wait_for(lambda e: len(e) >= 3)
    kinds = [event["requestContext"]["eventType"] for event in events]
    assert kinds == ["CONNECT", "MESSAGE", "DISCONNECT"]
    expected = {"principalId": "ann", "room": "lobby", "level": 2}
    for event in events:
        assert event["requestContext"]["authorizer"] == expected
    assert "connectHandled" not in events[0]["requestContext"]  # no $connect handler here
    assert authorizer_stats(node)["calls"] == 1


async def test_lambda_deny_is_403_and_no_event(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    node = await lambda_node(start_node, aws, simple_function)
    await queue_lambda_results(aws, policy(node, "Deny"), policy(node, "Allow"))
    response = await refused(node.ws_url, additional_headers=bearer("mallory"))
    assert response.status_code == 403
    await one_accepted_connection(node, node.ws_url, additional_headers=bearer("ann"))
    assert node.node.stats()["handshakesRefusedAuthorizer"] == 1
    assert authorizer_stats(node)["denied"] == 1


async def test_lambda_answers_are_cached_within_the_ttl(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    node = await lambda_node(start_node, aws, simple_function, authorizer_ttl=0.5)
    # A second call would get the Deny: only the cache lets the second handshake in.
    await queue_lambda_results(aws, policy(node, "Allow"), policy(node, "Deny"))
    for _ in range(2):
        async with connect(node.ws_url, additional_headers=bearer("same")):
            pass
    stats = (await get_stats(node))["authorizer"]
    assert (stats["calls"], stats["cacheHits"]) == (1, 1)
    # Past the TTL the function is asked again (and now denies).
    await asyncio.sleep(0.6)
    assert (await refused(node.ws_url, additional_headers=bearer("same"))).status_code == 403
    assert authorizer_stats(node)["calls"] == 2


async def test_lambda_missing_identity_is_401_without_a_call(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    node = await lambda_node(start_node, aws, simple_function)
    assert (await refused(node.ws_url)).status_code == 401
    # An empty value is as missing as an absent one.
    assert (await refused(node.ws_url, additional_headers=bearer(""))).status_code == 401
    assert authorizer_stats(node)["calls"] == 0
    assert authorizer_stats(node)["refusedMissingIdentity"] == 2
    await node.service.stop()
    assert node.origin.events == []


async def test_lambda_a_flood_of_made_up_tokens_costs_the_burst(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    node = await lambda_node(
        start_node, aws, simple_function, authorizer_rate=1, authorizer_burst=5
    )
    await queue_lambda_results(aws, *[policy(node, "Deny")] * 6)

    async def knock(n: int) -> tuple[int, str | None]:
        try:
            async with connect(node.ws_url, additional_headers=bearer(f"made-up-{n}")):
                return 101, None
        except InvalidStatus as exc:
            return exc.response.status_code, exc.response.headers.get("Retry-After")

    started = time.monotonic()
    outcomes = await asyncio.gather(*(knock(n) for n in range(30)))
    elapsed = time.monotonic() - started
    statuses = Counter(status for status, _ in outcomes)
    calls = authorizer_stats(node)["calls"]
    assert 5 <= calls <= 5 + int(elapsed)  # the burst, and one a second after it
    assert statuses == {403: calls, 429: 30 - calls}
    assert all(wait is not None and int(wait) >= 1 for status, wait in outcomes if status == 429)
    assert authorizer_stats(node)["refusedRate"] == 30 - calls
    await node.service.stop()
    assert node.origin.events == []


# --- the JWT authorizer -------------------------------------------------------------------------


async def jwt_node(start_node: StartNode, jwks: JwksServer, **overrides: Any) -> RunningNode:
    settings: dict[str, Any] = {
        "jwt_issuer": ISSUER,
        "jwt_audiences": (AUDIENCE,),
        "jwt_jwks_url": jwks.url,
    }
    return await start_node(**(settings | overrides))


def key_confusion_token() -> str:
    """HS256 over the token, keyed with the published RSA key: the key confusion attack."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return forged(
        {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"},
        claims(),
        lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
    )


async def test_jwt_valid_token_connects_with_its_claims(
    start_node: StartNode, jwks: JwksServer
) -> None:
    node = await jwt_node(start_node, jwks)
    async with connect(node.ws_url, additional_headers=bearer(f"Bearer {token()}")) as client:
        await client.send("hi")
    events = await node.origin.wait_for(lambda e: len(e) >= 3)
    for event in events:
        authorizer = event["requestContext"]["authorizer"]
        assert authorizer["principalId"] == "user-1"
        assert authorizer["jwt"]["claims"]["sub"] == "user-1"
        assert authorizer["jwt"]["claims"]["email"] == "a@example.com"


@pytest.mark.parametrize(
    "bad",
    [
        "expired",
        "wrong aud",
        "wrong iss",
        "unknown kid",
        "alg none",
        "key confusion",
        "no token",
    ],
)
async def test_jwt_bad_tokens_are_401_and_no_event(
    start_node: StartNode, jwks: JwksServer, bad: str
) -> None:
    tokens = {
        "expired": token(claims(exp=int(time.time()) - 60, iat=int(time.time()) - 700)),
        "wrong aud": token(claims(aud="someone-else")),
        "wrong iss": token(claims(iss="https://issuer.example.net/")),
        "unknown kid": token(key=RSA_NEXT, kid="rsa-2"),
        "alg none": forged({"alg": "none", "kid": "rsa-1"}, claims(), lambda _: b""),
        "key confusion": key_confusion_token(),
    }
    node = await jwt_node(start_node, jwks)
    headers = bearer(f"Bearer {tokens[bad]}") if bad in tokens else {}
    response = await refused(node.ws_url, additional_headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await one_accepted_connection(node, node.ws_url, additional_headers=bearer(token()))
    assert node.node.stats()["handshakesRefusedAuthorizer"] == 1
    assert authorizer_stats(node)["verified"] == 1


async def test_jwt_token_from_the_query_string(start_node: StartNode, jwks: JwksServer) -> None:
    node = await jwt_node(start_node, jwks, jwt_token_source="query:token")
    # The header is not where this node looks.
    assert (await refused(node.ws_url, additional_headers=bearer(token()))).status_code == 401
    assert (await refused(f"{node.ws_url}/?token={token(claims(aud='x'))}")).status_code == 401
    await one_accepted_connection(node, f"{node.ws_url}/?token={token()}&room=a")
    (event,) = node.origin.of_type("CONNECT")
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "user-1"
    assert event["queryStringParameters"]["room"] == "a"


# --- 6. an authorizer in front of a $connect handler --------------------------------------------


async def test_the_handler_sees_the_lambda_authorizers_answer(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str, handler: HandlerServer
) -> None:
    node = await lambda_node(start_node, aws, simple_function, connect_handler_url=handler.url)
    await queue_lambda_results(aws, policy(node, "Deny"), policy(node, "Allow", {"tenant": "t1"}))
    # Denied: the handler is never asked.
    assert (await refused(node.ws_url, additional_headers=bearer("bad"))).status_code == 403
    assert handler.bodies == []
    accepted = await one_accepted_connection(node, node.ws_url, additional_headers=bearer("good"))
    (event,) = seen(handler)
    assert event["requestContext"]["connectionId"] == accepted
    assert event["requestContext"]["authorizer"] == {"principalId": "ann", "tenant": "t1"}
    (connect_event,) = node.origin.of_type("CONNECT")
    assert connect_event["requestContext"]["authorizer"] == {"principalId": "ann", "tenant": "t1"}
    assert connect_event["requestContext"]["connectHandled"] is True


async def test_the_handler_sees_the_jwt_claims_and_can_still_refuse(
    start_node: StartNode, jwks: JwksServer, handler: HandlerServer
) -> None:
    node = await jwt_node(start_node, jwks, connect_handler_url=handler.url)
    assert (await refused(node.ws_url, additional_headers=bearer("junk"))).status_code == 401
    assert handler.bodies == []
    good = bearer(token())
    assert (await refused(f"{node.ws_url}/?door=403", additional_headers=good)).status_code == 403
    await one_accepted_connection(node, node.ws_url, additional_headers=good)
    refused_event, accepted_event = seen(handler)
    for event in (refused_event, accepted_event):
        assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "user-1"


async def test_lambda_context_too_large_is_the_error_status(
    start_node: StartNode, aws: MotoEndpoint, simple_function: str
) -> None:
    """The context rides in every event of the connection: a huge one is refused, not carried."""
    node = await lambda_node(start_node, aws, simple_function)
    await queue_lambda_results(aws, policy(node, "Allow", {"blob": "x" * 5000}))
    assert (await refused(node.ws_url, additional_headers=bearer("big"))).status_code == ERROR
    await node.service.stop()
    assert node.origin.events == []
