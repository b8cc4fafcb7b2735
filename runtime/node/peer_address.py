"""Which address a node puts in its connection IDs when it listens on a wildcard.

Other nodes reach a connection's node at the address inside its ID, so it must be one they can
route to: on ECS that is the task's private IP, which the task metadata endpoint names; anywhere
else, the IP of the interface that carries outbound traffic.
"""

from __future__ import annotations

import logging
import os
import socket

from runtime.config import WILDCARD_HOSTS, Settings
from runtime.transports.http1_client import HttpClient, HttpClientError
from runtime.wire.connection_id import NodeAddress

log = logging.getLogger("runtime.node")

ECS_METADATA_VARIABLE = "ECS_CONTAINER_METADATA_URI_V4"


async def advertised_address(
    settings: Settings,
    environ: dict[str, str] | os._Environ[str] = os.environ,
    *,
    task_ip: str | None = None,
) -> NodeAddress:
    """`task_ip`: the task's IP if the caller already read it from the metadata (read once)."""
    if settings.peer_advertise is not None:
        return settings.peer_advertise
    host, port = settings.peer_listen
    if host not in WILDCARD_HOSTS:
        return NodeAddress(host, port)
    metadata_url = environ.get(ECS_METADATA_VARIABLE)
    if metadata_url:
        ip = task_ip or await ecs_task_ip(metadata_url)
        log.info("peer address from ECS task metadata", extra={"peerAddress": f"{ip}:{port}"})
        return NodeAddress(ip, port)
    ip = outbound_ip(ipv6=host == "::")
    log.info("peer address from the outbound interface", extra={"peerAddress": f"{ip}:{port}"})
    return NodeAddress(ip, port)


async def ecs_task_ip(metadata_url: str) -> str:
    """The container's first private IPv4 address (awsvpc mode, as on Fargate)."""
    client = HttpClient(metadata_url, max_connections=1, timeout=5)
    try:
        response = await client.request("GET")
        document = response.json() if response.status == 200 else None
    except (HttpClientError, ValueError) as exc:
        raise RuntimeError(f"cannot read ECS task metadata at {metadata_url}: {exc}") from exc
    finally:
        await client.close()
    networks = document.get("Networks") if isinstance(document, dict) else None
    for network in networks or ():
        for ip in network.get("IPv4Addresses") or ():
            return str(ip)
    raise RuntimeError(
        f"ECS task metadata at {metadata_url} names no IPv4 address; set --peer-advertise"
    )


def outbound_ip(*, ipv6: bool = False) -> str:
    """Connecting a UDP socket sends nothing; it only makes the kernel pick a source address."""
    family, probe = (
        (socket.AF_INET6, ("2001:db8::1", 9)) if ipv6 else (socket.AF_INET, ("192.0.2.1", 9))
    )
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(probe)
            return str(sock.getsockname()[0])
        except OSError:
            return "::1" if ipv6 else "127.0.0.1"
