"""Every setting of a node: a CLI flag and the same-named environment variable, checked at once.

`--max-message-bytes` is also `MAX_MESSAGE_BYTES`; a flag wins over the environment. A bad value
stops the node before it listens, with a message naming the setting, the rule and the value.

Longer than 400 lines because it is the one table of every setting (its flag, variable, default,
rule and help) and the checks between settings: split, `--help`, the docs and the checks would
drift apart.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from runtime.core.browser_origins import compile_allowed_origins
from runtime.names import METRICS_NAMESPACE, PEER_PORT, WEBSOCKET_PORT
from runtime.wire.channels import MAX_CHANNEL_NAME_LENGTH, MAX_USER_INFO_BYTES, ChannelRules
from runtime.wire.connection_id import MAX_REGION_LENGTH, NodeAddress
from runtime.wire.events import RouteSelector
from runtime.wire.graphql_ws import PROTOCOLS as GRAPHQL_SUBPROTOCOLS

MiB = 1024 * 1024


WILDCARD_HOSTS = ("0.0.0.0", "::")


class ConfigError(ValueError):
    """A setting is missing or out of range."""


def host_port(text: str) -> tuple[str, int]:
    """Parse `host:port` or `[v6]:port`."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(
            f"must be host:port with a port from 0 (any free port) to 65535 (got {text!r})"
        )
    return host.strip("[]"), int(port)


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be an integer (got {text!r})") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return parse


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number of seconds (got {text!r})") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g} (got {value:g})")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false (got {text!r})")


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)} (got {text!r})")
        return text

    return parse


def _text(text: str) -> str:
    return text


