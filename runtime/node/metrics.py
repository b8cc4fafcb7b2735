"""Node metrics in CloudWatch Embedded Metric Format: one log line becomes a metric.

On ECS the awslogs driver ships stdout to CloudWatch Logs, which extracts EMF lines into metrics
with no agent and no API calls; the stack scales the service on connections per task this way.
"""

from __future__ import annotations

from typing import Any

from runtime.names import CONNECTIONS_METRIC


def connections_metric(
    namespace: str, service: str, connections: int, now_ms: int
) -> dict[str, Any]:
    """The fields of one EMF log line reporting this task's open connections."""
    return {
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["ServiceName"]],
                    "Metrics": [{"Name": CONNECTIONS_METRIC, "Unit": "Count"}],
                }
            ],
        },
        "ServiceName": service,
        CONNECTIONS_METRIC: connections,
    }
