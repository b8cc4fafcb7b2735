"""The cluster over UDP: the peer protocol core (runtime/core/peer_protocol.py) on one socket.

This module only moves datagrams, keeps the core's clock and timers, and turns its events into
awaited results: `forward` returns True once the peer acknowledged the commands, False once the
core gave up on the peer (the node then sends GONE). Commands from a peer are executed in the
order that peer sent them, one batch at a time.

Membership: the static list, every address DNS has named, every node that reached us
(authenticated), and every node a member told us of when it came up (runtime/wire/membership.py).
Nothing is ever sent to an address outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from runtime.core.execution import ClusterNode
from runtime.core.peer_protocol import (
    Acknowledged,
    Delivered,
    Failed,
    PeerDown,
    PeerProtocol,
    PeerUp,
)
from runtime.wire.commands import PeerCommand
from runtime.wire.connection_id import NodeAddress
from runtime.wire.forwarded import ForwardedFormatError, decode_forwarded, encode_forwarded
from runtime.wire.membership import (
    MembershipFormatError,
    decode_members,
    encode_members,
    is_membership,
)

log = logging.getLogger("runtime.peers")

SOCKET_BUFFER_BYTES = 4 << 20  # the kernel caps it at net.core.[rw]mem_max


class UdpPeers(asyncio.DatagramProtocol):
    def __init__(
        self,
        core: PeerProtocol,
        listen: tuple[str, int],
        *,
        static_peers: Sequence[NodeAddress] = (),
        peers_dns: tuple[str, int] | None = None,
        refresh_seconds: float = 10.0,
        metrics_interval: float = 60.0,
    ) -> None:
        self.core = core
        self.listen = listen
        self.address = core.local
        self.static_peers = tuple(static_peers)
        self.peers_dns = peers_dns
        self.refresh_seconds = refresh_seconds
        self.metrics_interval = metrics_interval
        self.executor: ClusterNode | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._inbox: dict[NodeAddress, deque[list[PeerCommand]]] = {}
        self._workers: dict[NodeAddress, asyncio.Task[None]] = {}
        self._flush_soon = False
        # uvloop's call_at answers a deadline already past with a plain Handle, which has no
        # when(): the deadline the timer was set for is kept beside it.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        # Members beyond the static list: every address DNS has named, plus nodes that reached
        # us; a member leaves once it is down and the latest DNS answer no longer names it.
        self._discovered: set[NodeAddress] = set()
        self._dns_answer: set[NodeAddress] = set()
        self._members: frozenset[NodeAddress] = frozenset()
        self.refused_non_members = 0  # forwards asked for an address outside the cluster
        self.resolve = self._lookup  # a hook: tests stand in for Cloud Map's partial answers

    async def start(self, executor: ClusterNode) -> None:
        """Listen; commands from peers go to `executor` (the node) from now on."""
        self.executor = executor
        host, port = self.listen
        loop = self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port), family=family)
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        if self.static_peers:
            self._update_members()
        if self.peers_dns is not None:
            await self._resolve_members()
            self._tasks.append(loop.create_task(self._refresh_members()))
        if self.metrics_interval > 0:
            self._tasks.append(loop.create_task(self._log_metrics()))
        log.info(
            "peer transport listening",
            extra={"peerListen": f"{host}:{port}", "peerAddress": str(self.address)},
        )
        self._flush()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for worker in self._workers.values():
            worker.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_result(False)
        if self.transport is not None:
            self.transport.close()
        self._log_stats("peer traffic at stop")

    # ClusterTransport

    def peers(self) -> list[NodeAddress]:
        return self.core.live_peers()

    def members(self) -> frozenset[NodeAddress]:
        return self._members

    def reachable(self) -> list[NodeAddress]:
        return [peer for peer in self.core.reachable_peers() if peer != self.address]

    async def forward(self, node: NodeAddress, commands: Sequence[PeerCommand]) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        if node not in self._members:  # the router sends none; this holds for any caller
            self.refused_non_members += 1
            return False
        assert self._loop is not None
        payload = encode_forwarded(list(commands))
        message_id = self.core.send_message(node, payload, self._loop.time())
        waiter = self._loop.create_future()
        self._waiting[message_id] = waiter
        self._flush()  # out now: a forward is on the latency path of its command
        delivered: bool = await waiter
        return delivered

    def stats(self) -> dict[str, object]:
        return {
            **self.core.stats,
            "socketErrors": self.errors,
            "members": len(self._members),
            "refusedNonMembers": self.refused_non_members,
        }

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's (uvloop's does not subclass asyncio.DatagramTransport).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self._loop is not None
        self.core.receive_datagram(data, self._loop.time(), time.time())
        for event in self.core.events_received():  # commands on at once; acks wait for the flush
            self._handle(event)
        self._schedule_flush()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors such as "port unreachable" from a peer that is gone; the core's
        # timers decide when that peer is down.
        self.errors += 1
        log.debug("peer socket error", extra={"error": str(exc)})

    # the core's output

    def _schedule_flush(self) -> None:
        """Many datagrams handled in one loop pass share one flush, so their acks coalesce."""
        if not self._flush_soon:
            self._flush_soon = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self.transport is None or self.transport.is_closing():
            return
        assert self._loop is not None
        now = self._loop.time()
        sendto = self.transport.sendto
        for peer, datagram in self.core.datagrams_to_send(now, time.time()):
            sendto(datagram, (peer.host, peer.port))
        for event in self.core.events_received():
            self._handle(event)
        deadline = self.core.next_deadline()
        if self._timer is not None and (deadline is None or self._timer_at != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _handle(self, event: object) -> None:
        if isinstance(event, Delivered):
            self._receive(event.peer, event.payload)
        elif isinstance(event, Acknowledged | Failed):
            waiter = self._waiting.pop(event.message_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(isinstance(event, Acknowledged))
        elif isinstance(event, PeerUp):
            log.info("peer up", extra={"peer": str(event.peer)})
            self._learn(event.peer)
            self._tell_members(event.peer)
            if self.executor is not None:
                self.executor.peer_up(event.peer)
        elif isinstance(event, PeerDown):
            log.warning("peer down", extra={"peer": str(event.peer)})
            self._forget(event.peer)
            if self.executor is not None:
                self.executor.peer_down(event.peer)

    def _receive(self, peer: NodeAddress, payload: bytes) -> None:
        if is_membership(payload):
            self._members_told(peer, payload)
            return
        try:
            commands = decode_forwarded(payload)
        except ForwardedFormatError as exc:
            log.error(
                "unreadable commands from a peer (is it running other code?)",
                extra={"peer": str(peer), "error": str(exc)},
            )
            return
        if not commands:
            return
        self._inbox.setdefault(peer, deque()).append(commands)
        if peer not in self._workers:
            assert self._loop is not None
            self._workers[peer] = self._loop.create_task(self._execute_in_order(peer))

    async def _execute_in_order(self, peer: NodeAddress) -> None:
        inbox = self._inbox[peer]
        try:
            while inbox:
                commands = inbox.popleft()
                assert self.executor is not None  # set by start, before any datagram
                try:
                    await self.executor.execute(commands, from_peer=True)
                except Exception:
                    log.exception(
                        "executing commands from a peer failed", extra={"peer": str(peer)}
                    )
        finally:
            del self._workers[peer]
            if not inbox:
                del self._inbox[peer]

    # membership and metrics

    async def _resolve_members(self) -> None:
        assert self.peers_dns is not None and self._loop is not None
        name, port = self.peers_dns
        try:
            answer = await self.resolve(name, port)
        except OSError as exc:
            log.warning("peer DNS lookup failed", extra={"peersDns": name, "error": str(exc)})
            return  # keep the members known so far
        # Cloud Map answers with at most 8 of the nodes, a different 8 each time: accumulate.
        self._dns_answer = answer - {self.address}
        self._discovered |= self._dns_answer
        self._update_members()

    async def _lookup(self, name: str, port: int) -> set[NodeAddress]:
        assert self._loop is not None
        infos = await self._loop.getaddrinfo(name, port, type=socket.SOCK_DGRAM)
        return {NodeAddress(str(info[4][0]), port) for info in infos}

    def _update_members(self) -> None:
        assert self._loop is not None
        members = (set(self.static_peers) | self._discovered) - {self.address}
        self._members = frozenset(members)
        self.core.set_members(sorted(members, key=str), self._loop.time())
        self._schedule_flush()

    def _tell_members(self, peer: NodeAddress) -> None:
        """A peer came up (it may have just joined): tell it the live members we know."""
        assert self._loop is not None
        live = [member for member in self.core.live_peers() if member != peer]
        if live:
            self.core.send_message(peer, encode_members(live), self._loop.time())
            self._schedule_flush()

    def _members_told(self, peer: NodeAddress, payload: bytes) -> None:
        """A member (it holds the secret) named members we may not know yet: they are ours."""
        try:
            told = set(decode_members(payload))
        except MembershipFormatError as exc:
            log.error(
                "unreadable membership news from a peer (is it running other code?)",
                extra={"peer": str(peer), "error": str(exc)},
            )
            return
        new = told - self._members - {self.address}
        if new:
            self._discovered |= new
            log.info(
                "peers learned from a member",
                extra={"peer": str(peer), "learned": sorted(map(str, new))},
            )
            self._update_members()

    def _learn(self, peer: NodeAddress) -> None:
        """A node that reached us (authenticated) is a member, even if DNS has not named it yet."""
        if peer not in self._discovered and peer not in self.static_peers:
            self._discovered.add(peer)
            log.info("peer learned from its traffic", extra={"peer": str(peer)})
            self._update_members()

    def _forget(self, peer: NodeAddress) -> None:
        """A down node that the latest DNS answer no longer names is gone; stop pinging it."""
        if peer in self._discovered and peer not in self._dns_answer:
            self._discovered.discard(peer)
            self._update_members()

    async def _refresh_members(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self._resolve_members()

    async def _log_metrics(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_interval)
            self._log_stats("peer traffic")

    def _log_stats(self, message: str) -> None:
        log.info(message, extra=self.stats())