def redacted_url(url: str) -> str:
    """A URL fit for an error message or a log: any user:password@ replaced by ***@."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _level(text: str) -> str:
    """Log levels in any case: LOG_LEVEL=warning is as clear as WARNING."""
    return _choice(*LOG_LEVELS)(text.strip().upper())


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _ip(text: str) -> str:
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"must be an IP address (got {text!r})") from None
    return text


def _node_address(text: str) -> NodeAddress:
    host, port = host_port(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"must be an IP address and port (got {text!r})") from None
    return NodeAddress(host, port)


def _listen_address(text: str) -> tuple[str, int]:
    host, port = host_port(text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"must be an IP address and port (got {text!r})") from None
    if port == 0:
        raise ValueError(f"needs a fixed port: peers find nodes by it (got {text!r})")
    return host, port


def _node_addresses(text: str) -> tuple[NodeAddress, ...]:
    return tuple(_node_address(item) for item in _list(text))


def _region(text: str) -> str:
    if not text or len(text) > MAX_REGION_LENGTH or not text.isascii():
        raise ValueError(f"must be 1 to {MAX_REGION_LENGTH} ASCII characters (got {text!r})")
    return text


def _origins(text: str) -> tuple[str, ...]:
    values = _list(text)
    compile_allowed_origins(values)
    return values


def _route_expression(text: str) -> str:
    RouteSelector(text)
    return text


_API_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _api_id(text: str) -> str:
    if text and (len(text) > 64 or not set(text) <= _API_ID_CHARS):
        raise ValueError(f"must be lowercase letters and digits, at most 64 (got {text!r})")
    return text


_IDENTITY_PREFIXES = ("route.request.header.", "route.request.querystring.")


def _identity_sources(text: str) -> tuple[str, ...]:
    sources = _list(text)
    for source in sources:
        if not source.startswith(_IDENTITY_PREFIXES) or source.endswith("."):
            raise ValueError(
                "each must be route.request.header.<name> or route.request.querystring.<name> "
                f"(got {source!r})"
            )
    return sources


JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


def _jwt_algorithms(text: str) -> tuple[str, ...]:
    algorithms = _list(text)
    if not algorithms:
        raise ValueError("must name at least one algorithm")
    for algorithm in algorithms:
        if algorithm not in JWT_ALGORITHMS:
            raise ValueError(
                f"{algorithm!r} is not accepted: one of {', '.join(JWT_ALGORITHMS)} "
                "(symmetric and none are refused: a public key set cannot check them)"
            )
    return algorithms


def _token_source(text: str) -> str:
    kind, _, name = text.partition(":")
    if kind not in ("header", "query") or not name:
        raise ValueError(f"must be header:<name> or query:<name> (got {text!r})")
    return text


@dataclass(frozen=True)
class Settings:
    listen: tuple[str, int] = ("127.0.0.1", WEBSOCKET_PORT)
    origin_transport: str = "http"
    origin_url: str = ""
    origin_token: str = ""
    origin_concurrency: int = 4
    origin_batch_events: int = 500
    origin_batch_bytes: int = 4 * MiB
    origin_request_timeout: float = 10.0
    origin_unavailable_seconds: float = 30.0
    events_queue_url: str = ""
    events_topic_arn: str = ""
    events_per_message: int = 1000
    events_message_bytes: int = 64 * 1024
    events_linger_ms: int = 20
    events_fifo_groups: int = 10
    commands_queue_url: str = ""
    commands_workers: int = 2
    aws_region: str = ""
    event_buffer_bytes: int = 64 * MiB
    event_buffer_events: int = 100_000
    command_listen: tuple[str, int] | None = ("127.0.0.1", 8081)
    command_token: str = ""
    no_command_auth: bool = False
    command_max_connections: int = 1024
    command_header_timeout: float = 10.0
    command_body_timeout: float = 30.0
    command_max_header_bytes: int = 64 * 1024
    subprotocols: tuple[str, ...] = ()
    route_selection_expression: str = ""
    keepalive_interval: float = 60.0
    allowed_origins: tuple[str, ...] = ()
    max_message_bytes: int = 256 * 1024
    compression: str = "none"
    receive_queue_messages: int = 4
    max_connections: int = 20_000
    max_subscriptions_per_connection: int = 100
    max_subscriptions: int = 1_000_000
    max_channel_name_length: int = 128
    max_user_info_bytes: int = 1024
    occupancy_interval: float = 60.0
    send_buffer_messages: int = 1_000
    send_buffer_bytes: int = 1 * MiB
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    drain_seconds: float = 25.0
    target_group_arn: str = ""
    target_id: str = ""
    target_health_interval: float = 5.0
    region: str = "local"
    stage: str = "local"
    domain_name: str = ""
    local_only: bool = False
    peer_listen: tuple[str, int] = ("127.0.0.1", PEER_PORT)
    peer_advertise: NodeAddress | None = None
    peer_secret: str = ""
    peers: tuple[NodeAddress, ...] = ()
    peers_dns: tuple[str, int] | None = None
    peers_refresh_seconds: float = 10.0
    peer_max_datagram: int = 1472
    peer_down_seconds: float = 3.0
    peer_metrics_interval: float = 60.0
    trust_forwarded_for: bool = False
    gone_events: bool = True
    metrics_interval: float = 60.0
    metrics_namespace: str = METRICS_NAMESPACE
    service_name: str = "wsgateway"
    graphql_origin_url: str = ""
    graphql_origin_function: str = ""
    graphql_origin_token: str = ""
    graphql_origin_concurrency: int = 32
    graphql_init_timeout: float = 10.0
    graphql_ka_interval: float = 15.0
    graphql_max_operations: int = 100
    api_id: str = ""
    connect_handler_url: str = ""
    connect_handler_token: str = ""
    connect_handler_function: str = ""
    connect_handler_timeout: float = 5.0
    connect_handler_error_status: int = 500
    connect_handler_concurrency: int = 64
    connect_event: str = "mark"
    authorizer_function: str = ""
    authorizer_identity_sources: tuple[str, ...] = ()
    authorizer_ttl: float = 300.0
    authorizer_rate: float = 50.0
    authorizer_burst: int = 100
    authorizer_timeout: float = 5.0
    authorizer_error_status: int = 500
    authorizer_cache_entries: int = 10_000
    jwt_issuer: str = ""
    jwt_audiences: tuple[str, ...] = ()
    jwt_jwks_url: str = ""
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    jwt_token_source: str = "header:Authorization"
    jwt_leeway: float = 0.0
    jwt_jwks_refresh_seconds: float = 60.0
    handshake_rate_per_ip: float = 0.0
    handshake_burst_per_ip: int = 20
    handshake_rate: float = 0.0
    handshake_burst: int = 1000
    connections_api: str = "off"
    log_format: str = "auto"
    log_level: str = "INFO"

    @property
    def graphql(self) -> bool:
        return bool(self.graphql_origin_url or self.graphql_origin_function)

    @property
    def channel_rules(self) -> ChannelRules:
        """What the node's channel commands may hold, for the parsers of its command sources."""
        return ChannelRules(self.max_channel_name_length, self.max_user_info_bytes)

    @property
    def peer_address(self) -> NodeAddress:
        """The address in this node's connection IDs: --peer-advertise, else --peer-listen.

        A wildcard listen address names no host; the service resolves the real one (ECS metadata
        or the outbound interface) into --peer-advertise before a node is built.
        """
        if self.peer_advertise is not None:
            return self.peer_advertise
        host, port = self.peer_listen
        return NodeAddress("127.0.0.1" if host in WILDCARD_HOSTS else host, port)


