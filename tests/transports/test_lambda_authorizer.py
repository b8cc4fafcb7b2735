"""The Lambda REQUEST authorizer (and its LambdaInvoker) against moto's Lambda API and against
small real servers where moto cannot say what a test needs.

moto's simple backend answers an invoke with the next result queued, or else echoes the
payload: an authorizer event echoed back is not a policy, so an extra call shows as an error.
It can fail a function only one way (a result over 6 MB, "Unhandled"), so a function that fails
with "Unauthorized" is played by `FakeLambda`, an aiohttp server speaking Lambda's Invoke API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from runtime.config import Settings, default_api_id
from runtime.transports.base import Allow, Refuse
from runtime.transports.lambda_authorizer import LambdaAuthorizer, lambda_authorizer_from_settings
from runtime.transports.lambda_invoke import LambdaFailed, LambdaFunctionError, LambdaInvoker
from runtime.wire.events import HandshakeDetails
from tests.aws import MotoEndpoint, queue_lambda_results

pytestmark = pytest.mark.timeout(30)

API_ID = "abc123defg"
ARN = f"arn:aws:execute-api:eu-west-1:000000000000:{API_ID}/prod/$connect"
CONTEXT: dict[str, object] = {
    "routeKey": "$connect",
    "eventType": "CONNECT",
    "connectionId": "AQl1cy1",
    "apiId": API_ID,
    "stage": "prod",
    "region": "eu-west-1",
}
ERROR_STATUS = 503
FORBIDDEN = Refuse(403, "Forbidden")
UNAUTHORIZED = Refuse(401, "Unauthorized")


def handshake(token: str | None = "good", room: str | None = None) -> HandshakeDetails:
    headers = [("Host", "gw.example.com")]
    if token is not None:
        headers.append(("Authorization", token))
    return HandshakeDetails(
        path="/",
        headers=headers,
        query=[("room", room)] if room is not None else [],
        source_ip="203.0.113.7",
        subprotocol=None,
    )


def policy(
    effect: str = "Allow", resource: object = ARN, context: object = None, principal: str = "ann"
) -> str:
    answer: dict[str, object] = {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Action": "execute-api:Invoke", "Resource": resource}],
        },
    }
    if context is not None:
        answer["context"] = context
    return json.dumps(answer)


ALLOW = policy()
DENY = policy("Deny")


def authorizer(
    invoker: LambdaInvoker,
    sources: tuple[str, ...] = ("route.request.header.Authorization",),
    **options: Any,
) -> LambdaAuthorizer:
    settings = {
        "ttl": 30.0,
        "rate": 100.0,
        "burst": 100,
        "cache_entries": 100,
        "error_status": ERROR_STATUS,
        **options,
    }
    return LambdaAuthorizer(invoker, sources, **settings)


@pytest.fixture
async def moto_invoker(moto_endpoint: MotoEndpoint, simple_function: str) -> AsyncIterator[Any]:
    invoker = LambdaInvoker(
        simple_function,
        timeout=5,
        concurrency=4,
        endpoint_url=moto_endpoint.url,
        region=moto_endpoint.region,
    )
    await invoker.start()
    yield invoker
    await invoker.close()


async def left_queued(invoker: LambdaInvoker) -> int:
    """How many queued results are left, consuming them: a probe comes back once it is empty."""
    for count in range(100):
        if await invoker.invoke(b'{"probe":1}') == b'{"probe":1}':
            return count
    raise AssertionError("the result queue does not empty")


# --- on moto ------------------------------------------------------------------------------------


async def test_allow_carries_the_context(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    gate = authorizer(moto_invoker)
    await queue_lambda_results(moto_endpoint, policy(context={"room": "lobby", "level": 2}))
    verdict = await gate.authorize(handshake(), CONTEXT)
    assert verdict == Allow({"principalId": "ann", "room": "lobby", "level": 2})
    assert gate.stats()["calls"] == 1
    assert gate.stats()["denied"] == gate.stats()["errors"] == 0


async def test_deny_is_403(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    gate = authorizer(moto_invoker)
    await queue_lambda_results(moto_endpoint, DENY)
    assert await gate.authorize(handshake(), CONTEXT) == FORBIDDEN
    assert gate.stats()["denied"] == 1


async def test_a_matching_deny_wins(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    gate = authorizer(moto_invoker)
    answer = json.loads(ALLOW)
    answer["policyDocument"]["Statement"] = [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "execute-api:*", "Resource": f"*:{API_ID}/prod/*"},
    ]
    await queue_lambda_results(moto_endpoint, json.dumps(answer))
    assert await gate.authorize(handshake(), CONTEXT) == FORBIDDEN


@pytest.mark.parametrize(
    ("resource", "allowed"),
    [
        ("arn:aws:execute-api:*:*:*/prod/$connect", True),
        (f"arn:aws:execute-api:eu-west-1:*:{API_ID}/*", True),
        (f"arn:aws:execute-api:eu-west-1:000000000000:{API_ID}/pro?/*", True),
        (f"arn:aws:execute-api:eu-west-1:000000000000:{API_ID}/dev/*", False),
        ("arn:aws:execute-api:us-east-1:*", False),
    ],
)
async def test_wildcard_resources(
    moto_endpoint: MotoEndpoint, moto_invoker: Any, resource: str, allowed: bool
) -> None:
    gate = authorizer(moto_invoker)
    await queue_lambda_results(moto_endpoint, policy(resource=resource))
    verdict = await gate.authorize(handshake(), CONTEXT)
    assert isinstance(verdict, Allow) if allowed else verdict == FORBIDDEN


async def test_the_method_arn_comes_from_the_settings_first(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker, api_id="zzz", region="eu-west-1", stage="prod")
    await queue_lambda_results(moto_endpoint, ALLOW)  # names abc123defg, not zzz
    assert await gate.authorize(handshake(), CONTEXT) == FORBIDDEN


async def test_a_cached_answer_needs_no_call(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker, ttl=30)
    await queue_lambda_results(moto_endpoint, ALLOW, DENY)
    assert isinstance(await gate.authorize(handshake("good"), CONTEXT), Allow)
    assert isinstance(await gate.authorize(handshake("good"), CONTEXT), Allow)  # cached
    assert await gate.authorize(handshake("bad"), CONTEXT) == FORBIDDEN  # another identity
    assert await gate.authorize(handshake("bad"), CONTEXT) == FORBIDDEN  # a Deny is cached too
    assert gate.stats()["calls"] == 2
    assert gate.stats()["cacheHits"] == 2
    assert gate.stats()["denied"] == 2
    assert await left_queued(moto_invoker) == 0


async def test_the_cache_is_keyed_by_every_identity_source(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    sources = ("route.request.header.Authorization", "route.request.querystring.room")
    gate = authorizer(moto_invoker, sources)
    await queue_lambda_results(moto_endpoint, ALLOW, DENY)
    assert isinstance(await gate.authorize(handshake("t", room="a"), CONTEXT), Allow)
    assert await gate.authorize(handshake("t", room="b"), CONTEXT) == FORBIDDEN
    assert gate.stats()["calls"] == 2


async def test_a_cached_answer_expires_after_the_ttl(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker, ttl=0.3)
    await queue_lambda_results(moto_endpoint, ALLOW, DENY)
    assert isinstance(await gate.authorize(handshake(), CONTEXT), Allow)
    assert isinstance(await gate.authorize(handshake(), CONTEXT), Allow)
    await asyncio.sleep(0.4)
    assert await gate.authorize(handshake(), CONTEXT) == FORBIDDEN  # asked again
    assert gate.stats()["calls"] == 2


async def test_ttl_zero_calls_every_time(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    gate = authorizer(moto_invoker, ttl=0)
    await queue_lambda_results(moto_endpoint, ALLOW, ALLOW, DENY)
    verdicts = [await gate.authorize(handshake(), CONTEXT) for _ in range(3)]
    assert verdicts[2] == FORBIDDEN
    assert gate.stats()["calls"] == 3
    assert gate.stats()["cacheHits"] == 0


async def test_the_cache_is_bounded(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    gate = authorizer(moto_invoker, cache_entries=2)
    await queue_lambda_results(moto_endpoint, ALLOW, ALLOW, ALLOW, DENY)
    for token in ("a", "b", "c"):
        assert isinstance(await gate.authorize(handshake(token), CONTEXT), Allow)
    assert isinstance(await gate.authorize(handshake("c"), CONTEXT), Allow)  # still cached
    assert await gate.authorize(handshake("a"), CONTEXT) == FORBIDDEN  # "a" went: asked again
    assert gate.stats()["calls"] == 4


async def test_concurrent_handshakes_share_one_call(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker, ttl=0)  # sharing a call in flight is not caching
    await queue_lambda_results(moto_endpoint, ALLOW)
    verdicts = await asyncio.gather(*(gate.authorize(handshake(), CONTEXT) for _ in range(50)))
    assert all(verdict == Allow({"principalId": "ann"}) for verdict in verdicts)
    assert gate.stats()["calls"] == 1
    assert gate.stats()["joined"] == 49
    assert await left_queued(moto_invoker) == 0  # one queued result was consumed, and only one


async def test_calls_beyond_the_bucket_get_429_without_a_call(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker, rate=0.1, burst=5)
    await queue_lambda_results(moto_endpoint, *[DENY] * 5, ALLOW)
    verdicts = await asyncio.gather(
        *(gate.authorize(handshake(f"made-up-{n}"), CONTEXT) for n in range(40))
    )
    assert verdicts.count(FORBIDDEN) == 5
    limited = [verdict for verdict in verdicts if verdict != FORBIDDEN]
    assert len(limited) == 35
    assert all(
        isinstance(v, Refuse) and v.status == 429 and v.headers == (("Retry-After", "10"),)
        for v in limited
    )
    assert gate.stats()["calls"] == 5
    assert gate.stats()["refusedRate"] == 35
    assert await left_queued(moto_invoker) == 1  # the ALLOW nobody got to ask for


async def test_cached_and_shared_answers_take_no_token(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker, rate=0.1, burst=1)
    await queue_lambda_results(moto_endpoint, ALLOW)
    verdicts = await asyncio.gather(*(gate.authorize(handshake(), CONTEXT) for _ in range(5)))
    verdicts.append(await gate.authorize(handshake(), CONTEXT))
    assert all(isinstance(verdict, Allow) for verdict in verdicts)
    other = await gate.authorize(handshake("other"), CONTEXT)
    assert isinstance(other, Refuse) and other.status == 429


async def test_a_missing_identity_is_401_without_a_call(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    gate = authorizer(moto_invoker)
    await queue_lambda_results(moto_endpoint, ALLOW)
    assert await gate.authorize(handshake(None), CONTEXT) == UNAUTHORIZED
    assert await gate.authorize(handshake(""), CONTEXT) == UNAUTHORIZED
    assert gate.stats()["refusedMissingIdentity"] == 2
    assert gate.stats()["calls"] == 0
    assert await left_queued(moto_invoker) == 1


@pytest.mark.parametrize(
    "answer",
    [
        "not json",
        json.dumps({"principalId": "ann"}),  # no policy
        policy(context={"user": {"id": 1}}),  # a context value API Gateway would not pass
        json.dumps([ALLOW]),
        policy().replace('"Allow"', '"allow"'),
    ],
)
async def test_a_malformed_answer_is_an_error_and_not_cached(
    moto_endpoint: MotoEndpoint, moto_invoker: Any, answer: str
) -> None:
    gate = authorizer(moto_invoker)
    await queue_lambda_results(moto_endpoint, answer, ALLOW)
    assert await gate.authorize(handshake(), CONTEXT) == Refuse(
        ERROR_STATUS, "Internal Server Error"
    )
    assert isinstance(await gate.authorize(handshake(), CONTEXT), Allow)  # asked again
    assert gate.stats()["errors"] == 1
    assert gate.stats()["calls"] == 2


async def test_a_function_error_is_an_error(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    gate = authorizer(moto_invoker)
    await queue_lambda_results(moto_endpoint, "x" * 6_000_001)  # Lambda's payload limit: Unhandled
    assert await gate.authorize(handshake(), CONTEXT) == Refuse(
        ERROR_STATUS, "Internal Server Error"
    )
    assert gate.stats()["errors"] == 1


async def test_an_echoed_event_is_no_policy(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    """Nothing queued: moto echoes the event, which names no principal."""
    gate = authorizer(moto_invoker)
    verdict = await gate.authorize(handshake(), CONTEXT)
    assert verdict == Refuse(ERROR_STATUS, "Internal Server Error")


async def test_failures_are_logged_once_per_kind(
    moto_endpoint: MotoEndpoint, moto_invoker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate = authorizer(moto_invoker, ttl=0)
    await queue_lambda_results(moto_endpoint, "nope", "nope", "nope")
    with caplog.at_level(logging.WARNING, logger="runtime.authorizer"):
        for n in range(3):
            await gate.authorize(handshake(f"t{n}"), CONTEXT)
    lines = [r for r in caplog.records if r.name == "runtime.authorizer"]
    assert [r.getMessage() for r in lines] == ["authorizer answer invalid"]
    assert lines[0].__dict__["error"] == "the answer is not JSON (4 bytes)"
    assert gate.stats()["errors"] == 3


# --- LambdaInvoker on moto --------------------------------------------------------------------


async def test_the_invoker_round_trip(moto_endpoint: MotoEndpoint, moto_invoker: Any) -> None:
    assert await moto_invoker.invoke(b'{"a":1}') == b'{"a":1}'
    await queue_lambda_results(moto_endpoint, "answer")
    assert await moto_invoker.invoke(b"{}") == b"answer"
    assert await moto_invoker.invoke(b"{}", bounded=False) == b"{}"


async def test_the_invoker_reports_a_function_error(
    moto_endpoint: MotoEndpoint, moto_invoker: Any
) -> None:
    await queue_lambda_results(moto_endpoint, "x" * 6_000_001)
    with pytest.raises(LambdaFunctionError, match=r"failed \(Unhandled\): Response payload") as e:
        await moto_invoker.invoke(b"{}")
    assert e.value.error_message is not None
    assert e.value.error_message.startswith("Response payload size exceeded")


async def test_the_invoker_after_close_fails() -> None:
    invoker = LambdaInvoker("f", timeout=1, concurrency=1, region="us-east-1")
    await invoker.close()
    with pytest.raises(LambdaFailed, match="closed"):
        await invoker.invoke(b"{}")


@pytest.mark.parametrize(("timeout", "concurrency"), [(0, 1), (-1, 1), (1, 0)])
def test_the_invoker_refuses_bad_parameters(timeout: float, concurrency: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        LambdaInvoker("f", timeout=timeout, concurrency=concurrency)


# --- against servers of our own -----------------------------------------------------------------


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, so that boto3 gets as far as the network."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@dataclasses.dataclass
class FakeLambda:
    """Lambda's Invoke API: answers (payload, FunctionError or None, delay) in turn, records
    the events it got."""

    answers: list[tuple[bytes, str | None, float]] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    url: str = ""

    async def invoke(self, request: web.Request) -> web.Response:
        self.events.append(json.loads(await request.read()))
        payload, error, delay = self.answers.pop(0) if self.answers else (b"{}", None, 0.0)
        await asyncio.sleep(delay)
        headers = {"X-Amz-Function-Error": error} if error else {}
        return web.Response(body=payload, headers=headers, content_type="application/json")


@pytest.fixture
async def fake_lambda(aws_credentials: None) -> AsyncIterator[FakeLambda]:
    fake = FakeLambda()
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", fake.invoke)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


def invoker_at(url: str, timeout: float = 5.0) -> LambdaInvoker:
    return LambdaInvoker(
        "authorizer", timeout=timeout, concurrency=4, endpoint_url=url, region="us-east-1"
    )


async def test_unauthorized_is_401(fake_lambda: FakeLambda) -> None:
    error = json.dumps({"errorMessage": "Unauthorized", "errorType": "Error"}).encode()
    other = json.dumps({"errorMessage": "Unauthorized!", "errorType": "Error"}).encode()
    fake_lambda.answers += [(error, "Unhandled", 0.0), (other, "Unhandled", 0.0)]
    gate = authorizer(invoker_at(fake_lambda.url))
    try:
        assert await gate.authorize(handshake("expired"), CONTEXT) == UNAUTHORIZED
        assert await gate.authorize(handshake("odd"), CONTEXT) == Refuse(
            ERROR_STATUS, "Internal Server Error"
        )
        assert await gate.authorize(handshake("expired"), CONTEXT) == UNAUTHORIZED  # cached
    finally:
        await gate.close()
    assert gate.stats() == {
        "calls": 2,
        "cacheHits": 1,
        "joined": 0,
        "refusedMissingIdentity": 0,
        "refusedRate": 0,
        "denied": 2,
        "errors": 1,
    }


async def test_the_function_gets_api_gateways_event(fake_lambda: FakeLambda) -> None:
    fake_lambda.answers.append((ALLOW.encode(), None, 0.0))
    gate = authorizer(invoker_at(fake_lambda.url), region="eu-west-1", stage="prod")
    try:
        sent = handshake("tok\u00e9n", room="lobby")
        assert isinstance(await gate.authorize(sent, CONTEXT), Allow)
    finally:
        await gate.close()
    [event] = fake_lambda.events
    assert event == {
        "type": "REQUEST",
        "methodArn": ARN,
        "headers": {"Host": "gw.example.com", "Authorization": "tok\u00e9n"},
        "multiValueHeaders": {"Host": ["gw.example.com"], "Authorization": ["tok\u00e9n"]},
        "queryStringParameters": {"room": "lobby"},
        "multiValueQueryStringParameters": {"room": ["lobby"]},
        "stageVariables": {},
        "requestContext": CONTEXT,
    }


@pytest.mark.parametrize(
    ("region", "partition"), [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")]
)
async def test_the_method_arn_names_the_regions_partition(
    fake_lambda: FakeLambda, region: str, partition: str
) -> None:
    arn = f"arn:{partition}:execute-api:{region}:000000000000:{API_ID}/prod/$connect"
    fake_lambda.answers.append((policy(resource=arn).encode(), None, 0.0))
    gate = authorizer(invoker_at(fake_lambda.url), region=region, stage="prod")
    try:
        assert isinstance(await gate.authorize(handshake(), CONTEXT), Allow)
    finally:
        await gate.close()
    assert [event["methodArn"] for event in fake_lambda.events] == [arn]


async def test_a_function_too_slow_is_an_error_in_time(fake_lambda: FakeLambda) -> None:
    fake_lambda.answers.append((ALLOW.encode(), None, 3.0))
    gate = authorizer(invoker_at(fake_lambda.url, timeout=0.3))
    started = time.monotonic()
    try:
        verdict = await gate.authorize(handshake(), CONTEXT)
    finally:
        await gate.close()
    assert verdict == Refuse(ERROR_STATUS, "Internal Server Error")
    assert time.monotonic() - started < 2  # one try, no retry


async def test_a_handshake_gone_does_not_fail_the_others(fake_lambda: FakeLambda) -> None:
    fake_lambda.answers.append((ALLOW.encode(), None, 0.3))
    gate = authorizer(invoker_at(fake_lambda.url))
    try:
        first = asyncio.create_task(gate.authorize(handshake(), CONTEXT))
        second = asyncio.create_task(gate.authorize(handshake(), CONTEXT))
        await asyncio.sleep(0.1)
        first.cancel()
        assert isinstance(await second, Allow)
        assert first.cancelled()
        assert isinstance(await gate.authorize(handshake(), CONTEXT), Allow)  # and it is cached
    finally:
        await gate.close()
    assert gate.stats()["calls"] == 1


async def test_close_answers_the_waiting_handshakes(fake_lambda: FakeLambda) -> None:
    fake_lambda.answers.append((ALLOW.encode(), None, 2.0))
    gate = authorizer(invoker_at(fake_lambda.url))
    waiting = asyncio.gather(*(gate.authorize(handshake(), CONTEXT) for _ in range(3)))
    await asyncio.sleep(0.1)
    await gate.close()
    assert await waiting == [Refuse(ERROR_STATUS, "Internal Server Error")] * 3


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.usefixtures("aws_credentials")
async def test_the_endpoint_down_is_an_error() -> None:
    gate = authorizer(invoker_at(f"http://127.0.0.1:{closed_port()}"), error_status=502)
    try:
        assert await gate.authorize(handshake(), CONTEXT) == Refuse(502, "Internal Server Error")
    finally:
        await gate.close()
    assert gate.stats()["errors"] == 1


@pytest.fixture
async def trickle_server() -> AsyncIterator[str]:
    """Starts an answer and sends a byte of it every 0.1 s: no read ever times out."""
    writers: list[asyncio.StreamWriter] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                await asyncio.sleep(0.1)
                writer.write(b" ")
                await writer.drain()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for writer in writers:
        writer.close()


@pytest.mark.usefixtures("aws_credentials")
async def test_the_invoker_deadline_bounds_a_trickling_answer(trickle_server: str) -> None:
    invoker = invoker_at(trickle_server, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(LambdaFailed, match=r"no answer from function authorizer within 0.5s"):
            await invoker.invoke(b"{}")
    finally:
        await invoker.close()
    assert 1.4 < time.monotonic() - started < 2.5


# --- building -------------------------------------------------------------------------------


def test_no_function_no_authorizer() -> None:
    assert lambda_authorizer_from_settings(Settings()) is None


def test_built_from_the_settings() -> None:
    settings = dataclasses.replace(
        Settings(),
        authorizer_function="arn:aws:lambda:eu-west-1:123456789012:function:auth",
        authorizer_identity_sources=("route.request.querystring.token",),
        authorizer_ttl=60,
        authorizer_rate=5,
        authorizer_burst=10,
        authorizer_timeout=2,
        authorizer_error_status=502,
        authorizer_cache_entries=7,
        aws_region="eu-west-1",
        region="eu-west-1",
        stage="prod",
    )
    gate = lambda_authorizer_from_settings(settings)
    assert gate is not None
    assert gate.invoker.function == settings.authorizer_function
    assert gate.invoker.timeout == 2
    assert gate.invoker.concurrency == 10
    assert gate.invoker.region == "eu-west-1"
    assert gate.invoker.endpoint_url is None  # boto3's own chain (AWS_ENDPOINT_URL, or AWS)
    assert (gate.ttl, gate.cache_entries, gate.error_status) == (60, 7, 502)
    assert gate.api_id == default_api_id("prod", "eu-west-1")
    assert (gate.region, gate.stage) == ("eu-west-1", "prod")
    gate.invoker._pool.shutdown(wait=False)
    named = lambda_authorizer_from_settings(dataclasses.replace(settings, api_id="myapi"))
    assert named is not None and named.api_id == "myapi"
    named.invoker._pool.shutdown(wait=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": -1}, "ttl must be"),
        ({"cache_entries": 0}, "cache_entries must be"),
        ({"error_status": 200}, "error_status must be"),
        ({"rate": 0}, "rate must be"),
        ({"burst": 0}, "burst must be"),
    ],
)
def test_bad_parameters_are_refused(options: dict[str, Any], message: str) -> None:
    invoker = LambdaInvoker("f", timeout=1, concurrency=1)
    with pytest.raises(ValueError, match=message):
        authorizer(invoker, **options)
    with pytest.raises(ValueError, match="identity source"):
        authorizer(invoker, ())
    with pytest.raises(ValueError, match=r"route\.request\.header\.<name>"):
        authorizer(invoker, ("header.Authorization",))
