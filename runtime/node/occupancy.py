"""OCCUPANCY events: every interval, each channel whose subscribers asked gets its member count
over the cluster sent to the origin, by one node.

The node reporting a channel is the lowest-addressed of the nodes whose subscribers asked
(runtime/node/channels.py: `occupancy_channels`), so a channel asked of several nodes is
reported once; while news of a peer's asking is on its way, two nodes may both report an
interval. Like GONE and JOIN/LEAVE these events are advice: dropped and counted when the event
buffer is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from runtime.node.channels import ChannelHub
from runtime.node.origin_pump import OriginPump
from runtime.node.presence import Presence
from runtime.wire import events
from runtime.wire.events import now_ms

log = logging.getLogger("runtime.node")


class OccupancyReporter:
    def __init__(
        self,
        channels: ChannelHub,
        presence: Presence,
        pump: OriginPump,
        context: events.NodeContext,
        interval: float,
    ) -> None:
        self.channels = channels
        self.presence = presence
        self.pump = pump
        self.context = context
        self.interval = interval
        self.counters: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.report()
            except Exception:
                log.exception("occupancy report failed")

    async def report(self) -> None:
        """One interval's events, the channels counted concurrently."""
        channels = self.channels.occupancy_channels()
        if not channels:
            return
        results = await asyncio.gather(
            *(self.presence.count(name) for name in channels), return_exceptions=True
        )
        now = now_ms()
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, BaseException):  # busy, or a failure: that channel only
                self.counters["occupancyCountsFailed"] += 1
                continue
            event = events.occupancy_event(
                self.context, channel, result.page.count, result.partial, now
            )
            if self.pump.offer(channel, event):
                self.counters["occupancyEvents"] += 1
            else:
                self.counters["occupancyEventsDropped"] += 1