@dataclass(frozen=True)
class _Spec:
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None


_SPECS: dict[str, _Spec] = {
    "listen": _Spec(host_port, "address for WebSocket clients and GET /healthz", "HOST:PORT"),
    "origin_transport": _Spec(
        _choice("http", "echo", "sqs", "sns", "none"),
        "where events go: http (POST to --origin-url), sqs (--events-queue-url), sns "
        "(--events-topic-arn), echo (built in: every message is sent back to its sender, for "
        "trying the node out) or none (GraphQL connections only)",
    ),
    "origin_url": _Spec(_text, 'URL the node POSTs event batches to ({"events": [...]})', "URL"),
    "origin_token": _Spec(_text, "bearer token sent to the origin, if set"),
    "origin_concurrency": _Spec(_int(1, 64), "event requests in flight to the origin at once"),
    "origin_batch_events": _Spec(_int(1, 10_000), "most events in one origin request"),
    "origin_batch_bytes": _Spec(_int(1024, 64 * MiB), "most bytes of events in one request"),
    "origin_request_timeout": _Spec(_float(0.1, 300), "seconds before an origin request fails"),
    "origin_unavailable_seconds": _Spec(
        _float(0.1, 3600),
        "seconds a connection's events may wait for an unreachable origin before the "
        "connection is closed with 1011",
    ),
    "events_queue_url": _Spec(_text, "SQS queue the node sends events to (sqs transport)", "URL"),
    "events_topic_arn": _Spec(_text, "SNS topic the node publishes events to (sns)", "ARN"),
    "events_per_message": _Spec(
        _int(1, 10_000),
        'most events packed in one SQS/SNS message ({"events": [...]}, as the HTTP origin gets '
        "them); 1 sends each event as its own message",
    ),
    "events_message_bytes": _Spec(
        _int(1024, MiB),
        "most bytes of one packed SQS/SNS message (64 KiB: one billed request); capped by the "
        "queue's or topic's MaximumMessageSize",
    ),
    "events_linger_ms": _Spec(
        _int(0, 1000),
        "longest an event waits for its SQS/SNS message to fill before it is sent anyway",
    ),
    "events_fifo_groups": _Spec(
        _int(1, 1024),
        "message groups per node on a FIFO queue or topic when events are packed: a connection "
        "always maps to the same group, so its events stay in order",
    ),
    "commands_queue_url": _Spec(
        _text, "SQS queue of commands (fed by the commands topic) to poll (empty: none)", "URL"
    ),
    "commands_workers": _Spec(_int(1, 64), "long-polling workers on --commands-queue-url"),
    "aws_region": _Spec(_text, "AWS region for SQS/SNS (empty: boto3's usual chain)"),
    "event_buffer_bytes": _Spec(
        _int(64 * 1024, 4096 * MiB),
        "bytes of events held for the origin before the node stops reading from clients",
    ),
    "event_buffer_events": _Spec(
        _int(100, 20_000_000),
        "events held before the same; at least twice --max-connections (each open connection "
        "keeps room for its DISCONNECT)",
    ),
    "command_listen": _Spec(
        lambda text: host_port(text) if text else None,
        "address of the POST /commands endpoint (empty: none)",
        "HOST:PORT",
    ),
    "command_token": _Spec(_text, "bearer token /commands requires"),
    "no_command_auth": _Spec(_bool, "accept /commands without a token (local use only)", "BOOL"),
    "command_max_connections": _Spec(
        _int(1, 65_535), "connections open on the command endpoint; further ones get HTTP 503"
    ),
    "command_header_timeout": _Spec(
        _float(0.1, 600),
        "seconds a command request's line and headers may take (from the connection's start or "
        "the first byte of a later request); then HTTP 408",
    ),
    "command_body_timeout": _Spec(
        _float(0.1, 3600), "seconds a command request's body may take after its head; then 408"
    ),
    "command_max_header_bytes": _Spec(
        _int(1024, MiB),
        "bytes of a command request's line and headers, counted as they arrive (at most 100 "
        "header lines); beyond, HTTP 431",
    ),
    "subprotocols": _Spec(_list, "subprotocols offered, most preferred first", "A,B"),
    "route_selection_expression": _Spec(
        _route_expression, "routeKey of messages, e.g. $request.body.action", "EXPR"
    ),
    "keepalive_interval": _Spec(
        _float(0, 86_400), "seconds between KEEPALIVE events (0: none)", "SECONDS"
    ),
    "allowed_origins": _Spec(
        _origins, "Origin header values allowed, e.g. https://*.example.com (empty: all)", "A,B"
    ),
    "max_message_bytes": _Spec(
        _int(1024, 32 * MiB), "largest client message; larger ones close the connection with 1009"
    ),
    "compression": _Spec(
        _choice("none", "deflate"),
        "permessage-deflate: deflate compresses messages both ways on connections whose client "
        "offers it (it costs CPU and memory per connection)",
    ),
    "receive_queue_messages": _Spec(
        _int(1, 1024),
        "messages read ahead from a client before its reads pause; with --max-message-bytes "
        "it bounds the memory a client can make the node hold",
    ),
    "max_connections": _Spec(
        _int(1, 10_000_000), "connections per node; beyond, handshakes get 503"
    ),
    "max_subscriptions_per_connection": _Spec(
        _int(1, 10_000),
        "channels one connection may be subscribed to; a subscribe passing it is refused whole",
    ),
    "max_subscriptions": _Spec(
        _int(1, 100_000_000),
        "channel subscriptions this node may hold, all connections together; a subscribe "
        "passing it is refused",
    ),
    "max_channel_name_length": _Spec(
        _int(1, MAX_CHANNEL_NAME_LENGTH), "longest channel name, in characters"
    ),
    "max_user_info_bytes": _Spec(
        _int(0, MAX_USER_INFO_BYTES),
        "largest userInfo a subscribe may give, in bytes of JSON (0: none)",
    ),
    "occupancy_interval": _Spec(
        _float(0.1, 86_400),
        "seconds between OCCUPANCY events of channels whose subscribers asked for them",
        "SECONDS",
    ),
    "send_buffer_messages": _Spec(
        _int(1, 1_000_000), "messages a client may leave unread before it is closed with 1013"
    ),
    "send_buffer_bytes": _Spec(
        _int(1024, 1024 * MiB), "bytes a client may leave unread before it is closed with 1013"
    ),
    "ping_interval": _Spec(_float(0, 3600), "seconds between pings to clients (0: none)"),
    "ping_timeout": _Spec(_float(0.1, 3600), "seconds a client has to answer a ping"),
    "close_timeout": _Spec(_float(0.1, 600), "seconds a closing client has to answer"),
    "drain_seconds": _Spec(_float(0, 3600), "seconds SIGTERM/SIGINT may take to drain"),
    "target_group_arn": _Spec(
        _text,
        "ALB target group this node is registered in: the node drains once its target there is "
        "draining (empty: not watched)",
        "ARN",
    ),
    "target_id": _Spec(
        _ip,
        "this node's IP in --target-group-arn (default: the task's IP from the ECS task metadata "
        "endpoint)",
        "IP",
    ),
    "target_health_interval": _Spec(
        _float(1, 60), "seconds between questions about the target's state (with jitter)"
    ),
    "region": _Spec(_region, "region named in events and connection IDs"),
    "stage": _Spec(_text, "stage (environment) named in events"),
    "domain_name": _Spec(
        _text, "domainName of node-level events (KEEPALIVE, GONE); others use the Host header"
    ),
    "local_only": _Spec(
        _bool,
        "run one node with no cluster: no UDP peer traffic, and commands for connections of "
        "other nodes produce GONE (otherwise --peer-secret is required)",
        "BOOL",
    ),
    "peer_listen": _Spec(_listen_address, "UDP address for traffic from other nodes", "HOST:PORT"),
    "peer_advertise": _Spec(
        _node_address,
        "address other nodes reach this one at, inside every connection ID (default: the "
        "--peer-listen address; for 0.0.0.0, the task's IP from the ECS metadata endpoint, "
        "else this host's outbound IP)",
        "IP:PORT",
    ),
    "peer_secret": _Spec(
        _text, "shared key that authenticates peer datagrams (HMAC-SHA256), 16+ characters"
    ),
    "peers": _Spec(_node_addresses, "static list of other nodes' peer addresses", "IP:PORT,..."),
    "peers_dns": _Spec(
        lambda text: host_port(text) if text else None,
        "DNS name whose addresses are the nodes (Cloud Map), and their peer port",
        "NAME:PORT",
    ),
    "peers_refresh_seconds": _Spec(_float(0.5, 3600), "seconds between --peers-dns lookups"),
    "peer_max_datagram": _Spec(
        _int(512, 8900),
        "largest UDP datagram sent; 1472 fits a 1500-byte MTU path, up to 8900 for jumbo frames",
    ),
    "peer_down_seconds": _Spec(
        _float(0.2, 30),
        "seconds without acknowledgement before a peer is down and its commands produce GONE",
    ),
    "peer_metrics_interval": _Spec(
        _float(0, 86_400), "seconds between peer traffic metrics log lines (0: never)"
    ),
    "trust_forwarded_for": _Spec(
        _bool, "take sourceIp from X-Forwarded-For (only behind a proxy that sets it)", "BOOL"
    ),
    "gone_events": _Spec(_bool, "send GONE events for commands to unknown connections", "BOOL"),
    "metrics_interval": _Spec(
        _float(0, 3600),
        "seconds between metrics lines (ConnectionsPerTask, and traffic counts since the line "
        "before), logged in CloudWatch Embedded Metric Format (0: none)",
    ),
    "metrics_namespace": _Spec(_text, "CloudWatch namespace of the node's metrics"),
    "service_name": _Spec(_text, "ServiceName dimension of the node's metrics"),
    "graphql_origin_url": _Spec(
        _text, "GraphQL origin URL: GraphQL mode, answered over HTTP (JSON in and out)", "URL"
    ),
    "graphql_origin_function": _Spec(
        _text, "GraphQL origin as an AWS Lambda function (name or ARN), invoked synchronously"
    ),
    "graphql_origin_token": _Spec(_text, "bearer token sent to --graphql-origin-url, if set"),
    "graphql_origin_concurrency": _Spec(
        _int(1, 1024), "requests in flight to the GraphQL origin at once"
    ),
    "graphql_init_timeout": _Spec(
        _float(0.1, 600), "seconds a GraphQL client has to send connection_init"
    ),
    "graphql_ka_interval": _Spec(
        _float(0, 3600), "seconds between ka messages to legacy graphql-ws clients (0: none)"
    ),
    "graphql_max_operations": _Spec(
        _int(1, 100_000), "operations (running or subscribed) one GraphQL connection may hold"
    ),
    "api_id": _Spec(
        _api_id,
        "requestContext.apiId of every event (empty: a stable 10-character ID derived from "
        "--stage and --region, as API Gateway's are)",
    ),
    "connect_handler_url": _Spec(
        _text,
        "synchronous $connect: POST each handshake's $connect event here before accepting it; "
        "a 2xx accepts, any other status refuses the handshake with it",
        "URL",
    ),
    "connect_handler_token": _Spec(_text, "bearer token sent to --connect-handler-url, if set"),
    "connect_handler_function": _Spec(
        _text,
        "synchronous $connect as an AWS Lambda function (name or ARN), invoked RequestResponse; "
        "its statusCode decides as API Gateway's $connect integration does",
    ),
    "connect_handler_timeout": _Spec(
        _float(0.1, 29), "seconds the $connect handler may take; then the handshake is refused"
    ),
    "connect_handler_error_status": _Spec(
        _int(400, 599), "HTTP status of handshakes refused because the $connect handler failed"
    ),
    "connect_handler_concurrency": _Spec(
        _int(1, 4096), "$connect handler calls in flight at once; further handshakes wait"
    ),
    "connect_event": _Spec(
        _choice("mark", "suppress"),
        "with a $connect handler: mark (the CONNECT event still flows, with "
        "requestContext.connectHandled true) or suppress (no CONNECT event; DISCONNECT flows)",
    ),
    "authorizer_function": _Spec(
        _text,
        "Lambda REQUEST authorizer (name or ARN) asked at each handshake, as API Gateway's",
    ),
    "authorizer_identity_sources": _Spec(
        _identity_sources,
        "where the authorizer's identity is, e.g. route.request.header.Authorization,"
        "route.request.querystring.token; a handshake missing one gets 401 without a call, "
        "and answers are cached per value",
        "A,B",
    ),
    "authorizer_ttl": _Spec(
        _float(0, 3600), "seconds an authorizer answer is cached per identity (0: never)"
    ),
    "authorizer_rate": _Spec(
        _float(0.1, 100_000),
        "authorizer calls per second at most (uncached handshakes beyond get 429)",
    ),
    "authorizer_burst": _Spec(_int(1, 1_000_000), "authorizer calls allowed in a burst"),
    "authorizer_timeout": _Spec(_float(0.1, 29), "seconds an authorizer call may take"),
    "authorizer_error_status": _Spec(
        _int(400, 599), "HTTP status of handshakes refused because the authorizer failed"
    ),
    "authorizer_cache_entries": _Spec(
        _int(1, 10_000_000), "authorizer answers cached at most (the oldest go first)"
    ),
    "jwt_issuer": _Spec(
        _text,
        "JWT authorizer: the issuer (iss) tokens must name, e.g. a Cognito user pool's URL "
        "(empty: no JWT authorizer)",
        "URL",
    ),
    "jwt_audiences": _Spec(_list, "JWT authorizer: accepted audiences (aud or client_id)", "A,B"),
    "jwt_jwks_url": _Spec(
        _text, "JWT authorizer: the key set's URL (empty: <issuer>/.well-known/jwks.json)", "URL"
    ),
    "jwt_algorithms": _Spec(
        _jwt_algorithms, "JWT authorizer: signature algorithms accepted (asymmetric only)", "A,B"
    ),
    "jwt_token_source": _Spec(
        _token_source,
        "JWT authorizer: header:<name> (a Bearer prefix is dropped) or query:<name>",
    ),
    "jwt_leeway": _Spec(_float(0, 300), "JWT authorizer: seconds of clock skew allowed"),
    "jwt_jwks_refresh_seconds": _Spec(
        _float(1, 86_400),
        "JWT authorizer: the key set is fetched again at most this often, for an unknown kid",
    ),
    "handshake_rate_per_ip": _Spec(
        _float(0, 1_000_000),
        "handshakes per second per source IP (0: no limit); beyond, HTTP 429",
    ),
    "handshake_burst_per_ip": _Spec(_int(1, 1_000_000), "handshakes per source IP in a burst"),
    "handshake_rate": _Spec(
        _float(0, 1_000_000), "handshakes per second this node takes (0: no limit); beyond, 429"
    ),
    "handshake_burst": _Spec(_int(1, 10_000_000), "handshakes this node takes in a burst"),
    "connections_api": _Spec(
        _choice("off", "token", "network"),
        "API Gateway's @connections API (POST/GET/DELETE /<stage>/@connections/<id>) on "
        "--command-listen: off, token (the --command-token as a bearer token or "
        "X-Gateway-Token header) or network (no token: SigV4 cannot be checked, so only where "
        "the origin's network alone reaches the port)",
    ),
    "log_format": _Spec(_choice("auto", "json", "text"), "auto: JSON unless stdout is a terminal"),
    "log_level": _Spec(_level, "least severe level logged (any case)"),
}


