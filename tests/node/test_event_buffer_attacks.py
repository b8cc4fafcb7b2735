"""Handshakes as an attack on the event buffer: every event is admitted against the same bound,
an event the transport can never carry is refused at the door or dropped, never retried at the
head of the line, and the honest clients beside the attacker lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from runtime.core.outbox import EventOutbox
from runtime.local.provision import provision
from runtime.names import ResourceNames
from runtime.transports.sqs_origin import SqsOrigin
from tests.aws import MotoEndpoint
from tests.conftest import StartNode
from tests.doubles.memory import MemoryOrigin
from tests.transports.test_sqs_origin import areceive

KiB = 1024
MiB = 1024 * KiB


def padding(total: int) -> list[tuple[str, str]]:
    """Request headers of about `total` bytes, in lines the handshake parser accepts (8 KiB)."""
    lines = []
    for index in range(total // 8000):
        lines.append((f"X-Pad-{index}", "p" * 8000))
    return lines


class PeakBytes:
    """Records the outbox's bytes and events after every event it takes: the bound is a peak."""

    def __init__(self, outbox: EventOutbox) -> None:
        self.outbox = outbox
        self.bytes = 0
        self.events = 0
        real = outbox.add

        def add(key: str, event: bytes, now: float) -> None:
            real(key, event, now)
            # Room set aside for DISCONNECTs counts too (getattr: the bound predates it).
            reserved_bytes = getattr(outbox, "reserved_bytes", 0)
            reserved_events = getattr(outbox, "reserved_events", 0)
            self.bytes = max(self.bytes, outbox.nbytes + reserved_bytes)
            self.events = max(self.events, outbox.nevents + reserved_events)

        outbox.add = add  # type: ignore[method-assign]


