"""The handshake benchmark: `python -m bench.handshakes` (`--quick`: a smoke run, no report).

The door a node keeps before its 101 (an authorizer, a $connect handler) costs every handshake
something; this measures how much, in one run, on one machine, with one load generator. Each
configuration is its own `python -m runtime serve` process (echo origin, local only), all of
them pinned to CPU 0 and only one under load at a time:

1. no authorizer: the baseline;
2. the JWT authorizer (`--jwt-issuer`, `--jwt-audiences`, `--jwt-jwks-url`), an RS256 key made
   here with cryptography and its key set served by this process: every handshake with a
   different valid token (distinct `sub` and `jti`, so the node's verified-token cache never
   answers: this is the cost of verifying) and, reported apart, every handshake with the same
   token (cache hits);
3. the Lambda REQUEST authorizer (`--authorizer-function`, identity source the Authorization
   header, TTL 300), every handshake with the same token: the node reaches a stand-in for
   Lambda's Invoke API in this process through AWS_ENDPOINT_URL_LAMBDA, which counts invokes
   (one per TTL is right);
4. a $connect handler over HTTP (`--connect-handler-url`, a stand-in answering 200): a
   diagnostic, with no target.

The load generator (this process, on CPU 1) keeps `concurrency` handshakes in flight; each is a
full opening handshake (101 and Sec-WebSocket-Accept checked) and then a close handshake, written
by hand on uvloop's transports so that the generator costs far less per handshake than any
server it measures. Configurations rotate within each round. Targets (the issue's): JWT with
distinct tokens at least 0.70 of the baseline's handshakes per second, the cached Lambda
authorizer at least 0.90. To show the generator is not what limits the node, the same generator
also handshakes with a bare `websockets` server and a picows server on CPU 0. Any handshake
refused or lost, or a count that disagrees (verifications, cache hits, invokes, handler calls,
connections opened), fails the run (exit status 1, no report). A full run writes the
"Handshakes with authorizers" section of docs/performance.md; every run writes
bench/results/handshakes[-quick].json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm
from websockets.utils import accept_key, generate_key

from bench import report
from bench.common import BenchFailure, finish, run_harness
from bench.procs import REPO, Child, Fleet, MachineWindow, free_port, pick_cpus, wait_listening
from bench.stats import percentile
from runtime.transports.base import Allow
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_client import HttpClient
from runtime.transports.http1_server import HttpServer
from runtime.transports.jwt_authorizer import JwtAuthorizer
from runtime.wire.events import HandshakeDetails
from runtime.wire.jwks import parse_key_set
from runtime.wire.jws import check_claims, read_token

SECTION = "## Handshakes with authorizers"
COMMAND = ".venv/bin/python -m bench.handshakes"
JWT_MIN = 0.70  # JWT, every token different / no authorizer, handshakes per second
LAMBDA_MIN = 0.90  # cached Lambda authorizer / no authorizer
HANDSHAKE_TIMEOUT = 10.0  # seconds a handshake may take before it counts as lost
CLOSE_TIMEOUT = 5.0  # seconds the close handshake may take
SETTLE_TIMEOUT = 10.0  # seconds a node may take to forget every connection of a run
JWT_COST_TOKENS = 1000  # fresh tokens timed through the JWT authorizer in this process
RUN_SECONDS_PER_HANDSHAKE = 0.05  # a run's time limit: generous, but a dead server cannot hang it
ISSUER = "http://127.0.0.1/bench-issuer"  # compared, never fetched: the key set has its own URL
AUDIENCE = "bench-handshakes"
KID = "bench-key-1"
FUNCTION = "bench-authorizer"
INVOKE_PATH = f"/2015-03-31/functions/{FUNCTION}/invocations"
JWKS_PATH = "/jwks.json"
CONNECT_PATH = "/connect"
AUTHORIZER_TTL = 300.0
REGION = "us-east-1"
# Dummy credentials and region for the Lambda node's boto3; its endpoint is this process.
LAMBDA_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}

log = logging.getLogger("bench.handshakes")


@dataclass(frozen=True)
class Plan:
    quick: bool = False
    handshakes: int = 3000  # measured, per configuration, over all rounds
    rounds: int = 10  # short rounds, rotating: a busy spell of the machine hits all alike
    concurrency: int = 50  # handshakes in flight at once
    warmup: int = 100  # per configuration, before the first round, not measured
    connect_handler: bool = True  # configuration 4, the diagnostic

    @property
    def per_round(self) -> int:
        return self.handshakes // self.rounds


QUICK = Plan(quick=True, handshakes=200, rounds=1, warmup=20)


# What the node's door asks: a key set, a Lambda function, a $connect handler (stand-ins here)


class StandIns:
    """The JWKS URL, Lambda's Invoke API and a $connect handler, on one HTTP server in this
    process (CPU 1, beside the generator), each counting what it was asked."""

    def __init__(self, jwks: bytes) -> None:
        self.jwks = jwks
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []

    async def route(self, request: Request) -> Response:
        if request.method == "GET" and request.path == JWKS_PATH:
            self.counts["jwks"] += 1
            return Response(200, self.jwks, {"Content-Type": "application/json"})
        if request.method == "POST" and request.path == INVOKE_PATH:
            self.counts["invokes"] += 1
            return json_response(self.policy(request.body))
        if request.method == "POST" and request.path == CONNECT_PATH:
            self.counts["connect"] += 1
            return Response(200)
        self.errors.append(f"{request.method} {request.path}")
        return json_response({"message": "not found"}, 404)

    def policy(self, body: bytes) -> dict[str, Any]:
        """What a REQUEST authorizer answers to allow: an Allow on the event's own methodArn."""
        event = json.loads(body)
        return {
            "principalId": "bench-user",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Action": "execute-api:Invoke",
                        "Effect": "Allow",
                        "Resource": event["methodArn"],
                    }
                ],
            },
            "context": {"tier": "bench"},
        }


