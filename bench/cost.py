"""What this gateway costs a month on AWS, beside API Gateway WebSocket for the same load.

    python -m bench.cost --connections 100000 --messages-per-minute 1 --replies 1 --regions 2

The load: connections held all month, each sending messages at a steady rate, each message
answered by `--replies` messages to its sender, each connection renewed every
`--connection-hours` (API Gateway closes them after 2 h, so both sides see the same churn).
Prints the monthly bill (730 hours) of both sides item by item, their ratio, and every input with
where it came from:

- the deployment: cdk.json's environment, read and checked by infra.config, or a flag;
- the node's own settings: runtime.config's defaults (packing, linger, pollers, pings);
- figures our benchmarks measure: bench/results/*.json when present, else the defaults below,
  marked "default, not measured on this machine";
- the sizes of an event and a command: encoded by the node's and the SDK's own encoders;
- prices: bench/prices.py (us-east-1 list prices, no free tier);
- in production, what issue 16 adds (WAF, health checks, alarms...): bench/hardening.py, added to
  the bill and shown on its own with the bill before and after (--no-hardening leaves it out).

SQS and SNS requests are counted from how the node sends: its pump sends a batch once the
oldest event has waited the linger (or the batch is full), packs the batch into messages (on
FIFO, one message per bucket of connections) and sends them 10 to a call; SQS and SNS bill a call
per 64 KiB. Lambda takes the messages (FIFO: at most 10 a batch, a receive taken to get one
node's batch; standard: a receive a message while its pollers keep up, 10 a batch within a 1 s
window), and each invocation publishes its replies in one SNS message that a node receives and
deletes. When bench.aws has counted the billed requests end to end, the count is calibrated: the
model is run at the benchmark's own conditions (one node, its rate, its message size, its node
settings), and every SQS and SNS request is multiplied by measured / modelled there.
Every rate is a monthly mean: bursts cost more, and so does what docs/cost.md lists as not counted.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bench import hardening, prices
from bench.bill import (
    HOURS_PER_MONTH,
    MILLION,
    MINUTES_PER_MONTH,
    Bill,
    Line,
    monthly,
)
from bench.bill import spec as _spec
from bench.common import REPO
from bench.prices import Price
from infra.config import MAX_TASKS, ConfigError, EnvironmentConfig, parse_environment
from infra.origin import FIFO_BATCH_SIZE, STANDARD_BATCH_SIZE, STANDARD_BATCHING_WINDOW
from runtime.config import Settings
from runtime.node.server import KEEPALIVE_IDS_PER_EVENT
from runtime.origin import packing
from runtime.transports.sqs_commands import DELETE_LINGER
from runtime.wire import events as wire_events

CDK_JSON = REPO / "cdk.json"
RESULTS_DIR = REPO / "bench" / "results"
NETWORK_MODULE = REPO / "infra" / "network.py"

MAX_ENTRIES_PER_CALL = 10  # SendMessageBatch and PublishBatch
MAX_CALL_BYTES = 1 << 20  # what one SendMessageBatch carries at most
FULL_VCPU = 1024  # CPU units; one node process uses one core at most
NOT_MEASURED = "default, not measured on this machine"

DEFAULT_MESSAGE_BYTES = 256
DEFAULT_CONNECTION_HOURS = 2.0  # API Gateway closes a connection after 2 hours
# docs/performance.md: bench.run of 2026-11-27, on another machine.
DEFAULT_RSS_PER_CONNECTION_KIB = 15.3
DEFAULT_BASE_RSS_MIB = 30.5
# docs/performance.md measured 43,930 round trips/s on one x86 core with a local HTTP origin;
# boto3's SQS and SNS calls and a Fargate vCPU are slower: far less is assumed until measured.
DEFAULT_ROUND_TRIPS_PER_SECOND = 5_000.0

# A connection ID and a browser's User-Agent of the usual lengths, to size events and commands.
SAMPLE_CONNECTION_ID = "AQl1cy1lYXN0LTEEfwAAASOMTsWFmt9JJy3653To49ZGgkVR-00"
SAMPLE_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@dataclass(frozen=True)
class Load:
    """The traffic both sides carry."""

    connections: int = _spec("connections, split evenly over the regions", "connections")
    messages_per_minute: float = _spec("messages each connection sends", "per minute")
    replies: float = _spec("replies to the sender per message", "messages")
    regions: int = _spec("regions", "regions")
    message_bytes: int = _spec("bytes per message, either way", "bytes")
    connection_hours: float = _spec("connection lifetime: a CONNECT, a DISCONNECT", "hours")


@dataclass(frozen=True)
class Deployment:
    """What each region of the environment runs."""

    environment: str = _spec("cdk.json environment")
    task_cpu: int = _spec("task CPU", "CPU units")
    task_memory: int = _spec("task memory", "MiB")
    architecture: str = _spec("task and Lambda architecture")
    min_tasks: int = _spec("fewest tasks per region", "tasks")
    max_tasks: int = _spec("most tasks per region (autoscaling stops there)", "tasks")
    max_connections_per_task: int = _spec("node --max-connections", "connections")
    connections_per_task_target: int = _spec("autoscaling target per task", "connections")
    cpu_target_percent: int = _spec("autoscaling CPU target", "%")
    fifo: bool = _spec("FIFO events queue (and topic)")
    events_via: str = _spec("events reach the queue via")
    egress: str = _spec("nodes reach AWS APIs through")
    az_count: int = _spec("availability zones per region", "AZs")
    nat_gateways: int = _spec("NAT gateways per region", "gateways")
    keepalive_seconds: int = _spec("KEEPALIVE interval", "s")
    interface_endpoints: int = _spec("interface endpoints (with vpc-endpoints)", "per AZ")


@dataclass(frozen=True)
class NodeSettings:
    """The node's settings that shape its AWS requests (the stack sets none of them)."""

    events_linger_ms: int = _spec("--events-linger-ms", "ms")
    events_per_message: int = _spec("--events-per-message", "events")
    events_message_bytes: int = _spec("--events-message-bytes", "bytes")
    events_fifo_groups: int = _spec("--events-fifo-groups", "groups")
    origin_batch_events: int = _spec("--origin-batch-events", "events")
    commands_workers: int = _spec("--commands-workers (long pollers per node)", "pollers")
    ping_interval: float = _spec("--ping-interval", "s")
    keepalive_ids_per_event: int = _spec("connection IDs per KEEPALIVE event", "IDs")


@dataclass(frozen=True)
class Measured:
    """Figures our benchmarks measure."""

    rss_per_connection_kib: float = _spec("node RSS per idle connection", "KiB")
    base_rss_mib: float = _spec("node RSS with no connection", "MiB")
    round_trips_per_second: float = _spec(
        "one node at 1 vCPU: client messages with one reply each, AWS path", "per second"
    )
    billed_per_1000: float | None = _spec(
        "SQS+SNS requests billed per 1,000 client messages with one reply (None: modelled)"
    )
    billed_rate: float | None = _spec(
        "client messages a second to the one node of that count", "per second", None
    )
    billed_connections: int | None = _spec("clients sending them", "connections", None)
    billed_message_bytes: int | None = _spec("bytes per message in that count", "bytes", None)


