"""The whole system on one machine: `python -m runtime local` (what `make run` starts).

An embedded AWS (moto's server) holds the same queues and topics the CDK stack creates, by the
same names; two nodes peer over UDP on loopback, send their events to the SQS events queue and
poll the commands queue; the example chat origin consumes the events queue as Lambda would,
subscribing each client to its room's channel; and a demo chat page is served over HTTP. The
nodes are in GraphQL mode too: clients that ask for `graphql-transport-ws` or `graphql-ws` reach
the GraphQL chat example over HTTP, whose mutations publish through the commands topic. Needs no
AWS account: moto and graphql-core are development dependencies.

With `--handler module.function` (or `--route-handlers`), a handler written for API Gateway is the
origin instead of the chat example, run in this process through the same entry point a Lambda
function would use (runtime/origin/apigw/): its apigatewaymanagementapi calls become commands,
and its get_connection reaches the nodes' @connections API (their command listeners, with
`--connections-api network`). With `--connect-handler` the nodes call its $connect during the
handshake, through a small HTTP server here, as API Gateway does. Whatever else the handler uses
(a DynamoDB table, say) is its own business: boto3 reaches the embedded AWS through
AWS_ENDPOINT_URL, so create what it needs there (`aws:` is its URL).
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import logs
from runtime.config import Settings
from runtime.local.provision import Resources, provision
from runtime.names import HEALTH_PATH, ResourceNames
from runtime.node.service import NodeService, build_service
from runtime.transports.http1 import Request, Response, json_response
from runtime.transports.http1_server import HttpServer
from runtime.wire.connection_id import NodeAddress

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

    from runtime.origin.apigw import ApiGatewayOrigin

log = logging.getLogger("runtime.local")

LambdaHandler = Callable[[dict[str, Any], Any], Any]

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
    commands: tuple[int, ...] = ()


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
    handler = parser.add_argument_group(
        "an API Gateway handler as the origin, in place of the chat example"
    )
    handler.add_argument(
        "--handler", default="", metavar="MODULE.FUNCTION", help="one function for every route"
    )
    handler.add_argument(
        "--route-handlers",
        default="",
        metavar="SPEC",
        help="functions per route, as WSGW_ROUTE_HANDLERS: $connect=mod.fn,sendmessage=mod.fn2",
    )
    handler.add_argument(
        "--route-selection-expression",
        default="",
        metavar="EXPR",
        help="the nodes' route selection, e.g. $request.body.action",
    )
    handler.add_argument(
        "--connect-handler",
        action="store_true",
        help="the nodes call the handler's $connect during the handshake, as API Gateway does",
    )
    handler.add_argument(
        "--command-ports",
        default="8082,8083",
        help="the nodes' command listeners, comma-separated: presence for the chat example, "
        "and the @connections API for a handler",
    )
    args = parser.parse_args(argv)
    args.api_gateway = bool(args.handler or args.route_handlers)
    args.ports = Ports(
        args.aws_port,
        args.page_port,
        args.graphql_port,
        tuple(int(port) for port in args.node_ports.split(",")),
        tuple(int(port) for port in args.peer_ports.split(",")),
        tuple(int(port) for port in args.command_ports.split(",")),
    )
    if len(args.ports.nodes) != len(args.ports.peers) or not args.ports.nodes:
        parser.error("--node-ports and --peer-ports must list the same number of ports")
    if len(args.ports.commands) != len(args.ports.nodes):
        parser.error("--command-ports must list as many ports as --node-ports")
    if args.connect_handler and not args.api_gateway:
        parser.error("--connect-handler needs --handler or --route-handlers")
    return args


def start_aws(host: str, port: int) -> tuple[ThreadedMotoServer, str]:
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


def node_settings(
    args: argparse.Namespace, resources: Resources, index: int, connect_handler_url: str = ""
) -> Settings:
    host, ports = args.host, args.ports
    settings = Settings(
        listen=(host, ports.nodes[index]),
        origin_transport="sqs",
        events_queue_url=resources.events_queue_url,
        commands_queue_url=resources.commands_queue_url,
        aws_region=REGION,
        # On loopback, with a token: the chat origin asks the nodes who is in a room here.
        command_listen=(host, ports.commands[index]),
        command_token=args.command_token,
        region=REGION,
        stage=ENVIRONMENT,
        peer_listen=(host, ports.peers[index]),
        peer_advertise=NodeAddress(host, ports.peers[index]),
        peer_secret=args.peer_secret,
        peers=tuple(NodeAddress(host, port) for i, port in enumerate(ports.peers) if i != index),
        keepalive_interval=30,
        graphql_origin_url=f"http://{host}:{ports.graphql}/",
        route_selection_expression=args.route_selection_expression,
        drain_seconds=5,
        close_timeout=2,
        log_level=args.log_level,
    )
    if not args.api_gateway:
        return settings
    # The @connections API, open on loopback only: the handler's get_connection reaches it.
    return replace(
        settings,
        connections_api="network",
        connect_handler_url=connect_handler_url,
        connect_handler_token=args.connect_handler_token if connect_handler_url else "",
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
        if request.path == HEALTH_PATH:
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


def api_gateway_origin(args: argparse.Namespace, commands_topic_arn: str) -> ApiGatewayOrigin:
    """The handler behind the entry point a Lambda function would use, set up by the same
    environment variables, which the handler sees too (as it would in Lambda)."""
    from runtime.origin.apigw import ApiGatewayOrigin, ApiGatewaySettings
    from runtime.origin.client import GatewayClient

    os.environ["WSGW_CONNECTIONS_URL"] = f"http://{args.host}:{args.ports.commands[0]}"
    if args.handler:
        os.environ["WSGW_HANDLER"] = args.handler
    if args.route_handlers:
        os.environ["WSGW_ROUTE_HANDLERS"] = args.route_handlers
    origin = ApiGatewayOrigin(
        ApiGatewaySettings.from_environ(os.environ),
        gateway_factory=lambda: GatewayClient(
            environment=ENVIRONMENT, topic_arns={REGION: commands_topic_arn}
        ),
    )
    origin.routes()  # a handler that cannot be imported stops the start, saying why
    return origin


def connect_handler_server(origin: ApiGatewayOrigin, token: str) -> HttpServer:
    """The nodes' --connect-handler-url: each handshake's $connect event through the entry
    point's bare-event path, its answer as a Lambda-style JSON body (the statusCode decides)."""

    async def route(request: Request) -> Response:
        if request.method != "POST" or request.path != "/":
            return json_response({"error": "POST / only"}, 404)
        if request.headers.get("authorization") != f"Bearer {token}":
            return json_response({"error": "bad token"}, 401)
        try:
            event = json.loads(request.body)
        except ValueError:
            return json_response({"error": "the body is not JSON"}, 400)
        try:
            answer = await asyncio.to_thread(origin, event, None)
            return json_response(answer if isinstance(answer, dict) else {"statusCode": 200})
        except Exception:
            log.exception("the $connect handler raised: the handshake is refused")
            return json_response({"error": "the $connect handler raised"}, 500)

    return HttpServer(route, max_body_bytes=1 << 20, name="connect-handler")


