"""`python -m runtime serve` runs one node; `python -m runtime local` the whole local system."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from runtime import config, logs

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m runtime {serve,local} [--help] [flags]\n\n"
            "  serve   run one node (python -m runtime serve --help lists its settings)\n"
            "  local   run the whole system locally: embedded AWS, two nodes, chat origin, page"
        )
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "local":
        try:
            from runtime.local import system  # not in the node's image: imported only here
        except ModuleNotFoundError as exc:
            if exc.name not in ("runtime.local", "runtime.local.system"):
                raise
            print(
                "error: the local system is not installed here (an image of the node)",
                file=sys.stderr,
            )
            return 2
        return system.main(rest)
    if command != "serve":
        print(f"unknown command {command!r}; expected: serve or local", file=sys.stderr)
        return 2
    try:
        settings = config.parse_argv(rest)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    from runtime.node.service import build_service

    async def serve() -> bool:
        service = await build_service(settings)
        return await service.run_until_signal()

    try:
        clean = _run(serve())
    except config.ConfigError as exc:  # found only as the node is built, e.g. no target IP
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an address already in use
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if clean else 1


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