@dataclass(frozen=True)
class Assumptions:
    """Figures no benchmark measures (yet), each stated."""

    memory_headroom: float = _spec("share of task memory for connections", "", 0.6)
    lambda_memory_mb: int = _spec("origin Lambda memory (the example origin's)", "MB", 256)
    lambda_invocation_ms: float = _spec("Lambda time per invocation (start, publish)", "ms", 20)
    lambda_event_ms: float = _spec("Lambda time per event", "ms", 1.0)
    lambda_log_bytes: int = _spec("Lambda platform log per invocation", "bytes", 300)
    node_log_bytes_per_hour: int = _spec("node log per task-hour", "bytes", 200_000)
    wire_overhead_bytes: int = _spec("frame, TLS and TCP/IP bytes per message", "bytes", 60)
    handshake_bytes: int = _spec("opening handshake, both ways", "bytes", 1_500)
    api_request_bytes: int = _spec("HTTP and signature bytes per AWS API call", "bytes", 1_500)
    peer_overhead_bytes: int = _spec("UDP framing per forwarded command", "bytes", 100)
    lambda_pollers: int = _spec("Lambda's SQS pollers, at least", "pollers", 5)
    fifo_lambda_batch: int = _spec(
        "Lambda batch, FIFO (infra/origin.py)", "messages", FIFO_BATCH_SIZE
    )
    standard_lambda_batch: int = _spec(
        "Lambda batch, standard (infra/origin.py)", "messages", STANDARD_BATCH_SIZE
    )
    standard_lambda_window: float = _spec(
        "Lambda batching window, standard (infra/origin.py)",
        "s",
        STANDARD_BATCHING_WINDOW.to_seconds(),
    )
    receives_per_poller_second: float = _spec("receives of one busy long poller", "per s", 50)
    long_poll_seconds: float = _spec("long poll of an idle poller", "s", 20)


@dataclass(frozen=True)
class Sizes:
    """Bytes of what travels, from the node's and the SDK's own encoders."""

    event_bytes: int = _spec("a MESSAGE event", "bytes")
    command_bytes: int = _spec("a send command in its SNS message", "bytes")
    keepalive_base_bytes: int = _spec("a KEEPALIVE event, without its IDs", "bytes")
    keepalive_id_bytes: int = _spec("a KEEPALIVE event, per connection ID", "bytes")


@dataclass(frozen=True)
class Input:
    name: str
    value: Any
    unit: str
    source: str


# ---- the arithmetic ------------------------------------------------------------------------


def connections_per_task(
    task_memory_mib: int,
    rss_per_connection_kib: float,
    base_rss_mib: float,
    headroom: float,
    max_connections: int,
    target: int,
) -> tuple[int, str]:
    """Connections a task holds and the limit that sets it: its memory (less headroom for
    buffers and bursts), the node's --max-connections, or the autoscaling target."""
    by_memory = int((task_memory_mib * headroom - base_rss_mib) * 1024 / rss_per_connection_kib)
    limits = {"memory": by_memory, "max connections": max_connections, "scaling target": target}
    limit = min(limits, key=lambda name: limits[name])
    return max(1, limits[limit]), limit


def round_trip_capacity(measured: float, task_cpu: int, cpu_target_percent: int) -> float:
    """Round trips a task serves at the autoscaling CPU target. One node process uses one core
    at most: CPU beyond 1 vCPU adds nothing, and less gives a share."""
    return measured * min(1.0, task_cpu / FULL_VCPU) * cpu_target_percent / 100


def tasks_needed(
    connections: float, per_task: int, round_trips: float, per_task_round_trips: float, least: int
) -> int:
    """Tasks of one region: enough for its connections and for its messages, and the least."""
    by_connections = math.ceil(connections / per_task)
    by_cpu = math.ceil(round_trips / per_task_round_trips)
    return max(least, by_connections, by_cpu)


def alb_lcus(
    new_per_second: float, active: float, processed_gb_per_hour: float, rule_evaluations: float
) -> dict[str, float]:
    """LCUs of each dimension in an hour; the ALB bills the largest ("billed")."""
    dimensions = {
        "new connections": new_per_second / prices.ALB_LCU_NEW_CONNECTIONS_PER_SECOND,
        "active connections": active / prices.ALB_LCU_ACTIVE_CONNECTIONS,
        "processed bytes": processed_gb_per_hour / prices.ALB_LCU_PROCESSED_GB_PER_HOUR,
        "rule evaluations": rule_evaluations / prices.ALB_LCU_RULE_EVALUATIONS_PER_SECOND,
    }
    return {**dimensions, "billed": max(dimensions.values())}


def events_per_batch(events_per_second: float, linger_seconds: float, most: float) -> float:
    """Events in a batch of a node's pump: the first waits the linger for others to arrive."""
    return max(1.0, min(1.0 + events_per_second * linger_seconds, most))


def distinct_groups(events: float, groups: int) -> float:
    """FIFO groups (buckets of connections) that `events` events of random connections fill."""
    return groups * (1.0 - (1.0 - 1.0 / groups) ** events)


def messages_per_batch(
    events: float,
    event_bytes: int,
    message_bytes: int,
    events_per_message: int,
    fifo_groups: int | None,
) -> float:
    """SQS/SNS messages a batch packs into, bounded by bytes and events per message, and on
    FIFO by one message per bucket of connections at least."""
    spread = distinct_groups(events, fifo_groups) if fifo_groups else 1.0
    return max(1.0, spread, events / events_per_message, events * event_bytes / message_bytes)


def calls_for(messages: float) -> float:
    """SendMessageBatch or PublishBatch calls for `messages`, 10 a call."""
    return float(math.ceil(messages / MAX_ENTRIES_PER_CALL))


def billed(calls: float, payload_bytes: float) -> float:
    """Requests SQS or SNS bills for calls carrying `payload_bytes`: one per call at least,
    one per 64 KiB of payload."""
    return max(calls, payload_bytes / prices.SQS_BILLING_CHUNK_BYTES)


def lambda_takes(
    messages: float, burst: float, fifo: bool, assume: Assumptions
) -> tuple[float, float, float]:
    """(invocations, receives, deletes) a second of Lambda's poll of the events queue.

    FIFO: batches of 10 at most, no window, and a receive is taken to get one node batch's
    burst of messages (generous: fewer a receive costs more). Standard: each poller gathers a
    batch over the window, receiving as its long polls return (one message a receive while the
    pollers keep up, as bench.aws counts them); deletes go 10 a call, one call a batch at least."""
    if messages <= 0:
        return 0.0, assume.lambda_pollers / assume.long_poll_seconds, 0.0
    if fifo:
        invocations = messages / min(assume.fifo_lambda_batch, max(1.0, burst))
        return invocations, invocations, invocations
    by_window = assume.lambda_pollers / assume.standard_lambda_window
    invocations = min(messages, max(messages / assume.standard_lambda_batch, by_window))
    deletes = max(messages / MAX_ENTRIES_PER_CALL, invocations)
    return invocations, poller_receives(messages, assume.lambda_pollers, assume), deletes


def poller_receives(messages: float, pollers: float, assume: Assumptions) -> float:
    """ReceiveMessage calls of long pollers taking `messages` a second: one a message while they
    keep up, up to 10 a call when they cannot; an idle poller still asks once per long poll."""
    keeping_up = min(messages, pollers * assume.receives_per_poller_second)
    return max(messages / MAX_ENTRIES_PER_CALL, keeping_up, pollers / assume.long_poll_seconds)


