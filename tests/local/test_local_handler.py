"""`python -m runtime local --handler ...`: an API Gateway chat handler, unchanged, behind the two
local nodes; clients on different nodes chat, and a bad token is refused."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import boto3
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.processes import ROOT, LocalPorts, free_ports, read_local_urls, stop_local_system

CHAT = "tests.origin.apigw_handlers.chat.handler"
PRESENCE = "tests.origin.apigw_handlers.presence.handler"
TABLE = "chat-connections"


@asynccontextmanager
async def local_system(*flags: str) -> AsyncIterator[tuple[list[str], Any]]:
    """The local system with an API Gateway handler; the node URLs and a DynamoDB client on its
    embedded AWS, where the handler's table is created before any client connects."""
    ports = LocalPorts.free()
    commands = free_ports(2)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runtime",
        "local",
        *("--aws-port", str(ports.aws), "--graphql-port", str(ports.graphql)),
        *("--node-ports", ",".join(map(str, ports.nodes))),
        *("--peer-ports", ",".join(map(str, ports.peers))),
        *("--command-ports", ",".join(map(str, commands))),
        *("--route-selection-expression", "$request.body.action"),
        *flags,
        cwd=ROOT,
        env={**os.environ, "TABLE_NAME": TABLE, "CHAT_TOKEN": "open-sesame"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        urls = await read_local_urls(process, ("node", "aws", "connections"))
        assert urls["connections"] == [
            f"http://127.0.0.1:{port}/local/@connections" for port in commands
        ]
        dynamodb = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=urls["aws"][0],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        dynamodb.create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": "connectionId", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield urls["node"], dynamodb
        assert await stop_local_system(process) == 0
    finally:
        await stop_local_system(process)


async def rows(dynamodb: Any, count: int, timeout: float = 15) -> dict[str, str]:
    """The table once it holds `count` connections (CONNECT events reach the handler via SQS)."""
    deadline = time.monotonic() + timeout
    while True:
        items = (await asyncio.to_thread(dynamodb.scan, TableName=TABLE))["Items"]
        if len(items) == count:
            return {item["connectionId"]["S"]: item["name"]["S"] for item in items}
        assert time.monotonic() < deadline, f"the table holds {items}, not {count} rows"
        await asyncio.sleep(0.1)


async def next_json(client: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(client.recv(), timeout)))


async def chat_across_nodes(nodes: Sequence[str], dynamodb: Any) -> None:
    alice = await connect(nodes[0] + "?token=open-sesame&name=alice")
    bob = await connect(nodes[1] + "?token=open-sesame&name=bob")
    assert sorted((await rows(dynamodb, 2)).values()) == ["alice", "bob"]
    await alice.send(json.dumps({"action": "sendmessage", "message": "hello from node 1"}))
    expected = {"from": "alice", "message": "hello from node 1"}
    assert await next_json(bob) == expected
    assert await next_json(alice) == expected
    await bob.send(json.dumps({"action": "nosuchaction"}))  # $default: the handler's hint
    assert "sendmessage" in (await next_json(bob))["error"]
    await alice.close()
    await bob.close()
    await rows(dynamodb, 0)  # each DISCONNECT removed its row


async def test_an_api_gateway_chat_runs_on_the_local_nodes() -> None:
    """Without --connect-handler, $connect runs after the node accepted the connection: a bad
    token closes it (4401), as the entry point's asynchronous refusal does."""
    async with local_system("--handler", CHAT) as (nodes, dynamodb):
        await chat_across_nodes(nodes, dynamodb)

        eve = await connect(nodes[0] + "?token=wrong")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(eve.recv(), 15)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            4401,
            "refused by $connect (401)",
        )


async def test_the_nodes_call_connect_during_the_handshake() -> None:
    """With --connect-handler a bad token never opens: 401, as on API Gateway."""
    async with local_system("--handler", CHAT, "--connect-handler") as (nodes, dynamodb):
        with pytest.raises(InvalidStatus) as refused:
            await connect(nodes[1] + "?token=wrong")
        assert refused.value.response.status_code == 401
        await chat_across_nodes(nodes, dynamodb)


async def test_get_connection_reaches_the_nodes_connections_api() -> None:
    """The handler's get_connection goes to a node's @connections API, which asks the node
    holding the connection."""
    presence = f"whoami={PRESENCE},lookup={PRESENCE}"
    async with local_system("--handler", CHAT, "--route-handlers", presence) as (nodes, dynamodb):
        carol = await connect(nodes[1] + "?token=open-sesame&name=carol")
        dave = await connect(nodes[0] + "?token=open-sesame&name=dave")
        carol_id = next(key for key, name in (await rows(dynamodb, 2)).items() if name == "carol")
        await carol.send(json.dumps({"action": "whoami"}))
        me = await next_json(carol)
        assert me["sourceIp"] == "127.0.0.1"
        assert me["connectedAt"] <= me["lastActiveAt"]
        await dave.send(json.dumps({"action": "lookup", "connectionId": carol_id}))
        assert await next_json(dave) == {"connectionId": carol_id, "connected": True}
        await carol.close()
        await rows(dynamodb, 1)
        await dave.send(json.dumps({"action": "lookup", "connectionId": carol_id}))
        assert await next_json(dave) == {"connectionId": carol_id, "connected": False}
        await dave.close()
