"""One environment's deployment settings, read from cdk.json context and checked all at once.

cdk.json holds `"environments": {"<name>": {...}}` in its context, and `-c env=<name>` picks one.
Every setting is checked before any construct exists, so a typo or an impossible value stops
`cdk synth` with a message naming the setting, the rule and the value, instead of a failed
deployment twenty minutes later. Unknown keys are errors too: a misspelt optional setting
would otherwise be silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

# ConfigError is this module's error to its callers (app.py, bench.cost, tests): exported here.
from infra.config_reader import ConfigError as ConfigError
from infra.config_reader import SettingsReader
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
from runtime.names import PEER_PORT, WEBSOCKET_PORT, ResourceNames

ENVIRONMENTS_KEY = "environments"
SELECTED_KEY = "env"

# Fargate's task sizes: CPU units -> allowed memory (MiB).
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}
# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip
# Nodes find each other through Cloud Map DNS, which names at most eight of them per answer; they
# accumulate answers and learn every node that reaches them, so a full mesh forms at any size.
# Every node pings every other each second, which bounds the useful size of one cluster.
MAX_TASKS = 100
# ECS sends SIGKILL at the stop timeout; Fargate allows at most 120 s, and the node needs a
# margin after its drain to exit.
STOP_TIMEOUT_MARGIN_SECONDS = 10
MAX_STOP_TIMEOUT_SECONDS = 120

# Every key an environment may set; anything else is a typo.
SETTINGS = (
    "account", "architecture", "authorizer", "azCount", "certificateArn", "connectHandler",
    "connectionsApi", "connectionsPerTaskTarget", "cpuTargetPercent", "desiredTasks",
    "domainName", "drainSeconds", "egress", "eventsFifoGroups", "eventsLingerMs",
    "eventsMessageBytes", "eventsPerMessage", "eventsVia", "exampleOrigin", "fifo", "graphqlOnly",
    "graphqlOriginFunction", "handshakeBurst", "handshakeBurstPerIp", "handshakeRate",
    "handshakeRatePerIp", "jwtAuthorizer", "keepaliveSeconds", "logRetentionDays",
    "maxConnectionsPerTask", "maxTasks", "minTasks", "natGateways", "regions", "taskCpu",
    "taskMemory",
)  # fmt: skip
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

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SECURITY_GROUP = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
# Where a Lambda authorizer finds the identity; the names end up comma-joined in one variable.
_IDENTITY_SOURCE = re.compile(r"^route\.request\.(header|querystring)\.[^\s,]+$")
_TOKEN_SOURCE = re.compile(r"^(header|query):[^\s,]+$")


@dataclass(frozen=True)
class EventPacking:
    """How nodes pack events into SQS/SNS messages (the node settings of the same names)."""

    per_message: int = 1000
    message_bytes: int = 64 * 1024  # one billed request
    linger_ms: int = 20
    fifo_groups: int = 10

    def node_environment(self) -> dict[str, str]:
        return {
            "EVENTS_PER_MESSAGE": str(self.per_message),
            "EVENTS_MESSAGE_BYTES": str(self.message_bytes),
            "EVENTS_LINGER_MS": str(self.linger_ms),
            "EVENTS_FIFO_GROUPS": str(self.fifo_groups),
        }


@dataclass(frozen=True, kw_only=True)
class EnvironmentConfig:
    """What one environment deploys in each of its regions; defaults are production choices."""

    name: str
    regions: tuple[str, ...]
    account: str | None = None
    az_count: int = 2
    task_cpu: int = 1024
    task_memory: int = 2048
    architecture: str = "ARM64"
    desired_tasks: int | None = None
    min_tasks: int = 2
    max_tasks: int = 8
    certificate_arns: Mapping[str, str] = field(default_factory=dict)
    domain_names: Mapping[str, str] = field(default_factory=dict)
    fifo: bool = True
    events_via: str = "sqs"
    event_packing: EventPacking = field(default_factory=EventPacking)
    egress: str = "vpc-endpoints"
    nat_gateways: int = 0
    example_origin: bool = False
    drain_seconds: int = 30
    keepalive_seconds: int = 60
    log_retention_days: int = 90
    max_connections_per_task: int = 20_000
    connections_per_task_target: int = 10_000
    cpu_target_percent: int = 60
    graphql_origin_functions: Mapping[str, str] = field(default_factory=dict)
    graphql_only: bool = False
    door: Door = field(default_factory=Door)

    @property
    def names(self) -> ResourceNames:
        """Queue, topic and table names, shared with the nodes and the origin SDK."""
        return ResourceNames(self.name, fifo=self.fifo)

    @property
    def stop_timeout_seconds(self) -> int:
        return self.drain_seconds + STOP_TIMEOUT_MARGIN_SECONDS

    def certificate_arn(self, region: str) -> str | None:
        return self.certificate_arns.get(region)

    def domain_name(self, region: str) -> str | None:
        return self.domain_names.get(region)

    def graphql_origin_function(self, region: str) -> str | None:
        """The GraphQL origin's function name or ARN in `region`; None: no GraphQL mode."""
        return self.graphql_origin_functions.get(region)


