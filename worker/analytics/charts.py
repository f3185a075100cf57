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
    "domain-categories": "Share of citations (%)",
    "compare": "{} (%), 95% interval",
    "change": "Change in {} (percentage points), 95% interval",
}
RATE_LABELS = {
    "visibility": "Visibility",
    "share-of-voice": "Share of voice",
    "sentiment": "Positive share of labelled mentions",
}
X_LABELS = {
    "day": "Day (UTC)",
    "week": "Week starting (UTC)",
    "month": "Month (UTC)",
    "provider": "Provider",
    "model": "Model",
    "vendor": "Vendor",
    "topic": "Topic",
    "tag": "Tag",
    "prompt": "Prompt",
    "country": "Country",
    "persona": "Persona",
    "group": "Competitor group",
}
# The own brand's colour in --own-vs-competitors charts; everyone else is grey.
OWN_COLOUR, OTHERS_COLOUR = "#d62728", "0.6"
# matplotlib's cycle without its red and grey, which mean own and everyone else.
COMPETITOR_COLOURS = tuple(f"C{i}" for i in (0, 1, 2, 4, 5, 6, 8, 9))
# A brand absent from a group has 0% of its mentions and answers; for the other
# metrics an absent value is unknown, and the line has a gap.
ZERO_WHEN_ABSENT = frozenset({"share-of-voice", "visibility", "domain-categories"})


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
            ("topic", f.topics),
            ("tag", f.tags),
            ("prompt", f.prompts),
            ("country", f.countries),
            ("persona", f.personas),
            ("group", f.groups),
            ("label", tuple(f"{k}={v}" for k, v in f.labels)),
            ("answers that mention", f.brands if report.series in ("domain", "category") else ()),
        )
        if values
    ]
    if f.own_vs_competitors:
        parts.append("own brand vs competitors")
    if f.min_answers:
        parts.append(f"groups of at least {f.min_answers} answers")
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


def _colours(report: Report, series: list[str]) -> dict[str, str]:
    """Own brand red, everyone else grey, competitors the usual cycle."""
    roles = {row[report.series]: row.get("role") for row in report.rows}
    colours, i = {}, 0
    for name in series:
        if roles.get(name) == "own":
            colours[name] = OWN_COLOUR
        elif roles.get(name) == "others":
            colours[name] = OTHERS_COLOUR
        else:
            colours[name] = COMPETITOR_COLOURS[i % len(COMPETITOR_COLOURS)]
            i += 1
    return colours


def _error(value: float, low: float, high: float) -> list[float]:
    """matplotlib's yerr: distances below and above the value, never negative."""
    if math.isnan(value) or math.isnan(low) or math.isnan(high):
        return [0.0, 0.0]
    return [max(0.0, value - low), max(0.0, high - value)]


def _scaled(value: Any, scale: float) -> float:
    return math.nan if value is None else float(value) * scale


@rc_context(_PLAIN_TEXT)
def chart_svg(report: Report) -> bytes:
    """The same chart as SVG, for the dashboard (worker/dashboard)."""
    out = io.BytesIO()
    draw_chart(report).savefig(out, format="svg")
    return out.getvalue()


@rc_context(_PLAIN_TEXT)
def draw_chart(report: Report) -> Figure:
    """Lines over time for day/week/month, bars otherwise; labelled axes, legend,
    and the period in the title. Rates show their 95% interval: error bars on
    bars, a band around lines."""
    fig = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if report.kind in ("compare", "change"):
        _draw_paired(ax, report)
        _decorate(ax, report, ["x"])
        return fig
    series = chart_series(report)
    colours = _colours(report, series)
    scale = 100.0 if report.metric in FRACTIONS else 1.0
    absent = 0.0 if report.kind in ZERO_WHEN_ABSENT else math.nan
    by = report.by
    values: dict[tuple[str, str], float] = {}
    bounds: dict[tuple[str, str], tuple[float, float]] = {}
    for row in report.rows:
        key = (row[by] if by else "all", row[report.series])
        values[key] = _scaled(row[report.metric], scale)
        if "ci_low" in row:
            bounds[key] = (_scaled(row["ci_low"], scale), _scaled(row["ci_high"], scale))
    groups = sorted({g for g, _ in values}) if by else ["all"]

    def error(keys: list[tuple[str, str]]) -> list[list[float]] | None:
        if not bounds:
            return None
        pairs = [_error(values.get(k, absent), *bounds.get(k, (math.nan, math.nan))) for k in keys]
        return [[p[0] for p in pairs], [p[1] for p in pairs]]

    if not series:
        ax.text(0.5, 0.5, "no data for these filters", ha="center", va="center")
    elif by in TIME_GROUPS:
        x = [_period_start(g) for g in groups]
        for name in series:
            y = [values.get((g, name), absent) for g in groups]
            # matplotlib converts dates itself; its stubs only name numbers.
            ax.plot(x, y, marker="o", linewidth=2, label=name, color=colours[name])  # type: ignore[arg-type]  # dates are converted
            if bounds:
                low = [bounds.get((g, name), (math.nan, math.nan))[0] for g in groups]
                high = [bounds.get((g, name), (math.nan, math.nan))[1] for g in groups]
                ax.fill_between(x, low, high, color=colours[name], alpha=0.12, linewidth=0)  # type: ignore[arg-type]  # dates are converted
        if len(x) <= 16:
            ax.set_xticks(x)  # type: ignore[arg-type]  # one tick per period, never between
        fmt = "%Y-%m" if by == "month" else "%Y-%m-%d"
        ax.xaxis.set_major_formatter(DateFormatter(fmt))  # type: ignore[no-untyped-call]  # untyped in matplotlib
        ax.tick_params(axis="x", labelrotation=30)
    elif by is None:
        for i, name in enumerate(series):
            ax.bar(
                i,
                values.get(("all", name), absent),
                color=colours[name],
                label=name,
                yerr=error([("all", name)]),
                capsize=4,
            )
        ax.set_xticks(range(len(series)), series, rotation=30, ha="right")
    else:
        width = 0.8 / len(series)
        for i, name in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * width
            keys = [(g, name) for g in groups]
            heights = [values.get(k, absent) for k in keys]
            ax.bar(
                [j + offset for j in range(len(groups))],
                heights,
                width,
                label=name,
                color=colours[name],
                yerr=error(keys),
                capsize=3,
            )
        ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0)
    _decorate(ax, report, series)
    return fig


