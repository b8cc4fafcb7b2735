"""Names of the AWS resources of one environment in one region, in one place.

The CDK stack creates them, the nodes and the local system use them, and the origin SDK derives
them to address any region's commands topic; names are deterministic so all of these agree
without passing ARNs around. Queue and topic names are unique per account and region, so the
region is not part of the name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "wsgw"
# Facts the node, the local system and the stack must agree on, defined once.
HEALTH_PATH = "/healthz"  # GET on the WebSocket port: 200, or 503 once the node drains
METRICS_NAMESPACE = "WsGateway"  # CloudWatch namespace of the node's EMF metrics
CONNECTIONS_METRIC = "ConnectionsPerTask"  # the metric the service scales on
# The node's other metrics, in the same EMF line: counts since the line before (OriginLatency: the
# average, in ms, of the origin transport's successful deliveries since then, left out if none).
MESSAGES_IN_METRIC = "MessagesIn"  # client messages received
MESSAGES_OUT_METRIC = "MessagesOut"  # messages sent to clients
EVENTS_SENT_METRIC = "EventsSent"  # events the origin transport delivered
ORIGIN_ERRORS_METRIC = "OriginErrors"  # deliveries failed (batch kept, retried) + events refused
ORIGIN_LATENCY_METRIC = "OriginLatency"  # ms, average of the origin transport's send round trips
PEER_IN_METRIC = "PeerDatagramsIn"
PEER_OUT_METRIC = "PeerDatagramsOut"
DRAINS_METRIC = "Drains"  # 1 in the interval a drain began, else 0
WEBSOCKET_PORT = 8080  # the node's default --listen port; the container's and the ALB target's
PEER_PORT = 9100  # the node's default --peer-listen port (UDP); the container's
# The environment's queues and topics, as the stack and the local system both create them.
MAX_MESSAGE_BYTES = 1024 * 1024  # SQS and SNS take up to 1 MiB when the resource allows it
MAX_RECEIVE_COUNT = 5  # deliveries before a message goes to its DLQ
_ENVIRONMENT = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
# The partitions whose regions have their own prefix, as botocore's partitions.json lists them; a
# region of any other name is in the commercial partition. "us-iso-" and "us-isob-" differ at the
# hyphen, so no prefix here is the start of another.
_PARTITIONS = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-iso-", "aws-iso"),
    ("us-isob-", "aws-iso-b"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-isof-", "aws-iso-f"),
    ("eusc-", "aws-eusc"),
)


def partition(region: str) -> str:
    """The partition an ARN in `region` names: China and GovCloud ARNs are not `arn:aws:`."""
    for prefix, name in _PARTITIONS:
        if region.startswith(prefix):
            return name
    return "aws"


@dataclass(frozen=True, slots=True)
class ResourceNames:
    environment: str
    fifo: bool = True

    def __post_init__(self) -> None:
        if not _ENVIRONMENT.fullmatch(self.environment):
            raise ValueError(
                "environment must be 1 to 20 lower-case letters, digits or '-', starting with a "
                f"letter (got {self.environment!r})"
            )

    @property
    def _base(self) -> str:
        return f"{PREFIX}-{self.environment}"

    def _queue(self, name: str) -> str:
        return f"{self._base}-{name}{'.fifo' if self.fifo else ''}"

    @property
    def events_queue(self) -> str:
        """Where the origin reads events; FIFO keeps each connection's events in order."""
        return self._queue("events")

    @property
    def events_dlq(self) -> str:
        return self._queue("events-dlq")

    @property
    def events_topic(self) -> str:
        """Optional fan-out of events to several consumers, filtered by routeKey."""
        return self._queue("events")

    @property
    def commands_topic(self) -> str:
        """Where origins publish commands; standard, since order across nodes is not kept."""
        return f"{self._base}-commands"

    @property
    def commands_queue(self) -> str:
        """Subscribed to the commands topic; every node polls it."""
        return f"{self._base}-commands"

    @property
    def commands_dlq(self) -> str:
        return f"{self._base}-commands-dlq"

    def commands_topic_arn(self, region: str, account: str) -> str:
        return f"arn:{partition(region)}:sns:{region}:{account}:{self.commands_topic}"