def command_deletes(messages: float, tasks: int) -> float:
    """DeleteMessageBatch calls of the nodes' command pollers: ten messages a call, or what a
    node's delete linger gathers (each node deletes at most once a linger while it trickles)."""
    if messages <= 0:
        return 0.0
    return min(messages, max(messages / MAX_ENTRIES_PER_CALL, tasks / DELETE_LINGER))


def lambda_gb_seconds(
    invocations: float, events: float, invocation_ms: float, event_ms: float, memory_mb: int
) -> float:
    """Lambda duration billed: a time per invocation plus a time per event, at its memory."""
    return (invocations * invocation_ms + events * event_ms) / 1000 * memory_mb / 1024


def message_units(messages: float, message_bytes: int) -> float:
    """API Gateway messages metered: one per 32 KB of each message."""
    return messages * math.ceil(message_bytes / prices.APIGW_MESSAGE_UNIT_BYTES)


def split_tier(quantity: float, first_tier: float) -> tuple[float, float]:
    """(within the first tier, beyond it)."""
    return min(quantity, first_tier), max(0.0, quantity - first_tier)


def interface_endpoint_count(source: str, leaving_out: Sequence[str] = ()) -> int:
    """Interface endpoints the stack creates per AZ: the entries of infra/network.py's
    INTERFACE_ENDPOINTS (Lambda's is added only for nodes that invoke functions), less those
    whose service is named in `leaving_out` (issue 16's, which bench.hardening prices)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Dict):
            continue
        if any(getattr(target, "id", None) == "INTERFACE_ENDPOINTS" for target in node.targets):
            return sum(
                1
                for service in node.value.values
                if not (isinstance(service, ast.Attribute) and service.attr in leaving_out)
            )
    raise ValueError("INTERFACE_ENDPOINTS, a dict, is not in infra/network.py")


def measure_sizes(message_bytes: int) -> Sizes:
    """One MESSAGE event, one send command and KEEPALIVEs, encoded as the node and SDK do."""
    node = wire_events.NodeContext(stage="prod", region=prices.REGION, domain_name="example.com")
    details = wire_events.HandshakeDetails(
        path="/",
        headers=[("host", "ws.example.com"), ("user-agent", SAMPLE_USER_AGENT)],
        query=[],
        source_ip="203.0.113.7",
        subprotocol=None,
    )
    now = 1_795_805_536_203
    fragment = wire_events.connection_fragment(node, SAMPLE_CONNECTION_ID, now, details)
    body = "x" * message_bytes
    event = wire_events.message_event(fragment, 1, now, "$default", body)
    data_json, binary = packing.payload_json(body)
    command = packing.send_commands(
        [SAMPLE_CONNECTION_ID], data_json, binary, packing.MAX_MAX_MESSAGE_BYTES
    )[0]
    one, two = (
        len(wire_events.keepalive_events(node, [SAMPLE_CONNECTION_ID] * n, now, n)[0])
        for n in (1, 2)
    )
    return Sizes(len(event), command.size + packing.ENVELOPE_BYTES, 2 * one - two, two - one)


# ---- one region's traffic ------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One region's steady rates (per second) and bytes: what both bills are priced from."""

    connections: float
    tasks: int
    per_task: int  # connections a task holds at most
    per_task_limit: str  # what sets it
    client_messages: float
    replies: float
    connects: float  # and as many disconnects
    events: float  # MESSAGE, CONNECT and DISCONNECT events
    keepalives: float  # KEEPALIVE events, each its own message
    batch_events: float  # events in one batch a node sends
    batch_messages: float  # SQS/SNS messages that batch packs into
    event_sends: float  # billed: SendMessageBatch (sqs) or PublishBatch (sns)
    event_deliveries: float  # billed by the queue for SNS's deliveries (sns only)
    event_messages: float
    event_payload: float  # bytes a second
    lambda_invocations: float
    lambda_receives: float  # billed
    lambda_deletes: float
    command_publishes: float  # billed, SNS standard
    command_deliveries: float  # billed by the commands queue
    command_receives: float  # billed
    command_deletes: float
    command_payload: float  # bytes a second

    @property
    def billed_requests(self) -> float:
        """Every SQS and SNS request billed, a second."""
        return (
            self.event_sends
            + self.event_deliveries
            + self.lambda_receives
            + self.lambda_deletes
            + self.command_publishes
            + self.command_deliveries
            + self.command_receives
            + self.command_deletes
        )

    @property
    def node_api_calls(self) -> float:
        """AWS API calls the nodes make (through the endpoints or NAT), a second."""
        return self.event_sends + self.command_receives + self.command_deletes


def region_traffic(
    load: Load,
    deployment: Deployment,
    node: NodeSettings,
    measured: Measured,
    assume: Assumptions,
    sizes: Sizes,
) -> Region:
    connections = load.connections / load.regions
    client_messages = connections * load.messages_per_minute / 60
    replies = client_messages * load.replies
    connects = connections / (load.connection_hours * 3600)
    events = client_messages + 2 * connects
    per_task, limit = connections_per_task(
        deployment.task_memory,
        measured.rss_per_connection_kib,
        measured.base_rss_mib,
        assume.memory_headroom,
        deployment.max_connections_per_task,
        deployment.connections_per_task_target,
    )
    capacity = round_trip_capacity(
        measured.round_trips_per_second, deployment.task_cpu, deployment.cpu_target_percent
    )
    round_trips = (events + replies) / 2  # one event in and one reply out make a round trip
    tasks = tasks_needed(connections, per_task, round_trips, capacity, deployment.min_tasks)

    # Events: the nodes' batches, packed, sent; on SNS delivered into the queue; then Lambda.
    ids = min(math.ceil(connections / tasks), node.keepalive_ids_per_event)
    keepalive_bytes = sizes.keepalive_base_bytes + ids * sizes.keepalive_id_bytes
    keepalive_chunks = math.ceil(keepalive_bytes / prices.SQS_BILLING_CHUNK_BYTES)
    per_task_keepalives = math.ceil(connections / tasks / node.keepalive_ids_per_event)
    keepalives = tasks * per_task_keepalives / deployment.keepalive_seconds
    most = max(node.origin_batch_events, MAX_CALL_BYTES / sizes.event_bytes)
    batch_events = events_per_batch(events / tasks, node.events_linger_ms / 1000, most)
    batch_bytes = batch_events * sizes.event_bytes
    batch_messages = messages_per_batch(
        batch_events,
        sizes.event_bytes,
        node.events_message_bytes,
        node.events_per_message,
        node.events_fifo_groups if deployment.fifo else None,
    )
    batches = events / batch_events
    sends = batches * billed(calls_for(batch_messages), batch_bytes) + keepalives * keepalive_chunks
    deliveries = 0.0
    if deployment.events_via == "sns":  # the queue bills each delivered message per 64 KiB
        per_message = billed(1.0, batch_bytes / batch_messages)
        deliveries = batches * batch_messages * per_message + keepalives * keepalive_chunks
    event_messages = batches * batch_messages + keepalives
    event_payload = events * sizes.event_bytes + keepalives * keepalive_bytes
    invocations, receives, deletes = lambda_takes(
        event_messages, batch_messages, deployment.fifo, assume
    )

    # Commands: each invocation with replies publishes them in one SNS message (larger ones
    # split at 256 KiB), which the commands queue takes and one node receives and deletes.
    publishing = min(invocations, client_messages) if replies > 0 else 0.0
    command_payload = replies * sizes.command_bytes
    command_messages = max(publishing, command_payload / packing.DEFAULT_MAX_MESSAGE_BYTES)
    command_receives = poller_receives(command_messages, tasks * node.commands_workers, assume)
    return Region(
        connections=connections,
        tasks=tasks,
        per_task=per_task,
        per_task_limit=limit,
        client_messages=client_messages,
        replies=replies,
        connects=connects,
        events=events,
        keepalives=keepalives,
        batch_events=batch_events,
        batch_messages=batch_messages,
        event_sends=sends,
        event_deliveries=deliveries,
        event_messages=event_messages,
        event_payload=event_payload,
        lambda_invocations=invocations,
        lambda_receives=billed(receives, event_payload),
        lambda_deletes=deletes,
        command_publishes=billed(publishing, command_payload),
        command_deliveries=billed(command_messages, command_payload),
        command_receives=billed(command_receives, command_payload),
        command_deletes=command_deletes(command_messages, tasks),
        command_payload=command_payload,
    )


