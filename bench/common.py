"""Small helpers shared by the harness and its child processes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# bench.compare's section of docs/performance.md, which bench.run keeps when it rewrites the file.
COMPARE_TITLE = "## Before and after a change"

# A client that connects to this path is a control connection: its messages are broadcast to every
# other connection instead of being echoed (baseline servers only; the node gets a `send` command).
CONTROL_PATH = "/control"


class BenchFailure(Exception):
    """A check failed: the figures would be wrong or meaningless, so no report is written."""


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard limit; 10,000 connections need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop when it is installed (it is: the node requires it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def section_of(text: str, title: str) -> str | None:
    """The section of a markdown report that starts with `title` (a `## ` line), up to the next."""
    match = re.search(re.escape(title) + r".*?(?=\n## |\Z)", text, re.DOTALL)
    return match.group(0).rstrip() + "\n" if match else None


def write_section(path: Path, section: str) -> None:
    """Replace (or append) one benchmark's section, found by its first line, its `## ` title.

    `bench.run` writes the file; the benchmarks that run after it each own one section.
    """
    title = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(title) + r".*?(?=\n## |\Z)", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def progress(bench: str) -> Callable[[str], None]:
    """A benchmark's progress lines, `[bench] text`, on stderr: stdout carries its results."""

    def say(text: str) -> None:
        print(f"[{bench}] {text}", file=sys.stderr, flush=True)

    return say


def finish(
    results: dict[str, Any],
    *,
    name: str,
    quick: bool,
    out: Path | None,
    section: Callable[[dict[str, Any]], str],
    strict: bool,
) -> int:
    """Write a benchmark's raw results and, for a full run whose counts all agree, its section of
    docs/performance.md. The exit status: 1 when a count is wrong or (`strict`) a target missed.
    """
    path = out or REPO / "bench" / "results" / (f"{name}-quick.json" if quick else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"({results['seconds']:.0f} s; raw results in {path})")
    if not all(check["ok"] for check in results["checks"]):
        print("FAILED: a count is wrong (see FAIL above); no report written", file=sys.stderr)
        return 1
    if not quick:
        write_section(REPO / "docs" / "performance.md", section(results))
        print("section written to docs/performance.md")
    if strict and not all(results["targets"].values()):
        return 1
    return 0


async def serve_until_signal(
    route: Callable[[Any], Awaitable[Any]],
    listen: str,
    *,
    name: str,
    max_body_bytes: int = 1 << 20,
) -> None:
    """A child process's HTTP server (runtime.transports.http1), until SIGTERM or SIGINT."""
    # only children serve: keep it out of the rest
    from runtime.transports.http1_server import HttpServer

    server = HttpServer(route, max_body_bytes=max_body_bytes, name=name)
    host, port = host_port(listen)
    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(timeout=0.5)


def run_harness(log: logging.Logger, tag: str, coroutine: Coroutine[Any, Any, Any]) -> int:
    """A benchmark's harness: `[tag]` log lines on stderr, the open-files limit raised, and
    SIGTERM (a timeout, make) unwinding through `finally`, so that its children are stopped."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[{tag}] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return int(run(coroutine))
