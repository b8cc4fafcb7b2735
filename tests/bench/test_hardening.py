"""Issue 16's production hardening in the cost model: each addition worked by hand, its parts
adding up to its total, its prices, and the bill before and after it on the command line."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from bench import cost, hardening, prices

EXAMPLE = ["--connections", "100000", "--messages-per-minute", "1", "--replies", "1"]
EXAMPLE += ["--regions", "2"]
FREE = {prices.ROUTE53_ALIAS_QUERIES_MILLION, prices.ACM_PUBLIC_CERTIFICATE_MONTH}
GB = 2**30


def priced(*, vpc_endpoints: bool = True) -> dict[str, hardening.Addition]:
    """2 regions of 3 tasks in 2 AZs, 10 handshakes a second each: issue 16's defaults."""
    items = hardening.additions(
        hardening.Added(),
        regions=2,
        handshakes_per_second=10.0,
        tasks=3,
        az_count=2,
        vpc_endpoints=vpc_endpoints,
        api_request_bytes=1_500,
    )
    return {item.item: item for item in items}


def run_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> dict[str, object]:
    code = cost.main([*EXAMPLE, *argv, "--results", str(tmp_path), "--json"])
    assert code == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_additions_by_hand() -> None:
    items = priced()
    month = 730 * 3600
    assert items["WAF web ACL"].line.quantity == 2  # one a region
    assert items["WAF rules"].line.quantity == 4  # two a region
    # Every handshake is a request WAF inspects; frames after the upgrade are not.
    assert items["WAF requests: WebSocket handshakes"].quantity == pytest.approx(10 * month / 1e6)
    # Route 53's checkers: a request every 2.5 s for the one health check.
    checkers = items["WAF requests: Route 53 health checkers"]
    assert checkers.quantity == pytest.approx(month / 2.5 / 1e6)
    assert items["WAF requests: blocked"].quantity == 1.0  # a million a month, assumed
    waf_logs = items["WAF logs of blocked requests: delivery"]
    assert waf_logs.quantity == pytest.approx(1e6 * 1_500 / GB)
    assert items["Route 53 health checks: HTTPS"].line.monthly == pytest.approx(2 * 1.00)
    zone = items["Route 53 hosted zone (usually there already)"]
    assert (zone.once, zone.copies, zone.line.monthly) == (True, 1, 0.50)
    assert items["CloudWatch alarms added (5 to 9)"].quantity == 4
    assert items["CloudWatch dashboards added (1 to 1)"].line.monthly == 0
    assert items["CloudWatch custom metrics added"].line.monthly == pytest.approx(2 * 8 * 0.30)
    emf_gb = 3 * 200 * 730 * 60 / GB  # 200 bytes a minute more from each of 3 tasks
    assert items["CloudWatch Logs ingestion: the EMF line's growth"].quantity == pytest.approx(
        emf_gb
    )
    assert items["KMS key of the alarm topic"].line.monthly == 2.00
    assert items["ELB API interface endpoint"].quantity == 1 * 2 * 730  # one per AZ
    # Each task asks for its target health every 5 s, through the endpoint, with its logs.
    polls_gb = 3 / 5 * month * (1_500 + 2_000) / GB
    data = items["interface endpoint data: target health polls, EMF growth"]
    assert data.quantity == pytest.approx(polls_gb + emf_gb)


def test_with_nat_gateways_the_polls_go_through_them() -> None:
    items = priced(vpc_endpoints=False)
    assert "ELB API interface endpoint" not in items
    data = items["NAT gateway data: target health polls, EMF growth"]
    assert data.price is prices.NAT_GATEWAY_GB


def test_the_total_is_the_sum_of_its_parts() -> None:
    items = tuple(priced().values())
    total = hardening.total(items)
    assert total == pytest.approx(sum(item.line.monthly for item in items))
    assert total == pytest.approx(sum(item.each_monthly * item.copies for item in items))
    once = sum(item.each_monthly for item in items if item.once)
    assert total == pytest.approx(2 * hardening.per_region(items) + once)


def test_every_added_price_is_positive_dated_and_sourced() -> None:
    used = {item.price for item in priced().values()} | {
        item.price for item in priced(vpc_endpoints=False).values()
    }
    assert used >= FREE
    for price in used:
        assert price in prices.ALL, price.key
        assert price.source.startswith("https://aws.amazon.com/"), price.key
        assert price.checked, price.key
        assert datetime.date.fromisoformat(price.read_on), price.key
        if price in FREE:
            assert price.usd == 0 and price.checked.startswith("free"), price.key
        else:
            assert price.usd > 0, price.key


def test_the_delta_is_what_issue_16_added(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    after = run_json(capsys, tmp_path)
    before = run_json(capsys, tmp_path, "--no-hardening")
    added = after["hardening"]
    assert isinstance(added, dict) and isinstance(after["project"], dict)
    lines = added["lines"]
    assert lines and added["total"] == pytest.approx(sum(line["monthly"] for line in lines))
    assert added["after_total"] - added["before_total"] == pytest.approx(added["total"])
    assert after["project"]["total"] == pytest.approx(added["after_total"])
    # The bill before is the deployment without them, item for item.
    assert isinstance(before["project"], dict) and isinstance(before["hardening"], dict)
    assert before["project"]["total"] == pytest.approx(added["before_total"])
    assert before["hardening"]["lines"] == []
    items = [line["item"] for line in after["project"]["lines"]]
    assert items == [line["item"] for line in before["project"]["lines"]] + [
        line["item"] for line in lines
    ]
    assert added["ratio_after"] == pytest.approx(after["ratio"])
    assert added["ratio_before"] == pytest.approx(before["ratio"])


def test_only_production_is_hardened_unless_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dev = run_json(capsys, tmp_path, "--environment", "dev")
    assert isinstance(dev["hardening"], dict) and dev["hardening"]["lines"] == []
    asked = run_json(capsys, tmp_path, "--environment", "dev", "--hardening")
    assert isinstance(asked["hardening"], dict)
    items = {line["item"] for line in asked["hardening"]["lines"]}
    assert "NAT gateway data: target health polls, EMF growth" in items  # dev egresses via NAT


def test_cli_prints_what_issue_16_added(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cost.main([*EXAMPLE, "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "### What issue 16 added: production hardening, in each of 2 region(s)" in out
    assert "| Route 53 hosted zone (usually there already) | 1 |" in out
    assert "| 1 (once) |" in out
    assert "**Before issue 16: $" in out
    assert cost.main([*EXAMPLE, "--results", str(tmp_path), "--no-hardening"]) == 0
    out = capsys.readouterr().out
    assert "What issue 16 added" not in out
    assert hardening.Added.__dataclass_fields__["web_acls"].metadata["what"] not in out
