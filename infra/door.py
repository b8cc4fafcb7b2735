"""The door of the nodes: what a handshake meets before it is accepted, and the @connections API.

cdk.json's `connectHandler`, `authorizer`, `jwtAuthorizer`, the `handshake*` limits and
`connectionsApi` (read and checked by infra/config.py) become the node's environment here, in
one pure function, so every variable the task definition gets is testable without a synthesis.
A setting left out leaves its variable out too: the node's own default applies
(runtime/config.py), and there is one place that default is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

CONNECTIONS_DEFAULT_PORT = 8081
CONNECTIONS_MODES = ("token", "network")
CONNECT_EVENTS = ("mark", "suppress")


@dataclass(frozen=True, kw_only=True)
class ConnectHandler:
    """The synchronous $connect handler: a Lambda function invoked at each handshake."""

    functions: Mapping[str, str]  # region -> function name or ARN
    timeout_seconds: float | None = None
    error_status: int | None = None
    connect_event: str | None = None


@dataclass(frozen=True, kw_only=True)
class LambdaAuthorizer:
    """A Lambda REQUEST authorizer, as API Gateway's: asked before the $connect handler."""

    functions: Mapping[str, str]
    identity_sources: tuple[str, ...]
    ttl_seconds: float | None = None
    rate_per_second: float | None = None
    burst: int | None = None
    timeout_seconds: float | None = None
    error_status: int | None = None


@dataclass(frozen=True, kw_only=True)
class JwtAuthorizer:
    """A JWT authorizer: tokens checked against an issuer's public key set, fetched over HTTPS."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str | None = None
    algorithms: tuple[str, ...] | None = None
    token_source: str | None = None
    leeway_seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class HandshakeLimits:
    """Handshakes per second per source IP and per node (unset: the node sets no limit)."""

    rate_per_ip: float | None = None
    burst_per_ip: int | None = None
    rate: float | None = None
    burst: int | None = None


@dataclass(frozen=True, kw_only=True)
class ConnectionsApi:
    """API Gateway's @connections API on the node's command listener, for an origin in the VPC.

    Only `security_group_id` may reach the port. The command token (a generated secret) guards
    /commands and /stats in either mode, and @connections too in mode "token".
    """

    security_group_id: str
    port: int = CONNECTIONS_DEFAULT_PORT
    mode: str = "token"


@dataclass(frozen=True, kw_only=True)
class Door:
    """Every door setting of one environment; the default is a door with none of them."""

    connect_handler: ConnectHandler | None = None
    authorizer: LambdaAuthorizer | None = None
    jwt_authorizer: JwtAuthorizer | None = None
    handshake_limits: HandshakeLimits = field(default_factory=HandshakeLimits)
    connections_api: ConnectionsApi | None = None

    def functions(self, region: str) -> list[str]:
        """The functions (names or ARNs) the nodes of `region` invoke for the door."""
        return [
            part.functions[region]
            for part in (self.connect_handler, self.authorizer)
            if part is not None
        ]

    def node_environment(self, region: str, function_arn: Callable[[str], str]) -> dict[str, str]:
        """The node's variables for the door in `region`; `function_arn` turns a name into an
        ARN (the stack's region and account), and leaves an ARN as it is.
        """
        environment: dict[str, str | None] = {}
        handler = self.connect_handler
        if handler is not None:
            environment |= {
                "CONNECT_HANDLER_FUNCTION": function_arn(handler.functions[region]),
                "CONNECT_HANDLER_TIMEOUT": _number(handler.timeout_seconds),
                "CONNECT_HANDLER_ERROR_STATUS": _number(handler.error_status),
                "CONNECT_EVENT": handler.connect_event,
            }
        authorizer = self.authorizer
        if authorizer is not None:
            environment |= {
                "AUTHORIZER_FUNCTION": function_arn(authorizer.functions[region]),
                "AUTHORIZER_IDENTITY_SOURCES": ",".join(authorizer.identity_sources),
                "AUTHORIZER_TTL": _number(authorizer.ttl_seconds),
                "AUTHORIZER_RATE": _number(authorizer.rate_per_second),
                "AUTHORIZER_BURST": _number(authorizer.burst),
                "AUTHORIZER_TIMEOUT": _number(authorizer.timeout_seconds),
                "AUTHORIZER_ERROR_STATUS": _number(authorizer.error_status),
            }
        jwt = self.jwt_authorizer
        if jwt is not None:
            environment |= {
                "JWT_ISSUER": jwt.issuer,
                "JWT_AUDIENCES": ",".join(jwt.audiences),
                "JWT_JWKS_URL": jwt.jwks_url,
                "JWT_ALGORITHMS": ",".join(jwt.algorithms) if jwt.algorithms else None,
                "JWT_TOKEN_SOURCE": jwt.token_source,
                "JWT_LEEWAY": _number(jwt.leeway_seconds),
            }
        limits = self.handshake_limits
        environment |= {
            "HANDSHAKE_RATE_PER_IP": _number(limits.rate_per_ip),
            "HANDSHAKE_BURST_PER_IP": _number(limits.burst_per_ip),
            "HANDSHAKE_RATE": _number(limits.rate),
            "HANDSHAKE_BURST": _number(limits.burst),
        }
        api = self.connections_api
        if api is not None:
            environment |= {
                "COMMAND_LISTEN": f"0.0.0.0:{api.port}",
                "CONNECTIONS_API": api.mode,
            }
        return {name: value for name, value in environment.items() if value is not None}


def _number(value: float | None) -> str | None:
    """A setting as the node parses it: 300 and 300.0 as "300", 2.5 as "2.5"."""
    if value is None:
        return None
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
