"""Autobahn|Testsuite conformance: `python -m bench.conformance` writes docs/conformance.md.

Why: the node terminates client WebSockets itself, so its RFC 6455 behaviour is the product's. The
Autobahn case set (run by kosoku, a Python 3 reimplementation with a Python API) is the common
yardstick. A node with the built-in echo origin turns every MESSAGE event into a `send` command, so
each echoed message goes node -> origin -> command path -> node, which is what a real origin uses.
The same cases run, in the same invocation, against a bare `websockets` echo server
(`python -m bench.servers websockets`): the node is built on that library, so a case both fail is
the library's (or its default limits'), and a case only the node fails is the node's.

`--quick` skips the compression cases 12.* and 13.* (both servers negotiate permessage-deflate
here, and those cases take most of the run's time); `--json PATH` writes the per-case results,
which is how `tests/conformance/test_autobahn.py` reads them. The run always ends with
`os._exit`: kosoku 0.1.0's native runtime sometimes aborts (SIGABRT) during interpreter shutdown
after a successful run, and that must not turn a finished run into a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import REPO, Fleet, free_port, wait_listening

DOC = REPO / "docs" / "conformance.md"
COMPRESSION_CASES = ("12.*", "13.*")
CONCURRENCY = 2

# The node's flags, each chosen for what the cases need (explained in the doc, see NODE_FLAG_NOTES).
MIB = 1 << 20
NODE_FLAGS: tuple[str, ...] = (
    "--origin-transport", "echo",
    "--no-command-auth", "true",
    "--local-only", "true",
    "--command-listen", "",
    "--max-message-bytes", str(16 * MIB),
    "--send-buffer-bytes", str(32 * MIB),
    "--receive-queue-messages", "4",
    "--compression", "deflate",
    "--ping-interval", "0",
    "--keepalive-interval", "0",
    "--log-level", "WARNING",
)  # fmt: skip

NODE_FLAG_NOTES: tuple[tuple[str, str], ...] = (
    (
        "--compression deflate (default none); the baseline runs with permessage-deflate too",
        "the 12.* and 13.* cases negotiate permessage-deflate with various parameters and send "
        "compressed messages; the node decompresses them, and compresses its echoes on the "
        "connection's own context.",
    ),
    (
        "--origin-transport echo --no-command-auth true --local-only true --command-listen ''",
        "the built-in echo origin: every MESSAGE event becomes a `send` command the node executes, "
        "so the node -> origin -> node path is what is judged; one node, no cluster, no AWS, and "
        "no HTTP /commands endpoint (the echo origin calls the command path in process).",
    ),
    (
        f"--max-message-bytes {16 * MIB} (16 MiB; default 256 KiB)",
        "cases 9.1.6 and 9.2.6 send one 16 MiB message (9.1.4-9.1.5 and 9.3.*/9.4.* 4-8 MiB); with "
        "the default the node would (correctly) close with 1009 and the case would FAIL.",
    ),
    (
        f"--send-buffer-bytes {32 * MIB} (32 MiB; default 1 MiB)",
        "the echo of a 16 MiB message sits in the node's send buffer until kosoku has read it; "
        "with the default the node would close the client with 1013 as a slow reader. Twice the "
        "largest message leaves room for the frame in flight plus the next one.",
    ),
    (
        "--receive-queue-messages 4 (the default, stated because it matters)",
        "at most 4 messages are read ahead per client, so with 16 MiB messages a client can make "
        "the node hold 64 MiB, which the default 64 MiB --event-buffer-bytes still admits; the "
        "1,000-message cases 9.7.*/9.8.* pass with it, so no larger value is needed.",
    ),
    (
        "--ping-interval 0 --keepalive-interval 0",
        "no node-initiated pings or KEEPALIVE events: an unsolicited ping landing inside a case "
        "would add a frame kosoku does not expect and make the verdict depend on timing.",
    ),
    (
        "--log-level WARNING",
        "the cases open hundreds of connections; per-connection INFO lines are noise here.",
    ),
)

# Why a case is allowed to fail, keyed by case id prefix (longest prefix wins).
EXPLANATIONS: dict[str, str] = {
    "7.1.5": (
        "kosoku sends a text fragment, then a close frame, then the continuation. `websockets` "
        "fails the connection with 1002 (incomplete fragmented message) instead of answering the "
        "close with 1000. The case expects a close frame to end the message cleanly; the library "
        "treats the interleaved close as a protocol error. Same verdict for node and baseline."
    ),
    "9.1.": (
        "baseline only: `bench.servers websockets` keeps the library's default max_size of 1 MiB, "
        "so the 4, 8 and 16 MiB messages of 9.1.4-9.1.6 are refused with 1009. The node's "
        "--max-message-bytes admits them."
    ),
    "9.2.": ("baseline only: the same 1 MiB default max_size as 9.1.*."),
    "9.3.": (
        "a 4 MiB message in fragments of 64 B (65,536 fragments) or 256 B (16,384) exceeds "
        "`websockets` 17's limit of 4,096 fragments per message, so it closes with 1009 "
        "'too many fragments' (node and baseline). From 1 KiB fragments (4,096) up the node "
        "passes; the baseline also fails those because of its 1 MiB max_size."
    ),
    "9.4.": "binary twin of 9.3.*: same causes.",
    "12.": (
        "permessage-deflate with various parameters: both servers negotiate it (the node with "
        "--compression deflate); see the case's own report for the cause."
    ),
    "13.": "permessage-deflate with client offers: as 12.*.",
}

FAILED_BEHAVIORS = frozenset({"FAILED", "ERROR"})
FAILED_CLOSES = frozenset({"FAILED", "FAILED BY CLIENT", "UNCLEAN", "WRONG CODE"})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One case's verdict, reduced to what the doc and the test need (kosoku's objects are
    native and cannot cross the process boundary the test relies on)."""

    case_id: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None
    remote_close_reason: str | None
    description: str

    @property
    def failed(self) -> bool:
        """FAILED or ERROR exchange, or a wrong/unclean close: what the conformance gate counts.

        UNIMPLEMENTED (compression not negotiated), NON-STRICT and INFORMATIONAL are not failures.
        """
        return self.behavior in FAILED_BEHAVIORS or self.behavior_close in FAILED_CLOSES


