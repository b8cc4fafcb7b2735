"""Router: local delivery, forwards per node with narrowed commands, gone IDs, and rejections."""

from __future__ import annotations

import pytest

from runtime.core.registry import ConnectionEntry, ConnectionRegistry
from runtime.core.router import Router
from runtime.wire.commands import (
    Broadcast,
    ChannelPublish,
    Close,
    CommandError,
    Send,
    Subscribe,
    Unsubscribe,
)
from runtime.wire.connection_id import ConnectionIdIssuer, NodeAddress

REGION = "us-east-1"
HERE = NodeAddress("10.0.0.1", 9100)
PEER_B = NodeAddress("10.0.0.2", 9100)
PEER_C = NodeAddress("2001:db8::3", 9200)
SAME_HOST_OTHER_PORT = NodeAddress("10.0.0.1", 9101)

here = ConnectionIdIssuer(REGION, HERE)
peer_b = ConnectionIdIssuer(REGION, PEER_B)
peer_c = ConnectionIdIssuer(REGION, PEER_C)
router = Router(HERE, REGION)
MEMBERS = {PEER_B, PEER_C, SAME_HOST_OTHER_PORT}


def test_local_remote_and_gone_ids_are_split() -> None:
    local_1, local_2, gone = here.issue(), here.issue(), here.issue()
    b_1, b_2, c_1 = peer_b.issue(), peer_b.issue(), peer_c.issue()
    command = Send((local_1, b_1, c_1, gone, local_2, b_2), b"payload", True)
    route = router.route(command, {local_1, local_2}, from_peer=False, members=MEMBERS)
    assert route.command is command
    assert route.local_ids == [local_1, local_2]
    assert route.gone_ids == [gone]
    assert route.forwards == {
        PEER_B: Send((b_1, b_2), b"payload", True),
        PEER_C: Send((c_1,), b"payload", True),
    }
    assert route.to_every_node is False


def test_close_is_narrowed_keeping_code_and_reason() -> None:
    local, remote = here.issue(), peer_b.issue()
    route = router.route(
        Close((remote, local), 4001, "bye"), {local}, from_peer=False, members=MEMBERS
    )
    assert route.local_ids == [local]
    assert route.forwards == {PEER_B: Close((remote,), 4001, "bye")}
    assert route.gone_ids == []


def test_subscribe_and_unsubscribe_go_where_their_connections_are() -> None:
    local, remote, gone = here.issue(), peer_b.issue(), here.issue()
    subscribe = Subscribe((local, remote, gone), ("room:1",), b'{"n":1}', True)
    route = router.route(subscribe, {local}, from_peer=False, members=MEMBERS)
    assert route.local_ids == [local]
    assert route.forwards == {PEER_B: Subscribe((remote,), ("room:1",), b'{"n":1}', True)}
    assert route.gone_ids == [gone]  # a subscribe to a connection that is gone answers GONE
    unsubscribe = Unsubscribe((remote, local), ("a", "b"))
    route = router.route(unsubscribe, {local}, from_peer=False, members=MEMBERS)
    assert route.forwards == {PEER_B: Unsubscribe((remote,), ("a", "b"))}


def test_a_channel_publish_is_left_to_the_nodes_channels() -> None:
    """Not to every node: the node's channel hub forwards it to the peers holding the channel."""
    publish = ChannelPublish("room:1", b"x", False, (here.issue(),))
    for from_peer in (False, True):
        route = router.route(publish, set(), from_peer=from_peer, members=MEMBERS)
        assert route.to_every_node is False
        assert (route.local_ids, route.forwards, route.gone_ids) == ([], {}, [])


def test_a_node_on_the_same_host_but_another_port_is_another_node() -> None:
    other = ConnectionIdIssuer(REGION, SAME_HOST_OTHER_PORT).issue()
    route = router.route(Send((other,), b"x", False), set(), from_peer=False, members=MEMBERS)
    assert route.forwards == {SAME_HOST_OTHER_PORT: Send((other,), b"x", False)}
    assert route.gone_ids == []


def test_all_local_means_no_forwards() -> None:
    ids = [here.issue() for _ in range(3)]
    route = router.route(Send(tuple(ids), b"x", False), set(ids), from_peer=False, members=MEMBERS)
    assert route.local_ids == ids
    assert route.forwards == {}
    assert route.gone_ids == []


def test_commands_from_peers_never_travel_on() -> None:
    local, gone, remote = here.issue(), here.issue(), peer_b.issue()
    route = router.route(
        Send((local, remote, gone), b"x", False), {local}, from_peer=True, members=MEMBERS
    )
    assert route.local_ids == [local]
    assert route.forwards == {}
    assert route.gone_ids == [remote, gone]
    assert route.to_every_node is False


@pytest.mark.parametrize("from_peer", [False, True])
def test_malformed_id_rejects_the_whole_command(from_peer: bool) -> None:
    local = here.issue()
    bad = local[:-3]
    with pytest.raises(CommandError, match="connection ID") as info:
        router.route(
            Send((local, peer_b.issue(), bad), b"x", False),
            {local},
            from_peer=from_peer,
            members=MEMBERS,
        )
    assert repr(bad) in str(info.value)


def test_id_of_another_region_is_rejected() -> None:
    foreign = ConnectionIdIssuer("eu-west-1", HERE).issue()
    with pytest.raises(CommandError, match="region 'eu-west-1'") as info:
        router.route(
            Close((here.issue(), foreign), 1000, ""), set(), from_peer=False, members=MEMBERS
        )
    assert "'us-east-1'" in str(info.value)
    with pytest.raises(CommandError, match="eu-west-1"):
        router.route(Send((foreign,), b"x", False), set(), from_peer=True, members=MEMBERS)


def test_broadcast_goes_to_every_node_unless_from_a_peer() -> None:
    command = Broadcast(b"all", False)
    route = router.route(command, set(), from_peer=False, members=MEMBERS)
    assert route.to_every_node is True
    assert route.command is command
    assert (route.local_ids, route.forwards, route.gone_ids) == ([], {}, [])
    assert router.route(command, set(), from_peer=True, members=MEMBERS).to_every_node is False


def test_registry_serves_as_the_local_container() -> None:
    registry: ConnectionRegistry[object] = ConnectionRegistry()
    local = here.issue()
    registry.add(ConnectionEntry(local, object(), "", 0))
    gone = here.issue()
    route = router.route(
        Send((local, gone), b"x", False), registry, from_peer=False, members=MEMBERS
    )
    assert route.local_ids == [local]
    assert route.gone_ids == [gone]


def test_ids_of_nodes_outside_the_cluster_are_gone_not_forwarded() -> None:
    """A forged ID (its CRC is no secret) naming any address makes no peer traffic."""
    outsider = ConnectionIdIssuer(REGION, NodeAddress("192.0.2.7", 53)).issue()
    member = peer_b.issue()
    route = router.route(
        Send((outsider, member), b"x", False), set(), from_peer=False, members={PEER_B}
    )
    assert route.forwards == {PEER_B: Send((member,), b"x", False)}
    assert route.gone_ids == [outsider]
    alone = router.route(Send((member,), b"x", False), set(), from_peer=False, members=set())
    assert (alone.forwards, alone.gone_ids) == ({}, [member])
