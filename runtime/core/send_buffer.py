"""How much a client has not yet read of what we sent it, in messages and bytes.

The node writes frames straight to a connection's transport; the transport reports how many bytes it
still holds. Remembering where each message ended in the stream tells how many whole messages are
still waiting, with no callback per write.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class SendBacklog:
    """Per-connection state; `ends` exists only while something is buffered."""

    written: int = 0
    ends: deque[int] | None = None

    def record(self, nbytes: int, unflushed: int) -> tuple[int, int]:
        """Account one message of `nbytes` just written; return (messages, bytes) still buffered."""
        self.written += nbytes
        if unflushed <= 0:
            self.ends = None
            return 0, 0
        ends = self.ends
        if ends is None:
            ends = self.ends = deque()
        ends.append(self.written)
        flushed = self.written - unflushed
        while ends[0] <= flushed:
            ends.popleft()
        return len(ends), unflushed


@dataclass(frozen=True, slots=True)
class SendLimits:
    max_messages: int
    max_bytes: int

    def exceeded(self, messages: int, nbytes: int) -> bool:
        return messages > self.max_messages or nbytes > self.max_bytes