def event_buffer_for(max_connections: int) -> tuple[int, int]:
    """Event-buffer bytes and events for a connection limit: the defaults, or enough that the
    room kept for every connection's DISCONNECT (about 1 KiB each, at most half the buffer)
    never refuses a handshake below the limit. The CDK stack sets these from it."""
    defaults = Settings()
    return (
        max(defaults.event_buffer_bytes, 2 * 1024 * max_connections),
        max(defaults.event_buffer_events, 2 * max_connections),
    )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag; values stay strings until `load` checks them."""
    for field in fields(Settings):
        spec = _SPECS[field.name]
        default = field.default
        shown = (
            ",".join(default)
            if isinstance(default, tuple) and all(isinstance(x, str) for x in default)
            else f"{default[0]}:{default[1]}"
            if isinstance(default, tuple)
            else default
        )
        parser.add_argument(
            flag(field.name),
            dest=field.name,
            metavar=spec.metavar,
            help=f"{spec.help} [env {env_name(field.name)}; default {shown!s}]",
        )


def load(args: Mapping[str, str | None], environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from parsed flags, then the environment, then defaults; checked together."""
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = args.get(field.name)
        source = flag(field.name)
        if raw is None and env_name(field.name) in environ:
            raw, source = environ[env_name(field.name)], env_name(field.name)
        if raw is None:
            continue
        try:
            values[field.name] = _SPECS[field.name].parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source} {exc}") from None
    settings = Settings(**values)
    _check_together(settings)
    return settings


