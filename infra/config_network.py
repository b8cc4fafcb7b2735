"""Each region's VPC address range, and which traffic its flow logs record.

Regions of one environment get address ranges that never overlap, so their VPCs can be peered
or joined to a transit gateway later. The default range of a region comes from a fixed table
(its position there, never its position in `regions`), so adding a region to an environment
leaves every other region's VPC as it is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from infra.config_reader import ConfigError, SettingsReader

# Default VPC of a region: 10.<index>.0.0/16. us-east-1 keeps 10.0.0.0/16, the range every region
# had before ranges were per region. Append new regions; never reorder.
KNOWN_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "ca-west-1",
    "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1",
    "eu-south-1", "eu-south-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-southeast-7", "ap-south-1", "ap-south-2", "ap-east-1", "ap-east-2", "sa-east-1",
    "af-south-1", "me-south-1", "me-central-1", "il-central-1", "mx-central-1", "cn-north-1",
    "cn-northwest-1", "us-gov-west-1", "us-gov-east-1",
)  # fmt: skip
# The subnets need room: up to three public /24s and three /20s for the nodes (infra/network.py).
PREFIX_LENGTHS = (16, 18)
FLOW_LOG_TRAFFIC = ("REJECT", "ALL")
_PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    vpc_cidrs: dict[str, str] = field(default_factory=dict)
    flow_log_traffic: str = "REJECT"


def default_cidr(region: str) -> str | None:
    if region not in KNOWN_REGIONS:
        return None
    return f"10.{KNOWN_REGIONS.index(region)}.0.0/16"


def read_network(reader: SettingsReader, regions: tuple[str, ...]) -> NetworkSettings:
    given = reader.per_region("vpcCidr", regions, _cidr_problem)
    cidrs: dict[str, str] = {}
    for region in regions:
        cidr = given.get(region) or default_cidr(region)
        if cidr is None:
            raise ConfigError(
                f"{reader.where}.vpcCidr.{region} is required: {region} has no default range "
                '(give one per region as an object, e.g. {"' + region + '": "10.40.0.0/16"})'
            )
        cidrs[region] = cidr
    networks = {region: ipaddress.ip_network(cidr) for region, cidr in cidrs.items()}
    for index, (region, network) in enumerate(networks.items()):
        for other, other_network in list(networks.items())[index + 1 :]:
            if network.overlaps(other_network):
                raise ConfigError(
                    f"{reader.where}.vpcCidr: {region} ({network}) and {other} "
                    f"({other_network}) overlap; regions need disjoint ranges to be peered"
                )
    return NetworkSettings(
        vpc_cidrs=cidrs,
        flow_log_traffic=reader.choice("flowLogs", FLOW_LOG_TRAFFIC, "REJECT"),
    )


def _cidr_problem(text: str) -> str | None:
    low, high = PREFIX_LENGTHS
    rule = f"must be a private IPv4 range from /{low} to /{high}, such as 10.1.0.0/16"
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        return rule
    if not isinstance(network, ipaddress.IPv4Network) or not low <= network.prefixlen <= high:
        return rule
    if not any(network.subnet_of(private) for private in _PRIVATE):
        return rule
    return None
