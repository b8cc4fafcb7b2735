"""What the node reads from a client's opening handshake."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import NegotiationError
from websockets.headers import parse_subprotocol
from websockets.http11 import Request
from websockets.typing import Subprotocol

from runtime.wire.events import HandshakeDetails

SubprotocolSelector = Callable[[ServerConnection, Sequence[Subprotocol]], Subprotocol | None]


def subprotocol_selector(
    supported: Sequence[str],
    chosen: Callable[[ServerConnection], str | None] = lambda connection: None,
) -> SubprotocolSelector:
    """Pick the subprotocol the $connect handler chose (`chosen`), else the first configured one
    the client offers.

    A client offering none is accepted without one (as API Gateway does); a client offering only
    unknown ones is refused with 400, since browsers fail a connection whose server ignores them.
    """

    def select(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        choice = chosen(connection)
        if choice is not None and choice in offered:
            return Subprotocol(choice)
        if not offered:
            return None
        for name in supported:
            if name in offered:
                return Subprotocol(name)
        expected = ", ".join(supported) if supported else "none"
        raise NegotiationError(
            f"unsupported subprotocol {', '.join(offered)}; this server supports: {expected}"
        )

    return select


def offered_subprotocols(request: Request) -> list[str]:
    """The subprotocols a handshake offers, in its order (unparseable headers offer none)."""
    offered: list[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        try:
            offered.extend(parse_subprotocol(value))
        except Exception:  # InvalidHeaderFormat: the library refuses the handshake itself
            return []
    return offered


def handshake_details(
    connection: ServerConnection, trust_forwarded_for: bool, request: Request | None = None
) -> HandshakeDetails:
    """What the handshake says; before the 101 (`request` given) no subprotocol is chosen."""
    request = request or connection.request
    assert request is not None  # the handler runs only after a handshake
    split = urlsplit(request.path)
    headers = list(request.headers.raw_items())
    return HandshakeDetails(
        path=split.path,
        headers=headers,
        query=parse_qsl(split.query, keep_blank_values=True),
        source_ip=source_ip(connection, headers, trust_forwarded_for),
        subprotocol=connection.subprotocol,  # None before the 101
    )


def source_ip(
    connection: ServerConnection, headers: Sequence[tuple[str, str]], trust_forwarded_for: bool
) -> str:
    """The client's address: the peer's, or the one our trusted proxy appended last.

    The last hop is the proxy's own word, but it is checked all the same: anything but an IP
    address (a proxy that passed the header through unchanged) falls back to the peer's.
    """
    if trust_forwarded_for:
        forwarded = [value for name, value in headers if name.lower() == "x-forwarded-for"]
        if forwarded:
            hops = [hop.strip() for hop in ",".join(forwarded).split(",") if hop.strip()]
            if hops and _is_ip(hops[-1]):
                return str(ipaddress.ip_address(hops[-1]))
    peer = connection.remote_address
    return str(peer[0]) if peer else ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