class Issuer:
    """An RS256 key pair, its key set, and tokens the JWT node accepts."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> bytes:
        public = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        public.update({"kid": KID, "use": "sig", "alg": "RS256"})
        return json.dumps({"keys": [public]}).encode()

    def token(self, subject: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "jti": secrets.token_hex(8),
            "iat": now,
            "exp": now + 3600,
            "scope": "chat",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})


async def jwt_costs(issuer: Issuer, tokens: Sequence[str], jwks_url: str) -> dict[str, float]:
    """Microseconds per token of the node's JWT authorizer and of its parts, in this process (on
    the generator's core, idle between runs) and on tokens it has not seen: where a
    verification's time goes, without a profiler's distortion."""
    authorizer = JwtAuthorizer(ISSUER, (AUDIENCE,), jwks_url)
    await authorizer.start()  # fetches the key set from the stand-in, as the node did
    try:
        details = [
            HandshakeDetails("/", [("Authorization", f"Bearer {token}")], [], "127.0.0.1", None)
            for token in tokens
        ]
        started = time.perf_counter()
        for one in details:
            verdict = await authorizer.authorize(one, {})
            if not isinstance(verdict, Allow):
                raise BenchFailure(f"the JWT authorizer refused a bench token: {verdict}")
        authorize = time.perf_counter() - started
    finally:
        await authorizer.close()
    keys, _ = parse_key_set(issuer.jwks(), ("RS256",))
    key = keys.find(KID, "RS256")
    decoder = jwt.PyJWT({"require": ["exp", "iss"], "verify_aud": False})
    public = issuer.key.public_key()
    read = [read_token(token) for token in tokens]

    def each(work: Callable[[int], object]) -> float:
        started = time.perf_counter()
        for index in range(len(tokens)):
            work(index)
        return (time.perf_counter() - started) / len(tokens) * 1e6

    now = time.time()
    return {
        "authorize_us": authorize / len(tokens) * 1e6,
        "read_us": each(lambda i: read_token(tokens[i])),
        "rsa_verify_us": each(
            lambda i: public.verify(
                read[i].signature, read[i].signing_input, padding.PKCS1v15(), hashes.SHA256()
            )
        ),
        "claims_us": each(lambda i: check_claims(read[i].claims(), ISSUER, (AUDIENCE,), now)),
        "pyjwt_decode_us": each(
            lambda i: decoder.decode(tokens[i], key, algorithms=["RS256"], issuer=ISSUER)
        ),
        "token_chars": statistics.fmean(len(token) for token in tokens),
        "tokens": len(tokens),
    }


# The load generator


# Extra header lines of handshake `i` (b"Name: value\r\n" each), encoded once before a run.
Headers = Callable[[int], bytes]
MAX_ANSWER_HEAD = 64 * 1024
MASK = b"\x5a\xc3\x19\x7e"
# A client's close frame, code 1000, masked as a client's must be.
CLOSE_FRAME = b"\x88\x82" + MASK + bytes(a ^ b for a, b in zip(b"\x03\xe8", MASK, strict=False))


def no_headers(index: int) -> bytes:
    return b""


def bearer(token: str) -> bytes:
    return f"Authorization: Bearer {token}\r\n".encode()


class HandshakeClient(asyncio.Protocol):
    """One connection: the opening handshake (checked: 101 and the right Sec-WebSocket-Accept),
    then the closing one (a masked close frame out, the server's close frame back, then the
    TCP close). Written by hand on the event loop's transport: a client library parses and builds
    far more per connection, and the generator must be much faster than any server it measures.
    `done` gets "ok" or what went wrong once the connection is gone."""

    def __init__(self, request: bytes, accept: bytes) -> None:
        self.request = request
        self.accept = accept
        self.buffer = bytearray()
        self.opened_at = 0.0  # perf_counter() at the 101
        self.outcome = ""
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.opened_at:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_ANSWER_HEAD:
                    self._end("answer head too large")
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            problem = answer_problem(head, self.accept)
            if problem:
                self._end(problem)
                return
            self.opened_at = time.perf_counter()
            assert self.transport is not None
            self.transport.write(CLOSE_FRAME)
        self._frames()

    def _frames(self) -> None:
        """Skip the server's frames until its close frame (none other is expected)."""
        while len(self.buffer) >= 2:
            first, second = self.buffer[0], self.buffer[1]
            size, offset = second & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(self.buffer[2:4]), 4
            elif size == 127:
                size, offset = int.from_bytes(self.buffer[2:10]), 10
            if second & 0x80 or len(self.buffer) < offset + size:
                if second & 0x80:
                    self._end("masked frame from the server")
                return
            del self.buffer[: offset + size]
            if first & 0x0F == 0x8:
                self._end("ok")
                return

    def _end(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.outcome:
            self.outcome = (
                "closed before the close frame" if self.opened_at else "closed before 101"
            )
        if not self.done.done():
            self.done.set_result(self.outcome)


def answer_problem(head: bytes, accept: bytes) -> str:
    """What is wrong with an opening handshake's answer head, or "" when it accepts."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
        return "not an HTTP/1.1 answer"
    if parts[1] != b"101":
        return f"HTTP {int(parts[1])}"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-accept":
            return "" if value.strip() == accept else "wrong Sec-WebSocket-Accept"
    return "no Sec-WebSocket-Accept"


@dataclass
class Run:
    """One batch of handshakes against one server, as the generator saw it."""

    handshakes: int = 0  # opened and closed cleanly
    seconds: float = 0.0  # from the first handshake's start to the last one's close
    latencies: list[float] = field(default_factory=list)  # connect to 101, seconds
    failures: Counter[str] = field(default_factory=Counter)
    generator_cpu: float = 0.0


async def handshake_run(
    url: str, count: int, concurrency: int, headers: Headers, first: int = 0
) -> Run:
    """`count` opening and closing handshakes, `concurrency` at a time; handshake `i` carries
    `headers(first + i)`. A refusal, a timeout or an unclean close is a failure, counted by kind."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nUser-Agent: bench-handshakes\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    result = Run()
    issued = 0
    deadline = time.monotonic() + 5 + count * RUN_SECONDS_PER_HANDSHAKE

    async def one(index: int) -> None:
        key = generate_key()
        request = head + f"Sec-WebSocket-Key: {key}\r\n".encode() + headers(index) + b"\r\n"
        accept = accept_key(key).encode()
        started = time.perf_counter()
        try:
            transport, client = await asyncio.wait_for(
                loop.create_connection(lambda: HandshakeClient(request, accept), host, port),
                HANDSHAKE_TIMEOUT,
            )
        except Exception as exc:  # refused, reset, timeout: each counted by kind
            result.failures[f"connect: {type(exc).__name__}"] += 1
            return
        try:
            outcome = await asyncio.wait_for(client.done, HANDSHAKE_TIMEOUT + CLOSE_TIMEOUT)
        except TimeoutError:
            transport.abort()
            outcome = "timed out after 101" if client.opened_at else "timed out before 101"
        if outcome != "ok":
            result.failures[outcome] += 1
            return
        result.latencies.append(client.opened_at - started)
        result.handshakes += 1

    async def worker() -> None:
        nonlocal issued
        while issued < count:
            if time.monotonic() > deadline:
                result.failures["run out of time"] += count - issued
                issued = count
                return
            issued += 1
            await one(first + issued - 1)

    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    result.seconds = time.perf_counter() - started
    result.generator_cpu = time.process_time() - cpu
    return result


# The servers and configurations


@dataclass
class Server:
    """A process on CPU 0 that takes handshakes: a node, or a bare reference server."""

    key: str
    child: Child
    url: str
    stats_client: HttpClient | None = None  # a node's GET /stats

    async def stats(self) -> dict[str, Any]:
        if self.stats_client is None:
            return {}
        return (await self.stats_client.request("GET")).json()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Configuration:
    key: str
    label: str
    server: str  # the Server.key it runs against
    target: float | None = None  # the least rate / the baseline's
    generator_check: bool = False  # a reference server, not the node


CONFIGURATIONS = (
    Configuration("none", "no authorizer (baseline)", "none"),
    Configuration("jwt", "JWT, a different token each handshake", "jwt", JWT_MIN),
    Configuration("jwt-cached", "JWT, the same token (verified-token cache)", "jwt"),
    Configuration("lambda", "Lambda REQUEST authorizer, cached (TTL 300)", "lambda", LAMBDA_MIN),
    Configuration("connect", "$connect handler over HTTP (diagnostic)", "connect"),
    Configuration("websockets", "bare websockets server", "websockets", generator_check=True),
    Configuration("picows", "picows server", "picows", generator_check=True),
)


@dataclass
class Tally:
    """A configuration's measured rounds, summed; `deltas` are the node's counters' changes
    over its runs (warm-up included), for the checks."""

    handshakes: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    server_cpu: float = 0.0
    generator_cpu: float = 0.0
    round_rates: list[float] = field(default_factory=list)
    attempted: int = 0  # warm-up included
    deltas: Counter[str] = field(default_factory=Counter)

    def add(self, run: Run, server_cpu: float) -> None:
        self.handshakes += run.handshakes
        self.seconds += run.seconds
        self.latencies += run.latencies
        self.server_cpu += server_cpu
        self.generator_cpu += run.generator_cpu
        self.round_rates.append(run.handshakes / run.seconds if run.seconds else 0.0)


# Counters of a node's GET /stats each run's checks compare: top-level and per door.
NODE_COUNTERS = ("connectionsOpened", "connectionsClosed")
DOOR_COUNTERS = {
    "authorizer": ("verified", "cacheHits", "refused", "keyFetches", "calls", "joined", "errors"),
    "connectHandler": ("calls", "accepted", "refused", "errors", "timeouts"),
}


def counters(stats: dict[str, Any]) -> Counter[str]:
    """The figures of a node's stats the checks compare, flattened: `authorizer.calls` etc.
    Every `handshakesRefused*` counter is summed into `handshakesRefused`."""
    out: Counter[str] = Counter()
    for name in NODE_COUNTERS:
        out[name] = int(stats.get(name, 0))
    out["handshakesRefused"] = sum(
        int(value) for name, value in stats.items() if name.startswith("handshakesRefused")
    )
    for door, names in DOOR_COUNTERS.items():
        figures = stats.get(door) or {}
        for name in names:
            if name in figures:
                out[f"{door}.{name}"] = int(figures[name])
    return out


class HandshakeBench:
    def __init__(self, plan: Plan, fleet: Fleet, cpus: dict[str, int | None]) -> None:
        self.plan = plan
        self.fleet = fleet
        self.cpus = cpus
        self.token = secrets.token_hex(16)
        self.issuer = Issuer()
        self.stand_ins = StandIns(self.issuer.jwks())
        self.http = HttpServer(self.stand_ins.route, max_body_bytes=1 << 20, name="stand-ins")
        self.servers: dict[str, Server] = {}
        self.configurations = [
            c for c in CONFIGURATIONS if c.key != "connect" or plan.connect_handler
        ]
        self.tallies = {c.key: Tally() for c in self.configurations}
        self.headers: dict[str, Headers] = {}
        self.issued: Counter[str] = Counter()  # handshakes started per configuration
        self.same_token_verifications = 0
        self.jwks_fetches = 0
        self.tokens: list[str] = []
        self.jwt_costs: dict[str, float] = {}
        self._clients: list[HttpClient] = []

    # Starting

    async def start(self) -> None:
        await self.http.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{self.http.port}"
        node_flags = {
            "none": ([], {}),
            "jwt": (
                [
                    "--jwt-issuer", ISSUER,
                    "--jwt-audiences", AUDIENCE,
                    "--jwt-jwks-url", base + JWKS_PATH,
                ],
                {},
            ),
            "lambda": (
                [
                    "--authorizer-function", FUNCTION,
                    "--authorizer-identity-sources", "route.request.header.Authorization",
                    "--authorizer-ttl", f"{AUTHORIZER_TTL:g}",
                    "--aws-region", REGION,
                ],
                {**LAMBDA_ENV, "AWS_ENDPOINT_URL_LAMBDA": base},
            ),
            "connect": (["--connect-handler-url", base + CONNECT_PATH], {}),
        }  # fmt: skip
        if not self.plan.connect_handler:
            del node_flags["connect"]
        waits = []
        for key, (flags, env) in node_flags.items():
            waits += self._spawn_node(key, flags, env)
        for kind in ("websockets", "picows"):
            port = free_port()
            child = self.fleet.python(
                f"handshakes-{kind}",
                ["-m", "bench.servers", kind, "--listen", f"127.0.0.1:{port}"],
                self.cpus["server"],
            )
            self.servers[kind] = Server(kind, child, f"ws://127.0.0.1:{port}/")
            waits.append((child, port))
        for child, port in waits:
            await wait_listening(child, port)
        await self._check_key_set()
        log.info("signing %d tokens", self.plan.warmup + self.plan.handshakes)
        self.tokens = [
            self.issuer.token(f"user-{n}") for n in range(self.plan.warmup + self.plan.handshakes)
        ]
        tokens = [bearer(token) for token in self.tokens]
        same = bearer(self.issuer.token("same-user"))
        lambda_token = bearer("bench-lambda-token")
        self.headers = {
            "none": no_headers,
            "jwt": tokens.__getitem__,
            "jwt-cached": lambda index: same,
            "lambda": lambda index: lambda_token,
            "connect": no_headers,
            "websockets": no_headers,
            "picows": no_headers,
        }

    def _spawn_node(
        self, key: str, flags: list[str], env: dict[str, str]
    ) -> list[tuple[Child, int]]:
        ws_port, command_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "runtime", "serve",
            "--listen", f"127.0.0.1:{ws_port}",
            "--command-listen", f"127.0.0.1:{command_port}",
            "--command-token", self.token,
            "--origin-transport", "echo",
            "--keepalive-interval", "0",
            "--local-only", "true",
            "--log-level", "WARNING",
            "--log-format", "json",
            *flags,
        ]  # fmt: skip
        if env:  # `env` execs the node: the pid (and its CPU time) stays the child's
            argv = ["env", *(f"{name}={value}" for name, value in env.items()), *argv]
        child = self.fleet.spawn(f"handshakes-node-{key}", argv, self.cpus["server"])
        client = HttpClient(
            f"http://127.0.0.1:{command_port}/stats",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        self._clients.append(client)
        self.servers[key] = Server(key, child, f"ws://127.0.0.1:{ws_port}/", client)
        return [(child, ws_port), (child, command_port)]

    async def _check_key_set(self) -> None:
        """The JWT node fetched the key set at its start; without it every handshake gets 503."""
        figures = (await self.servers["jwt"].stats()).get("authorizer", {})
        fetched = figures.get("keyFetches", 0) - figures.get("keyFetchFailures", 0)
        if fetched < 1 or self.stand_ins.counts["jwks"] < 1:
            raise BenchFailure(f"the JWT node has no key set: {figures}")

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        await self.http.stop(timeout=1.0)

    # Measuring

    async def batch(self, configuration: Configuration, count: int, measured: bool) -> None:
        """`count` handshakes of one configuration; measured ones join its tally."""
        server = self.servers[configuration.server]
        tally = self.tallies[configuration.key]
        before = counters(await server.stats())
        cpu = server.child.cpu_seconds()
        first = self.issued[configuration.key]
        self.issued[configuration.key] += count
        result = await handshake_run(
            server.url, count, self.plan.concurrency, self.headers[configuration.key], first
        )
        after = await self._settle(server)
        server_cpu = server.child.cpu_seconds() - cpu
        tally.attempted += count
        tally.failures.update(result.failures)
        if server.stats_client is not None:
            delta = counters(after) - before
            tally.deltas.update(delta)
            if configuration.key == "jwt-cached":
                # One verification per run at most: the cached answer lives 60 s.
                self.same_token_verifications = max(
                    self.same_token_verifications, delta["authorizer.verified"]
                )
        if measured:
            tally.add(result, server_cpu)
        if result.failures:
            raise BenchFailure(
                f"{configuration.label}: {sum(result.failures.values())} of {count} handshakes "
                f"failed: {dict(result.failures)}\n{server.child.log_tail()}"
            )

    async def _settle(self, server: Server) -> dict[str, Any]:
        """A node's stats once it holds no connection and no event (its CPU for the run's
        DISCONNECTs included); a reference server's stay empty."""
        if server.stats_client is None:
            await asyncio.sleep(0.05)
            return {}
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            stats = await server.stats()
            if stats.get("connections") == 0 and stats.get("bufferedEvents") == 0:
                return stats
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"{server.key} node still holds {stats.get('connections')} connections and "
                    f"{stats.get('bufferedEvents')} events {SETTLE_TIMEOUT:g} s after a run"
                )
            await asyncio.sleep(0.02)

    async def measure(self) -> dict[str, Any]:
        plan = self.plan
        await self.start()
        try:
            log.info("warm-up: %d handshakes per configuration", plan.warmup)
            for configuration in self.configurations:
                await self.batch(configuration, plan.warmup, measured=False)
            machine = MachineWindow([server.child for server in self.servers.values()])
            for number in range(plan.rounds):
                shift = number % len(self.configurations)
                order = self.configurations[shift:] + self.configurations[:shift]
                log.info(
                    "round %d of %d: %d handshakes each", number + 1, plan.rounds, plan.per_round
                )
                for configuration in order:
                    await self.batch(configuration, plan.per_round, measured=True)
            noise = machine.result()
            self.jwks_fetches = self.stand_ins.counts["jwks"]  # the nodes'; the next is ours
            log.info("timing the JWT authorizer in this process")
            self.jwt_costs = await jwt_costs(
                self.issuer,
                self.tokens[:JWT_COST_TOKENS],
                f"http://127.0.0.1:{self.http.port}{JWKS_PATH}",
            )
            warnings = {
                key: server.child.log_lines()
                for key, server in self.servers.items()
                if server.stats_client is not None
            }
        finally:
            await self.close()
            for server in self.servers.values():
                self.fleet.stop(server.child)
        return self.results(noise, warnings)

    def results(self, noise: dict[str, float], warnings: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for configuration in self.configurations:
            tally = self.tallies[configuration.key]
            out[configuration.key] = summarize(tally)
        return {
            "configurations": out,
            "counts": {
                "attempted": {c.key: self.tallies[c.key].attempted for c in self.configurations},
                "node": {c.key: dict(self.tallies[c.key].deltas) for c in self.configurations},
                "standIns": {**self.stand_ins.counts, "jwks": self.jwks_fetches},
                "standInErrors": self.stand_ins.errors[:5],
                "sameTokenVerificationsPerRun": self.same_token_verifications,
            },
            "machine_noise": noise,
            "node_log_lines": warnings,
            "jwt_costs": self.jwt_costs,
        }


def summarize(tally: Tally) -> dict[str, Any]:
    """Rate (all measured handshakes / their time), latency percentiles, CPU per handshake."""
    n = tally.handshakes
    seconds = tally.seconds or 1e-9
    return {
        "handshakes": n,
        "seconds": round(tally.seconds, 3),
        "per_second": n / seconds,
        "round_rates": [round(rate, 1) for rate in tally.round_rates],
        "p50_ms": percentile(tally.latencies, 0.50) * 1000 if tally.latencies else 0.0,
        "p99_ms": percentile(tally.latencies, 0.99) * 1000 if tally.latencies else 0.0,
        "server_cpu_us": tally.server_cpu / n * 1e6 if n else 0.0,
        "server_busy_percent": 100 * tally.server_cpu / seconds,
        "generator_cpu_us": tally.generator_cpu / n * 1e6 if n else 0.0,
        "generator_busy_percent": 100 * tally.generator_cpu / seconds,
        "failures": dict(tally.failures),
    }


# Checks and verdicts


def check_counts(r: dict[str, Any], plan: Plan, elapsed: float) -> list[dict[str, Any]]:
    """Every handshake opened exactly once where it should have been, and each door was asked
    as often as it should: a handshake the node refused, or a cache that did not answer (or
    answered when it must not), fails the run."""
    counts, node = r["counts"], r["counts"]["node"]
    attempted = counts["attempted"]
    checks: list[dict[str, Any]] = []

    def check(name: str, measured: Any, expected: Any, ok: bool | None = None) -> None:
        checks.append(
            {
                "name": name,
                "measured": measured,
                "expected": expected,
                "ok": measured == expected if ok is None else bool(ok),
            }
        )

    for key, figures in r["configurations"].items():
        check(f"{key}: handshakes failed", sum(figures["failures"].values()), 0)
        check(f"{key}: handshakes measured", figures["handshakes"], plan.per_round * plan.rounds)
    for key in (c.key for c in node_configurations(r)):
        per_server = node.get(key, {})
        # jwt and jwt-cached share a node: each configuration's runs are its own deltas.
        check(
            f"{key}: node connectionsOpened", per_server.get("connectionsOpened", 0), attempted[key]
        )
        check(f"{key}: node handshakes refused", per_server.get("handshakesRefused", 0), 0)
    jwt, cached = node.get("jwt", {}), node.get("jwt-cached", {})
    check("jwt: tokens verified", jwt.get("authorizer.verified", 0), attempted["jwt"])
    check("jwt: verified-token cache hits", jwt.get("authorizer.cacheHits", 0), 0)
    same = cached.get("authorizer.verified", 0) + cached.get("authorizer.cacheHits", 0)
    check("jwt-cached: verified + cache hits", same, attempted["jwt-cached"])
    check(
        "jwt-cached: verifications per run (the cached answer lives 60 s)",
        counts["sameTokenVerificationsPerRun"],
        "<= 1",
        counts["sameTokenVerificationsPerRun"] <= 1,
    )
    lam = node.get("lambda", {})
    calls = lam.get("authorizer.calls", 0)
    windows = 1 + int(elapsed // AUTHORIZER_TTL)
    check("lambda: invokes (one per TTL)", calls, f"1..{windows}", 1 <= calls <= windows)
    check("lambda: invokes the stand-in saw", counts["standIns"].get("invokes", 0), calls)
    answered = calls + lam.get("authorizer.cacheHits", 0) + lam.get("authorizer.joined", 0)
    check("lambda: calls + cache hits + joined", answered, attempted["lambda"])
    check("lambda: errors", lam.get("authorizer.errors", 0), 0)
    if "connect" in node:
        handled = node["connect"]
        check(
            "connect: handler calls", handled.get("connectHandler.calls", 0), attempted["connect"]
        )
        check(
            "connect: calls the stand-in saw",
            counts["standIns"].get("connect", 0),
            attempted["connect"],
        )
        check("connect: accepted", handled.get("connectHandler.accepted", 0), attempted["connect"])
    check("stand-ins: requests to unknown paths", len(counts["standInErrors"]), 0)
    return checks


def ratio(r: dict[str, Any], key: str) -> float:
    """A configuration's handshakes per second over the baseline's."""
    base = r["configurations"]["none"]["per_second"]
    return r["configurations"][key]["per_second"] / base if base else 0.0


def verdicts(r: dict[str, Any]) -> dict[str, bool]:
    """Each target: met or not (missing a target does not fail the run; a wrong count does)."""
    return {c.key: ratio(r, c.key) >= c.target for c in CONFIGURATIONS if c.target is not None}


def node_configurations(r: dict[str, Any]) -> list[Configuration]:
    return [c for c in CONFIGURATIONS if not c.generator_check and c.key in r["configurations"]]


def generator_verdict(r: dict[str, Any]) -> tuple[str, str]:
    """Is the generator the bottleneck? Not when it handshakes with a picows server at least
    GENERATOR_HEADROOM times as fast as with the fastest node configuration; nor when, short of
    that, it costs that many times less CPU per handshake than the node and had time to spare
    (then the machine, not the generator, held both back)."""
    figures = r["configurations"]
    wanted = report.GENERATOR_HEADROOM
    fastest = max(figures[c.key]["per_second"] for c in node_configurations(r))
    picows, base = figures["picows"], figures["none"]
    headroom = picows["per_second"] / fastest if fastest else 0.0
    cheaper = base["server_cpu_us"] / base["generator_cpu_us"] if base["generator_cpu_us"] else 0
    facts = (
        f"With a picows server the generator reached {picows['per_second']:,.0f} handshakes/s, "
        f"{headroom:.2f}x the fastest node configuration ({fastest:,.0f}/s). In the baseline's "
        f"runs the generator spent {base['generator_cpu_us']:,.0f} us of CPU per handshake "
        f"against the node's {base['server_cpu_us']:,.0f} us ({cheaper:.1f}x less) and was busy "
        f"{base['generator_busy_percent']:.0f}% of the time, the node "
        f"{base['server_busy_percent']:.0f}%; other processes on the machine used "
        f"{r['machine_noise']['others_percent']:.0f}% of a CPU over the rounds."
    )
    if headroom >= wanted:
        return "No", facts + " The node set the pace."
    if cheaper >= wanted and base["generator_busy_percent"] < 50:
        return "No", (
            facts + f" The picows rate is under the {wanted:g}x wanted, but the generator had "
            "time to spare in every run and one generator core can drive several times the "
            "node's rate: what held the picows runs down was the machine (the two cores shared "
            "with other processes, and a wake-up across cores per exchange), not the generator."
        )
    return "Possibly", (
        facts + f" That is under the {wanted:g}x wanted, so the generator may hold the node's "
        "rates down: read the node's CPU per handshake, which does not depend on the generator, "
        "rather than the rate ratios."
    )


# Report


def rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """configuration, handshakes, per second, vs baseline, p50, p99, node CPU, target, result."""
    out = []
    met = verdicts(r)
    for configuration in node_configurations(r):
        figures = r["configurations"][configuration.key]
        target = configuration.target
        out.append(
            (
                configuration.label,
                f"{figures['handshakes']:,}",
                f"{figures['per_second']:,.0f}",
                f"{ratio(r, configuration.key):.2f}",
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{figures['server_cpu_us']:,.0f}",
                "-" if target is None else f">= {target:.2f}",
                "-" if target is None else ("PASS" if met[configuration.key] else "MISS"),
            )
        )
    return out


def generator_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """server, per second, vs the baseline node, server CPU, server busy, generator busy/us."""
    out = []
    for key, label in (
        ("picows", "picows server"),
        ("websockets", "bare websockets server"),
        ("none", "node, no authorizer"),
        ("jwt", "node, JWT (different tokens)"),
    ):
        figures = r["configurations"][key]
        out.append(
            (
                label,
                f"{figures['per_second']:,.0f}",
                f"{ratio(r, key):.2f}",
                f"{figures['server_cpu_us']:,.0f}",
                f"{figures['server_busy_percent']:.0f}%",
                f"{figures['generator_busy_percent']:.0f}%",
                f"{figures['generator_cpu_us']:,.0f}",
            )
        )
    return out


HEADER = (
    "configuration",
    "handshakes",
    "handshakes/s",
    "vs no authorizer",
    "p50 (ms)",
    "p99 (ms)",
    "node CPU (us/handshake)",
    "target",
    "result",
)
GENERATOR_HEADER = (
    "server on CPU 0",
    "handshakes/s",
    "vs node, no authorizer",
    "server CPU (us/handshake)",
    "server busy",
    "generator busy",
    "generator CPU (us/handshake)",
)


def markdown(r: dict[str, Any]) -> str:
    plan, meta, counts = r["plan"], r["machine"], r["counts"]
    figures = r["configurations"]
    pin = (
        f"pinned with `taskset`: every server (the node configurations, the bare websockets and "
        f"picows servers) on CPU {meta['server_cpu']}, the load generator and the stand-ins (key "
        f"set, Lambda, $connect handler) on CPU {meta['load_cpu']}"
        if meta["pinned"]
        else "not pinned"
    )
    lam = counts["node"]["lambda"]
    jwt_node = counts["node"]["jwt"]
    cached_hits = counts["node"]["jwt-cached"].get("authorizer.cacheHits", 0)
    invokes = counts["standIns"].get("invokes", 0)
    paragraphs = [
        f"Generated by `{r['command']}` on {meta['date']} in {r['seconds']:.0f} s; "
        f"{meta['nproc']} CPUs ({meta['cpu_model']}), Python {meta['python']}, websockets "
        f"{meta['packages'].get('websockets')}, picows {meta['packages'].get('picows')}; {pin}. "
        "Every figure below is from this one run; a refused handshake or a count that disagrees "
        "fails the run (it writes no report).",
        "Each configuration is its own node (`python -m runtime serve --origin-transport echo "
        "--keepalive-interval 0 --local-only true`, the rest default), all started at once and "
        "only one under load at a time: no authorizer (the baseline); the JWT authorizer "
        "(`--jwt-issuer --jwt-audiences --jwt-jwks-url`, RS256, a 2048-bit key made with "
        "cryptography, its key set served by the harness); the Lambda REQUEST authorizer "
        "(`--authorizer-function --authorizer-identity-sources route.request.header.Authorization "
        f"--authorizer-ttl {AUTHORIZER_TTL:g}`) reaching a stand-in for Lambda's Invoke API in the "
        "harness through `AWS_ENDPOINT_URL_LAMBDA`; and a $connect handler over HTTP "
        "(`--connect-handler-url`, a stand-in answering 200 with no body), a diagnostic. "
        f"The JWT runs give every handshake a different token (its own `sub` and `jti`): the "
        "node's verified-token cache never answers, so that row is the cost of verifying a "
        "signature; the cached row gives every handshake the same token. The Lambda runs give "
        "every handshake the same Authorization header.",
        f"The generator keeps {plan['concurrency']} handshakes in flight, written by hand on "
        "uvloop's transports (a client library costs more per connection than the servers "
        "measured here): each is a full opening handshake, timed from the TCP connect to the "
        "101 (its Sec-WebSocket-Accept checked), then a close handshake (a masked close frame, "
        "the server's close frame, the TCP close). "
        f"{plan['warmup']} warm-up handshakes per configuration, then {plan['rounds']} rounds of "
        f"{plan['handshakes'] // plan['rounds']:,} each, the order rotating every round. "
        "Handshakes/s is every measured handshake over the time its runs took (first start to "
        "last close); node CPU is the node process's CPU time over its runs, until it held no "
        "connection and no event (its CONNECT and DISCONNECT events to the echo origin "
        "included), per handshake. With that many in flight, latency is mostly queueing: "
        f"about {plan['concurrency']} / the rate.",
    ]
    text = "\n\n".join(report.fill(p) for p in paragraphs)
    results = report.markdown_table(HEADER, rows(r))
    targets = report.fill(
        f"Targets (the issue's): JWT with a different token each handshake at least {JWT_MIN:.2f} "
        f"of the baseline's handshakes/s, the cached Lambda authorizer at least {LAMBDA_MIN:.2f}. "
        "Rates per round: "
        + "; ".join(
            f"{c.key} " + " / ".join(f"{rate:,.0f}" for rate in figures[c.key]["round_rates"])
            for c in node_configurations(r)
        )
        + "."
    )
    attempted = counts["attempted"]
    facts = report.fill(
        f"Counts, warm-up included. Lambda: {invokes} invoke(s) reached the stand-in for "
        f"{attempted['lambda']:,} handshakes (one per TTL is right); the node counted "
        f"{lam.get('authorizer.calls', 0)} call(s), {lam.get('authorizer.cacheHits', 0):,} "
        f"cache hits and {lam.get('authorizer.joined', 0)} handshakes that joined the call in "
        f"flight. JWT: {jwt_node.get('authorizer.verified', 0):,} tokens verified and "
        f"{jwt_node.get('authorizer.cacheHits', 0)} cache hits for {attempted['jwt']:,} "
        f"handshakes with new tokens; {cached_hits:,} cache hits for {attempted['jwt-cached']:,} "
        f"with the same token; the key set fetched {counts['standIns'].get('jwks', 0)} time(s). "
        f"$connect handler: {counts['standIns'].get('connect', 0):,} calls for "
        f"{attempted.get('connect', 0):,} handshakes. Node log lines at WARNING or above: "
        f"{sum(r['node_log_lines'].values())}. Over the rounds, other processes used "
        f"{r['machine_noise']['others_percent']:.0f}% of a CPU and the hypervisor took "
        f"{r['machine_noise']['steal_percent']:.0f}% (steal). Raw figures: "
        "bench/results/handshakes.json.",
    )
    verdict, reason = generator_verdict(r)
    generator_text = report.fill(
        "The same generator, with the same concurrency, in the same rounds, against a picows "
        "server (C parser) and a bare `websockets` server (`python -m bench.servers`) on CPU "
        f"{meta['server_cpu']}. " + reason
    )
    checks = report.markdown_table(
        ("check", "measured", "expected", "result"), report.check_rows(r["checks"])
    )
    return (
        f"{SECTION}\n\n{text}\n\n{results}\n\n{targets}\n\n{facts}\n\n"
        f"### Where a JWT handshake's time goes\n\n{jwt_breakdown(r)}\n\n"
        f"### Is the load generator the bottleneck? {verdict}\n\n{generator_text}\n\n"
        f"{report.markdown_table(GENERATOR_HEADER, generator_rows(r))}\n\n"
        f"Counts checked:\n\n{checks}\n"
    )


def jwt_breakdown(r: dict[str, Any]) -> str:
    """The JWT rows' node CPU split into what a token costs with and without its verification,
    and the verification timed in the harness by part."""
    figures, costs = r["configurations"], r["jwt_costs"]
    base, cached, new = (figures[key]["server_cpu_us"] for key in ("none", "jwt-cached", "jwt"))
    parts = costs["read_us"] + costs["rsa_verify_us"] + costs["claims_us"]
    return report.fill(
        f"Node CPU per handshake: {base:,.0f} us without an authorizer, {cached:,.0f} us with "
        f"the same token every time (+{cached - base:,.0f} us: the longer request, the cache "
        "lookup, the claims carried in the CONNECT and DISCONNECT events), "
        f"{new:,.0f} us with a new token every time (+{new - cached:,.0f} us more: the "
        f"verification). Timed in the harness's own process on {costs['tokens']:,} new tokens "
        f"of {costs['token_chars']:.0f} characters, the node's `JwtAuthorizer.authorize` takes "
        f"{costs['authorize_us']:.0f} us per token: reading the compact form (three base64url "
        f"segments, the header's JSON) {costs['read_us']:.0f} us, the RSA-2048 signature check "
        f"(cryptography) {costs['rsa_verify_us']:.0f} us, decoding and checking the claims "
        f"{costs['claims_us']:.0f} us ({parts:.0f} us together; the rest is the cache and the "
        "authorizer context). For comparison, PyJWT "
        f"{r['machine']['pyjwt']}'s own `decode` of the same tokens takes "
        f"{costs['pyjwt_decode_us']:.0f} us, signature check included, and it needs "
        "`get_unverified_header` before it to choose the key: it checks each base64url character "
        "in a Python loop, which is why the node reads the compact form itself and uses PyJWT "
        "for the keys and the signature check only. Figures in the harness's process are lower "
        "than the node's (warm caches, no event loop around them)."
    )


def print_summary(r: dict[str, Any]) -> None:
    print(report.markdown_table(HEADER, rows(r)))
    print()
    print(report.markdown_table(GENERATOR_HEADER, generator_rows(r)))
    print("is the load generator the bottleneck? " + " - ".join(generator_verdict(r)))
    for row in report.check_rows(r["checks"]):
        if row[-1] != "PASS":
            print("FAIL " + " | ".join(row))


# Entry points


async def main_async(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else Plan()
    overrides = {
        name: value
        for name, value in (
            ("handshakes", args.handshakes),
            ("rounds", args.rounds),
            ("concurrency", args.concurrency),
        )
        if value is not None
    }
    plan = replace(plan, connect_handler=not args.no_connect_handler, **overrides)
    if plan.rounds < 1 or plan.per_round < 2 or plan.concurrency < 1:
        print("error: need 1 round, 2 handshakes per round and 1 in flight", file=sys.stderr)
        return 2
    pin, cpus = pick_cpus(args.no_pin, ("server", "generator"))
    if pin:
        os.sched_setaffinity(0, {cpus["generator"]})  # type: ignore[arg-type]
    else:
        log.warning("not pinning: fewer than 2 cores or --no-pin; figures are less trustworthy")
    fleet = Fleet(REPO / "bench" / "results" / "logs", pin)
    pin = fleet.pin
    started = time.monotonic()
    bench = HandshakeBench(plan, fleet, cpus)
    try:
        results = await bench.measure()
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.close()
    meta = report.machine(pin, cpus["server"], cpus["generator"])
    meta["pyjwt"] = importlib.metadata.version("PyJWT")
    elapsed = time.monotonic() - started
    results.update(
        {
            "plan": asdict(plan),
            "machine": meta,
            "seconds": round(elapsed, 1),
            "command": " ".join([COMMAND, *args.argv]),
        }
    )
    results["checks"] = check_counts(results, plan, elapsed)
    results["targets"] = verdicts(results)
    print_summary(results)
    return finish(
        results,
        name="handshakes",
        quick=plan.quick,
        out=args.json,
        section=markdown,
        strict=args.strict,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.handshakes", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run, no report")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--handshakes", type=int, help="measured per configuration (3000)")
    parser.add_argument("--rounds", type=int, help="rounds they are split into (10; quick 1)")
    parser.add_argument("--concurrency", type=int, help="handshakes in flight (50)")
    parser.add_argument(
        "--no-connect-handler", action="store_true", help="skip the $connect handler diagnostic"
    )
    parser.add_argument("--json", type=Path, help="raw results (default bench/results/...)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return run_harness(log, "handshakes", main_async(args))


if __name__ == "__main__":
    sys.exit(main())