def modelled_per_1000(region: Region) -> float:
    """SQS and SNS requests billed per 1,000 client messages, as the model counts them."""
    if region.client_messages <= 0:
        return 0.0
    return 1000 * region.billed_requests / region.client_messages


# ---- the bills -----------------------------------------------------------------------------


def fargate_prices(architecture: str) -> tuple[Price, Price]:
    if architecture == "ARM64":
        return prices.FARGATE_ARM_VCPU_HOUR, prices.FARGATE_ARM_GB_HOUR
    return prices.FARGATE_X86_VCPU_HOUR, prices.FARGATE_X86_GB_HOUR


def lambda_lines(
    invocations: float, events: float, architecture: str, assume: Assumptions
) -> list[Line]:
    """The origin function: its invocations and duration, and its platform log lines."""
    seconds = lambda_gb_seconds(
        invocations,
        events,
        assume.lambda_invocation_ms,
        assume.lambda_event_ms,
        assume.lambda_memory_mb,
    )
    duration = (
        prices.LAMBDA_ARM_GB_SECOND if architecture == "ARM64" else prices.LAMBDA_X86_GB_SECOND
    )
    return [
        Line("Lambda invocations", invocations / MILLION, prices.LAMBDA_REQUESTS_MILLION),
        Line("Lambda duration", seconds, duration),
    ]


def log_lines(gb: float, whose: str) -> list[Line]:
    """CloudWatch Logs: ingestion, and storage of one month's worth (it grows with retention)."""
    return [
        Line(f"CloudWatch Logs ingestion ({whose})", gb, prices.LOGS_INGESTION_GB),
        Line("CloudWatch Logs storage (one month's)", gb, prices.LOGS_STORAGE_GB_MONTH),
    ]


def alb_bytes_per_second(
    region: Region, message_bytes: int, node: NodeSettings, assume: Assumptions
) -> float:
    """Bytes the ALB processes both ways: messages, replies, pings and pongs, handshakes."""
    frame = message_bytes + assume.wire_overhead_bytes
    pings = 2 * region.connections / node.ping_interval * assume.wire_overhead_bytes
    handshakes = region.connects * assume.handshake_bytes
    return (region.client_messages + region.replies) * frame + pings + handshakes


def region_lcus(
    region: Region, message_bytes: int, node: NodeSettings, assume: Assumptions
) -> dict[str, float]:
    """One region's ALB LCUs; its one listener rule is within the ten free ones."""
    gb_per_hour = alb_bytes_per_second(region, message_bytes, node, assume) * 3600 / prices.GB
    return alb_lcus(region.connects, region.connections, gb_per_hour, 0.0)


def data_out_bytes_per_second(
    region: Region, message_bytes: int, node: NodeSettings, assume: Assumptions
) -> float:
    """Bytes leaving AWS for the clients: replies, pings, the handshakes' answers."""
    frame = message_bytes + assume.wire_overhead_bytes
    pings = region.connections / node.ping_interval * assume.wire_overhead_bytes
    return region.replies * frame + pings + region.connects * assume.handshake_bytes / 2


def cross_az_bytes_per_second(
    region: Region, message_bytes: int, az_count: int, assume: Assumptions
) -> float:
    """Replies a node takes from the commands queue for a connection another node holds, in
    another AZ, forwarded over UDP."""
    elsewhere = (region.tasks - 1) / region.tasks * (az_count - 1) / az_count
    return region.replies * (message_bytes + assume.peer_overhead_bytes) * elsewhere


def egress_bytes_per_second(region: Region, assume: Assumptions) -> float:
    """Bytes between the nodes and AWS's APIs: events, commands, each call's HTTP, logs."""
    calls = region.node_api_calls * assume.api_request_bytes
    logs = region.tasks * assume.node_log_bytes_per_hour / 3600
    return region.event_payload + region.command_payload + calls + logs


def project_bill(
    load: Load,
    deployment: Deployment,
    node: NodeSettings,
    region: Region,
    assume: Assumptions,
    scale: float,
) -> Bill:
    """This project's monthly bill, all regions. `scale` multiplies the SQS and SNS requests:
    1 for the model's count, measured / modelled when a benchmark measured them."""

    def month_gb(bytes_per_second: float) -> float:
        return monthly(bytes_per_second) * load.regions / prices.GB

    hours = load.regions * HOURS_PER_MONTH
    task_hours = region.tasks * hours
    vcpu, memory = fargate_prices(deployment.architecture)
    lcus = region_lcus(region, load.message_bytes, node, assume)
    lines = [
        Line("Fargate vCPU", task_hours * deployment.task_cpu / 1024, vcpu),
        Line("Fargate memory", task_hours * deployment.task_memory / 1024, memory),
        Line("ALB", hours, prices.ALB_HOUR),
        Line("ALB capacity units", lcus["billed"] * hours, prices.ALB_LCU_HOUR),
    ]
    egress_gb = month_gb(egress_bytes_per_second(region, assume))
    addresses = deployment.az_count  # the ALB's, one per AZ
    if deployment.egress == "vpc-endpoints":
        endpoint_hours = deployment.interface_endpoints * deployment.az_count * hours
        lines += [
            Line("interface endpoints", endpoint_hours, prices.INTERFACE_ENDPOINT_AZ_HOUR),
            Line("interface endpoint data", egress_gb, prices.INTERFACE_ENDPOINT_GB),
        ]
    else:
        addresses += deployment.nat_gateways
        lines += [
            Line("NAT gateways", deployment.nat_gateways * hours, prices.NAT_GATEWAY_HOUR),
            Line("NAT gateway data", egress_gb, prices.NAT_GATEWAY_GB),
        ]
    lines.append(Line("public IPv4 addresses", addresses * hours, prices.PUBLIC_IPV4_HOUR))
    lines += messaging_lines(load, deployment, region, scale)
    invocations = monthly(region.lambda_invocations) * load.regions
    events = monthly(region.events + region.keepalives) * load.regions
    lines += lambda_lines(invocations, events, deployment.architecture, assume)
    node_logs = task_hours * assume.node_log_bytes_per_hour
    lines += log_lines(
        (node_logs + invocations * assume.lambda_log_bytes) / prices.GB, "nodes and Lambda"
    )
    data_out = data_out_bytes_per_second(region, load.message_bytes, node, assume)
    between = cross_az_bytes_per_second(region, load.message_bytes, deployment.az_count, assume)
    lines += [
        Line("data transfer out to clients", month_gb(data_out), prices.DATA_TRANSFER_OUT_GB),
        Line(
            "replies forwarded between AZs, out and in", 2 * month_gb(between), prices.CROSS_AZ_GB
        ),
    ]
    return Bill(tuple(lines))


