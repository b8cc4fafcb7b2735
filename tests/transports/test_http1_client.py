"""The HTTP/1.1 client checked against an independent server (aiohttp, or raw bytes on a
socket): keep-alive, the connection cap, chunked and read-until-close answers, broken servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from runtime.transports.http1_client import HttpClient, HttpClientError

# --- the client, against aiohttp's server ---------------------------------------------------


class AiohttpServer:
    """An aiohttp server recording which client ports it saw."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.handler = handler
        self.peers: set[int] = set()
        self.bodies: list[bytes] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _record(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername")[1])
        self.bodies.append(await request.read())
        return await self.handler(request)

    async def start(self, keepalive_timeout: float = 75.0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self.runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}/events?x=1"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs, "auth": request.headers.get("X-Token")})


@pytest.fixture
async def aio_server() -> AsyncIterator[AiohttpServer]:
    server = AiohttpServer(ok)
    yield server
    if server.runner is not None:
        await server.stop()


async def test_requests_reuse_one_kept_alive_connection(aio_server: AiohttpServer) -> None:
    url = await aio_server.start()
    client = HttpClient(url, max_connections=4, headers={"X-Token": "t"})
    for index in range(50):
        response = await client.request("POST", f"body {index}".encode())
        assert response.status == 200
        assert response.json() == {"path": "/events?x=1", "auth": "t"}
    await client.close()
    assert len(aio_server.peers) == 1
    assert aio_server.bodies == [f"body {index}".encode() for index in range(50)]


async def test_concurrent_requests_never_open_more_than_the_limit(
    aio_server: AiohttpServer,
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.01)
        return web.Response(text="ok")

    aio_server.handler = slow
    url = await aio_server.start()
    client = HttpClient(url, max_connections=3)
    responses = await asyncio.gather(*(client.post(b"%d" % i) for i in range(30)))
    assert [response.body for response in responses] == [b"ok"] * 30
    assert len(aio_server.peers) == 3
    assert client.open_connections == 3
    await client.close()


async def test_chunked_and_read_until_close_answers(aio_server: AiohttpServer) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    aio_server.handler = chunked
    client = HttpClient(await aio_server.start())
    response = await client.request("GET")
    assert response.body == b"one two three"
    assert response.keep_alive
    await client.close()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(until_close, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}/")
    response = await client.request("GET")
    assert (response.status, response.body, response.keep_alive) == (200, b"all of it", False)
    await client.close()
    raw.close()


async def test_connection_closed_by_the_server_while_idle_is_replaced(
    aio_server: AiohttpServer,
) -> None:
    url = await aio_server.start(keepalive_timeout=0.05)
    client = HttpClient(url)
    assert (await client.post(b"first")).status == 200
    await asyncio.sleep(0.2)  # the server has closed the kept-alive connection by now
    assert (await client.post(b"second")).status == 200
    assert aio_server.bodies == [b"first", b"second"]
    assert len(aio_server.peers) == 2
    await client.close()


async def test_timeout_refused_and_closed_client_are_clear_errors(
    aio_server: AiohttpServer,
) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    aio_server.handler = hang
    client = HttpClient(await aio_server.start(), timeout=0.1)
    with pytest.raises(HttpClientError, match=r"within 0\.1s"):
        await client.post(b"x")
    assert client.open_connections == 0  # a timed-out connection is never reused
    await client.close()
    with pytest.raises(HttpClientError, match="closed"):
        await client.post(b"x")

    port = aio_server.port
    await aio_server.stop()
    aio_server.runner = None
    refused = HttpClient(f"http://127.0.0.1:{port}/")
    with pytest.raises(HttpClientError, match="cannot connect"):
        await refused.post(b"x")
    assert refused.open_connections == 0


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "broke off"),
        (b"", "without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000, "larger than"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n", "head larger than 65536"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "more than 100 header lines"),
    ],
)
async def test_broken_answers_are_errors(answer: bytes, error: str) -> None:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    raw = await asyncio.start_server(reply, "127.0.0.1", 0)
    port = raw.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}/", max_response_bytes=1000)
    with pytest.raises(HttpClientError, match=error):
        await client.request("GET")
    assert client.open_connections == 0
    await client.close()
    raw.close()


def test_only_http_urls_with_a_host() -> None:
    for url in ("ftp://example.com/", "http:///path", "example.com"):
        with pytest.raises(ValueError, match="http:// or https://"):
            HttpClient(url)
