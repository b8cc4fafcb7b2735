"""Nodes as a user starts them: `python -m runtime serve` subprocesses, their logs parsed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


async def start_process(
    *flags: str,
    expect: tuple[str, ...] = ("websocketAddress", "commandAddress"),
    env: dict[str, str] | None = None,
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start a node and wait for its 'listening' log lines; returns the addresses they name.

    Without `--peer-secret` among the flags the node runs `--local-only`.
    """
    local_only = () if "--peer-secret" in flags else ("--local-only", "true")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtime", "serve", *local_only, *flags,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    addresses: dict[str, str] = {}
    deadline = time.monotonic() + 15
    try:
        while len(addresses) < len(expect):
            line = await asyncio.wait_for(process.stdout.readline(), deadline - time.monotonic())
            if not line:
                raise AssertionError("node exited before listening")
            record = json.loads(line)  # stdout is a pipe: every line must be JSON
            for key in expect:
                if key in record:
                    addresses[key] = record[key]
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, addresses


def keep_reading(
    process: asyncio.subprocess.Process,
) -> tuple[list[dict[str, Any]], asyncio.Task[None]]:
    """Collect the rest of a node's log lines, so a full pipe never blocks it."""
    records: list[dict[str, Any]] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            records.append(json.loads(line))

    return records, asyncio.create_task(read())