def messaging_lines(load: Load, deployment: Deployment, region: Region, scale: float) -> list[Line]:
    """SQS and SNS requests, each kind at its price."""

    def millions(per_second: float) -> float:
        return monthly(per_second) * load.regions * scale / MILLION

    kind = "FIFO" if deployment.fifo else "standard"
    queue = prices.SQS_FIFO_MILLION if deployment.fifo else prices.SQS_STANDARD_MILLION
    standard = prices.SQS_STANDARD_MILLION
    lines = []
    if deployment.events_via == "sqs":
        lines.append(Line(f"events: SQS {kind} sends", millions(region.event_sends), queue))
    elif deployment.fifo:
        payload_gb = monthly(region.event_payload) * load.regions / prices.GB
        lines += [
            Line(
                "events: SNS FIFO publishes",
                millions(region.event_sends),
                prices.SNS_FIFO_PUBLISH_MILLION,
            ),
            Line("events: SNS FIFO published payload", payload_gb, prices.SNS_FIFO_PUBLISH_GB),
            Line(
                "events: SNS FIFO deliveries",
                millions(region.event_messages),
                prices.SNS_FIFO_DELIVERY_MILLION,
            ),
            Line("events: SNS FIFO delivered payload", payload_gb, prices.SNS_FIFO_DELIVERY_GB),
        ]
    else:
        lines.append(
            Line(
                "events: SNS publishes",
                millions(region.event_sends),
                prices.SNS_STANDARD_PUBLISH_MILLION,
            )
        )
    if deployment.events_via == "sns":
        lines.append(
            Line(
                f"events: the {kind} queue's deliveries from SNS",
                millions(region.event_deliveries),
                queue,
            )
        )
    lambda_requests = region.lambda_receives + region.lambda_deletes
    node_requests = region.command_receives + region.command_deletes
    return [
        *lines,
        Line(f"events: Lambda's receives and deletes ({kind})", millions(lambda_requests), queue),
        Line(
            "commands: SNS publishes",
            millions(region.command_publishes),
            prices.SNS_STANDARD_PUBLISH_MILLION,
        ),
        Line(
            "commands: the queue's deliveries from SNS",
            millions(region.command_deliveries),
            standard,
        ),
        Line("commands: nodes' receives and deletes", millions(node_requests), standard),
    ]


def api_gateway_bill(
    load: Load, deployment: Deployment, region: Region, assume: Assumptions
) -> Bill:
    """API Gateway WebSocket for the same load and the same Lambda: one invocation per message,
    $connect and $disconnect. Message tiers over all regions together, the cheaper reading;
    data transfer out not counted, as its WebSocket pricing names only messages and minutes."""
    connection_minutes = load.connections * MINUTES_PER_MONTH / MILLION
    messages = monthly(region.client_messages + region.replies) * load.regions
    first, beyond = split_tier(
        message_units(messages, load.message_bytes), prices.APIGW_FIRST_TIER_MESSAGES
    )
    invocations = monthly(region.events) * load.regions
    return Bill(
        (
            Line("connection minutes", connection_minutes, prices.APIGW_CONNECTION_MINUTES_MILLION),
            Line(
                "messages, first billion (32 KB units, both ways)",
                first / MILLION,
                prices.APIGW_MESSAGES_MILLION,
            ),
            Line(
                "messages beyond a billion", beyond / MILLION, prices.APIGW_MESSAGES_MILLION_BEYOND
            ),
            *lambda_lines(invocations, invocations, deployment.architecture, assume),
            *log_lines(invocations * assume.lambda_log_bytes / prices.GB, "Lambda"),
        )
    )


# ---- the inputs and where each comes from --------------------------------------------------

# cdk.json key -> Deployment field.
DEPLOYMENT_KEYS = {
    "taskCpu": "task_cpu",
    "taskMemory": "task_memory",
    "architecture": "architecture",
    "minTasks": "min_tasks",
    "maxTasks": "max_tasks",
    "maxConnectionsPerTask": "max_connections_per_task",
    "connectionsPerTaskTarget": "connections_per_task_target",
    "cpuTargetPercent": "cpu_target_percent",
    "fifo": "fifo",
    "eventsVia": "events_via",
    "egress": "egress",
    "azCount": "az_count",
    "natGateways": "nat_gateways",
    "keepaliveSeconds": "keepalive_seconds",
}


class CostError(Exception):
    """An input is missing or wrong: cdk.json, its environment, a setting, a results file."""


def read_deployment(
    cdk_json: Path, environment: str, overrides: Mapping[str, Any]
) -> tuple[Deployment, EnvironmentConfig, dict[str, str]]:
    """The environment's settings with the flags' `overrides` (cdk.json keys), checked by
    infra.config as `cdk synth` checks them."""
    try:
        raw = dict(json.loads(cdk_json.read_text())["context"]["environments"][environment])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CostError(
            f"cannot read environment {environment!r} of {cdk_json}: {error!r}"
        ) from None
    if overrides.get("egress") == "vpc-endpoints":
        raw.pop("natGateways", None)  # NAT gateways go with the NAT egress
    try:
        config = parse_environment(environment, {**raw, **overrides})
    except ConfigError as error:
        raise CostError(str(error)) from None
    where = f"{cdk_json.name} environments.{environment}"
    sources = {"environment": "flag --environment (default prod)"}
    for key, name in DEPLOYMENT_KEYS.items():
        in_file = f"{where}.{key}" if key in raw else "infra.config default"
        sources[name] = "flag" if key in overrides else in_file
    sources["interface_endpoints"] = (
        "infra/network.py INTERFACE_ENDPOINTS (issue 16's ELB API endpoint priced apart)"
    )
    values = {name: getattr(config, name) for name in DEPLOYMENT_KEYS.values()}
    deployment = Deployment(
        environment=environment,
        interface_endpoints=interface_endpoint_count(
            NETWORK_MODULE.read_text(), hardening.ENDPOINT_SERVICES
        ),
        **values,
    )
    return deployment, config, sources


def node_settings(
    linger_ms: int | None, config: EnvironmentConfig
) -> tuple[NodeSettings, dict[str, str]]:
    """The node's settings as the stack sets them: packing from the environment, the rest the
    node's defaults."""
    defaults = Settings()
    packing = config.event_packing
    settings = NodeSettings(
        events_linger_ms=packing.linger_ms if linger_ms is None else linger_ms,
        events_per_message=packing.per_message,
        events_message_bytes=packing.message_bytes,
        events_fifo_groups=packing.fifo_groups,
        origin_batch_events=defaults.origin_batch_events,
        commands_workers=defaults.commands_workers,
        ping_interval=defaults.ping_interval,
        keepalive_ids_per_event=KEEPALIVE_IDS_PER_EVENT,
    )
    sources = {spec.name: "runtime.config default" for spec in fields(NodeSettings)}
    sources["keepalive_ids_per_event"] = "runtime.node.server KEEPALIVE_IDS_PER_EVENT"
    where = f"cdk.json environments.{config.name}"
    sources["events_linger_ms"] = f"{where}.eventsLingerMs (or its default)"
    sources["events_per_message"] = f"{where}.eventsPerMessage (or its default)"
    sources["events_message_bytes"] = f"{where}.eventsMessageBytes (or its default)"
    sources["events_fifo_groups"] = f"{where}.eventsFifoGroups (or its default)"
    if linger_ms is not None:
        sources["events_linger_ms"] = "flag"
    return settings, sources


