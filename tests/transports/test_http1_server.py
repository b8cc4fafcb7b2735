"""The HTTP/1.1 server checked against an independent client (aiohttp, or raw bytes on a
socket): keep-alive, pipelining, limits, broken clients, timeouts, TLS."""

from __future__ import annotations

import asyncio
import http.client
import random
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from runtime.transports.http1 import Request, Response, error_response, json_response
from runtime.transports.http1_client import HttpClient, HttpClientError
from runtime.transports.http1_server import HttpServer

# --- the server, against aiohttp's client and raw bytes ---------------------------------------


async def echo_handler(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/slow":
        await asyncio.sleep(float(request.query.partition("=")[2]))
    return json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": request.body.decode(),
            "auth": request.headers.get("authorization"),
        }
    )


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    server = HttpServer(echo_handler, max_body_bytes=1000, idle_timeout=0.3)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop(timeout=1)


async def exchange_raw(port: int, data: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 2) if until_close else b""
    finally:
        writer.close()


async def test_server_answers_aiohttp_on_one_connection(server: HttpServer) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for index in range(20):
            async with session.post(
                f"http://127.0.0.1:{server.port}/p?q={index}",
                data=f"b{index}",
                headers={"Authorization": "Bearer x"},
            ) as response:
                assert response.status == 200
                assert await response.json() == {
                    "method": "POST",
                    "path": "/p",
                    "query": f"q={index}",
                    "body": f"b{index}",
                    "auth": "Bearer x",
                }

        # a chunked request body
        async def parts() -> AsyncIterator[bytes]:
            for part in (b"ab", b"cd", b"ef"):
                yield part

        async with session.post(f"http://127.0.0.1:{server.port}/c", data=parts()) as response:
            assert (await response.json())["body"] == "abcdef"
    assert len(server._connections) <= 1


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    requests = b"".join(
        f"GET /slow?d={delay} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for delay in (0.05, 0, 0.02)
    )
    requests += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await exchange_raw(server.port, requests)
    paths = [part.split(b'"query":')[1].split(b",")[0] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert paths == [b'"d=0.05"', b'"d=0"', b'"d=0.02"', b'""']
    assert answer.count(b"HTTP/1.1 200 OK") == 4
    assert answer.rstrip().endswith(b'"auth":null}')


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
            413,
            b"larger than 1000",
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"3e8\r\n"
            + b"x" * 1000
            + b"\r\n"
            + b"10\r\n"
            + b"y" * 16
            + b"\r\n0\r\n\r\n",
            413,
            b"larger than 1000",
        ),
        (b"THIS IS NOT HTTP\r\n\r\n", 400, b"malformed"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            400,
            b"upgrade",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"y" * 70_000 + b"\r\n\r\n",
            431,
            b"larger than 65536 bytes",
        ),
        (b"GET /" + b"y" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, b"request line longer than"),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, b"more than 100 header"),
    ],
    ids=["content-length", "chunked", "garbage", "upgrade", "headers", "request-line", "lines"],
)
async def test_bad_requests_get_an_error_and_the_connection_closes(
    server: HttpServer, request_bytes: bytes, status: int, error: bytes
) -> None:
    answer = await exchange_raw(server.port, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    assert error in answer
    assert b"Connection: close" in answer


async def test_requests_cut_at_any_byte_are_read_alike(server: HttpServer) -> None:
    """Heads are handed to the parser in whole lines; whatever the reads, the requests are the
    same: pipelined, with Content-Length and chunked bodies, in pieces of 1 to 9 bytes."""
    requests = (
        b"POST /a?n=1 HTTP/1.1\r\nHost: x\r\nX-R: 1\r\nX-R: 2\r\nContent-Length: 5\r\n\r\nab\ncd"
        b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nef\n\r\n2\r\ngh\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer z\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pieces = random.Random(7)
    at = 0
    while at < len(requests):
        size = pieces.randint(1, 9)
        writer.write(requests[at : at + size])
        at += size
        await writer.drain()
        await asyncio.sleep(0.001)
    answer = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    bodies = [part.rpartition(b"\r\n\r\n")[2] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert [body.split(b'"body":')[1].split(b',"auth"')[0] for body in bodies] == [
        b'"ab\\ncd"',
        b'"ef\\ngh"',
        b'""',
    ]
    assert b'"auth":"Bearer z"' in bodies[2]


async def test_a_chunked_body_is_refused_as_it_crosses_the_limit(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"258\r\n" + b"x" * 600 + b"\r\n" + b"258\r\n" + b"y" * 600 + b"\r\n")
    answer = await asyncio.wait_for(reader.read(), 2)  # no last chunk: it is refused before
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"larger than 1000 bytes" in answer


def refuse_private(request: Request) -> Response | None:
    """A head check as the command endpoint has one: this path needs a token."""
    assert request.body == b""  # not read yet
    if request.path == "/private" and request.headers.get("authorization") != "Bearer ok":
        return error_response(401, f"{request.method} {request.path} needs the token")
    return None


@pytest.fixture
async def checked() -> AsyncIterator[HttpServer]:
    server = HttpServer(echo_handler, max_body_bytes=1 << 20, check_head=refuse_private)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop(timeout=1)


async def test_head_check_answers_before_the_body_is_sent(checked: HttpServer) -> None:
    answer = await exchange_raw(
        checked.port, b"POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"POST /private needs the token" in answer
    assert b"Connection: close" in answer


async def test_head_check_keeps_the_order_of_pipelined_answers(checked: HttpServer) -> None:
    answer = await exchange_raw(
        checked.port,
        b"GET /slow?d=0.1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /private HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\n"
        b"Content-Length: 2\r\n\r\nok"
        b"GET /private HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    statuses = [part[:3] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"200", b"401"]
    assert b'"body":"ok"' in answer
    assert b"/never" not in answer


def post_whole_body(port: int, size: int) -> tuple[int, bytes]:
    """http.client sends all of a body before it reads: what `requests` and urllib do."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", "/private", body=b"x" * size)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


async def test_a_refusal_reaches_a_client_that_sends_its_body_first(checked: HttpServer) -> None:
    """The server reads and drops the rest of a refused body for a while rather than resetting
    the connection, which would destroy the refusal before such a client reads it."""
    status, body = await asyncio.to_thread(post_whole_body, checked.port, 8 << 20)
    assert (status, body) == (401, b'{"error":"POST /private needs the token"}')
    status, body = await asyncio.to_thread(post_whole_body, checked.port, 0)
    assert status == 401


async def test_a_refused_client_that_keeps_sending_is_cut_off(checked: HttpServer) -> None:
    """Lingering after a refusal is bounded: a client sending on regardless is reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", checked.port)
    writer.write(b"POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"}"), 2)).startswith(b"HTTP/1.1 401 ")
    with pytest.raises(ConnectionError):
        for _ in range(200):  # 64 MiB over at most 10 s: far past LINGER_SECONDS
            writer.write(b"x" * 65536)
            await asyncio.wait_for(writer.drain(), 5)
            await asyncio.sleep(0.05)
    writer.close()
    assert checked.open_connections == 0


async def test_heads_and_bodies_have_deadlines_kept_alive_connections_idle_time() -> None:
    server = HttpServer(
        echo_handler, max_body_bytes=100, header_timeout=0.5, body_timeout=0.5, idle_timeout=3
    )
    port = await server.start("127.0.0.1", 0)
    try:
        silent = await exchange_raw(port, b"")
        assert silent.startswith(b"HTTP/1.1 408 ")
        assert b"request head not received in full within 0.5 s" in silent
        partial_body = await exchange_raw(
            port, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"
        )
        assert partial_body.startswith(b"HTTP/1.1 408 ")
        assert b"request body not received in full within 0.5 s" in partial_body
        # Between requests the idle timeout applies, not the header timeout.
        client = HttpClient(f"http://127.0.0.1:{port}/again")
        assert (await client.request("GET")).status == 200
        await asyncio.sleep(1)
        assert (await client.request("GET")).status == 200
        assert client.open_connections == 1
        assert server.open_connections == 1
        await client.close()
    finally:
        await server.stop(timeout=1)


async def test_connections_beyond_the_cap_get_503_unread() -> None:
    server = HttpServer(echo_handler, max_body_bytes=100, max_connections=2)
    port = await server.start("127.0.0.1", 0)
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _ in range(100):
            if server.open_connections == 2:
                break
            await asyncio.sleep(0.01)
        answer = await exchange_raw(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"more than 2 connections open; retry later" in answer
        assert b"Connection: close" in answer
        assert (server.open_connections, server.turned_away) == (2, 1)
        for _, writer in held:
            writer.close()
    finally:
        await server.stop(timeout=1)


async def test_handler_error_is_a_500_and_the_connection_lives_on(server: HttpServer) -> None:
    client = HttpClient(f"http://127.0.0.1:{server.port}/boom")
    response = await client.request("GET")
    assert (response.status, response.json()) == (500, {"error": "internal error"})
    response = await client.request("GET", target="/fine")
    assert response.json()["path"] == "/fine"
    assert client.open_connections == 1
    await client.close()


async def test_head_has_no_body_and_http10_closes(server: HttpServer) -> None:
    answer = await exchange_raw(
        server.port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: " in head
    assert body == b""
    answer = await exchange_raw(server.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert b'"path":"/old"' in answer  # and the read returned: the server closed


async def test_idle_connections_are_closed(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"}")
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed after idle_timeout 0.3 s
    writer.close()


async def test_stop_lets_a_running_request_finish() -> None:
    server = HttpServer(echo_handler, max_body_bytes=100)
    port = await server.start("127.0.0.1", 0)
    client = HttpClient(f"http://127.0.0.1:{port}/slow?d=0.2")
    pending = asyncio.create_task(client.request("GET"))
    await asyncio.sleep(0.05)
    await server.stop(timeout=2)
    response = await pending
    assert response.status == 200
    assert not response.keep_alive
    await client.close()


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("LOUD SKIP: the openssl command is not installed, so no test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_both_ways(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = HttpServer(echo_handler, max_body_bytes=100)
    port = await server.start("127.0.0.1", 0, ssl_context=server_context)
    trusting = ssl.create_default_context(cafile=str(cert))
    client = HttpClient(f"https://127.0.0.1:{port}/secure", ssl_context=trusting)
    assert (await client.post(b"over tls")).json()["body"] == "over tls"
    await client.close()
    untrusting = HttpClient(f"https://127.0.0.1:{port}/secure")  # system CAs only
    with pytest.raises(HttpClientError, match="cannot connect"):
        await untrusting.post(b"x")
    await server.stop()
