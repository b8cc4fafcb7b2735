"""A fast local HTTP origin for the node: `python -m bench.origin --listen ... --commands-url ...`.

For each `POST /events` batch it turns every MESSAGE into one `send` command back to the message's
connection, and posts all of that request's commands as one `POST /commands` body over a keep-alive
session (bearer token). `--ack` picks when the event POST is answered:

- `first` (default): at once, before the commands are posted. This is how the production path
  behaves (events reach the origin through SQS and commands return through SNS/SQS, decoupled),
  and it frees the node's event request slot immediately.
- `after`: only once the node answered the commands POST (a synchronous origin).

It also tracks live connection IDs from CONNECT/DISCONNECT (`GET /ids`) for the broadcast test, and
counts what it did (`GET /stats`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from bench.common import host_port, raise_nofile_limit, run
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_client import HttpClient, HttpClientError
from runtime.transports.http1_server import HttpServer

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Origin:
    def __init__(self, commands_url: str, token: str, ack: str, concurrency: int) -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self._client = HttpClient(commands_url, max_connections=concurrency, headers=headers)
        self.ack_first = ack == "first"
        self.ids: dict[str, None] = {}
        self.stats = {
            "requests": 0,
            "events": 0,
            "messages": 0,
            "commandPosts": 0,
            "commandFailures": 0,
            "connects": 0,
            "disconnects": 0,
            "other": 0,
        }
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._client.close()

    async def route(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/events":
            return await self.events(request)
        if request.method == "GET" and request.path == "/ids":
            return json_response(list(self.ids))
        if request.method == "GET" and request.path == "/stats":
            return json_response({**self.stats, "live": len(self.ids)})
        return json_response({"error": "not found"}, 404)

    async def events(self, request: Request) -> Response:
        document = json.loads(request.body)
        stats = self.stats
        stats["requests"] += 1
        sends = []
        for event in document["events"]:
            context = event["requestContext"]
            kind = context["eventType"]
            if kind == "MESSAGE":
                sends.append(
                    {
                        "action": "send",
                        "connectionIds": [context["connectionId"]],
                        "data": event["body"],
                        "isBase64Encoded": event["isBase64Encoded"],
                    }
                )
            elif kind == "CONNECT":
                self.ids[context["connectionId"]] = None
                stats["connects"] += 1
            elif kind == "DISCONNECT":
                self.ids.pop(context["connectionId"], None)
                stats["disconnects"] += 1
            else:
                stats["other"] += 1
        stats["events"] += len(document["events"])
        if sends:
            stats["messages"] += len(sends)
            body = _dumps({"commands": sends}).encode()
            if self.ack_first:
                task = asyncio.create_task(self._post(body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                # Let the commands leave before this answer does, so the node reads both in one
                # wake-up instead of waking for the answer first.
                await asyncio.sleep(0)
            else:
                await self._post(body)
        return Response(200, b"{}", {"Content-Type": "application/json"})

    async def _post(self, body: bytes) -> None:
        try:
            ok = (await self._client.request("POST", body)).status == 200
        except HttpClientError:
            ok = False
        self.stats["commandPosts"] += 1
        if not ok:
            self.stats["commandFailures"] += 1


async def serve(args: argparse.Namespace) -> None:
    origin = Origin(args.commands_url, args.token, args.ack, args.concurrency)
    server = HttpServer(origin.route, max_body_bytes=64 << 20, name="origin")
    host, port = host_port(args.listen)
    await server.start(host, port)
    try:
        await asyncio.Event().wait()  # until the harness kills this process
    finally:
        await origin.close()
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.origin")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--commands-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ack", choices=("first", "after"), default="first")
    parser.add_argument("--concurrency", type=int, default=16, help="command POSTs in flight")
    args = parser.parse_args()
    raise_nofile_limit()
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args))


if __name__ == "__main__":
    main()
