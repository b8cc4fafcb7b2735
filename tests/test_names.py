"""Resource names: deterministic, FIFO-suffixed where AWS requires it, environment checked."""

from __future__ import annotations

from pathlib import Path

import botocore.loaders
import pytest

from runtime.config import Settings
from runtime.names import MAX_MESSAGE_BYTES, PEER_PORT, WEBSOCKET_PORT, ResourceNames, partition
from runtime.node.server import largest_message_fitting


def test_names_of_a_fifo_environment() -> None:
    names = ResourceNames("prod")
    assert names.events_queue == "wsgw-prod-events.fifo"
    assert names.events_dlq == "wsgw-prod-events-dlq.fifo"
    assert names.events_topic == "wsgw-prod-events.fifo"
    assert names.commands_topic == "wsgw-prod-commands"
    assert names.commands_queue == "wsgw-prod-commands"
    assert names.commands_dlq == "wsgw-prod-commands-dlq"
    assert names.commands_topic_arn("eu-west-1", "123456789012") == (
        "arn:aws:sns:eu-west-1:123456789012:wsgw-prod-commands"
    )


@pytest.mark.parametrize(
    ("region", "arn"),
    [
        ("cn-north-1", "arn:aws-cn:sns:cn-north-1:123456789012:wsgw-prod-commands"),
        ("cn-northwest-1", "arn:aws-cn:sns:cn-northwest-1:123456789012:wsgw-prod-commands"),
        ("us-gov-west-1", "arn:aws-us-gov:sns:us-gov-west-1:123456789012:wsgw-prod-commands"),
        ("us-gov-east-1", "arn:aws-us-gov:sns:us-gov-east-1:123456789012:wsgw-prod-commands"),
    ],
)
def test_the_commands_topic_arn_names_the_regions_partition(region: str, arn: str) -> None:
    assert ResourceNames("prod").commands_topic_arn(region, "123456789012") == arn


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("us-east-1", "aws"),
        ("eu-central-2", "aws"),
        ("mx-central-1", "aws"),
        ("cn-north-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
        ("us-iso-east-1", "aws-iso"),
        ("us-isob-east-1", "aws-iso-b"),
        ("eu-isoe-west-1", "aws-iso-e"),
        ("us-isof-south-1", "aws-iso-f"),
        ("eusc-de-east-1", "aws-eusc"),
        ("local", "aws"),  # the local system's region
    ],
)
def test_partition_of_a_region(region: str, expected: str) -> None:
    assert partition(region) == expected


def test_partition_agrees_with_every_region_botocore_knows() -> None:
    """botocore's partitions.json is AWS's own list; the SDK may meet any region in it."""
    data = botocore.loaders.create_loader().load_data("partitions")
    regions = {
        region: entry["id"]
        for entry in data["partitions"]
        for region in entry["regions"]
        if not region.endswith("-global")  # pseudo-regions of global endpoints, not ARNs
    }
    assert len(set(regions.values())) >= 7 and len(regions) > 40
    assert {region: partition(region) for region in regions} == regions


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


def test_the_readme_limits_row_matches_the_queue_sizes() -> None:
    """The limits table's figures: a 1 MiB queue or topic (what the stack makes, and a new SQS
    queue's default) and a 256 KiB one (a new SNS topic's default) fit these messages."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| One event per origin"))
    assert f"about {round(largest_message_fitting(MAX_MESSAGE_BYTES) / 1024)} KiB" in row
    assert f"about {round(largest_message_fitting(256 * 1024) / 1024)} KiB" in row
    assert "a new SQS queue takes 1 MiB by default" in row
    assert "left at the default 256 KiB" not in row  # the old claim about SQS
