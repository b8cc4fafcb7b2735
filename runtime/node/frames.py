"""Server frames built once and written to many connections.

Server-to-client frames are not masked, and the node does not negotiate compression, so a message
encodes to the same bytes for every recipient: one encoding serves a send to 10,000 connections.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode


def message_frame(payload: bytes, binary: bool) -> bytes:
    return Frame(Opcode.BINARY if binary else Opcode.TEXT, payload).serialize(mask=False)
