"""A node with the transports its settings name, started and drained as one."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from runtime.config import Settings
from runtime.core.peer_protocol import PeerProtocol
from runtime.node import ecs_stop
from runtime.node.peer_address import advertised_address
from runtime.node.server import Node
from runtime.node.target_health import TargetHealthWatcher, watcher_from_settings
from runtime.transports.base import (
    ClusterTransport,
    CommandSource,
    HandshakeAuthorizer,
    NoOrigin,
    OriginTransport,
)
from runtime.transports.connect_handler import connect_handler_from_settings
from runtime.transports.graphql_origin import (
    GraphqlOriginClient,
    HttpGraphqlOrigin,
    LambdaGraphqlOrigin,
)
from runtime.transports.http_commands import CommandEndpoint
from runtime.transports.http_origin import HttpOrigin
from runtime.transports.jwt_authorizer import jwt_authorizer_from_settings
from runtime.transports.lambda_authorizer import lambda_authorizer_from_settings
from runtime.transports.sqs_commands import SqsCommandPoller
from runtime.transports.sqs_origin import SnsOrigin, SqsOrigin
from runtime.transports.udp_peers import UdpPeers
from runtime.wire.commands import max_body_bytes

log = logging.getLogger("runtime.node")


def origin_from_settings(settings: Settings) -> OriginTransport | None:
    """The origin transport the settings name; None for `echo`, which the node builds itself
    (it answers through the node)."""
    if settings.origin_transport == "echo":
        return None
    if settings.origin_transport == "none":
        return NoOrigin()
    if settings.origin_transport in ("sqs", "sns"):
        node = settings.peer_address
        kind = SqsOrigin if settings.origin_transport == "sqs" else SnsOrigin
        return kind(
            settings.events_queue_url if kind is SqsOrigin else settings.events_topic_arn,
            region=settings.aws_region or None,
            concurrency=settings.origin_concurrency,
            timeout=settings.origin_request_timeout,
            # One FIFO group per node for its keep-alives, so nodes do not queue behind each other;
            # and its own buckets for packed events, so each node adds Lambda lanes.
            keepalive_group=f"keepalive-{node.host}-{node.port}",
            events_per_message=settings.events_per_message,
            message_bytes=settings.events_message_bytes,
            linger=settings.events_linger_ms / 1000,
            fifo_groups=settings.events_fifo_groups,
            group_prefix=f"{node.host}-{node.port}-b",
        )
    return HttpOrigin(
        settings.origin_url,
        token=settings.origin_token,
        concurrency=settings.origin_concurrency,
        max_batch_events=settings.origin_batch_events,
        max_batch_bytes=settings.origin_batch_bytes,
        timeout=settings.origin_request_timeout,
    )


def graphql_origin_from_settings(settings: Settings) -> GraphqlOriginClient | None:
    if settings.graphql_origin_url:
        return HttpGraphqlOrigin(
            settings.graphql_origin_url,
            token=settings.graphql_origin_token,
            concurrency=settings.graphql_origin_concurrency,
            timeout=settings.origin_request_timeout,
        )
    if settings.graphql_origin_function:
        return LambdaGraphqlOrigin(
            settings.graphql_origin_function,
            region=settings.aws_region or None,
            concurrency=settings.graphql_origin_concurrency,
            timeout=settings.origin_request_timeout,
        )
    return None


def authorizer_from_settings(settings: Settings) -> HandshakeAuthorizer | None:
    """The JWT or the Lambda REQUEST authorizer the settings name (they cannot name both)."""
    return jwt_authorizer_from_settings(settings) or lambda_authorizer_from_settings(settings)


# Bytes in flight to one peer. A burst larger than a receive socket buffer (212,992 bytes by
# default on Linux, and Fargate cannot raise net.core.rmem_max) is partly dropped by the kernel
# and then has to be recovered by retransmission; staying under it keeps a burst whole.
PEER_WINDOW_BYTES = 192 * 1024


def peer_window(max_datagram: int) -> int:
    """Packets in flight per peer; every node derives the same from the shared datagram size."""
    return max(16, PEER_WINDOW_BYTES // max_datagram)


def peers_from_settings(settings: Settings) -> UdpPeers:
    """The UDP cluster transport; `settings.peer_advertise` must already be resolved."""
    core = PeerProtocol(
        local=settings.peer_address,
        secret=settings.peer_secret.encode(),
        session=time.time_ns(),  # grows across restarts, so peers tell a new run from a replay
        max_datagram=settings.peer_max_datagram,
        window=peer_window(settings.peer_max_datagram),
        max_message_bytes=max_body_bytes(settings.send_buffer_bytes),
        down_after=settings.peer_down_seconds,
        ping_interval=min(1.0, settings.peer_down_seconds / 3),
    )
    return UdpPeers(
        core,
        settings.peer_listen,
        static_peers=settings.peers,
        peers_dns=settings.peers_dns,
        refresh_seconds=settings.peers_refresh_seconds,
        metrics_interval=settings.peer_metrics_interval,
    )


async def build_service(
    settings: Settings, environ: dict[str, str] | os._Environ[str] = os.environ
) -> NodeService:
    """A node as its settings describe it, with the UDP cluster unless --local-only.

    The peer address is settled first: every connection ID the node mints carries it. The ECS
    task metadata is read once, for the load balancer target's IP and the peer address alike.
    """
    target_health = await watcher_from_settings(settings, environ)
    if settings.local_only:
        return NodeService(settings, target_health=target_health)
    task_ip = target_health.ip if target_health is not None and not settings.target_id else None
    settings = replace(
        settings, peer_advertise=await advertised_address(settings, environ, task_ip=task_ip)
    )
    return NodeService(settings, cluster=peers_from_settings(settings), target_health=target_health)


class NodeService:
    """The node plus its command endpoint; what `python -m runtime serve` runs."""

    def __init__(
        self,
        settings: Settings,
        origin: OriginTransport | None = None,
        cluster: ClusterTransport | None = None,
        graphql_origin: GraphqlOriginClient | None = None,
        target_health: TargetHealthWatcher | None = None,
    ) -> None:
        self.settings = settings
        self.target_health = target_health  # watched from `run_until_signal`, with ECS metadata
        if origin is None:
            origin = origin_from_settings(settings)
        if graphql_origin is None:
            graphql_origin = graphql_origin_from_settings(settings)
        self.node = Node(
            settings,
            origin,
            cluster,
            graphql_origin,
            authorizer=authorizer_from_settings(settings),
            connect_handler=connect_handler_from_settings(settings),
        )
        # Started before the node, stopped after its command sources: forwards made while
        # draining still travel.
        self.cluster = cluster
        self.command_poller: CommandSource | None = None
        if settings.commands_queue_url:
            self.command_poller = SqsCommandPoller(
                settings.commands_queue_url,
                self.node,
                max_payload_bytes=settings.send_buffer_bytes,
                channel_rules=settings.channel_rules,
                workers=settings.commands_workers,
                region=settings.aws_region or None,
            )
        self.commands: CommandSource | None = None
        if settings.command_listen is not None:
            host, port = settings.command_listen
            self.commands = CommandEndpoint(
                self.node,
                host,
                port,
                token=None if settings.no_command_auth else settings.command_token,
                max_payload_bytes=settings.send_buffer_bytes,
                channel_rules=settings.channel_rules,
                max_connections=settings.command_max_connections,
                header_timeout=settings.command_header_timeout,
                body_timeout=settings.command_body_timeout,
                max_header_bytes=settings.command_max_header_bytes,
                connections_api=settings.connections_api,
                stage=settings.stage,
                connections=self.node.connections_api,
                presence=self.node.presence,
            )

    async def start(self) -> None:
        if self.cluster is not None:
            await self.cluster.start(self.node)
        await self.node.start()
        if self.commands is not None:
            await self.commands.start()
        if self.command_poller is not None:
            await self.command_poller.start()

    async def drain(self) -> bool:
        # Stop taking commands from the queue first: other nodes deliver what arrives meanwhile,
        # rather than this one answering GONE for connections it is closing.
        if self.command_poller is not None:
            await self.command_poller.stop()
        try:
            return await self.node.drain()
        finally:
            await self._stop_transports()

    async def stop(self) -> None:
        if self.command_poller is not None:
            await self.command_poller.stop()
        await self.node.stop()
        await self._stop_transports()

    async def _stop_transports(self) -> None:
        if self.commands is not None:
            await self.commands.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.target_health is not None:
            self.target_health.close()

    async def run_until_signal(self) -> bool:
        """Serve until SIGTERM or SIGINT, or until the load balancer or ECS lets go of this task,
        then drain; a signal during the drain stops at once."""
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        watchers = self._watch_for_stopping(stop)
        await stop.wait()
        stop.clear()
        seen = [
            watcher.result()
            for watcher in watchers
            if watcher.done() and not watcher.cancelled() and watcher.exception() is None
        ]
        if seen:
            log.info(f"{seen[0]}; draining (signal twice to stop now)")
        else:
            log.info("signal received; draining (signal again to stop now)")
        for watcher in watchers:
            watcher.cancel()
        drain = asyncio.create_task(self.drain())
        # When a watcher began the drain, ECS's own SIGTERM is still to come, and may come at
        # once: the load balancer ends a deregistration early when the target's last connection
        # closes. That signal must not cut the drain short (its DISCONNECTs are still being
        # sent); the stop timeout bounds it, and a second signal still stops at once.
        patience = 1 if seen else 0
        while True:
            again = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait((drain, again), return_when=asyncio.FIRST_COMPLETED)
            if drain in done:
                again.cancel()
                return drain.result()
            stop.clear()
            if not patience:
                break
            patience -= 1
            log.info("signal received while draining; finishing (signal again to stop now)")
        log.warning("second signal; stopping without finishing the drain")
        drain.cancel()
        await self.stop()
        return False

    def _watch_for_stopping(self, stop: asyncio.Event) -> list[asyncio.Task[str]]:
        """Watch for the signs, before SIGTERM, that this task is being stopped: its load
        balancer target draining, and the ECS task metadata. Each says what it saw; the first
        sets `stop`. A watcher that fails is logged, and the others (and SIGTERM) still work."""
        signs: list[Coroutine[Any, Any, str]] = []
        if self.target_health is not None:
            assert self.node.ws_address is not None  # started
            signs.append(self._target_let_go(self.target_health, self.node.ws_address[1]))
        url = ecs_stop.metadata_url()
        if url is not None:
            signs.append(self._task_stopping(url))

        def seen(task: asyncio.Task[str]) -> None:
            if task.cancelled():
                return
            if task.exception() is not None:
                log.error("a stop watcher failed", exc_info=task.exception())
                return
            stop.set()

        watchers = [asyncio.create_task(sign) for sign in signs]
        for watcher in watchers:
            watcher.add_done_callback(seen)
        return watchers

    @staticmethod
    async def _target_let_go(watcher: TargetHealthWatcher, port: int) -> str:
        what = await watcher.wait_until_let_go(port)
        return f"the load balancer target of this task is {what}"

    @staticmethod
    async def _task_stopping(url: str) -> str:
        await ecs_stop.wait_for_task_stopping(url)
        return "ECS is stopping this task"
