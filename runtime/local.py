"""The whole system on one machine: `python -m runtime local` (what `make run` starts).

An embedded AWS (moto's server) holds the same queues, topics and table the CDK stack creates, by
the same names; two nodes peer over UDP on loopback, send their events to the SQS events queue and
poll the commands queue; the example chat origin consumes the events queue as Lambda would; and a
demo chat page is served over HTTP. The nodes are in GraphQL mode too: clients that ask for
`graphql-transport-ws` or `graphql-ws` reach the GraphQL chat example over HTTP, whose mutations
publish through the commands topic. Needs no AWS account: moto and graphql-core are development
dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from runtime import logs
from runtime.config import Settings
from runtime.names import ResourceNames
from runtime.node.service import NodeService, build_service
from runtime.provision import Resources, provision
from runtime.transports.http1 import HttpServer, Request, Response, json_response
from runtime.wire.connection_id import NodeAddress

log = logging.getLogger("runtime.local")

ENVIRONMENT = "local"
REGION = "us-east-1"
PAGE = Path(__file__).with_name("demo") / "chat.html"


@dataclass(frozen=True)
class Ports:
    aws: int
    page: int
    graphql: int
    nodes: tuple[int, ...]
    peers: tuple[int, ...]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime local",
        description="Run the whole system locally: embedded AWS, two nodes, chat origin, page.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address everything listens on")
    parser.add_argument("--aws-port", type=int, default=4566, help="embedded AWS (moto) port")
    parser.add_argument("--page-port", type=int, default=8000, help="demo chat page port")
    parser.add_argument(
        "--graphql-port", type=int, default=8090, help="GraphQL chat origin (HTTP) port"
    )
    parser.add_argument(
        "--node-ports", default="8080,8081", help="WebSocket ports of the nodes, comma-separated"
    )
    parser.add_argument(
        "--peer-ports", default="9101,9102", help="UDP peer ports of the nodes, comma-separated"
    )
    parser.add_argument("--log-level", default="WARNING", help="node log level")
    args = parser.parse_args(argv)
    args.ports = Ports(
        args.aws_port,
        args.page_port,
        args.graphql_port,
        tuple(int(port) for port in args.node_ports.split(",")),
        tuple(int(port) for port in args.peer_ports.split(",")),
    )
    if len(args.ports.nodes) != len(args.ports.peers) or not args.ports.nodes:
        parser.error("--node-ports and --peer-ports must list the same number of ports")
    return args


def start_aws(host: str, port: int) -> tuple[object, str]:
    """moto's server, and boto3 pointed at it for this process (the origin and the nodes)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit(
            "python -m runtime local needs moto: pip install -r requirements.txt"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
            "WSGW_ENVIRONMENT": ENVIRONMENT,
        }
    )
    return server, endpoint


def node_settings(args: argparse.Namespace, resources: Resources, index: int) -> Settings:
    host, ports = args.host, args.ports
    return Settings(
        listen=(host, ports.nodes[index]),
        origin_transport="sqs",
        events_queue_url=resources.events_queue_url,
        commands_queue_url=resources.commands_queue_url,
        aws_region=REGION,
        command_listen=None,
        region=REGION,
        stage=ENVIRONMENT,
        peer_listen=(host, ports.peers[index]),
        peer_advertise=NodeAddress(host, ports.peers[index]),
        peer_secret=args.peer_secret,
        peers=tuple(NodeAddress(host, port) for i, port in enumerate(ports.peers) if i != index),
        keepalive_interval=30,
        graphql_origin_url=f"http://{host}:{ports.graphql}/",
        drain_seconds=5,
        close_timeout=2,
        log_level=args.log_level,
    )


