"""`report --chart FILE.png`: lines over time, bars otherwise.

Drawn on a bare matplotlib Figure with the Agg canvas, never pyplot: no GUI
backend, no global figure state, safe to call from any process.
"""

from __future__ import annotations

import io
import math
from datetime import date
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

from worker.analytics.output import FRACTIONS, title
from worker.analytics.reports import TIME_GROUPS, Report

# Every chart is 1000 x 560 pixels, the size docs/analytics.md shows.
WIDTH_INCHES, HEIGHT_INCHES, DPI = 10.0, 5.6, 100
MAX_SERIES = 8

Y_LABELS = {
    "share-of-voice": "Share of voice (% of all brand mentions)",
    "visibility": "Visibility (% of answers that mention the brand)",
    "position": "Average position (1 = named first)",
    "sentiment": "Average sentiment score (0 to 100)",
    "citations": "Share of citations (%)",
}
X_LABELS = {
    "day": "Day (UTC)",
    "week": "Week starting (UTC)",
    "month": "Month (UTC)",
    "provider": "Provider",
    "model": "Model",
    "vendor": "Vendor",
}
# A brand absent from a group has 0% of its mentions and answers; for the other
# metrics an absent value is unknown, and the line has a gap.
ZERO_WHEN_ABSENT = frozenset({"share-of-voice", "visibility"})


def chart_series(report: Report) -> list[str]:
    """The brands (or domains) to draw: those asked for, else the largest few."""
    if report.series == "brand" and report.filters.brands:
        return list(report.filters.brands)
    weight: dict[str, int] = {}
    for row in report.rows:
        weight[row[report.series]] = weight.get(row[report.series], 0) + (row[report.weight] or 0)
    return sorted(weight, key=lambda s: (-weight[s], s))[:MAX_SERIES]


def _period_start(label: str) -> date:
    return date.fromisoformat(label if len(label) > 7 else f"{label}-01")


def _subtitle(report: Report) -> str:
    f = report.filters
    parts = [
        f"{name}: {', '.join(values)}"
        for name, values in (
            ("vendor", f.vendors),
            ("provider", f.providers),
            ("model", f.models),
            ("answers that mention", f.brands if report.series != "brand" else ()),
        )
        if values
    ]
    total = len({row[report.series] for row in report.rows})
    shown = len(chart_series(report))
    if shown < total:
        parts.append(f"the {shown} largest of the report's {total} {report.series}s")
    return " · ".join(parts)


# Brands and domains are vendor text: "$5 plans" must not be read as TeX math.
_PLAIN_TEXT: dict[Any, Any] = {"text.parse_math": False}


@rc_context(_PLAIN_TEXT)
def write_chart(report: Report, path: Path) -> None:
    draw_chart(report).savefig(path, format="png")


@rc_context(_PLAIN_TEXT)
def chart_svg(report: Report) -> bytes:
    """The same chart as SVG, for the dashboard (worker/dashboard)."""
    out = io.BytesIO()
    draw_chart(report).savefig(out, format="svg")
    return out.getvalue()


@rc_context(_PLAIN_TEXT)
def draw_chart(report: Report) -> Figure:
    """Lines over time for day/week/month, bars otherwise; labelled axes, legend,
    and the period in the title."""
    fig = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = chart_series(report)
    scale = 100.0 if report.metric in FRACTIONS else 1.0
    absent = 0.0 if report.kind in ZERO_WHEN_ABSENT else math.nan
    by = report.by
    values: dict[tuple[str, str], float] = {}
    for row in report.rows:
        value = row[report.metric]
        key = (row[by] if by else "all", row[report.series])
        values[key] = math.nan if value is None else value * scale
    groups = sorted({g for g, _ in values}) if by else ["all"]

    if not series:
        ax.text(0.5, 0.5, "no data for these filters", ha="center", va="center")
    elif by in TIME_GROUPS:
        x = [_period_start(g) for g in groups]
        for name in series:
            y = [values.get((g, name), absent) for g in groups]
            # matplotlib converts dates itself; its stubs only name numbers.
            ax.plot(x, y, marker="o", linewidth=2, label=name)  # type: ignore[arg-type]  # dates are converted
        if len(x) <= 16:
            ax.set_xticks(x)  # type: ignore[arg-type]  # one tick per period, never between
        fmt = "%Y-%m" if by == "month" else "%Y-%m-%d"
        ax.xaxis.set_major_formatter(DateFormatter(fmt))  # type: ignore[no-untyped-call]  # untyped in matplotlib
        ax.tick_params(axis="x", labelrotation=30)
    elif by is None:
        for i, name in enumerate(series):
            ax.bar(i, values.get(("all", name), absent), color=f"C{i % 10}", label=name)
        ax.set_xticks(range(len(series)), series, rotation=30, ha="right")
    else:
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * width
            heights = [values.get((g, name), absent) for g in groups]
            ax.bar([j + offset for j in range(len(groups))], heights, width, label=name)
        ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0)

    ax.set_title(title(report), loc="left", fontsize=13)
    subtitle = _subtitle(report)
    if subtitle:
        ax.text(0, 1.01, subtitle, transform=ax.transAxes, fontsize=9, color="0.35", va="bottom")
        ax.set_title(title(report) + "\n", loc="left", fontsize=13)
    ax.set_xlabel(X_LABELS.get(by or "", report.series.capitalize()))
    ax.set_ylabel(Y_LABELS[report.kind])
    if report.kind == "position":
        ax.invert_yaxis()  # first place at the top
    elif report.metric in FRACTIONS or report.kind == "sentiment":
        ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(title=report.series.capitalize(), loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig
