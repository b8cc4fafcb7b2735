"""The node's server-side connection class (the websockets `ServerConnection`, specialised).

Why it exists: with permessage-deflate, a frame of a few hundred bytes can inflate to a whole
message. The library parses, and inflates, every frame of a read before its receive queue pauses
reading, so one read of small compressed frames could make the node hold hundreds of full-size
messages for one client. On a compressed connection the parser here stops between two frames as
soon as the frames queued and just parsed reach the point where the queue pauses reading; the rest
of the read stays in the protocol's buffer, compressed, and is parsed before anything new is read
once the application has taken frames from the queue. So a client can make the node hold at most
`max_queue` + 1 frames of inflated data, at most `max_size` bytes each, compressed or not.

Uncompressed connections keep the library's path untouched (a read of plain frames holds no more
than its own size, and that path is benchmarked): the gate is put in only after the handshake, and
only when an extension was negotiated.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import OPEN
from websockets.streams import StreamReader


class FrameGate(StreamReader):
    """The protocol's stream reader, able to stop the parser between two frames.

    The parser asks `at_eof()` before each frame, so waiting there leaves the rest of the buffer
    unparsed and uninflated, with frame boundaries kept by the parser itself (no second parser of
    frame headers that a crafted stream could put out of step with it).
    """

    hold: Callable[[], bool]
    held: bool  # the parser waits at the gate with bytes in the buffer

    def at_eof(self) -> Generator[None, None, bool]:
        # Never past EOF: the protocol must reach CLOSED then, so the connection discards held
        # bytes (connection lost) or defers the EOF (peer's FIN) before the EOF gets here.
        while self.buffer and not self.eof and self.hold():
            self.held = True
            yield
        self.held = False
        return (yield from super().at_eof())


class NodeConnection(ServerConnection):
    """A client's connection as the node holds it; compressed frames inflate as they queue."""

    _gate: FrameGate | None = None
    _eof_waiting = False  # EOF came while frames were held; delivered once they are parsed

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        await super().handshake(*args, **kwargs)
        # accept() chose the extensions and the 101 went out in this same step of the loop, so
        # no frame has been inflated yet (frames sent before the 101 are parsed without the
        # extension, and their RSV1 bit fails the connection).
        if self.protocol.extensions and self.protocol.state is OPEN:
            self._gate_frames()

    def _gate_frames(self) -> None:
        reader = self.protocol.reader
        # The same object with a new class, not a new reader: a parser suspended mid-frame
        # holds this reader's bound methods and must keep seeing its buffer and EOF.
        reader.__class__ = FrameGate
        assert isinstance(reader, FrameGate)
        reader.hold = self._must_hold
        reader.held = False
        self._gate = reader
        self.recv_messages.resume = self._resume_reading

    def _must_hold(self) -> bool:
        """Parse no further once the frames queued and just parsed would pause reading.

        Control frames count too: holding a little early costs only one more pass.
        """
        queue = self.recv_messages
        if queue.paused:
            return True
        return queue.high is not None and len(queue.frames) + len(self.protocol.events) > queue.high

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._gate is not None and self._gate.held:
            self._parse_held_frames()

    def _parse_held_frames(self) -> None:
        """Queue held frames until the queue pauses reading or none are left."""
        gate = self._gate
        assert gate is not None
        while gate.held and not self.recv_messages.paused:
            super().data_received(b"")  # the parser resumes at the gate, on the held bytes
        if self._eof_waiting and not gate.held:
            # Everything sent before the EOF is parsed: now the EOF, as the library does it.
            self._eof_waiting = False
            super().eof_received()
            self.transport.close()

    def _resume_reading(self) -> None:
        """The queue's resume callback: held frames are queued before anything new is read.

        The queue calls it from the application's recv(), right after taking a frame; queueing
        frames there is safe (nothing waits on the queue at that point) and saves a loop pass per
        queue's worth of frames, which is most of the cost of the gate.
        """
        if self._gate is not None and self._gate.held:
            self._parse_held_frames()
        if not self.recv_messages.paused:
            self.transport.resume_reading()

    # websockets annotates its eof_received `-> None`, narrower than asyncio.Protocol's
    # `-> bool | None`; returning True (keep the transport open) is asyncio's documented contract.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._gate is not None and self._gate.held:
            # Only a transport that reports EOF while reading is paused gets here: keep it
            # open until the frames sent before the EOF are parsed.
            self._eof_waiting = True
            return True
        super().eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        gate = self._gate
        if gate is not None and gate.held:
            # Never read by the application: dropped as unread bytes in the socket would be,
            # without inflating them. The parser then meets EOF and the protocol closes.
            gate.discard()
        self._eof_waiting = False
        super().connection_lost(exc)
        if gate is not None:
            # No more reads: drop the bound methods that point back here, so the connection
            # is freed as soon as it is dropped, like the library's own (no cycle to collect).
            gate.hold = _hold_nothing
            self.recv_messages.resume = self.transport.resume_reading


def _hold_nothing() -> bool:
    return False
