"""Which address goes into connection IDs: flag, listen address, ECS task metadata, outbound IP."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from aiohttp import web

from runtime.config import Settings
from runtime.node.peer_address import ECS_METADATA_VARIABLE, advertised_address, outbound_ip
from runtime.wire.connection_id import NodeAddress

BASE = Settings(origin_transport="echo", no_command_auth=True, peer_secret="s" * 16)


def settings(**overrides: object) -> Settings:
    return dataclasses.replace(BASE, **overrides)


async def metadata_server(document: object, status: int = 200) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document, status=status)

    app = web.Application()
    app.router.add_get("/v4/container", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v4/container"


async def test_flag_then_listen_address() -> None:
    flagged = settings(peer_advertise=NodeAddress("10.1.2.3", 9200))
    assert await advertised_address(flagged, {}) == NodeAddress("10.1.2.3", 9200)
    assert await advertised_address(settings(peer_listen=("10.0.0.9", 9100)), {}) == NodeAddress(
        "10.0.0.9", 9100
    )


async def test_wildcard_uses_the_ecs_task_ip() -> None:
    document = {"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.2.106"]}]}
    runner, url = await metadata_server(document)
    try:
        address = await advertised_address(
            settings(peer_listen=("0.0.0.0", 9100)), {ECS_METADATA_VARIABLE: url}
        )
    finally:
        await runner.cleanup()
    assert address == NodeAddress("10.0.2.106", 9100)


@pytest.mark.parametrize(
    ("document", "status", "error"),
    [({"Networks": []}, 200, "names no IPv4 address"), ({}, 500, "names no IPv4 address")],
)
async def test_ecs_metadata_without_an_ip_is_a_clear_error(
    document: object, status: int, error: str
) -> None:
    runner, url = await metadata_server(document, status)
    try:
        with pytest.raises(RuntimeError, match=error):
            await advertised_address(
                settings(peer_listen=("0.0.0.0", 9100)), {ECS_METADATA_VARIABLE: url}
            )
    finally:
        await runner.cleanup()


async def test_unreachable_metadata_endpoint_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="cannot read ECS task metadata"):
        await advertised_address(
            settings(peer_listen=("0.0.0.0", 9100)),
            {ECS_METADATA_VARIABLE: "http://127.0.0.1:9/v4/container"},
        )


async def test_wildcard_without_ecs_uses_the_outbound_interface() -> None:
    address = await advertised_address(settings(peer_listen=("0.0.0.0", 9100)), {})
    assert address.port == 9100
    assert ipaddress.ip_address(address.host) == ipaddress.ip_address(outbound_ip())
    assert not ipaddress.ip_address(address.host).is_unspecified
