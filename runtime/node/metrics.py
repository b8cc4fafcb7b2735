"""Node metrics in CloudWatch Embedded Metric Format: one log line becomes a metric.

On ECS the awslogs driver ships stdout to CloudWatch Logs, which extracts EMF lines into metrics
with no agent and no API calls; the stack scales the service on connections per task this way,
and its dashboard shows the rest. One line per interval carries them all: ConnectionsPerTask as
it is now, the others as counts since the line before (the node's counters only ever grow, so a
line is the difference of two readings and nothing is counted twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime.names import (
    CONNECTIONS_METRIC,
    DRAINS_METRIC,
    EVENTS_SENT_METRIC,
    MESSAGES_IN_METRIC,
    MESSAGES_OUT_METRIC,
    ORIGIN_ERRORS_METRIC,
    ORIGIN_LATENCY_METRIC,
    PEER_IN_METRIC,
    PEER_OUT_METRIC,
)


@dataclass(frozen=True, slots=True)
class Totals:
    """What the node has counted since it started."""

    messages_in: int = 0
    messages_out: int = 0
    events_sent: int = 0
    origin_errors: int = 0
    origin_round_trips: int = 0
    origin_round_trip_seconds: float = 0.0
    peer_datagrams_in: int = 0
    peer_datagrams_out: int = 0
    drains: int = 0


class MetricsLine:
    """Builds each interval's line from the node's totals, remembering the previous ones."""

    def __init__(self, namespace: str, service: str) -> None:
        self.namespace = namespace
        self.service = service
        self._last = Totals()

    def fields(self, connections: int, totals: Totals, now_ms: int) -> dict[str, Any]:
        """The fields of one EMF log line; the next line counts from these totals."""
        last, self._last = self._last, totals
        values: dict[str, int | float] = {
            CONNECTIONS_METRIC: connections,
            MESSAGES_IN_METRIC: totals.messages_in - last.messages_in,
            MESSAGES_OUT_METRIC: totals.messages_out - last.messages_out,
            EVENTS_SENT_METRIC: totals.events_sent - last.events_sent,
            ORIGIN_ERRORS_METRIC: totals.origin_errors - last.origin_errors,
            PEER_IN_METRIC: totals.peer_datagrams_in - last.peer_datagrams_in,
            PEER_OUT_METRIC: totals.peer_datagrams_out - last.peer_datagrams_out,
            DRAINS_METRIC: totals.drains - last.drains,
        }
        round_trips = totals.origin_round_trips - last.origin_round_trips
        if round_trips:  # no delivery, no latency: a 0 would drag the average down
            seconds = totals.origin_round_trip_seconds - last.origin_round_trip_seconds
            values[ORIGIN_LATENCY_METRIC] = round(seconds * 1000 / round_trips, 3)
        return {
            "_aws": {
                "Timestamp": now_ms,
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [["ServiceName"]],
                        "Metrics": [{"Name": name, "Unit": _unit(name)} for name in values],
                    }
                ],
            },
            "ServiceName": self.service,
            **values,
        }


def _unit(name: str) -> str:
    return "Milliseconds" if name == ORIGIN_LATENCY_METRIC else "Count"