def _check_together(s: Settings) -> None:
    if s.origin_transport == "http" and not s.origin_url:
        raise ConfigError(
            "--origin-url is required when --origin-transport is http"
            + (" (for GraphQL connections only, pass --origin-transport none)" if s.graphql else "")
        )
    if s.origin_transport == "sqs" and not s.events_queue_url:
        raise ConfigError("--events-queue-url is required when --origin-transport is sqs")
    if s.origin_transport == "sns" and not s.events_topic_arn.startswith("arn:"):
        raise ConfigError(
            "--events-topic-arn (an arn:...) is required when --origin-transport is sns "
            f"(got {s.events_topic_arn!r})"
        )
    _check_url("--origin-url", s.origin_url, "--origin-token")
    if s.command_listen and not s.command_token and not s.no_command_auth:
        raise ConfigError(
            "--command-token is required for --command-listen; "
            "pass --no-command-auth true only where nothing untrusted can reach the port"
        )
    if s.command_listen == s.listen and s.listen[1] != 0:
        raise ConfigError("--command-listen must differ from --listen")
    if s.event_buffer_bytes < s.max_message_bytes * 2:
        raise ConfigError(
            f"--event-buffer-bytes must be at least twice --max-message-bytes "
            f"({2 * s.max_message_bytes}; got {s.event_buffer_bytes})"
        )
    if s.event_buffer_events < 2 * s.max_connections:
        raise ConfigError(
            "--event-buffer-events must be at least twice --max-connections: each open "
            "connection keeps room for its DISCONNECT, and at most half the buffer is kept so "
            f"({2 * s.max_connections}; got {s.event_buffer_events})"
        )
    if s.send_buffer_bytes < 1024:
        raise ConfigError("--send-buffer-bytes must be at least 1024")
    if s.local_only:
        if s.peers or s.peers_dns:
            raise ConfigError("--peers and --peers-dns need a cluster; drop --local-only")
    elif not s.peer_secret:
        raise ConfigError(
            "--peer-secret is required: nodes authenticate their UDP traffic with it "
            "(pass --local-only true to run a single node without a cluster)"
        )
    elif len(s.peer_secret) < 16:
        raise ConfigError(
            f"--peer-secret must be at least 16 characters (got {len(s.peer_secret)})"
        )
    if s.peers and s.peers_dns:
        raise ConfigError("set --peers or --peers-dns, not both")
    if s.target_group_arn and not s.target_group_arn.startswith("arn:"):
        raise ConfigError(f"--target-group-arn must be an arn:... (got {s.target_group_arn!r})")
    if s.target_id and not s.target_group_arn:
        raise ConfigError("--target-id names this node in --target-group-arn: set both")
    _check_graphql(s)
    _check_door(s)