def page_server(node_urls: list[str]) -> HttpServer:
    page = PAGE.read_bytes()
    config = json.dumps({"nodes": node_urls}).encode()

    async def route(request: Request) -> Response:
        if request.method != "GET":
            return json_response({"error": "GET only"}, 405, {"Allow": "GET"})
        if request.path in ("/", "/index.html"):
            return Response(200, page, {"Content-Type": "text/html; charset=utf-8"})
        if request.path == "/config.json":
            return Response(200, config, {"Content-Type": "application/json"})
        if request.path == "/healthz":
            return Response(200, b"ok", {"Content-Type": "text/plain"})
        return json_response({"error": f"no such page: {request.path}"}, 404)

    return HttpServer(route, max_body_bytes=1024, name="page")


def graphql_origin_server(commands_topic_arn: str) -> HttpServer:
    """The GraphQL chat example over HTTP; its `post` mutation publishes through the commands topic,
    as a deployed origin would with its GatewayClient."""
    from runtime.origin.client import GatewayClient
    from runtime.origin.examples.graphql_chat import build_origin
    from runtime.origin.graphql import BadRequest

    gateway = GatewayClient(environment=ENVIRONMENT, topic_arns={REGION: commands_topic_arn})
    publishing = threading.Lock()

    def publish(keys: list[str], context: object) -> None:
        with publishing:  # requests run in threads; one publish and flush at a time
            gateway.publish(keys, context, regions=[REGION])
            gateway.flush()

    origin = build_origin(publish)

    async def route(request: Request) -> Response:
        if request.method != "POST" or request.path != "/":
            return json_response({"error": "POST / only"}, 404)
        try:
            answer = await asyncio.to_thread(origin.handle, json.loads(request.body))
        except (ValueError, BadRequest) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(answer)

    return HttpServer(route, max_body_bytes=1 << 20, name="graphql-origin")


async def run(args: argparse.Namespace) -> int:
    import boto3

    from runtime.local_event_source import SqsEventSource
    from runtime.origin.examples.chat import build_handler

    server, endpoint = start_aws(args.host, args.ports.aws)
    services: list[NodeService] = []
    stop_origin = threading.Event()
    page = graphql = None
    origin_thread: threading.Thread | None = None
    try:
        sqs, sns, dynamodb = (
            boto3.client(name, region_name=REGION, endpoint_url=endpoint)
            for name in ("sqs", "sns", "dynamodb")
        )
        resources = provision(sqs, sns, dynamodb, ResourceNames(ENVIRONMENT))
        args.peer_secret = secrets.token_urlsafe(24)
        graphql = graphql_origin_server(resources.commands_topic_arn)
        await graphql.start(args.host, args.ports.graphql)
        for index in range(len(args.ports.nodes)):
            service = await build_service(node_settings(args, resources, index))
            await service.start()
            services.append(service)
        handler = build_handler(table_name=resources.chat_table, environment=ENVIRONMENT)
        source = SqsEventSource(sqs, resources.events_queue_url, handler, region=REGION)
        origin_thread = threading.Thread(
            target=source.run, args=(stop_origin,), name="chat-origin", daemon=True
        )
        origin_thread.start()
        node_urls = [f"ws://{args.host}:{port}/" for port in args.ports.nodes]
        page = page_server(node_urls)
        await page.start(args.host, args.ports.page)
        print(f"page: http://{args.host}:{page.port}/", flush=True)
        for url in node_urls:
            print(f"node: {url}", flush=True)
        print(f"graphql: http://{args.host}:{graphql.port}/", flush=True)
        print(f"aws: {endpoint}", flush=True)
        await _until_signal()
        print("stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        if page is not None:
            await page.stop(timeout=1)
        if graphql is not None:
            await graphql.stop(timeout=1)
        for service in services:
            with contextlib.suppress(Exception):
                await service.drain()
        stop_origin.set()
        if origin_thread is not None:
            origin_thread.join(timeout=5)
        server.stop()  # type: ignore[attr-defined]


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logs.configure("auto", args.log_level)
    try:
        import uvloop

        return uvloop.run(run(args))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
