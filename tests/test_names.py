"""Resource names: deterministic, FIFO-suffixed where AWS requires it, environment checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import Settings
from runtime.names import PEER_PORT, WEBSOCKET_PORT, ResourceNames


def test_names_of_a_fifo_environment() -> None:
    names = ResourceNames("prod")
    assert names.events_queue == "wsgw-prod-events.fifo"
    assert names.events_dlq == "wsgw-prod-events-dlq.fifo"
    assert names.events_topic == "wsgw-prod-events.fifo"
    assert names.commands_topic == "wsgw-prod-commands"
    assert names.commands_queue == "wsgw-prod-commands"
    assert names.commands_dlq == "wsgw-prod-commands-dlq"
    assert names.chat_table == "wsgw-prod-chat-connections"
    assert names.commands_topic_arn("eu-west-1", "123456789012") == (
        "arn:aws:sns:eu-west-1:123456789012:wsgw-prod-commands"
    )


def test_standard_queues_have_no_suffix() -> None:
    assert ResourceNames("dev", fifo=False).events_queue == "wsgw-dev-events"


@pytest.mark.parametrize("environment", ["", "Prod", "1dev", "dev_1", "d" * 21])
def test_bad_environment_names(environment: str) -> None:
    with pytest.raises(ValueError, match="environment must be"):
        ResourceNames(environment)


def test_the_image_exposes_the_ports_the_node_listens_on_by_default() -> None:
    """The Dockerfile cannot import the ports: it names them, and this holds the two together."""
    dockerfile = (Path(__file__).parent.parent / "runtime" / "Dockerfile").read_text()
    exposed = next(
        line.split()[1:] for line in dockerfile.splitlines() if line.startswith("EXPOSE")
    )
    assert sorted(exposed) == sorted([f"{WEBSOCKET_PORT}/tcp", f"{PEER_PORT}/udp"])
    assert Settings().listen[1] == WEBSOCKET_PORT
    assert Settings().peer_listen[1] == PEER_PORT
