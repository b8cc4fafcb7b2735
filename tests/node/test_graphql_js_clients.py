"""GraphQL mode against the real JS clients: `graphql-ws` (graphql-transport-ws) and
`subscriptions-transport-ws` (legacy graphql-ws), run by tests/js/graphql_clients.mjs under Node.

The other GraphQL tests speak the protocol message by message from Python, which proves the node
follows the spec as we read it; this one proves the libraries that apps actually use work with
it, with their own message order and timing (the legacy library pipelines `start` behind
`connection_init`, for one). The node is in-process, the origin is the graphql-core chat example
over HTTP, and its `post` publishes through the node's command endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.origin.examples.graphql_chat import build_origin
from tests.conftest import TOKEN, RunningNode, StartNode
from tests.graphql_origin_server import RunningGraphqlOrigin, start_graphql_origin
from tests.processes import ROOT

JS_DIR = ROOT / "tests" / "js"
SCRIPT = JS_DIR / "graphql_clients.mjs"
NODE = shutil.which("node")
MODERN = "graphql-ws"
LEGACY = "subscriptions-transport-ws"
ROOMS = {MODERN: "js-modern", LEGACY: "js-legacy"}
SCRIPT_TIMEOUT = 30.0  # the script gives up by itself after 20 s

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS_DIR / "node_modules").is_dir(),
    reason="LOUD SKIP: Node.js or tests/js/node_modules is missing (`make jsclients` installs "
    "them with npm when node and npm exist); the real JS GraphQL client tests did not run",
)

Observation = dict[str, Any]


@pytest.fixture
async def chat(start_node: StartNode) -> AsyncIterator[tuple[RunningNode, RunningGraphqlOrigin]]:
    """A GraphQL-mode node and the chat origin, whose `post` publishes through that node."""
    nodes: list[RunningNode] = []
    pending: set[asyncio.Task[Any]] = set()

    def publish(keys: list[str], context: Any) -> None:
        command = {"action": "publish", "keys": keys, "context": context}
        task = asyncio.get_running_loop().create_task(
            nodes[0].post_commands({"commands": [command]})
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    origin = await start_graphql_origin(build_origin(publish))
    try:
        nodes.append(await start_node(graphql_origin_url=origin.url, origin_transport="none"))
        yield nodes[0], origin
        for task in list(pending):
            status, body = await task
            assert status == 200, body
    finally:
        await origin.stop()


async def run_clients(node: RunningNode) -> list[Observation]:
    """Run the script to its end; its output, or a failure showing all of it."""
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(SCRIPT),
        node.ws_url,
        node.commands_url,
        TOKEN,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        pytest.fail(f"the JS clients hung:\n{stdout.decode()}\n{stderr.decode()}")
    output = f"exit {process.returncode}\nstdout:\n{stdout.decode()}\nstderr:\n{stderr.decode()}"
    assert process.returncode == 0, output
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


def steps(
    observations: list[Observation], library: str, step: str, client: str = "main"
) -> list[Any]:
    """The payloads of one kind of observation, in order."""
    return [
        o["payload"]
        for o in observations
        if o["library"] == library and o["client"] == client and o["step"] == step
    ]


def frames_out(observations: list[Observation], library: str, client: str = "main") -> list[Any]:
    return steps(observations, library, "frame-out", client)


def update(message_id: str, room: str, text: str) -> Observation:
    """A messageAdded result, as the script printed it."""
    return {"data": {"messageAdded": {"id": message_id, "room": room, "text": text}}}


async def test_both_real_client_libraries_query_mutate_subscribe_and_are_refused(
    chat: tuple[RunningNode, RunningGraphqlOrigin], caplog: pytest.LogCaptureFixture
) -> None:
    node, origin = chat
    caplog.set_level(logging.WARNING)
    observations = await run_clients(node)
    assert observations[-1]["step"] == "done", observations[-1]

    for library, room in ROOMS.items():
        assert steps(observations, library, "ws-open") == [
            {"protocol": "graphql-transport-ws" if library == MODERN else "graphql-ws"}
        ]
        assert steps(observations, library, "query") == [{"data": {"messages": []}}]
        [mutation] = steps(observations, library, "mutation")
        message_id = mutation["data"]["post"]["id"]
        assert steps(observations, library, "subscription-next") == [
            update(message_id, room, f"posted by {library}"),
            update(f"command-{room}", room, f"published to {room} by a command"),
        ]
        assert steps(observations, library, "subscription-live")[0]["graphqlSubscriptions"] == 1
        assert steps(observations, library, "node-forgot-subscription") == [
            {"graphqlSubscriptions": 0, "graphqlDistinctInputs": 0}
        ]
        assert steps(observations, library, "disposed") == [None]

    # graphql-ws: subscribe for each operation, `complete` to unsubscribe, then a normal close.
    modern_out = frames_out(observations, MODERN)
    assert [frame["type"] for frame in modern_out] == [
        "connection_init",
        "subscribe",  # the query
        "subscribe",  # the subscription
        "subscribe",  # the mutation
        "complete",  # unsubscribe
    ]
    assert modern_out[0]["payload"] == {"token": "js"}
    assert modern_out[4]["id"] == modern_out[2]["id"]
    assert steps(observations, MODERN, "ws-close") == [{"code": 1000, "reason": "Normal Closure"}]
    assert steps(observations, MODERN, "refused", "refused") == [
        {"code": 4403, "reason": "Forbidden: missing token"}
    ]

    # subscriptions-transport-ws: start for each operation, stop (answered by complete), then
    # connection_terminate; the refused client got connection_error, then a close with 1011.
    legacy_out = frames_out(observations, LEGACY)
    assert [frame["type"] for frame in legacy_out] == [
        "connection_init",
        "start",  # the query, sent right behind connection_init
        "start",  # the subscription
        "start",  # the mutation
        "stop",
        "connection_terminate",
    ]
    assert legacy_out[0]["payload"] == {"token": "js"}
    subscription_id = legacy_out[2]["id"]
    assert legacy_out[4]["id"] == subscription_id
    assert steps(observations, LEGACY, "stop-answered") == [
        {"type": "complete", "id": subscription_id}
    ]
    legacy_in = [frame["type"] for frame in steps(observations, LEGACY, "frame-in")]
    assert legacy_in[:2] == ["connection_ack", "ka"]
    legacy_frames = [
        (o["step"], o["payload"]["type"])
        for o in observations
        if o["library"] == LEGACY and o["client"] == "main" and o["step"].startswith("frame-")
    ]
    assert legacy_frames[:3] == [
        ("frame-out", "connection_init"),
        ("frame-out", "start"),  # not waiting for the ack: the node must queue it behind init
        ("frame-in", "connection_ack"),
    ]
    assert steps(observations, LEGACY, "refused", "refused") == [{"message": "missing token"}]
    assert [f["type"] for f in steps(observations, LEGACY, "frame-in", "refused")] == [
        "connection_error"
    ]
    assert steps(observations, LEGACY, "ws-close", "refused")[0]["code"] == 1011

    # The origin saw both libraries' operations as the contract describes, and was asked to run each
    # subscription once per publish: the mutation's and the command's.
    inits = origin.of_type("connection_init")
    assert len(inits) == 4  # the refused clients' too
    assert sorted((i["subprotocol"], i["payload"]) for i in inits if i["payload"]) == [
        ("graphql-transport-ws", {"token": "js"}),
        ("graphql-ws", {"token": "js"}),
    ]
    starts = origin.of_type("start")
    assert sorted(start["operationName"] for start in starts) == sorted(
        ["History", "Added", "Post"] * 2
    )
    for library, room in ROOMS.items():
        queries = [
            request
            for request in origin.of_type("subscription_query")
            if request["variables"] == {"room": room}
        ]
        assert [q["publishContext"]["text"] for q in queries] == [
            f"posted by {library}",
            f"published to {room} by a command",
        ]
        assert all(q["operationName"] == "Added" for q in queries)
    # Nothing the libraries did looked wrong to the node.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
