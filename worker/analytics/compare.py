"""Two reports side by side: the same brand per vendor (`report compare`), and
this period against the one before it (`report change`).

Each side is a standard report (worker/analytics/reports.py); this module only
pairs their rows and says, with Newcombe's interval for the difference of two
rates, whether the two sides differ by more than their uncertainty.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from worker.analytics.reports import INTERVAL, RATES, Filters, Report, run_report
from worker.analytics.stats import difference, wilson
from worker.vendors.registry import VENDORS

# The rates two reports can be compared on.
METRICS = ("visibility", "share-of-voice", "sentiment")
DIFFERENCE = ("difference", "difference_ci_low", "difference_ci_high", "verdict")


def _key(row: dict[str, Any], by: str | None) -> tuple[Any, str]:
    return (row[by] if by else "all", row["brand"])


def _pairs(
    sides: dict[str, Report], by: str | None
) -> dict[tuple[Any, str], dict[str, dict[str, Any]]]:
    """Rows by (group, brand), then by side. A brand one side never counted gets
    0 of that side's group total there (visibility, share of voice), else 0 of 0."""
    pairs: dict[tuple[Any, str], dict[str, dict[str, Any]]] = {}
    group_totals: dict[tuple[str, Any], int] = {}
    for side, report in sides.items():
        for row in report.rows:
            pairs.setdefault(_key(row, by), {})[side] = row
            if report.kind != "sentiment":
                group_totals[(side, _key(row, by)[0])] = row["denominator"]
    for key, by_side in pairs.items():
        for side, report in sides.items():
            if side not in by_side:
                n = group_totals.get((side, key[0]), 0)
                rate = RATES[report.kind][0]
                low, high = wilson(0, n)
                known = next(iter(by_side.values()))
                by_side[side] = {
                    **({"role": known["role"]} if "role" in known else {}),
                    "numerator": 0,
                    "denominator": n,
                    rate: 0.0 if n else None,
                    "ci_low": low,
                    "ci_high": high,
                }
    return pairs


def _difference(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    d = difference(
        first["numerator"], first["denominator"], second["numerator"], second["denominator"]
    )
    return {
        "difference": d.value,
        "difference_ci_low": d.low,
        "difference_ci_high": d.high,
        "verdict": d.verdict,
    }


def _ordered(pairs: dict[tuple[Any, str], Any], weight: Any) -> list[tuple[Any, str]]:
    return sorted(pairs, key=lambda k: (k[0], -weight(k), k[1]))


def compare(session: Session, metric: str, filters: Filters, by: str | None = None) -> Report:
    """`metric` per vendor, one row per (group, brand, vendor); each pair of rows
    carries the difference (the second vendor's minus the first's, in the
    registry's order) and whether it is real."""
    vendors = [v.value for v in VENDORS]
    if filters.vendors:
        vendors = [v for v in vendors if v in filters.vendors]
    if len(vendors) != 2:
        raise ValueError("compare needs both vendors: drop --vendor")
    sides = {v: run_report(session, metric, replace(filters, vendors=(v,)), by) for v in vendors}
    rate = RATES[metric][0]
    pairs = _pairs(sides, by)
    rows = []
    for key in _ordered(pairs, lambda k: sum(r["numerator"] for r in pairs[k].values())):
        extra = _difference(pairs[key][vendors[0]], pairs[key][vendors[1]])
        for vendor in vendors:
            row = pairs[key][vendor]
            rows.append(
                {
                    **({by: key[0]} if by else {}),
                    "brand": key[1],
                    **({"role": row["role"]} if "role" in row else {}),
                    "vendor": vendor,
                    rate: row[rate],
                    **{c: row[c] for c in INTERVAL},
                    **extra,
                }
            )
    first = sides[vendors[0]]
    periods = [s.period for s in sides.values()]
    starts = [p[0] for p in periods if p[0] is not None]
    ends = [p[1] for p in periods if p[1] is not None]
    return Report(
        kind="compare",
        by=by,
        filters=replace(first.filters, vendors=filters.vendors),
        columns=[
            *([by] if by else []),
            "brand",
            *(["role"] if filters.own_vs_competitors else []),
            "vendor",
            rate,
            *INTERVAL,
            *DIFFERENCE,
        ],
        rows=rows,
        period=(min(starts, default=None), max(ends, default=None)),
        series="vendor",
        metric=rate,
        weight="numerator",
        rate=metric,
        notes=[
            f"{rate} per vendor; difference = {vendors[1]} - {vendors[0]} with its 95% "
            "interval (Newcombe); 'within uncertainty' when the interval includes 0."
        ],
    )


def change(session: Session, metric: str, filters: Filters, by: str | None = None) -> Report:
    """`metric` in [since, until) against the period of the same length before it."""
    if filters.since is None or filters.until is None:
        raise ValueError("change needs --since and --until (the current period)")
    span = filters.until - filters.since
    previous_filters = replace(filters, since=filters.since - span, until=filters.since)
    sides = {
        "previous": run_report(session, metric, previous_filters, by),
        "current": run_report(session, metric, filters, by),
    }
    rate = RATES[metric][0]
    pairs = _pairs(sides, by)
    rows = []
    for key in _ordered(pairs, lambda k: pairs[k]["current"]["numerator"]):
        before, now = pairs[key]["previous"], pairs[key]["current"]
        d = _difference(before, now)
        rows.append(
            {
                **({by: key[0]} if by else {}),
                "brand": key[1],
                **({"role": now["role"]} if "role" in now else {}),
                f"previous_{rate}": before[rate],
                **{f"previous_{c}": before[c] for c in INTERVAL},
                rate: now[rate],
                **{c: now[c] for c in INTERVAL},
                "change": d["difference"],
                "change_ci_low": d["difference_ci_low"],
                "change_ci_high": d["difference_ci_high"],
                "verdict": d["verdict"],
            }
        )
    columns = [
        *([by] if by else []),
        "brand",
        *(["role"] if filters.own_vs_competitors else []),
        f"previous_{rate}",
        *(f"previous_{c}" for c in INTERVAL),
        rate,
        *INTERVAL,
        "change",
        "change_ci_low",
        "change_ci_high",
        "verdict",
    ]
    current = sides["current"]
    return Report(
        kind="change",
        by=by,
        filters=current.filters,
        columns=columns,
        rows=rows,
        period=current.period,
        series="brand",
        metric="change",
        weight="numerator",
        rate=metric,
        notes=[
            f"{rate} from {filters.since:%Y-%m-%d %H:%M} to {filters.until:%Y-%m-%d %H:%M} "
            f"against {previous_filters.since:%Y-%m-%d %H:%M} to {filters.since:%Y-%m-%d %H:%M} "
            "(UTC, exclusive ends); "
            "'up' or 'down' only when the change's 95% interval (Newcombe) excludes 0."
        ],
    )
