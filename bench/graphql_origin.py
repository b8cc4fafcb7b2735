"""The minimal GraphQL origin the GraphQL benchmark's node talks to, run as a child process
(`python -m bench.graphql --serve-origin HOST:PORT`, on the node's own HTTP/1.1 server).

It does no GraphQL at all: what the benchmark measures is the node's side of a publish, so the
origin answers at once, and counts what it is asked so that the harness can check that each
distinct input ran once per publish.
"""

from __future__ import annotations

import json
from collections import Counter

from bench.common import serve_until_signal
from runtime.transports.http1 import Request, Response, json_response


class TickOrigin:
    """Subscribes every operation to the input its variables name; echoes publishes as results.

    Counts each request by type and each `subscription_query` by input digest (`GET /stats`).
    """

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()

    async def route(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/stats":
            return json_response({"requests": self.requests, "queries": self.queries})
        if request.method != "POST" or request.path != "/":
            return json_response({"error": "POST / or GET /stats"}, 404)
        document = json.loads(request.body)
        kind = str(document.get("type"))
        self.requests[kind] += 1
        if kind == "connection_init":
            return json_response({"accept": True})
        if kind == "start":
            variables = document.get("variables") or {}
            subscription = {
                "inputDigest": variables["digest"],
                "inputContext": None,
                "keys": [variables["key"]],
            }
            return json_response({"subscription": subscription})
        if kind == "subscription_query":
            self.queries[document["inputDigest"]] += 1
            return json_response({"result": {"data": {"tick": document["publishContext"]}}})
        return json_response({})  # subscription_keepalive: any object


async def serve_origin(listen: str) -> None:
    await serve_until_signal(TickOrigin().route, listen, name="graphql-origin")