def _draw_paired(ax: Any, report: Report) -> None:
    """compare: bars per vendor for each brand; change: one bar per brand,
    coloured by whether the change exceeds its uncertainty."""
    by = report.by
    weight: dict[tuple[str, str], int] = {}
    for row in report.rows:
        key = (row[by] if by else "", row["brand"])
        weight[key] = weight.get(key, 0) + (row["numerator"] or 0)
    keys = sorted(weight, key=lambda k: (-weight[k], k))[: MAX_SERIES * 2]
    labels = [f"{g} / {b}" if by else b for g, b in keys]
    if not keys:
        ax.text(0.5, 0.5, "no data for these filters", ha="center", va="center")
        return
    rows = {((r[by] if by else ""), r["brand"], r.get("vendor")): r for r in report.rows}
    if report.kind == "compare":
        vendors = sorted({r["vendor"] for r in report.rows})
        width = 0.8 / len(vendors)
        for i, vendor in enumerate(vendors):
            picked = [rows.get((g, b, vendor), {}) for g, b in keys]
            y = [_scaled(r.get(report.metric), 100.0) for r in picked]
            err = [
                _error(v, _scaled(r.get("ci_low"), 100.0), _scaled(r.get("ci_high"), 100.0))
                for v, r in zip(y, picked, strict=True)
            ]
            offset = (i - (len(vendors) - 1) / 2) * width
            ax.bar(
                [j + offset for j in range(len(keys))],
                y,
                width,
                label=vendor,
                yerr=[[e[0] for e in err], [e[1] for e in err]],
                capsize=3,
            )
        ax.legend(title="Vendor", loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.set_ylim(bottom=0)
    else:
        picked = [rows.get((g, b, None), {}) for g, b in keys]
        y = [_scaled(r.get("change"), 100.0) for r in picked]
        err = [
            _error(
                v, _scaled(r.get("change_ci_low"), 100.0), _scaled(r.get("change_ci_high"), 100.0)
            )
            for v, r in zip(y, picked, strict=True)
        ]
        colours = {"up": "#2ca02c", "down": "#d62728"}
        ax.bar(
            range(len(keys)),
            y,
            color=[colours.get(r.get("verdict", ""), "0.6") for r in picked],
            yerr=[[e[0] for e in err], [e[1] for e in err]],
            capsize=4,
        )
        ax.axhline(0, color="0.3", linewidth=1)
        ax.text(
            1.01,
            1,
            "green: up, red: down,\ngrey: within uncertainty",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
        )
    ax.set_xticks(range(len(keys)), labels, rotation=30, ha="right")


def _decorate(ax: Any, report: Report, series: list[str]) -> None:
    """Title, subtitle, axis labels, limits and legend."""
    ax.set_title(title(report), loc="left", fontsize=13)
    subtitle = _subtitle(report)
    if subtitle:
        ax.text(0, 1.01, subtitle, transform=ax.transAxes, fontsize=9, color="0.35", va="bottom")
        ax.set_title(title(report) + "\n", loc="left", fontsize=13)
    by = report.by
    paired = report.kind in ("compare", "change")
    default_x = "Brand" if paired else report.series.capitalize()
    x_label = X_LABELS.get(by or "", default_x)
    if by and by.startswith("label:"):
        x_label = f"Label {by.partition(':')[2]}"
    ax.set_xlabel(x_label + (" / brand" if paired and by else ""))
    y_label = Y_LABELS[report.kind]
    rate_label = RATE_LABELS.get(report.rate or "", "")
    rate_label = rate_label if report.kind == "compare" else rate_label.lower()
    ax.set_ylabel(y_label.format(rate_label) if paired else y_label)
    if report.kind == "position":
        ax.invert_yaxis()  # first place at the top
    elif not paired and (report.metric in FRACTIONS or report.kind == "sentiment"):
        ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    if series and not paired:
        ax.legend(title=report.series.capitalize(), loc="upper left", bbox_to_anchor=(1.01, 1))
