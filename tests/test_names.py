"""Resource names: deterministic, FIFO-suffixed where AWS requires it, environment checked."""

from __future__ import annotations

import pytest

from runtime.names import ResourceNames


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
