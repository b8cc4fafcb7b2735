"""The node's watch on its load balancer target, against moto's server over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from runtime.config import ConfigError, Settings
from runtime.node.target_health import TargetHealthWatcher, let_go, watcher_from_settings
from tests.aws import (
    CREDENTIALS,
    REGION,
    MotoEndpoint,
    create_target_group,
    moto_target_groups,
    start_draining,
)

IP = "127.0.0.1"
PORT = 8080
INTERVAL = 0.05  # the setting's floor is 1 s; the watcher itself takes any


def watcher(endpoint: MotoEndpoint, arn: str, **options: int) -> TargetHealthWatcher:
    return TargetHealthWatcher(
        arn, IP, interval=INTERVAL, region=endpoint.region, endpoint_url=endpoint.url, **options
    )


@pytest.fixture
def group(moto_endpoint: MotoEndpoint, environment_name: str) -> str:
    return create_target_group(moto_endpoint, environment_name, IP, PORT)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for `condition`, polling; a loaded machine may need more than a few intervals."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def still_waiting(task: asyncio.Task[str], seconds: float = 0.5) -> bool:
    await asyncio.sleep(seconds)
    return not task.done()


async def test_returns_once_the_target_is_draining(moto_endpoint: MotoEndpoint, group: str) -> None:
    watch = watcher(moto_endpoint, group)
    task = asyncio.create_task(watch.wait_until_let_go(PORT))
    try:
        assert await still_waiting(task)  # healthy: asked ten times or so, and serving on
        start_draining(moto_endpoint, group, IP)
        assert await asyncio.wait_for(task, 5) == "draining"
    finally:
        task.cancel()
        watch.close()


async def test_a_deregistered_target_is_let_go_too(moto_endpoint: MotoEndpoint, group: str) -> None:
    watch = watcher(moto_endpoint, group)
    task = asyncio.create_task(watch.wait_until_let_go(PORT))
    try:
        assert await still_waiting(task)
        moto_endpoint.client("elbv2").deregister_targets(
            TargetGroupArn=group, Targets=[{"Id": IP, "Port": PORT}]
        )
        assert await asyncio.wait_for(task, 5) == "deregistered"
    finally:
        task.cancel()
        watch.close()


async def test_a_target_never_seen_registered_is_not_let_go(
    moto_endpoint: MotoEndpoint, group: str
) -> None:
    """Not registered yet, or never: `unused` (Target.NotRegistered) is no reason to drain."""
    moto_endpoint.client("elbv2").deregister_targets(
        TargetGroupArn=group, Targets=[{"Id": IP, "Port": PORT}]
    )
    watch = watcher(moto_endpoint, group)
    task = asyncio.create_task(watch.wait_until_let_go(PORT))
    try:
        assert await still_waiting(task)
        moto_endpoint.client("elbv2").register_targets(
            TargetGroupArn=group, Targets=[{"Id": IP, "Port": PORT}]
        )
        await asyncio.sleep(0.3)  # seen healthy now
        start_draining(moto_endpoint, group, IP)
        assert await asyncio.wait_for(task, 5) == "draining"
    finally:
        task.cancel()
        watch.close()


def test_what_counts_as_let_go() -> None:
    assert let_go("draining", "Target.DeregistrationInProgress", True) == "draining"
    # Another task's target at this IP, still draining when this one starts: not ours.
    assert let_go("draining", "Target.DeregistrationInProgress", False) is None
    assert let_go("unused", "Target.NotRegistered", True) == "deregistered"
    assert let_go("unused", "Target.NotRegistered", False) is None
    assert let_go("unused", "Target.NotInUse", True) is None  # registered, no listener uses it
    for state in ("initial", "healthy", "unhealthy", "unavailable", "unhealthy.draining"):
        assert let_go(state, "", True) is None


async def test_errors_are_logged_and_asked_past(
    moto_endpoint: MotoEndpoint, group: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The group vanishes (TargetGroupNotFound, as for a wrong ARN) and comes back."""
    caplog.set_level(logging.INFO, logger="runtime.node")
    groups = moto_target_groups(moto_endpoint)
    hidden = groups.pop(group)
    watch = watcher(moto_endpoint, group)
    task = asyncio.create_task(watch.wait_until_let_go(PORT))
    try:
        await until(lambda: watch.failures >= 3)
        assert not task.done()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # rate-limited: the 1st, 10th, then every 100th
        assert "TargetGroupNotFound" in warnings[0].__dict__["error"]
        groups[group] = hidden
        await until(lambda: watch.failures == 0)
        assert not task.done()
        assert any(r.getMessage() == "target health readable again" for r in caplog.records)
        start_draining(moto_endpoint, group, IP)
        assert await asyncio.wait_for(task, 5) == "draining"
    finally:
        task.cancel()
        watch.close()


@pytest.fixture
async def throttling_elb() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """An endpoint that answers every call with the error its code names, counting calls."""
    calls = {"Throttling": 0, "AccessDenied": 0}

    async def answer(request: web.Request) -> web.Response:
        code = request.match_info["code"]
        calls[code] += 1
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>no</Message></Error>"
            "<RequestId>r</RequestId></ErrorResponse>"
        )
        return web.Response(status=400, text=body, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/{code}/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", calls
    await runner.cleanup()


async def test_throttling_backs_off(
    throttling_elb: tuple[str, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = throttling_elb
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    watches = [
        TargetHealthWatcher(
            "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/x/1",
            IP,
            interval=INTERVAL,
            region="us-east-1",
            endpoint_url=f"{url}/{code}/",
            attempts=1,  # botocore's own retries aside: the watcher's pace alone
        )
        for code in calls
    ]
    tasks = [asyncio.create_task(watch.wait_until_let_go(PORT)) for watch in watches]
    try:
        await asyncio.sleep(1.5)
        # Waits of 0.05 s doubling from 0.1 s (jitter 0.5 to 1.5) fit at most 7 in 1.5 s;
        # without throttling about 30 calls are made.
        assert 2 <= calls["Throttling"] <= 8
        assert calls["AccessDenied"] >= 12
        assert not any(task.done() for task in tasks)
    finally:
        for task, watch in zip(tasks, watches, strict=True):
            task.cancel()
            watch.close()


async def test_a_watcher_that_cannot_work_stops_the_node_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/g/1"
    assert await watcher_from_settings(Settings(), {}) is None
    with pytest.raises(ConfigError, match="set --target-id"):
        await watcher_from_settings(Settings(target_group_arn=arn, aws_region=REGION), {})
    named = await watcher_from_settings(
        Settings(target_group_arn=arn, target_id="10.0.0.7", aws_region=REGION), {}
    )
    assert named is not None and named.ip == "10.0.0.7"
    named.close()
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="cannot make an Elastic Load Balancing client"):
        await watcher_from_settings(Settings(target_group_arn=arn, target_id="10.0.0.7"), {})
