"""The hand-packed frame header must equal what the websockets library would send."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from runtime.node.frames import message_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("binary", [False, True])
def test_frame_matches_websockets(length: int, binary: bool) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    assert message_frame(payload, binary) == Frame(opcode, payload).serialize(mask=False)
