"""The dashboard's filters: query parameters to and from `reports.Filters`.

Read from the fields of `Filters` rather than listed here, so that a filter the
reports gain (a topic, a tag, a country) is a query parameter and a form field
of the dashboard without a change in this package. Every multi-valued field is
a repeated parameter named after the field (`brands=Acme&brands=Globex`); one
value may also hold several, one per line (the form's text areas).

`since`/`until` are read by the CLI's own parser, so a bare date means the same
on the page as on the command line (an `until` date includes that whole day).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import click
from starlette.datastructures import QueryParams

from worker.analytics.cli import Timestamp
from worker.analytics.reports import GROUPS, KINDS, TIME_GROUPS, UNKNOWN, Filters

TIME_FIELDS = ("since", "until")


class BadFilter(ValueError):
    """A query parameter the reports cannot take; the message names it."""


def list_fields() -> list[str]:
    """The multi-valued filters (brands, vendors, providers, models, ...)."""
    return [
        f.name
        for f in dataclasses.fields(Filters)
        if f.name not in TIME_FIELDS and isinstance(f.default, tuple)
    ]


def _values(raw: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in raw:
        out.extend(line.rstrip("\r") for line in value.split("\n"))
    # Exact names, as `--brand` takes them; only empty lines are dropped.
    return tuple(dict.fromkeys(v for v in out if v))


def parse_filters(params: QueryParams) -> Filters:
    values: dict[str, Any] = {}
    for name, end_of_day in (("since", False), ("until", True)):
        raw = params.get(name, "").strip()
        if raw:
            try:
                values[name] = Timestamp(end_of_day=end_of_day).convert(raw, None, None)
            except click.BadParameter as exc:
                raise BadFilter(f"{name}: {exc.message}") from None
    for name in list_fields():
        values[name] = _values(params.getlist(name))
    return Filters(**values)


def parse_by(params: QueryParams) -> str | None:
    by = params.get("by") or None
    if by is not None and by not in GROUPS:
        raise BadFilter(f"by: expected one of {', '.join(GROUPS)}")
    return by


def parse_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadFilter(f"report: expected one of {', '.join(KINDS)}")
    return kind


def _timestamp(value: datetime) -> str:
    """The shortest text the parser reads back as `value`."""
    if value.hour == value.minute == value.second == value.microsecond == 0:
        return value.date().isoformat()
    return value.isoformat()


def query_items(filters: Filters, by: str | None = None) -> list[tuple[str, str]]:
    """`filters` (and the grouping) as query parameters, in a stable order."""
    items: list[tuple[str, str]] = []
    if filters.since is not None:
        items.append(("since", _timestamp(filters.since)))
    if filters.until is not None:
        # A midnight upper bound is exclusive: the day before, which the parser
        # reads as "that whole day", is the same bound.
        until = filters.until
        if until == datetime.combine(until.date(), datetime.min.time(), until.tzinfo):
            items.append(("until", (until.date() - timedelta(days=1)).isoformat()))
        else:
            items.append(("until", until.isoformat()))
    for name in list_fields():
        items.extend((name, v) for v in getattr(filters, name))
    if by:
        items.append(("by", by))
    return items


def form_values(filters: Filters) -> Mapping[str, str]:
    """The form fields' current text: dates as the date input wants them, lists
    one value per line."""
    out = {name: "\n".join(getattr(filters, name)) for name in list_fields()}
    for name, value in query_items(filters):
        if name in TIME_FIELDS:
            out[name] = value
    return out


def _period(by: str, label: str) -> tuple[datetime, datetime] | None:
    """The [start, end) of a report's period label (a day, an ISO week, a month)."""
    try:
        if by == "month":
            start = date.fromisoformat(f"{label}-01")
            end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            start = date.fromisoformat(label)
            end = start + timedelta(days=7 if by == "week" else 1)
    except ValueError:
        return None
    since = Timestamp().convert(start.isoformat(), None, None)
    until = Timestamp().convert(end.isoformat(), None, None)
    return since, until


def within_group(filters: Filters, by: str | None, group: str | None) -> Filters:
    """`filters` narrowed to one group of a report (a row's day, provider, ...),
    so that the answers behind the row are the answers it counted.

    A group the data leaves unknown cannot be selected by the filters: it is
    left out, and the drill-down then shows every group's answers.
    """
    if by is None or group is None or group == UNKNOWN:
        return filters
    if by in TIME_GROUPS:
        period = _period(by, group)
        if period is None:
            return filters
        since, until = period
        return dataclasses.replace(
            filters,
            since=max(since, filters.since) if filters.since else since,
            until=min(until, filters.until) if filters.until else until,
        )
    # provider -> providers, and likewise any dimension with a matching filter.
    field = f"{by}s"
    if field in list_fields():
        narrowed: dict[str, Any] = {field: (group,)}
        return dataclasses.replace(filters, **narrowed)
    return filters
