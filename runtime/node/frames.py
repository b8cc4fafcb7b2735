"""Server frames built once and written to many connections.

Server-to-client frames are not masked, so on a connection without compression a message encodes
to the same bytes for every recipient: one encoding serves a send to 10,000 connections. A
connection that negotiated permessage-deflate (`--compression deflate`) does not use these: the
library compresses each message with that connection's own context (see `Node._write`).
The header is packed here rather than by `websockets.frames.Frame.serialize`, which checks and
buffers for the general case and costs several times more per message; a test holds the two equal.
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def message_frame(payload: bytes, binary: bool) -> bytes:
    """One unfragmented, unmasked data frame (RFC 6455 section 5.2)."""
    first = _BINARY if binary else _TEXT
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return _MEDIUM.pack(first, 126, length) + payload
    return _LONG.pack(first, 127, length) + payload
