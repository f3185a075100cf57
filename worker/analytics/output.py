"""Reports as a terminal table, CSV or JSON."""

from __future__ import annotations

import csv
from datetime import datetime
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from worker.analytics.reports import Report

TITLES = {
    "share-of-voice": "Share of voice",
    "visibility": "Visibility",
    "position": "Average position",
    "sentiment": "Sentiment",
    "citations": "Citation share by domain",
}
# Fractions shown as percentages in tables and charts; CSV and JSON keep fractions.
FRACTIONS = frozenset({"share", "visibility"})


def period_label(report: Report) -> str:
    first, last = report.period
    if first is None or last is None:
        return "no answers"
    return f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"


def title(report: Report) -> str:
    name = TITLES[report.kind]
    if report.by:
        name += f" by {report.by}"
    return f"{name}, {period_label(report)}"


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "top_urls":
        return "; ".join(f"{u['url']} ({u['citations']})" for u in value)
    if column in FRACTIONS:
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def render_table(report: Report, console: Console) -> None:
    table = Table(title=title(report), title_justify="left")
    for column in report.columns:
        numeric = column not in (report.by, report.series, "top_urls")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in report.rows:
        table.add_row(*(_cell(c, row.get(c)) for c in report.columns))
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]{note}[/dim]")
    if not report.rows:
        console.print("no rows: nothing matches the filters")


def write_csv(report: Report, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(
            _cell(c, row[c]) if c == "top_urls" else ("" if row[c] is None else row[c])
            for c in report.columns
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def to_json(report: Report) -> bytes:
    document = {
        "report": report.kind,
        "by": report.by,
        "filters": report.filters.as_dict(),
        "period": {"from": _iso(report.period[0]), "to": _iso(report.period[1])},
        "columns": report.columns,
        "rows": report.rows,
        "notes": report.notes,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)
