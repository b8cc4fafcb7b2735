"""A node with the transports its settings name, started and drained as one."""

from __future__ import annotations

import asyncio
import logging
import signal

from runtime.config import Settings
from runtime.node.server import Node
from runtime.transports.base import ClusterTransport, OriginTransport
from runtime.transports.echo_origin import EchoOrigin
from runtime.transports.http_commands import CommandEndpoint
from runtime.transports.http_origin import HttpOrigin

log = logging.getLogger("runtime.node")


def origin_from_settings(settings: Settings) -> OriginTransport:
    if settings.origin_transport == "echo":
        return EchoOrigin()
    return HttpOrigin(
        settings.origin_url,
        token=settings.origin_token,
        concurrency=settings.origin_concurrency,
        max_batch_events=settings.origin_batch_events,
        max_batch_bytes=settings.origin_batch_bytes,
        timeout=settings.origin_request_timeout,
    )


class NodeService:
    """The node plus its command endpoint; what `python -m runtime serve` runs."""

    def __init__(
        self,
        settings: Settings,
        origin: OriginTransport | None = None,
        cluster: ClusterTransport | None = None,
    ) -> None:
        self.settings = settings
        origin = origin if origin is not None else origin_from_settings(settings)
        self.node = Node(settings, origin, cluster)
        if isinstance(origin, EchoOrigin):
            origin.bind(self.node)
        self.commands: CommandEndpoint | None = None
        if settings.command_listen is not None:
            host, port = settings.command_listen
            self.commands = CommandEndpoint(
                self.node,
                host,
                port,
                token=None if settings.no_command_auth else settings.command_token,
                max_payload_bytes=settings.send_buffer_bytes,
            )

    async def start(self) -> None:
        await self.node.start()
        if self.commands is not None:
            await self.commands.start()

    async def drain(self) -> bool:
        try:
            return await self.node.drain()
        finally:
            if self.commands is not None:
                await self.commands.stop()

    async def stop(self) -> None:
        await self.node.stop()
        if self.commands is not None:
            await self.commands.stop()

    async def run_until_signal(self) -> bool:
        """Serve until SIGTERM or SIGINT, then drain; a second signal stops at once."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        stop.clear()
        log.info("signal received; draining (signal again to stop now)")
        drain = asyncio.create_task(self.drain())
        again = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait((drain, again), return_when=asyncio.FIRST_COMPLETED)
        if drain in done:
            again.cancel()
            return drain.result()
        log.warning("second signal; stopping without finishing the drain")
        drain.cancel()
        await self.stop()
        return False