def read_measured(
    results: Path, fifo: bool, billed_flag: float | None
) -> tuple[Measured, dict[str, str]]:
    """Figures measured by our benchmarks when their results are there, else the defaults.

    bench/results/full.json (bench.run): memory per connection. bench/results/aws.json
    (bench.aws): "billed_per_1000" and "round_trips_per_second", each a number or per queue kind
    ({"fifo": x, "standard": y})."""
    kind = "fifo" if fifo else "standard"
    rss, base = DEFAULT_RSS_PER_CONNECTION_KIB, DEFAULT_BASE_RSS_MIB
    memory_source = f"docs/performance.md (bench.run, 2026-11-27); {NOT_MEASURED}"
    full = _read_json(results / "full.json")
    if full is not None and full.get("meta", {}).get("mode") == "full":
        idle = full["raw"]["node"]["idle"]
        rss, base = idle["bytes_per_connection"] / 1024, idle["rss_before"] / 2**20
        memory_source = f"{results.name}/full.json (bench.run, {full['meta'].get('date', '?')})"
    sources = {
        "rss_per_connection_kib": memory_source,
        "base_rss_mib": memory_source,
        "round_trips_per_second": NOT_MEASURED,
        "billed_per_1000": f"none: modelled from the node's settings; {NOT_MEASURED}",
    }
    round_trips, per_1000 = DEFAULT_ROUND_TRIPS_PER_SECOND, None
    aws = _read_json(results / "aws.json") or {}
    rate = _per_kind(aws.get("round_trips_per_second"), kind)
    if rate is not None:
        round_trips = rate
        sources["round_trips_per_second"] = (
            f"{results.name}/aws.json round_trips_per_second.{kind} (bench.aws)"
        )
    measured_per_1000 = _per_kind(aws.get("billed_per_1000"), kind)
    plan = aws.get("plan") or {}
    conditions: tuple[float | None, int | None, int | None] = (None, None, None)
    if measured_per_1000 is not None:
        per_1000 = measured_per_1000
        sources["billed_per_1000"] = f"{results.name}/aws.json billed_per_1000.{kind} (bench.aws)"
        try:
            conditions = (
                float(plan["billed_rate"]),
                int(plan["connections"]),
                int(plan["payload_bytes"]),
            )
        except (KeyError, TypeError, ValueError):
            raise CostError(
                f"{results}/aws.json has billed_per_1000 but not the plan it was counted at "
                "(plan.billed_rate, plan.connections, plan.payload_bytes): run bench.aws again"
            ) from None
        for name in ("billed_rate", "billed_connections", "billed_message_bytes"):
            sources[name] = f"{results.name}/aws.json plan (bench.aws)"
    if billed_flag is not None:
        per_1000, sources["billed_per_1000"] = billed_flag, "flag (for this load, not calibrated)"
        conditions = (None, None, None)
    return Measured(rss, base, round_trips, per_1000, *conditions), sources


def bench_node_settings(results: Path) -> NodeSettings:
    """The node settings bench.aws counted its billed requests with: the ones its results
    record, else the node's defaults (which every node there keeps)."""
    defaults = Settings()
    recorded = (_read_json(results / "aws.json") or {}).get("node") or {}
    return NodeSettings(
        events_linger_ms=int(recorded.get("events_linger_ms", defaults.events_linger_ms)),
        events_per_message=int(recorded.get("events_per_message", defaults.events_per_message)),
        events_message_bytes=int(
            recorded.get("events_message_bytes", defaults.events_message_bytes)
        ),
        events_fifo_groups=int(recorded.get("events_fifo_groups", defaults.events_fifo_groups)),
        origin_batch_events=defaults.origin_batch_events,
        commands_workers=int(recorded.get("commands_workers", defaults.commands_workers)),
        ping_interval=defaults.ping_interval,
        keepalive_ids_per_event=KEEPALIVE_IDS_PER_EVENT,
    )


def bench_region(
    measured: Measured, node: NodeSettings, deployment: Deployment, assume: Assumptions
) -> Region | None:
    """The model run at the conditions bench.aws counted billed requests at: one node, its
    clients and their rate, its message size, events straight to the queue, no KEEPALIVE (the
    benchmark's nodes send none) and no new connections. None when nothing was counted."""
    if measured.billed_rate is None or not measured.billed_connections:
        return None
    connections = measured.billed_connections
    load = Load(
        connections=connections,
        messages_per_minute=measured.billed_rate * 60 / connections,
        replies=1,
        regions=1,
        message_bytes=measured.billed_message_bytes or DEFAULT_MESSAGE_BYTES,
        connection_hours=math.inf,
    )
    one_node = replace(deployment, min_tasks=1, events_via="sqs", keepalive_seconds=math.inf)
    sizes = measure_sizes(load.message_bytes)
    return region_traffic(load, one_node, node, measured, assume, sizes)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CostError(f"cannot read benchmark results {path}: {error}") from None
    if not isinstance(data, dict):
        raise CostError(f"benchmark results {path} must hold a JSON object")
    return data


def _per_kind(value: Any, kind: str) -> float | None:
    """A figure given once, or per queue kind."""
    if isinstance(value, Mapping):
        value = value.get(kind)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def input_rows(item: Any, sources: Mapping[str, str], default_source: str = "") -> list[Input]:
    """One row per field of a settings dataclass: what, value, unit, source."""
    return [
        Input(
            spec.metadata["what"],
            getattr(item, spec.name),
            spec.metadata["unit"],
            sources.get(spec.name, default_source),
        )
        for spec in fields(item)
    ]


# ---- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    load: Load
    deployment: Deployment
    region: Region
    lcus: dict[str, float]
    before: Bill  # this project before issue 16's production hardening
    added: tuple[hardening.Addition, ...]  # what issue 16 adds (none outside production)
    api_gateway: Bill
    modelled_per_1000: float
    modelled_at_bench: float | None  # the model at bench.aws's conditions, when it counted
    scale: float  # what the SQS and SNS requests are priced at, per modelled request
    inputs: tuple[Input, ...]
    warnings: tuple[str, ...]

    @property
    def project(self) -> Bill:
        """This project's bill: the deployment, and what issue 16 adds to it."""
        return Bill(self.before.lines + tuple(item.line for item in self.added))

    @property
    def ratio(self) -> float:
        return self.project.total / self.api_gateway.total

    @property
    def ratio_before(self) -> float:
        return self.before.total / self.api_gateway.total


