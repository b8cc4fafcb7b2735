"""Where a command goes: to connections held here, to the nodes that hold the others, or nowhere.

A command is checked whole before any part of it is carried out, so a malformed ID rejects its
command and touches no connection.

Only cluster members are ever sent a command. A connection ID names its node's address, and an
ID is checked only by a CRC: anyone can forge one naming any address. Commands for a node that
is not a member are GONE at once, so a forged ID cannot make a node send peer traffic (its
command's payload, retried) to an address of the attacker's choosing.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from runtime.wire.commands import (
    Broadcast,
    ChannelPublish,
    Close,
    Command,
    CommandError,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.connection_id import InvalidConnectionId, NodeAddress, parse_connection_id


@dataclass(slots=True)
class Route:
    """One command, split by destination."""

    command: Command
    local_ids: list[str] = field(default_factory=list)
    forwards: dict[NodeAddress, Command] = field(default_factory=dict)
    gone_ids: list[str] = field(default_factory=list)
    to_every_node: bool = False


@dataclass(frozen=True, slots=True)
class Router:
    node: NodeAddress
    region: str

    def route(
        self,
        command: Command,
        local: Container[str],
        *,
        from_peer: bool,
        members: Container[NodeAddress],
    ) -> Route:
        """Split `command`; `from_peer` commands were already routed, so they never travel on,
        and IDs of nodes outside `members` are gone."""
        route = Route(command)
        if isinstance(command, Broadcast | Publish):
            route.to_every_node = not from_peer
            return route
        if isinstance(command, ChannelPublish):
            return route  # to the peers holding its channel: the node's channels decide
        remote: dict[NodeAddress, list[str]] = {}
        for connection_id in command.connection_ids:
            if connection_id in local:
                route.local_ids.append(connection_id)
                continue
            try:
                parsed = parse_connection_id(connection_id)
            except InvalidConnectionId as exc:
                raise CommandError(str(exc)) from None
            if parsed.region != self.region:
                raise CommandError(
                    f"connection ID {connection_id!r} belongs to region {parsed.region!r}; "
                    f"this node serves {self.region!r}: send it to that region's commands"
                )
            if from_peer or parsed.node == self.node or parsed.node not in members:
                route.gone_ids.append(connection_id)
            else:
                remote.setdefault(parsed.node, []).append(connection_id)
        for node, ids in remote.items():
            route.forwards[node] = _narrow(command, ids)
        return route


def _narrow(command: Send | Close | Subscribe | Unsubscribe, ids: list[str]) -> Command:
    if len(ids) == len(command.connection_ids):
        return command  # every ID goes to the same node: nothing to narrow
    if isinstance(command, Send):
        return Send(tuple(ids), command.payload, command.binary)
    if isinstance(command, Subscribe):
        return Subscribe(
            tuple(ids),
            command.channels,
            command.user_info,
            command.presence_events,
            command.occupancy_events,
        )
    if isinstance(command, Unsubscribe):
        return Unsubscribe(tuple(ids), command.channels)
    return Close(tuple(ids), command.code, command.reason)