async def run_cases(url: str, exclude: tuple[str, ...], concurrency: int) -> list[Outcome]:
    """Run the Autobahn cases against `url`; kosoku raises when any case did not pass, but a
    partial failure is data here, so the results are taken from the exception too."""
    from kosoku import FailureError, run_fuzzingclient

    try:
        results = await run_fuzzingclient(url, exclude_cases=list(exclude), concurrency=concurrency)
    except FailureError as failure:
        results = failure.results
    return [
        Outcome(
            case_id=r.case_id,
            behavior=r.behavior.value,
            behavior_close=r.behavior_close.value,
            remote_close_code=r.remote_close_code,
            remote_close_reason=r.remote_close_reason,
            description=r.description,
        )
        for r in results
    ]


async def run_both(
    exclude: tuple[str, ...], concurrency: int, log_dir: Path
) -> dict[str, list[Outcome]]:
    """Start each server as a user would, run the cases against it, stop it.

    One at a time, so the two runs do not compete for the 2 cores the timing cases (9.*) share.
    """
    fleet = Fleet(log_dir, pin=False)
    servers: dict[str, list[str]] = {
        "node": ["-m", "runtime", "serve", *NODE_FLAGS, "--listen"],
        "baseline": ["-m", "bench.servers", "websockets", "--deflate", "--listen"],
    }
    outcomes: dict[str, list[Outcome]] = {}
    try:
        for name, argv in servers.items():
            port = free_port()
            child = fleet.python(name, [*argv, f"127.0.0.1:{port}"], cpu=None)
            await wait_listening(child, port)
            outcomes[name] = await run_cases(f"ws://127.0.0.1:{port}", exclude, concurrency)
            if not child.alive():
                raise RuntimeError(f"{name} died during the cases:\n{child.log_tail()}")
            fleet.stop(child)
    finally:
        fleet.close()
    return outcomes


def unexpected_failures(outcomes: dict[str, list[Outcome]]) -> list[Outcome]:
    """The node's failed cases that the bare library did not also fail in the same run."""
    baseline_failed = {o.case_id for o in outcomes["baseline"] if o.failed}
    return [o for o in outcomes["node"] if o.failed and o.case_id not in baseline_failed]


def explain(case_id: str) -> str:
    """The documented reason for a case's failure, or a marker that none is known."""
    keys = [key for key in EXPLANATIONS if case_id == key or case_id.startswith(key)]
    return EXPLANATIONS[max(keys, key=len)] if keys else "**not explained: investigate**"