# What an environment that sets nothing but its regions gets.
DEFAULTS: dict[str, Any] = {
    item.name: item.default for item in fields(EnvironmentConfig) if item.default is not MISSING
}


def load_environment(context: Callable[[str], Any]) -> EnvironmentConfig:
    """The environment `-c env=<name>` selects, from a `try_get_context`-like function."""
    environments = context(ENVIRONMENTS_KEY)
    if not isinstance(environments, Mapping) or not environments:
        raise ConfigError(
            f'cdk.json context needs "{ENVIRONMENTS_KEY}": an object of environments, '
            f"e.g. {{'dev': {{'regions': ['us-east-1']}}}} (got {environments!r})"
        )
    selected = context(SELECTED_KEY)
    known = ", ".join(sorted(environments))
    if not selected:
        raise ConfigError(f"context env is required: pass -c env=<name>, one of: {known}")
    if selected not in environments:
        raise ConfigError(f"context env must be one of: {known} (got {selected!r})")
    return parse_environment(str(selected), environments[selected])


def parse_environment(name: str, raw: Any) -> EnvironmentConfig:
    """Check every setting of `environments.<name>`; the first problem found is raised."""
    where = f"{ENVIRONMENTS_KEY}.{name}"
    try:
        ResourceNames(name)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object of settings (got {raw!r})")
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"{where} has unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    reader = SettingsReader(where, raw)
    regions = reader.regions()
    cpu = reader.choice("taskCpu", tuple(FARGATE_SIZES), DEFAULTS["task_cpu"])
    memory = reader.choice(
        "taskMemory", FARGATE_SIZES[cpu], FARGATE_SIZES[cpu][0], f" for taskCpu {cpu}"
    )
    min_tasks = reader.integer("minTasks", 1, MAX_TASKS, DEFAULTS["min_tasks"])
    max_tasks = reader.integer(
        "maxTasks",
        min_tasks,
        MAX_TASKS,
        DEFAULTS["max_tasks"],
        f" (at least minTasks; at most {MAX_TASKS}: every node pings every other)",
    )
    desired = reader.optional_integer("desiredTasks", min_tasks, max_tasks, "minTasks to maxTasks")
    az_count = reader.integer("azCount", 2, 3, DEFAULTS["az_count"])
    egress = reader.choice("egress", ("vpc-endpoints", "nat-gateways"), DEFAULTS["egress"])
    nat_gateways = 0
    if egress == "nat-gateways":
        nat_gateways = reader.integer(
            "natGateways", 1, az_count, az_count, " (at most one per AZ, see azCount)"
        )
    elif "natGateways" in raw:
        raise ConfigError(f"{where}.natGateways applies only with egress nat-gateways")
    drain = reader.integer(
        "drainSeconds",
        5,
        MAX_STOP_TIMEOUT_SECONDS - STOP_TIMEOUT_MARGIN_SECONDS,
        DEFAULTS["drain_seconds"],
    )
    max_connections = reader.integer(
        "maxConnectionsPerTask", 100, 200_000, DEFAULTS["max_connections_per_task"]
    )
    target = reader.integer(
        "connectionsPerTaskTarget", 10, max_connections - 1, max_connections // 2
    )
    certificate_arns = reader.certificates(regions)
    domain_names = reader.per_region("domainName", regions, _domain)
    for region in certificate_arns:
        if region not in domain_names:
            raise ConfigError(
                f"{where}.certificateArn.{region} needs domainName for {region}: the name on "
                "the certificate, which clients connect to"
            )
    graphql_functions = reader.functions("graphqlOriginFunction", regions)
    graphql_only = reader.boolean("graphqlOnly", DEFAULTS["graphql_only"])
    if graphql_only and not graphql_functions:
        raise ConfigError(
            f"{where}.graphqlOnly needs graphqlOriginFunction: a GraphQL-only node sends no "
            "events, so GraphQL connections are all it serves"
        )
    if graphql_only and reader.boolean("exampleOrigin", DEFAULTS["example_origin"]):
        raise ConfigError(
            f"{where}.graphqlOnly and exampleOrigin do not go together: the example origin "
            "consumes events, and a GraphQL-only node sends none"
        )
    return EnvironmentConfig(
        name=name,
        regions=regions,
        account=reader.account(),
        az_count=az_count,
        task_cpu=cpu,
        task_memory=memory,
        architecture=reader.choice("architecture", ("ARM64", "X86_64"), DEFAULTS["architecture"]),
        desired_tasks=desired,
        min_tasks=min_tasks,
        max_tasks=max_tasks,
        certificate_arns=certificate_arns,
        domain_names=domain_names,
        fifo=reader.boolean("fifo", DEFAULTS["fifo"]),
        events_via=reader.choice("eventsVia", ("sqs", "sns"), DEFAULTS["events_via"]),
        event_packing=_event_packing(reader),
        egress=egress,
        nat_gateways=nat_gateways,
        example_origin=reader.boolean("exampleOrigin", DEFAULTS["example_origin"]),
        drain_seconds=drain,
        keepalive_seconds=reader.integer(
            "keepaliveSeconds", 10, 3600, DEFAULTS["keepalive_seconds"]
        ),
        log_retention_days=reader.choice(
            "logRetentionDays", LOG_RETENTION_DAYS, DEFAULTS["log_retention_days"]
        ),
        max_connections_per_task=max_connections,
        connections_per_task_target=target,
        cpu_target_percent=reader.integer(
            "cpuTargetPercent", 10, 90, DEFAULTS["cpu_target_percent"]
        ),
        graphql_origin_functions=graphql_functions,
        graphql_only=graphql_only,
        door=_door(reader, regions, egress),
    )


def _event_packing(reader: SettingsReader) -> EventPacking:
    """Packing of events into queue messages; the queue and topic take 256 KiB messages."""
    default = EventPacking()
    return EventPacking(
        per_message=reader.integer("eventsPerMessage", 1, 10_000, default.per_message),
        message_bytes=reader.integer("eventsMessageBytes", 1024, 256 * 1024, default.message_bytes),
        linger_ms=reader.integer("eventsLingerMs", 0, 1000, default.linger_ms),
        fifo_groups=reader.integer("eventsFifoGroups", 1, 1024, default.fifo_groups),
    )


def _door(reader: SettingsReader, regions: tuple[str, ...], egress: str) -> Door:
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


def _domain(text: str) -> str | None:
    return None if _DOMAIN.fullmatch(text) else "must be a DNS name such as ws.example.com"
