"""Reference servers: `python -m bench.servers websockets|picows --listen HOST:PORT`.

- `websockets`: the baseline. A bare `websockets` asyncio echo server, compression off (the node
  negotiates none either), default ping interval and limits, on uvloop.
- `picows`: a fast echo server (picows' C parser), only to show that the load generator can go far
  faster than either server under test, so it is not what limits them.

Both echo every data message back to its sender. A client that connects to /control instead gets
its messages broadcast to every other connection (websockets: `websockets.asyncio.server.broadcast`,
picows: one `send` per connection), which is how the harness triggers the broadcast baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from bench.common import CONTROL_PATH, host_port, raise_nofile_limit, run


async def serve_websockets(host: str, port: int, deflate: bool = False) -> None:
    from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    servers: list[Server] = []

    async def handler(ws: ServerConnection) -> None:
        # A client that drops its connection is normal here (the node does not log it either).
        with contextlib.suppress(ConnectionClosed):
            if ws.request is not None and ws.request.path == CONTROL_PATH:
                async for message in ws:
                    broadcast(servers[0].connections - {ws}, message)
                return
            async for message in ws:
                await ws.send(message)

    compression = "deflate" if deflate else None
    async with serve(handler, host, port, compression=compression) as server:
        servers.append(server)
        await _until_signal()


async def serve_picows(host: str, port: int) -> None:
    from picows import WSListener, WSMsgType, WSTransport, ws_create_server

    peers: set[WSTransport] = set()

    class Echo(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            peers.add(transport)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            peers.discard(transport)

        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                transport.send(kind, frame.get_payload_as_bytes())
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    class Control(WSListener):
        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            kind = frame.msg_type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                payload = frame.get_payload_as_bytes()
                for peer in list(peers):
                    peer.send(kind, payload)
            elif kind is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    def factory(request):  # type: ignore[no-untyped-def]
        return Control() if request.path == CONTROL_PATH.encode() else Echo()

    server = await ws_create_server(factory, host, port)
    try:
        await _until_signal()
    finally:
        server.close()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=("websockets", "picows"))
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--deflate", action="store_true", help="websockets: negotiate permessage-deflate"
    )
    args = parser.parse_args()
    raise_nofile_limit()
    host, port = host_port(args.listen)
    if args.kind == "websockets":
        run(serve_websockets(host, port, args.deflate))
    else:
        run(serve_picows(host, port))


if __name__ == "__main__":
    main()