async def attempt(url: str, headers: list[tuple[str, str]]) -> int:
    """One handshake that closes at once: 101, or the status it was refused with."""
    try:
        async with connect(url, additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code
    except ConnectionClosed as exc:  # admitted by the HTTP check, refused right after (1013)
        return exc.rcvd.code if exc.rcvd is not None else 1006


async def test_connect_floods_cannot_grow_the_event_buffer_past_its_cap(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    origin = MemoryOrigin()
    origin.up = False
    cap = 1 * MiB
    node = await start_node(
        origin=origin,
        event_buffer_bytes=cap,
        max_message_bytes=64 * KiB,
        origin_unavailable_seconds=60,
    )
    outbox = node.node.pump.outbox
    peak = PeakBytes(outbox)
    async with connect(node.ws_url) as honest:
        for index in range(10):
            await honest.send(f"before {index}")
        # 60 handshakes with 56 KB of headers (under an ALB's 64 KB), each closed at once: on an
        # unbounded buffer, 60 CONNECTs (headers twice) and DISCONNECTs hold about 6.7 MB.
        statuses = [await attempt(node.ws_url, padding(56_000)) for _ in range(60)]
        assert peak.bytes <= cap, f"event buffer reached {peak.bytes} bytes, cap {cap}"
        assert set(statuses) <= {101, 503, 1013}, statuses
        assert statuses.count(503) > 0, statuses
        refusal_lines = [
            r for r in caplog.records if r.getMessage().startswith("handshake refused")
        ]
        assert len(refusal_lines) == 1  # a flood of refusals is not a flood of log lines
        assert node.node.stats()["handshakesRefusedBufferFull"] >= statuses.count(503)
        for index in range(10):
            await honest.send(f"after {index}")  # waits its turn, nothing is lost
        await asyncio.sleep(0.2)
        assert peak.bytes <= cap
        origin.up = True
        honest_id = (await origin.wait_for(lambda e: len(e) >= 1))[0]["requestContext"][
            "connectionId"
        ]
        expected = [f"before {i}" for i in range(10)] + [f"after {i}" for i in range(10)]
        events = await origin.wait_for(
            lambda e: len(origin.of_type("MESSAGE", honest_id)) >= 20, timeout=15
        )
        assert [e["body"] for e in origin.of_type("MESSAGE", honest_id)] == expected
    # Every admitted attacker got both its CONNECT and its DISCONNECT; refused ones got neither.
    admitted = statuses.count(101)
    await origin.wait_for(lambda e: len(origin.of_type("DISCONNECT")) >= admitted + 1)
    connects = {e["requestContext"]["connectionId"] for e in origin.of_type("CONNECT")}
    disconnects = {e["requestContext"]["connectionId"] for e in origin.of_type("DISCONNECT")}
    assert connects == disconnects
    assert len(connects) == admitted + 1
    assert len(events) == len(origin.events)
    # The buffer drained: handshakes are welcome again.
    assert await attempt(node.ws_url, padding(56_000)) == 101


async def test_disconnects_of_admitted_clients_always_fit(start_node: StartNode) -> None:
    """Room for a DISCONNECT is set aside at CONNECT: a full buffer never loses one."""
    origin = MemoryOrigin()
    origin.up = False
    node = await start_node(
        origin=origin,
        event_buffer_bytes=256 * KiB,
        max_message_bytes=16 * KiB,
        origin_unavailable_seconds=60,
    )
    outbox = node.node.pump.outbox
    peak = PeakBytes(outbox)
    clients: list[ClientConnection] = [await connect(node.ws_url) for _ in range(20)]
    # Fill what is left with messages from the first client until the node stops reading it.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            while True:
                await clients[0].send("m" * 8000)
    for client in clients:
        await client.close()
    await asyncio.sleep(0.3)
    assert peak.bytes <= outbox.max_bytes
    origin.up = True
    await origin.wait_for(lambda e: len(origin.of_type("DISCONNECT")) >= 20, timeout=15)
    assert len(origin.of_type("CONNECT")) == 20


async def test_connect_event_too_large_for_sqs_is_refused_at_the_handshake(
    start_node: StartNode,
    moto_endpoint: MotoEndpoint,
    environment_name: str,
) -> None:
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
    sqs.set_queue_attributes(
        QueueUrl=resources.events_queue_url, Attributes={"MaximumMessageSize": str(64 * KiB)}
    )
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url, attempts=1)
    node = await start_node(origin=origin, max_message_bytes=16 * KiB)
    async with connect(node.ws_url) as honest:
        await honest.send("before")
        # Headers appear twice in a CONNECT event: 40 KB of them cannot fit a 64 KiB message.
        statuses = [await attempt(node.ws_url, padding(40_000)) for _ in range(20)]
        assert statuses == [431] * 20
        await honest.send("after")
        received = await areceive(sqs, resources.events_queue_url, 3)
    bodies = [json.loads(message["Body"]).get("body") for message in received]
    assert bodies == [None, "before", "after"]
    assert node.node.stats()["handshakesRefusedTooLarge"] == 20
    assert len(node.node.pump.outbox) == 0


async def test_event_the_queue_refuses_is_dropped_not_retried_forever(
    start_node: StartNode,
    moto_endpoint: MotoEndpoint,
    environment_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The queue's limit shrinks under a running node: what no longer fits is dropped once,
    its connection closed, and every other connection's events keep flowing."""
    sqs = moto_endpoint.client("sqs")
    resources = provision(sqs, moto_endpoint.client("sns"), ResourceNames(environment_name))
    origin = SqsOrigin(resources.events_queue_url, endpoint_url=moto_endpoint.url, attempts=1)
    node = await start_node(origin=origin, max_message_bytes=128 * KiB)
    async with connect(node.ws_url) as honest, connect(node.ws_url, max_size=None) as big:
        await areceive(sqs, resources.events_queue_url, 2)  # both CONNECTs
        sqs.set_queue_attributes(
            QueueUrl=resources.events_queue_url, Attributes={"MaximumMessageSize": str(64 * KiB)}
        )
        with caplog.at_level(logging.ERROR, logger="runtime"):
            await big.send("b" * 100_000)  # fit the limit the node read at start; not any more
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(big.recv(), 10)
            assert big.close_code == 1011
            for index in range(5):
                await honest.send(f"honest {index}")
            received = await areceive(sqs, resources.events_queue_url, 6)
    events: list[dict[str, Any]] = [json.loads(message["Body"]) for message in received]
    honest_bodies = [e["body"] for e in events if e.get("body", "").startswith("honest")]
    assert honest_bodies == [f"honest {i}" for i in range(5)]
    assert not any(e.get("body", "").startswith("b") for e in events)
    assert node.node.counters["eventsDropped"] == 1
    assert any("can never be sent" in record.getMessage() for record in caplog.records)
    assert len(node.node.pump.outbox) == 0
