"""The door's settings in cdk.json: a $connect handler, an authorizer, handshake limits and the
@connections API, read into infra/door.py's objects and checked with messages naming each key.
"""

from __future__ import annotations

import re

from infra.config_reader import ConfigError, SettingsReader
from infra.door import (
    CONNECT_EVENTS,
    CONNECTIONS_DEFAULT_PORT,
    CONNECTIONS_MODES,
    ConnectHandler,
    ConnectionsApi,
    Door,
    HandshakeLimits,
    JwtAuthorizer,
    LambdaAuthorizer,
)
from runtime.config import JWT_ALGORITHMS
from runtime.names import PEER_PORT, WEBSOCKET_PORT

# The keys of the door's objects; the first of each is required.
CONNECT_HANDLER_SETTINGS = ("functionArn", "timeoutSeconds", "errorStatus", "connectEvent")
AUTHORIZER_SETTINGS = (
    "functionArn", "identitySources", "ttlSeconds", "ratePerSecond", "burst", "timeoutSeconds",
    "errorStatus",
)  # fmt: skip
JWT_AUTHORIZER_SETTINGS = (
    "issuer", "audiences", "jwksUrl", "algorithms", "tokenSource", "leewaySeconds",
)  # fmt: skip
CONNECTIONS_API_SETTINGS = ("securityGroupId", "port", "mode")
# Ports the node already listens on: the WebSocket (TCP) and peer (UDP) ports of infra/service.py.
RESERVED_PORTS = (WEBSOCKET_PORT, PEER_PORT)
# The node's limits for a function call (runtime/config.py): under API Gateway's 29 s.
FUNCTION_TIMEOUT_SECONDS = (0.1, 29)
_SECURITY_GROUP = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
# Where a Lambda authorizer finds the identity; the names end up comma-joined in one variable.
_IDENTITY_SOURCE = re.compile(r"^route\.request\.(header|querystring)\.[^\s,]+$")
_TOKEN_SOURCE = re.compile(r"^(header|query):[^\s,]+$")


def read_door(reader: SettingsReader, regions: tuple[str, ...], egress: str) -> Door:
    """The settings a handshake meets, and the @connections API."""
    connect_handler = reader.section("connectHandler", CONNECT_HANDLER_SETTINGS)
    authorizer = reader.section("authorizer", AUTHORIZER_SETTINGS)
    jwt = reader.section("jwtAuthorizer", JWT_AUTHORIZER_SETTINGS)
    if authorizer is not None and jwt is not None:
        raise ConfigError(
            f"{reader.where}.authorizer and jwtAuthorizer do not go together: a handshake "
            "meets one authorizer; keep one"
        )
    if jwt is not None and egress == "vpc-endpoints":
        raise ConfigError(
            f"{reader.where}.jwtAuthorizer needs egress nat-gateways: nodes fetch the issuer's "
            "key set over the internet, and egress vpc-endpoints has no route there"
        )
    api = reader.section("connectionsApi", CONNECTIONS_API_SETTINGS)
    return Door(
        connect_handler=_connect_handler(connect_handler, regions),
        authorizer=_authorizer(authorizer, regions),
        jwt_authorizer=_jwt_authorizer(jwt),
        handshake_limits=HandshakeLimits(
            rate_per_ip=reader.number("handshakeRatePerIp", 0, 1_000_000),
            burst_per_ip=reader.limit_burst("handshakeBurstPerIp", "handshakeRatePerIp", 1_000_000),
            rate=reader.number("handshakeRate", 0, 1_000_000),
            burst=reader.limit_burst("handshakeBurst", "handshakeRate", 10_000_000),
        ),
        connections_api=_connections_api(api),
    )


def _connect_handler(
    reader: SettingsReader | None, regions: tuple[str, ...]
) -> ConnectHandler | None:
    if reader is None:
        return None
    return ConnectHandler(
        functions=reader.functions("functionArn", regions, required=True),
        timeout_seconds=reader.number("timeoutSeconds", *FUNCTION_TIMEOUT_SECONDS),
        error_status=reader.optional_integer("errorStatus", 400, 599, "an HTTP status"),
        connect_event=reader.choice("connectEvent", CONNECT_EVENTS, None),
    )


def _authorizer(reader: SettingsReader | None, regions: tuple[str, ...]) -> LambdaAuthorizer | None:
    if reader is None:
        return None
    return LambdaAuthorizer(
        functions=reader.functions("functionArn", regions, required=True),
        identity_sources=reader.strings(
            "identitySources",
            _IDENTITY_SOURCE,
            "route.request.header.<name> or route.request.querystring.<name>",
        ),
        ttl_seconds=reader.number("ttlSeconds", 0, 3600),
        rate_per_second=reader.number("ratePerSecond", 0.1, 100_000),
        burst=reader.optional_integer("burst", 1, 1_000_000, "calls in a burst"),
        timeout_seconds=reader.number("timeoutSeconds", *FUNCTION_TIMEOUT_SECONDS),
        error_status=reader.optional_integer("errorStatus", 400, 599, "an HTTP status"),
    )


def _jwt_authorizer(reader: SettingsReader | None) -> JwtAuthorizer | None:
    if reader is None:
        return None
    algorithms = None
    if reader.raw.get("algorithms") is not None:
        algorithms = reader.strings(
            "algorithms", re.compile("|".join(JWT_ALGORITHMS)), ", ".join(JWT_ALGORITHMS)
        )
    return JwtAuthorizer(
        issuer=reader.required_https_url("issuer"),
        audiences=reader.strings("audiences", re.compile(r"^[^\s,]+$"), "a name without commas"),
        jwks_url=reader.https_url("jwksUrl"),
        algorithms=algorithms,
        token_source=reader.text("tokenSource", _TOKEN_SOURCE, "header:<name> or query:<name>"),
        leeway_seconds=reader.number("leewaySeconds", 0, 300),
    )


def _connections_api(reader: SettingsReader | None) -> ConnectionsApi | None:
    if reader is None:
        return None
    group = reader.text(
        "securityGroupId", _SECURITY_GROUP, "a security group ID (sg-...)", required=True
    )
    port = reader.integer("port", 1024, 65535, CONNECTIONS_DEFAULT_PORT)
    if port in RESERVED_PORTS:
        raise reader._fail("port", f"must not be one of the node's ports {RESERVED_PORTS}", port)
    assert group is not None
    return ConnectionsApi(
        security_group_id=group,
        port=port,
        mode=reader.choice("mode", CONNECTIONS_MODES, "token"),
    )
