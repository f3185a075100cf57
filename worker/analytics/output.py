"""Reports as a terminal table, CSV or JSON.

Brands, domains, models and URLs are vendor text: the table shows them as
plain `Text`, never as rich markup, and CSV neutralizes cells a spreadsheet
would run as formulas unless asked not to.
"""

from __future__ import annotations

import csv
from datetime import datetime
from typing import IO, Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from worker.analytics.export import neutralize_formula
from worker.analytics.reports import RATES, Report

TITLES = {
    "share-of-voice": "Share of voice",
    "visibility": "Visibility",
    "position": "Average position",
    "sentiment": "Sentiment",
    "citations": "Citation share by domain",
    "domain-categories": "Citation share by domain category",
    "compare": "{} per vendor",
    "change": "{}: change on the previous period",
}
# Columns of text, left-aligned in tables.
TEXT_COLUMNS = ("brand", "role", "vendor", "verdict", "top_urls")
# Fractions shown as percentages in tables and charts; CSV and JSON keep fractions.
FRACTIONS = frozenset(
    {
        "share",
        "visibility",
        "positive_share",
        "ci_low",
        "ci_high",
        "difference",
        "difference_ci_low",
        "difference_ci_high",
        "change",
        "change_ci_low",
        "change_ci_high",
        *(f"previous_{c}" for c in ("share", "visibility", "positive_share", "ci_low", "ci_high")),
    }
)


def period_label(report: Report) -> str:
    first, last = report.period
    if first is None or last is None:
        return "no answers"
    return f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"


def title(report: Report) -> str:
    name = TITLES[report.kind]
    if report.rate is not None:
        name = name.format(TITLES[report.rate])
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
    # Text, not str: a str cell or title is parsed as console markup, and a brand
    # such as "[/bold] Acme" would be styled away or raise MarkupError.
    table = Table(title=Text(title(report)), title_justify="left")
    columns = report.columns
    if report.kind in RATES:
        # The table already shows them under their own names (mentions, answers, …).
        columns = [c for c in columns if c not in ("numerator", "denominator")]
    for column in columns:
        numeric = column not in (report.by, report.series, *TEXT_COLUMNS)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in report.rows:
        # The own brand stands out (--own-vs-competitors).
        style = "bold" if row.get("role") == "own" else ""
        table.add_row(*(Text(_cell(c, row.get(c))) for c in columns), style=style)
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]{escape(note)}[/dim]")
    if not report.rows:
        console.print("no rows: nothing matches the filters")


def _csv_value(column: str, value: Any, formula_guard: bool) -> Any:
    if value is None:
        return ""
    if column == "top_urls":
        value = _cell(column, value)
    # Only text is guarded: numbers stay numbers, a negative one included.
    return neutralize_formula(value) if formula_guard and isinstance(value, str) else value


def write_csv(report: Report, out: IO[str], *, formula_guard: bool = True) -> None:
    """The rows as CSV; `formula_guard` prefixes text cells that could start a formula."""
    # RFC 4180 line ends: Python's writer quotes only cells holding a character of
    # the terminator, so with "\n" alone a cell's CR went out bare and split its row.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(_csv_value(c, row[c], formula_guard) for c in report.columns)


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
