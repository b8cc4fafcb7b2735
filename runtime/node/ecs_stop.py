"""Notice that ECS is stopping this task before its SIGTERM arrives.

Behind an ALB, ECS first deregisters a stopping task and waits out the target group's
deregistration delay, and only then sends SIGTERM; when the delay ends the ALB cuts whatever
connections are left. Draining on SIGTERM alone would therefore reach no client. The task
metadata endpoint says `DesiredStatus: STOPPED` as soon as the stop begins, so the node polls it
and starts its drain then, while the ALB still carries its connections.
"""

from __future__ import annotations

import asyncio
import logging
import os

from runtime.node.peer_address import ECS_METADATA_VARIABLE
from runtime.transports.http1_client import HttpClient, HttpClientError

log = logging.getLogger("runtime.node")


def metadata_url(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    base = environ.get(ECS_METADATA_VARIABLE)
    return f"{base.rstrip('/')}/task" if base else None


async def wait_for_task_stopping(url: str, interval: float = 1.0) -> None:
    """Return once the task's desired status is STOPPED; errors are logged and polled past."""
    client = HttpClient(url, max_connections=1, timeout=2)
    failures = 0
    try:
        while True:
            try:
                response = await client.request("GET")
                status = response.json().get("DesiredStatus") if response.status == 200 else None
            except (HttpClientError, ValueError, AttributeError) as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("cannot read ECS task metadata", extra={"error": str(exc)})
                status = None
            if status == "STOPPED":
                return
            await asyncio.sleep(interval)
    finally:
        await client.close()
