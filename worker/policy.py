"""Which action follows a response: the status table of each vendor (the
common rules with its own overrides, worker/vendors), as the README reproduces
it. When the id is polled next is worker/scheduling.py's."""

from __future__ import annotations

from collections.abc import Mapping

from models import Vendor
from worker.outcome import Rule
from worker.vendors.registry import VENDORS

# Each vendor's table: the common rules with its own overrides (worker/vendors).
POLICIES: dict[Vendor, Mapping[int | str, Rule]] = {
    spec.vendor: spec.rules for spec in VENDORS.values()
}


def rule_for(vendor: Vendor, status: int | None) -> Rule:
    return VENDORS[vendor].rule_for(status)
