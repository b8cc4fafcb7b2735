"""A monthly bill as bench.cost prices it: lines of a quantity at a list price, and the month.

Its own module so that what prices a deployment's traffic (bench.cost) and what prices issue 16's
additions to it (bench.hardening) add up in the same units and the same month.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any

from bench.prices import Price

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
MINUTES_PER_MONTH = HOURS_PER_MONTH * 60
MILLION = 1_000_000


def spec(what: str, unit: str = "", default: Any = MISSING) -> Any:
    """A dataclass field that can present itself as a row of the inputs table."""
    return field(default=default, metadata={"what": what, "unit": unit})


@dataclass(frozen=True)
class Line:
    """One item of a bill, `quantity` in the price's unit."""

    item: str
    quantity: float
    price: Price

    @property
    def monthly(self) -> float:
        return self.quantity * self.price.usd


@dataclass(frozen=True)
class Bill:
    lines: tuple[Line, ...]

    @property
    def total(self) -> float:
        return sum(line.monthly for line in self.lines)


def monthly(per_second: float) -> float:
    """A steady rate as a month's count."""
    return per_second * SECONDS_PER_MONTH
