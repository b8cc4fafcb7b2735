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

from infra.config_door import read_door
from infra.config_entry import Entry, check_secure, read_entry
from infra.config_network import NetworkSettings, read_network

# ConfigError is this module's error to its callers (app.py, bench.cost, tests): exported here.
from infra.config_reader import ConfigError as ConfigError
from infra.config_reader import SettingsReader
from infra.door import Door
from runtime.names import ResourceNames

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
    "account", "alarmEmail", "alarmTopicArn", "allowAnyOrigin", "allowedOrigins",
    "allowPlaintext", "architecture", "authorizer", "azCount", "certificateArn",
    "commandsRetentionMinutes", "connectHandler", "connectionsApi", "connectionsPerTaskTarget",
    "cpuTargetPercent", "deletionProtection", "desiredTasks", "domainName", "drainSeconds",
    "egress", "eventsFifoGroups", "eventsLingerMs", "eventsMessageBytes", "eventsPerMessage",
    "eventsVia", "exampleOrigin", "fifo", "flowLogs", "globalName", "graphqlOnly",
    "graphqlOriginFunction", "handshakeBurst", "handshakeBurstPerIp", "handshakeRate",
    "handshakeRatePerIp", "hostedZone", "jwtAuthorizer", "keepaliveSeconds", "logRetentionDays",
    "maxConnectionsPerTask", "maxTasks", "minTasks", "natGateways", "regions", "taskCpu",
    "taskMemory", "vpcCidr", "waf", "wafRateLimit",
)  # fmt: skip
_EMAIL = re.compile(r"^[^@\s,]+@[a-z0-9-]+(\.[a-z0-9-]+)+$", re.IGNORECASE)
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}$")
# Commands are worth delivering only while their connections may still be open: after an
# outage, older ones would replay to clients that have long moved on. SQS keeps at least 60 s.
COMMANDS_RETENTION_MINUTES = (1, 20_160)


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
    entry: Entry = field(default_factory=Entry)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    alarm_email: str | None = None
    alarm_topic_arns: Mapping[str, str] = field(default_factory=dict)
    commands_retention_minutes: int = 10
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
        return self.entry.certificate_arns.get(region)

    def domain_name(self, region: str) -> str | None:
        return self.entry.domain_names.get(region)

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
    alarm_email = reader.text("alarmEmail", _EMAIL, "an email address")
    alarm_topics = reader.per_region("alarmTopicArn", regions, _topic_problem)
    for region, arn in alarm_topics.items():
        match = _TOPIC_ARN.fullmatch(arn)
        assert match is not None
        if match["region"] != region:
            raise reader._fail(
                f"alarmTopicArn.{region}",
                f"must be a topic in {region} (alarms notify a topic of their own region); "
                "give one per region as an object",
                arn,
            )
    missing = [region for region in regions if region not in alarm_topics]
    if alarm_topics and missing:
        raise reader._fail(
            "alarmTopicArn", f"must name a topic for every region; missing {missing}", alarm_topics
        )
    if alarm_email is not None and alarm_topics:
        raise ConfigError(
            f"{where}.alarmEmail and alarmTopicArn do not go together: with a topic of your own, "
            "subscribe the address to it"
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
    config = EnvironmentConfig(
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
        entry=read_entry(reader, regions),
        network=read_network(reader, regions),
        alarm_email=alarm_email,
        alarm_topic_arns=alarm_topics,
        commands_retention_minutes=reader.integer(
            "commandsRetentionMinutes",
            *COMMANDS_RETENTION_MINUTES,
            DEFAULTS["commands_retention_minutes"],
        ),
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
        door=read_door(reader, regions, egress),
    )
    check_secure(reader, config.entry, regions)
    return config


def _event_packing(reader: SettingsReader) -> EventPacking:
    """Packing of events into queue messages: at most 256 KiB each (the SDK's reply size), though
    the queue and topic the stack makes take 1 MiB."""
    default = EventPacking()
    return EventPacking(
        per_message=reader.integer("eventsPerMessage", 1, 10_000, default.per_message),
        message_bytes=reader.integer("eventsMessageBytes", 1024, 256 * 1024, default.message_bytes),
        linger_ms=reader.integer("eventsLingerMs", 0, 1000, default.linger_ms),
        fifo_groups=reader.integer("eventsFifoGroups", 1, 1024, default.fifo_groups),
    )


def _topic_problem(text: str) -> str | None:
    if _TOPIC_ARN.fullmatch(text):
        return None
    return "must be an SNS topic ARN (arn:<partition>:sns:<region>:<account>:<name>)"
