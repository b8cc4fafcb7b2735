"""Child processes of the benchmark: started pinned to a core, watched, and always killed.

Each child runs in its own session (process group); `Fleet.close` kills every group it started,
by id, whatever happened, and an atexit hook does it again if the harness dies another way.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench.common import REPO, raise_nofile_limit


def pick_cpus(no_pin: bool, roles: Sequence[str]) -> tuple[bool, dict[str, int | None]]:
    """A core for each role, in order, the last ones sharing the last core when there are fewer
    cores than roles; none (not pinned) with `--no-pin` or a single core."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return False, {role: None for role in roles}
    return True, {role: cpus[min(i, len(cpus) - 1)] for i, role in enumerate(roles)}


def _ephemeral_low() -> int:
    """Where the kernel's ephemeral ports begin (outgoing connections draw from there on)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# A port for a child to listen on, picked below the ephemeral range: one picked by binding port
# 0 comes from that range, and a bench opening thousands of client connections may take it for
# one of them before the child binds it ("address already in use").
_LISTEN_PORTS = (20_000, max(20_001, _ephemeral_low() - 1))


def _unused_port(kind: int) -> int:
    for _ in range(1000):
        port = random.randint(*_LISTEN_PORTS)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {_LISTEN_PORTS[0]} and {_LISTEN_PORTS[1]}")


def free_port() -> int:
    return _unused_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    return _unused_port(socket.SOCK_DGRAM)


class Child:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.process = psutil.Process(popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss(self) -> int:
        return self.process.memory_info().rss

    async def stable_rss(self, *, tolerance: float = 0.002, timeout: float = 3.0) -> int:
        """RSS once two samples 0.25 s apart agree within `tolerance` (or the last at the
        timeout): a figure taken while the allocator still settles would be noise."""
        deadline = time.monotonic() + timeout
        last = self.rss()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = self.rss()
            if abs(now - last) <= tolerance * last:
                return now
            last = now
        return last

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def exact_cpu_seconds(self) -> float:
        """CPU seconds (all threads) from the process's CPU-time clock, to the nanosecond:
        /proc and psutil count in 10 ms ticks, too coarse for one short fan-out."""
        try:
            return time.clock_gettime((~self.pid << 3) | 2)  # Linux MAKE_PROCESS_CPUCLOCK, SCHED
        except OSError:
            return self.cpu_seconds()

    def log_lines(self) -> int:
        """Non-empty log lines: for a node started at --log-level WARNING, its warnings."""
        try:
            return sum(1 for line in self.log_path.read_text(errors="replace").splitlines() if line)
        except OSError:
            return 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Fleet:
    def __init__(self, log_dir: Path, pin: bool) -> None:
        self.log_dir = log_dir
        self.pin = pin and shutil.which("taskset") is not None
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)

    def spawn(self, name: str, argv: list[str], cpu: int | None) -> Child:
        prefix = ["taskset", "-c", str(cpu)] if self.pin and cpu is not None else []
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [*prefix, *argv],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=raise_nofile_limit,
            )
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def python(self, name: str, args: list[str], cpu: int | None) -> Child:
        return self.spawn(name, [sys.executable, *args], cpu)

    def stop(self, child: Child, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; always waits for the exit."""
        if child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(grace)
        self._kill(child)
        if child in self.children:
            self.children.remove(child)

    def _kill(self, child: Child) -> None:
        # The group too: a child's own children (none expected) die with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(5)

    def close(self) -> None:
        for child in list(self.children):
            self._kill(child)
        self.children.clear()


class MachineWindow:
    """How much of the machine's CPU went to processes other than ours, and to the hypervisor
    (steal), over a phase: a busy neighbour makes that phase's figures less trustworthy."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float, float, float]:
        cpu = psutil.cpu_times()
        idle = cpu.idle + getattr(cpu, "iowait", 0.0) + getattr(cpu, "steal", 0.0)
        irq = getattr(cpu, "irq", 0.0) + getattr(cpu, "softirq", 0.0)
        ours = sum(child.exact_cpu_seconds() for child in self.children) + time.process_time()
        steal = getattr(cpu, "steal", 0.0)
        return sum(cpu) - idle, steal, irq, ours, time.perf_counter()

    def result(self) -> dict[str, float]:
        end = self._snapshot()
        busy, steal, irq, ours, wall = (b - a for a, b in zip(self._start, end, strict=True))
        wall = wall or 1e-9
        return {
            "others_percent": round(max(0.0, 100 * (busy - irq - ours) / wall), 1),
            "steal_percent": round(100 * steal / wall, 1),
            "interrupts_percent": round(100 * irq / wall, 1),
        }


async def wait_listening(child: Child, port: int, timeout: float = 20.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port; fail fast if the child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{child.name} exited with {child.popen.returncode}:\n{child.log_tail()}"
            )
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:g} s")