def _counts(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(o.behavior for o in outcomes)


def _close(o: Outcome | None) -> str:
    if o is None:
        return "-"
    if not o.failed:
        return f"{o.behavior} / {o.behavior_close}"
    reason = f" '{o.remote_close_reason}'" if o.remote_close_reason else ""
    return f"{o.behavior} / {o.behavior_close} (close {o.remote_close_code}{reason})"


def render(outcomes: dict[str, list[Outcome]], quick: bool, seconds: float) -> str:
    """The markdown report: counts by verdict per server, then every exception and why."""
    node, baseline = outcomes["node"], outcomes["baseline"]
    counts = {"node": _counts(node), "baseline": _counts(baseline)}
    labels = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
    scope = (
        "all cases except the compression cases 12.* and 13.* (run with `--quick`)"
        if quick
        else "the whole case set, compression cases 12.* and 13.* included"
    )
    lines = [
        "# WebSocket conformance (Autobahn|Testsuite)",
        "",
        "Generated by `.venv/bin/python -m bench.conformance`; do not edit by hand.",
        "",
        f"The Autobahn|Testsuite cases, {scope}, run by [kosoku](https://pypi.org/project/kosoku/) "
        f"0.1.0 as the client at concurrency {CONCURRENCY}, against two servers in the same run:",
        "",
        "- **node**: `python -m runtime serve` with the built-in echo origin, so every message is "
        "echoed through the command path (MESSAGE event -> `send` command -> node).",
        "- **baseline**: `python -m bench.servers websockets`, a bare `websockets` echo server "
        "with the library's defaults (1 MiB max_size), permessage-deflate on (`--deflate`).",
        "",
        f"{len(node)} cases per server; the whole run took {seconds:.0f} s. "
        "`tests/conformance/test_autobahn.py` runs the same cases (without 12.* and 13.*) in "
        "`make test` and fails if the node fails a case the baseline passes.",
        "",
        "## Results by verdict (message exchange)",
        "",
        "| verdict | node | baseline |",
        "|---|---:|---:|",
    ]
    for label in labels:
        lines.append(f"| {label} | {counts['node'][label]} | {counts['baseline'][label]} |")
    lines.append(f"| **total** | {len(node)} | {len(baseline)} |")
    lines += [
        "",
        "NON-STRICT and INFORMATIONAL are conformant (Autobahn's own definition). A case counts "
        "as failed here when its exchange is FAILED or ERROR or its close is FAILED, WRONG CODE "
        "or UNCLEAN.",
        "",
    ]
    unexpected = unexpected_failures(outcomes)
    lines += [
        "## Cases the node fails that the baseline passes",
        "",
        "None." if not unexpected else "",
    ]
    for o in unexpected:
        lines.append(f"- **{o.case_id}**: {_close(o)}. {explain(o.case_id)}")
    by_id = {"node": {o.case_id: o for o in node}, "baseline": {o.case_id: o for o in baseline}}
    exceptions = sorted(
        {o.case_id for o in node + baseline if o.failed or o.behavior == "UNIMPLEMENTED"},
        key=lambda case: tuple(int(part) for part in case.split(".")),
    )
    compression = [case for case in exceptions if case.split(".")[0] in ("12", "13")]
    others = [case for case in exceptions if case not in compression]
    lines += [
        "",
        "## Exceptions, explained",
        "",
        "| case | node | baseline | why |",
        "|---|---|---|---|",
    ]
    for case in others:
        node_o, base_o = by_id["node"].get(case), by_id["baseline"].get(case)
        lines.append(f"| {case} | {_close(node_o)} | {_close(base_o)} | {explain(case)} |")
    if compression:
        node_unimpl, base_unimpl = (
            sum(1 for case in compression if by_id[name][case].behavior == "UNIMPLEMENTED")
            for name in ("node", "baseline")
        )
        lines += [
            "",
            f"Compression cases 12.* and 13.* ({len(compression)} with a non-OK verdict): "
            f"UNIMPLEMENTED for {node_unimpl} on the node and {base_unimpl} on the baseline. "
            + EXPLANATIONS["12."],
        ]
    lines += [
        "",
        "## Node flags and why",
        "",
        "The node runs with these flags (`NODE_FLAGS` in `bench/conformance.py`); everything "
        "else is the default.",
        "",
    ]
    lines += [f"- `{flag}`: {why}" for flag, why in NODE_FLAG_NOTES]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the cases against both servers and write the doc and/or the JSON results."""
    parser = argparse.ArgumentParser(prog="python -m bench.conformance", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 12.* and 13.* cases")
    parser.add_argument("--json", type=Path, help="also write per-case results here")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown report path")
    parser.add_argument("--no-doc", action="store_true", help="do not write the markdown report")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    code = 0
    try:
        exclude = COMPRESSION_CASES if args.quick else ()
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="conformance-") as log_dir:
            outcomes = asyncio.run(run_both(exclude, args.concurrency, Path(log_dir)))
        seconds = time.monotonic() - started
        if args.json:
            payload: dict[str, Any] = {
                name: [dataclasses.asdict(o) for o in results] for name, results in outcomes.items()
            }
            args.json.write_text(json.dumps(payload, indent=1))
        if not args.no_doc:
            args.doc.write_text(render(outcomes, args.quick, seconds))
            print(f"wrote {args.doc}")
        for name, results in outcomes.items():
            print(f"{name}: {dict(_counts(results))}")
        unexpected = unexpected_failures(outcomes)
        for o in unexpected:
            print(f"node fails {o.case_id} which the baseline passes: {_close(o)}")
        code = 1 if unexpected else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 2
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)  # see the module docstring: kosoku may abort during interpreter shutdown


if __name__ == "__main__":
    main()