def _check_url(name: str, url: str, token_flag: str) -> None:
    """An origin URL: http(s), and no credentials in it, which errors and logs would show."""
    if not url:
        return
    shown = redacted_url(url)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must start with http:// or https:// (got {shown!r})")
    if shown != url:
        raise ConfigError(
            f"{name} must not hold credentials (user:password@); pass a bearer token with "
            f"{token_flag} (got {shown!r})"
        )


def _check_graphql(s: Settings) -> None:
    if s.graphql_origin_url and s.graphql_origin_function:
        raise ConfigError("set --graphql-origin-url or --graphql-origin-function, not both")
    _check_url("--graphql-origin-url", s.graphql_origin_url, "--graphql-origin-token")
    if s.origin_transport == "none" and not s.graphql:
        raise ConfigError(
            "--origin-transport none needs a GraphQL origin: "
            "--graphql-origin-url or --graphql-origin-function"
        )
    if s.graphql and s.subprotocols and not set(s.subprotocols) & set(GRAPHQL_SUBPROTOCOLS):
        raise ConfigError(
            "--subprotocols must include graphql-transport-ws or graphql-ws with a GraphQL "
            f"origin (got {','.join(s.subprotocols)})"
        )


def _check_door(s: Settings) -> None:
    """The connect handler, the authorizers and the @connections API."""
    if s.connect_handler_url and s.connect_handler_function:
        raise ConfigError("set --connect-handler-url or --connect-handler-function, not both")
    _check_url("--connect-handler-url", s.connect_handler_url, "--connect-handler-token")
    if s.authorizer_function and not s.authorizer_identity_sources:
        raise ConfigError(
            "--authorizer-identity-sources is required with --authorizer-function (for example "
            "route.request.header.Authorization)"
        )
    if s.authorizer_function and s.jwt_issuer:
        raise ConfigError("set --authorizer-function or --jwt-issuer, not both")
    if s.jwt_issuer:
        _check_url("--jwt-issuer", s.jwt_issuer, "--jwt-jwks-url")
        _check_url("--jwt-jwks-url", s.jwt_jwks_url, "--jwt-jwks-url")
        if not s.jwt_audiences:
            raise ConfigError("--jwt-audiences is required with --jwt-issuer")
    if s.connections_api != "off" and not s.command_listen:
        raise ConfigError("--connections-api needs --command-listen")
    if s.connections_api == "token" and not s.command_token:
        raise ConfigError("--connections-api token needs --command-token")
    if s.connections_api == "token" and s.no_command_auth:
        raise ConfigError(
            "--connections-api token checks the command token: drop --no-command-auth, or use "
            "--connections-api network"
        )


def default_api_id(stage: str, region: str) -> str:
    """A stable API ID per stage and region, shaped like API Gateway's (10 characters)."""
    digest = hashlib.sha256(f"wsgateway/{stage}/{region}".encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[byte % 36] for byte in digest[:10])


def parse_argv(argv: Sequence[str], prog: str = "python -m runtime serve") -> Settings:
    parser = argparse.ArgumentParser(prog=prog, description="Run one gateway node.")
    add_arguments(parser)
    namespace = parser.parse_args(argv)
    return load(vars(namespace))