async def run(args: argparse.Namespace) -> int:
    import boto3

    from runtime.local.event_source import SqsEventSource
    from runtime.origin.apigw import HandlerSetupError
    from runtime.origin.examples.chat import build_handler
    from runtime.origin.presence import PresenceClient

    server, endpoint = start_aws(args.host, args.ports.aws)
    services: list[NodeService] = []
    stop_origin = threading.Event()
    page = graphql = connect_server = None
    origin_thread: threading.Thread | None = None
    try:
        sqs, sns = (
            boto3.client(name, region_name=REGION, endpoint_url=endpoint) for name in ("sqs", "sns")
        )
        resources = provision(sqs, sns, ResourceNames(ENVIRONMENT))
        args.peer_secret = secrets.token_urlsafe(24)
        args.command_token = secrets.token_urlsafe(24)
        args.connect_handler_token = secrets.token_urlsafe(24)
        handler: LambdaHandler
        connect_url = ""
        if args.api_gateway:
            try:
                handler = api_gateway_origin(args, resources.commands_topic_arn)
            except HandlerSetupError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                return 2
            if args.connect_handler:
                connect_server = connect_handler_server(handler, args.connect_handler_token)
                port = await connect_server.start(args.host, 0)
                connect_url = f"http://{args.host}:{port}/"
        else:
            # A newcomer is told who is in its room: the nodes' presence, asked at a listener.
            presence = PresenceClient(
                f"http://{args.host}:{args.ports.commands[0]}", args.command_token
            )
            handler = build_handler(environment=ENVIRONMENT, regions=[REGION], presence=presence)
        graphql = graphql_origin_server(resources.commands_topic_arn)
        await graphql.start(args.host, args.ports.graphql)
        for index in range(len(args.ports.nodes)):
            service = await build_service(node_settings(args, resources, index, connect_url))
            await service.start()
            services.append(service)
        source = SqsEventSource(sqs, resources.events_queue_url, handler, region=REGION)
        origin_thread = threading.Thread(
            target=source.run, args=(stop_origin,), name="origin", daemon=True
        )
        origin_thread.start()
        node_urls = [f"ws://{args.host}:{port}/" for port in args.ports.nodes]
        if not args.api_gateway:  # the page speaks the chat example's protocol
            page = page_server(node_urls)
            await page.start(args.host, args.ports.page)
            print(f"page: http://{args.host}:{page.port}/", flush=True)
        for url in node_urls:
            print(f"node: {url}", flush=True)
        for port in args.ports.commands if args.api_gateway else ():
            print(f"connections: http://{args.host}:{port}/{ENVIRONMENT}/@connections", flush=True)
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
        if connect_server is not None:
            await connect_server.stop(timeout=1)
        for service in services:
            with contextlib.suppress(Exception):
                await service.drain()
        stop_origin.set()
        if origin_thread is not None:
            origin_thread.join(timeout=5)
        server.stop()


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
