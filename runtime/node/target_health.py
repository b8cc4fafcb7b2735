"""Notice that the load balancer is letting go of this task: the documented signal to drain.

Behind an ALB, ECS stops a task by first deregistering its target: the target is `draining` for
the target group's deregistration delay, and only then does ECS send SIGTERM, while the ALB cuts
whatever is still connected when the delay ends. Elastic Load Balancing's DescribeTargetHealth
says `draining` from the start of the delay, so the node asks it every few seconds and starts its
drain then, while its clients can still be told (1001) and their DISCONNECTs sent. The ECS task
metadata (`ecs_stop.py`) is watched too, as a second signal; the first to fire starts the drain.

A target once seen registered that is then `unused` with `Target.NotRegistered` is gone as well:
the load balancer says so once the delay is over (and moto right after DeregisterTargets).

Every task asks on its own, and ELB throttles Describe* calls per account and region, so the
interval has jitter (tasks started together drift apart) and throttling backs off. Any error is
logged, rate-limited, and asked past: a node that cannot ask still serves and drains on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from runtime.config import ConfigError, Settings
from runtime.node.peer_address import ECS_METADATA_VARIABLE, ecs_task_ip
from runtime.transports.batch_origin import describe_aws_error

log = logging.getLogger("runtime.node")

DRAINING = "draining"
UNUSED = "unused"
NOT_REGISTERED = "Target.NotRegistered"
THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)
MAX_BACKOFF = 60.0  # seconds between questions at most while throttled
JITTER = (0.5, 1.5)  # each wait is the interval times a factor drawn from this range
# One retry inside botocore (throttling, 5xx, a dropped connection); the next question is the
# real retry, so a call never holds its thread long.
CALL_ATTEMPTS = 2
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0


def let_go(state: str, reason: str, seen_registered: bool) -> str | None:
    """What the load balancer is doing with the target, if it is letting go of it: "draining"
    or "deregistered"; None while it still sends it traffic (or never had it). Either needs the
    target seen registered first: a task that reuses the IP of a target still draining from an
    earlier task is not the one being let go."""
    if not seen_registered:
        return None
    if state == DRAINING:
        return "draining"
    if state == UNUSED and reason == NOT_REGISTERED:
        return "deregistered"
    return None


class TargetHealthWatcher:
    """Asks the state of this node's target (its IP and WebSocket port) in its target group."""

    def __init__(
        self,
        target_group_arn: str,
        ip: str,
        *,
        interval: float = 5.0,
        region: str | None = None,
        endpoint_url: str | None = None,
        attempts: int = CALL_ATTEMPTS,
    ) -> None:
        self.target_group_arn = target_group_arn
        self.ip = ip
        self.interval = interval
        self.failures = 0  # questions failed in a row
        self._throttled = 0  # throttled in a row: each doubles the wait, up to MAX_BACKOFF
        # endpoint_url None: boto3's own chain (AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2,
        # AWS_ENDPOINT_URL, or AWS), as for the node's SQS clients.
        self.client: Any = boto3.client(
            "elbv2",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": attempts},
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                max_pool_connections=1,
            ),
        )

    async def wait_until_let_go(self, port: int) -> str:
        """Return "draining" or "deregistered" once the load balancer lets go of the target."""
        target = {"Id": self.ip, "Port": port}
        seen_registered = False
        last: tuple[str, str] | None = None
        while True:
            answer = await self._ask(target)
            if answer is not None:
                state, reason = answer
                if answer != last:
                    log.info(
                        "load balancer target state",
                        extra={"target": f"{self.ip}:{port}", "state": state, "reason": reason},
                    )
                    last = answer
                released = let_go(state, reason, seen_registered)
                if released is not None:
                    return released
                seen_registered = seen_registered or reason != NOT_REGISTERED
            wait = min(MAX_BACKOFF, self.interval * 2**self._throttled)
            await asyncio.sleep(wait * random.uniform(*JITTER))

    def close(self) -> None:
        self.client.close()

    async def _ask(self, target: dict[str, Any]) -> tuple[str, str] | None:
        """The target's State and Reason (empty when healthy); None if the question failed."""
        try:
            response = await asyncio.to_thread(
                self.client.describe_target_health,
                TargetGroupArn=self.target_group_arn,
                Targets=[target],
            )
        except (ClientError, BotoCoreError) as exc:
            self._throttled = self._throttled + 1 if _throttling(exc) else 0
            self._failed(describe_aws_error("DescribeTargetHealth", exc))
            return None
        self._throttled = 0
        descriptions = response.get("TargetHealthDescriptions") or ()
        if not descriptions:
            self._failed("DescribeTargetHealth described no target")
            return None
        if self.failures:
            log.info("target health readable again", extra={"failures": self.failures})
            self.failures = 0
        health = descriptions[0].get("TargetHealth") or {}
        return str(health.get("State", "")), str(health.get("Reason", ""))

    def _failed(self, error: str) -> None:
        self.failures += 1
        if self.failures in (1, 10) or self.failures % 100 == 0:
            log.warning(
                "cannot read the load balancer's target health",
                extra={"error": error, "failures": self.failures},
            )


def _throttling(exc: ClientError | BotoCoreError) -> bool:
    return (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code", "") in THROTTLING_CODES
    )


async def watcher_from_settings(
    settings: Settings, environ: dict[str, str] | os._Environ[str] = os.environ
) -> TargetHealthWatcher | None:
    """The watcher --target-group-arn asks for, its target's IP settled: --target-id, else the
    task's IP from the ECS task metadata; a node that cannot know it does not start."""
    if not settings.target_group_arn:
        return None
    ip = settings.target_id
    if not ip:
        metadata_url = environ.get(ECS_METADATA_VARIABLE)
        if not metadata_url:
            raise ConfigError(
                "--target-group-arn needs this node's IP in the target group: set --target-id "
                f"({ECS_METADATA_VARIABLE}, where ECS names the task's IP, is not set)"
            )
        ip = await ecs_task_ip(metadata_url)
    try:
        return TargetHealthWatcher(
            settings.target_group_arn,
            ip,
            interval=settings.target_health_interval,
            region=settings.aws_region or None,
        )
    except BotoCoreError as exc:  # no region, typically
        raise ConfigError(
            f"--target-group-arn: cannot make an Elastic Load Balancing client: {exc}"
        ) from None
