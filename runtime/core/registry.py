"""The connections a node holds, with what each needs per event: its sequence and send backlog."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from runtime.core.send_buffer import SendBacklog

H = TypeVar("H")


@dataclass(slots=True)
class ConnectionEntry(Generic[H]):
    connection_id: str
    handle: H
    fragment: str
    connected_at: int
    next_sequence: int = 0
    backlog: SendBacklog = field(default_factory=SendBacklog)
    closing: bool = False
    # A GraphQL connection: the event origin never hears of it (no events, no keep-alives), and
    # broadcasts and @connections posts skip it: its client would take them for bad frames.
    graphql: bool = False
    disconnect_room: int = 0  # event-buffer bytes set aside at CONNECT for its DISCONNECT
    # What the @connections API's GET tells: when the client last sent a message (ms; 0: never,
    # then its connected_at), and who it is as the handshake said.
    last_active_at: int = 0
    source_ip: str = ""
    user_agent: str = ""

    def sequence(self) -> int:
        """The next event's sequenceNumber: 0 for CONNECT, then one more per event."""
        value = self.next_sequence
        self.next_sequence = value + 1
        return value


class ConnectionRegistry(Generic[H]):
    def __init__(self) -> None:
        self._entries: dict[str, ConnectionEntry[H]] = {}

    def add(self, entry: ConnectionEntry[H]) -> None:
        if entry.connection_id in self._entries:
            raise KeyError(f"connection {entry.connection_id} is already registered")
        self._entries[entry.connection_id] = entry

    def remove(self, connection_id: str) -> ConnectionEntry[H] | None:
        return self._entries.pop(connection_id, None)

    def get(self, connection_id: str) -> ConnectionEntry[H] | None:
        return self._entries.get(connection_id)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ConnectionEntry[H]]:
        return iter(list(self._entries.values()))

    def ids(self) -> list[str]:
        return list(self._entries)