def build(args: argparse.Namespace) -> Report:
    flags = {
        "fifo": args.fifo,
        "eventsVia": args.events_via,
        "egress": args.egress,
        "taskCpu": args.task_cpu,
        "taskMemory": args.task_memory,
        "architecture": args.architecture,
        "azCount": args.az_count,
        "maxConnectionsPerTask": args.max_connections_per_task,
        "connectionsPerTaskTarget": args.connections_per_task_target,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    deployment, config, deployment_sources = read_deployment(
        args.cdk_json, args.environment, overrides
    )
    load = Load(
        connections=args.connections,
        messages_per_minute=args.messages_per_minute,
        replies=args.replies,
        regions=len(config.regions) if args.regions is None else args.regions,
        message_bytes=args.message_bytes,
        connection_hours=args.connection_hours,
    )
    load_sources = {
        "regions": "flag" if args.regions else f"cdk.json environments.{args.environment}.regions",
        "message_bytes": "flag --message-bytes (default 256)",
        "connection_hours": "flag --connection-hours (default 2, API Gateway's longest)",
    }
    node, node_sources = node_settings(args.events_linger_ms, config)
    measured, measured_sources = read_measured(args.results, deployment.fifo, args.billed_per_1000)
    assume = Assumptions()
    sizes = measure_sizes(load.message_bytes)
    region = region_traffic(load, deployment, node, measured, assume, sizes)
    hardened = args.hardening
    if hardened is None:
        hardened = args.environment in hardening.HARDENED_ENVIRONMENTS
    added = hardening.Added()
    additions: tuple[hardening.Addition, ...] = ()
    if hardened:
        additions = hardening.additions(
            added,
            regions=load.regions,
            handshakes_per_second=region.connects,
            tasks=region.tasks,
            az_count=deployment.az_count,
            vpc_endpoints=deployment.egress == "vpc-endpoints",
            api_request_bytes=assume.api_request_bytes,
        )
    per_1000 = modelled_per_1000(region)
    scale = 1.0
    at_bench = bench_region(measured, bench_node_settings(args.results), deployment, assume)
    modelled_at_bench = modelled_per_1000(at_bench) if at_bench is not None else None
    if measured.billed_per_1000 is not None:
        basis = modelled_at_bench if modelled_at_bench is not None else per_1000
        scale = measured.billed_per_1000 / basis if basis > 0 else 1.0
    inputs = (
        *input_rows(load, load_sources, "flag"),
        *input_rows(deployment, deployment_sources),
        *input_rows(node, node_sources),
        *input_rows(measured, measured_sources),
        *input_rows(assume, {}, NOT_MEASURED),
        *input_rows(sizes, {}, "encoded by runtime.wire.events and runtime.origin.packing"),
        *(input_rows(added, hardening.SOURCES, hardening.ISSUE) if additions else ()),
    )
    return Report(
        load=load,
        deployment=deployment,
        region=region,
        lcus=region_lcus(region, load.message_bytes, node, assume),
        before=project_bill(load, deployment, node, region, assume, scale),
        added=additions,
        api_gateway=api_gateway_bill(load, deployment, region, assume),
        modelled_per_1000=per_1000,
        modelled_at_bench=modelled_at_bench,
        scale=scale,
        inputs=inputs,
        warnings=tuple(warnings(measured, modelled_at_bench, deployment, region, per_1000)),
    )


def warnings(
    measured: Measured,
    modelled_at_bench: float | None,
    deployment: Deployment,
    region: Region,
    per_1000: float,
) -> list[str]:
    found = []
    if region.tasks > deployment.max_tasks:
        found.append(
            f"the load needs {region.tasks} tasks per region and maxTasks is "
            f"{deployment.max_tasks}: raise maxTasks, or autoscaling stops short and the nodes "
            "refuse connections (priced here at the tasks the load needs)"
        )
    if region.tasks > MAX_TASKS:
        found.append(f"{region.tasks} tasks per region exceed infra.config's {MAX_TASKS}")
    given = measured.billed_per_1000
    basis, where = per_1000, "for this load"
    if modelled_at_bench is not None:
        basis, where = modelled_at_bench, "at the benchmark's conditions"
    if given is not None and basis > 0 and not 0.5 <= given / basis <= 2:
        found.append(
            f"SQS+SNS requests per 1,000 messages: {given:,.0f} given, {basis:,.0f} modelled "
            f"{where}; the model and the count disagree by more than 2x, so the calibrated "
            "figure is doubtful"
        )
    if region.connects > 500:
        found.append(
            f"{region.connects:,.0f} new connections/s per region: over API Gateway's default "
            "quota of 500/s per account and region"
        )
    return found


def _number(value: Any) -> str:
    if value is None or isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _usd(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".") if 0 < value < 0.01 else f"{value:g}"


def bill_table(bill: Bill) -> list[str]:
    rows = [
        "| item | quantity | unit | unit price ($) | monthly ($) |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    rows += [
        f"| {line.item} | {_number(line.quantity)} | {line.price.unit} "
        f"| {_usd(line.price.usd)} | {line.monthly:,.2f} |"
        for line in bill.lines
    ]
    rows.append(f"| **total** | | | | **{bill.total:,.2f}** |")
    return rows


def render(report: Report) -> str:
    load, deployment, region = report.load, report.deployment, report.region
    kind = "FIFO" if deployment.fifo else "standard"
    per_invocation = "-"
    if region.lambda_invocations:
        per_invocation = _number((region.events + region.keepalives) / region.lambda_invocations)
    lcus = ", ".join(f"{name} {value:.3g}" for name, value in report.lcus.items())
    out = [
        f"Monthly cost ({HOURS_PER_MONTH} hours) at {prices.REGION} list prices read "
        f"{prices.READ_ON}, no free tier.",
        "",
        f"Load: {load.connections:,} connections over {load.regions} region(s), "
        f"{_number(load.messages_per_minute)} message(s) a minute each, "
        f"{_number(load.replies)} reply(ies) per message, {load.message_bytes} bytes, "
        f"connections renewed every {_number(load.connection_hours)} h.",
        "",
        f"### This project: {deployment.environment}, {deployment.task_cpu} CPU / "
        f"{deployment.task_memory} MiB {deployment.architecture} tasks, {kind} events via "
        f"{deployment.events_via}, {deployment.egress}, {deployment.az_count} AZs",
        "",
        *bill_table(report.project),
        "",
        "### API Gateway WebSocket: the same load and the same Lambda",
        "",
        *bill_table(report.api_gateway),
        "",
        f"**Ratio, this project / API Gateway: {report.ratio:.3f}** "
        f"(${report.project.total:,.2f} / ${report.api_gateway.total:,.2f} a month)",
        "",
        *hardening_section(report),
        "### One region, as the model counts it",
        "",
        "| quantity | value |",
        "| --- | ---: |",
        f"| tasks | {region.tasks} |",
        f"| connections a task holds at most | {region.per_task:,} (its {region.per_task_limit}) |",
        f"| ALB LCUs an hour | {lcus} |",
        f"| client messages a second | {_number(region.client_messages)} |",
        f"| events a second per task | {_number(region.events / region.tasks)} |",
        f"| events in a batch a node sends | {_number(region.batch_events)} |",
        f"| SQS/SNS messages per batch | {_number(region.batch_messages)} |",
        f"| Lambda invocations a second | {_number(region.lambda_invocations)} |",
        f"| events per invocation | {per_invocation} |",
        f"| SQS+SNS requests billed per 1,000 messages, modelled | "
        f"{_number(report.modelled_per_1000)} |",
        *calibration_rows(report),
        "",
        "### Inputs",
        "",
        "| input | value | unit | source |",
        "| --- | ---: | --- | --- |",
        *(
            f"| {row.name} | {_number(row.value)} | {row.unit} | {row.source} |"
            for row in report.inputs
        ),
        "",
        f"### Prices: {prices.REGION}, read {prices.READ_ON}, free tiers applied: "
        f"{'yes' if prices.FREE_TIERS_APPLIED else 'no'}",
        "",
        "| price | $ | per | page | checked |",
        "| --- | ---: | --- | --- | --- |",
        *(
            f"| {p.what} | {_usd(p.usd)} | {p.unit} | {p.source} | {p.checked} |"
            for p in prices.ALL
        ),
    ]
    if report.warnings:
        out += ["", "### Warnings", "", *(f"- {text}" for text in report.warnings)]
    return "\n".join(out)


def hardening_section(report: Report) -> list[str]:
    """Issue 16's additions on their own: each item in one region and in all, and the bill and
    its ratio to API Gateway's before and after them."""
    if not report.added:
        return []
    regions = report.load.regions
    rows = [
        f"### What issue 16 added: production hardening, in each of {regions} region(s)",
        "",
        "| item | quantity per region | unit | unit price ($) | per region ($) | x regions "
        "| monthly ($) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    rows += [
        f"| {item.item} | {_number(item.quantity)} | {item.price.unit} | {_usd(item.price.usd)} "
        f"| {item.each_monthly:,.2f} | {'1 (once)' if item.once else item.copies} "
        f"| {item.line.monthly:,.2f} |"
        for item in report.added
    ]
    added = hardening.total(report.added)
    rows += [
        f"| **added** | | | | **{hardening.per_region(report.added):,.2f}** a region | "
        f"| **{added:,.2f}** |",
        "",
        f"**Before issue 16: ${report.before.total:,.2f} a month, {report.ratio_before:.3f} of "
        f"API Gateway's; after: ${report.project.total:,.2f}, {report.ratio:.3f}** "
        f"(+${added:,.2f}, +{added / report.before.total:.1%}; API Gateway's side unchanged).",
        "",
    ]
    return rows


def calibration_rows(report: Report) -> list[str]:
    """How the modelled SQS and SNS requests were scaled to what a benchmark counted."""
    if report.scale == 1.0 and report.modelled_at_bench is None:
        return []
    rows = []
    if report.modelled_at_bench is not None:
        rows.append(
            "| the same, modelled at bench.aws's conditions (one node, its rate and sizes) | "
            f"{_number(report.modelled_at_bench)} |"
        )
    rows += [
        f"| measured / modelled: every SQS and SNS request priced at | {report.scale:.3f} |",
        "| SQS+SNS requests billed per 1,000 messages, priced | "
        f"{_number(report.modelled_per_1000 * report.scale)} |",
    ]
    return rows


def as_json(report: Report) -> dict[str, Any]:
    def bill(item: Bill) -> dict[str, Any]:
        lines = [
            {
                "item": line.item,
                "quantity": line.quantity,
                "unit": line.price.unit,
                "unit_price": line.price.usd,
                "price": line.price.key,
                "monthly": line.monthly,
            }
            for line in item.lines
        ]
        return {"lines": lines, "total": item.total}

    return {
        "hours_per_month": HOURS_PER_MONTH,
        "load": asdict(report.load),
        "project": bill(report.project),
        "api_gateway": bill(report.api_gateway),
        "ratio": report.ratio,
        "hardening": {
            "lines": [
                {
                    "item": item.item,
                    "quantity": item.quantity,
                    "unit": item.price.unit,
                    "unit_price": item.price.usd,
                    "price": item.price.key,
                    "once": item.once,
                    "copies": item.copies,
                    "monthly": item.line.monthly,
                }
                for item in report.added
            ],
            "per_region": hardening.per_region(report.added),
            "total": hardening.total(report.added),
            "before_total": report.before.total,
            "after_total": report.project.total,
            "ratio_before": report.ratio_before,
            "ratio_after": report.ratio,
        },
        "region": asdict(report.region),
        "alb_lcus": report.lcus,
        "modelled_billed_per_1000": report.modelled_per_1000,
        "modelled_billed_per_1000_at_bench": report.modelled_at_bench,
        "billed_scale": report.scale,
        "inputs": [asdict(row) for row in report.inputs],
        "prices": {
            "region": prices.REGION,
            "read_on": prices.READ_ON,
            "free_tiers_applied": prices.FREE_TIERS_APPLIED,
            "items": [asdict(price) for price in prices.ALL],
        },
        "warnings": list(report.warnings),
    }


# ---- command line --------------------------------------------------------------------------


def _bounded(kind: Callable[[str], Any], least: float, *, inclusive: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < least or (value == least and not inclusive):
            raise argparse.ArgumentTypeError(
                f"must be {'at least' if inclusive else 'more than'} {least} (got {text})"
            )
        return value

    return parse


POSITIVE_INT = _bounded(int, 0, inclusive=False)
POSITIVE = _bounded(float, 0, inclusive=False)
NOT_NEGATIVE = _bounded(float, 0, inclusive=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.cost",
        description="The monthly AWS bill of this gateway beside API Gateway WebSocket's.",
    )
    add = p.add_argument
    add("--connections", type=POSITIVE_INT, required=True, help="connections, all regions")
    add("--messages-per-minute", type=NOT_NEGATIVE, required=True, help="per connection")
    add("--replies", type=NOT_NEGATIVE, default=1.0, help="replies per message (default 1)")
    add("--regions", type=POSITIVE_INT, help="regions (default: the environment's)")
    add("--message-bytes", type=POSITIVE_INT, default=DEFAULT_MESSAGE_BYTES, help="default 256")
    add("--connection-hours", type=POSITIVE, default=DEFAULT_CONNECTION_HOURS, help="default 2")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--fifo", dest="fifo", action="store_const", const=True)
    kind.add_argument("--standard", dest="fifo", action="store_const", const=False)
    add("--events-via", choices=("sqs", "sns"))
    add("--egress", choices=("vpc-endpoints", "nat-gateways"))
    add("--az-count", type=int)
    add("--task-cpu", type=int, help="CPU units")
    add("--task-memory", type=int, help="MiB")
    add("--architecture", choices=("ARM64", "X86_64"))
    add("--max-connections-per-task", type=int)
    add("--connections-per-task-target", type=int)
    add("--events-linger-ms", type=_bounded(int, 0, inclusive=True), help="the nodes' setting")
    add("--billed-per-1000", type=POSITIVE, help="SQS+SNS requests per 1,000 client messages")
    add("--environment", default="prod", help="of cdk.json (default prod)")
    add(
        "--hardening",
        action=argparse.BooleanOptionalAction,
        help="add what issue 16 adds to production regions (default: for "
        f"{', '.join(hardening.HARDENED_ENVIRONMENTS)} only)",
    )
    add("--cdk-json", type=Path, default=CDK_JSON, help=argparse.SUPPRESS)
    add("--results", type=Path, default=RESULTS_DIR, help="benchmark results (bench/results)")
    add("--json", action="store_true", help="JSON instead of tables")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = build(args)
    except CostError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(report), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
