"""The dashboard's query parameters mean what `mentionsync report`'s options mean."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.datastructures import QueryParams

from worker.analytics.reports import UNKNOWN, Filters
from worker.dashboard.filters import (
    BadFilter,
    list_fields,
    parse_by,
    parse_filters,
    query_items,
    within_group,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_every_list_filter_of_the_reports_is_a_parameter() -> None:
    # Read from Filters: a filter the reports gain needs no change here.
    assert {"brands", "vendors", "providers", "models"} <= set(list_fields())


def test_dates_read_as_the_cli_reads_them() -> None:
    filters = parse_filters(QueryParams("since=2026-11-02&until=2026-11-09"))
    assert filters.since == at("2026-11-02T00:00:00")
    # A bare date as the upper bound includes that whole day, as --until does.
    assert filters.until == at("2026-11-10T00:00:00")
    with pytest.raises(BadFilter, match="since"):
        parse_filters(QueryParams("since=last+week"))
    with pytest.raises(BadFilter, match="by"):
        parse_by(QueryParams("by=colour"))


def test_lists_take_repeated_parameters_and_lines_exactly() -> None:
    filters = parse_filters(
        QueryParams([("brands", "Acme\r\n Globex \n\nAcme"), ("brands", "=1+1"), ("vendors", "")])
    )
    assert filters.brands == ("Acme", " Globex ", "=1+1")
    assert filters.vendors == ()


@pytest.mark.parametrize(
    "filters",
    [
        Filters(),
        Filters(since=at("2026-11-02T00:00:00"), until=at("2026-11-10T00:00:00")),
        Filters(since=at("2026-11-02T10:30:00"), until=at("2026-11-03T07:00:00")),
        Filters(brands=("Acme", "a&b=c"), vendors=("mentionlab",), providers=("openai",)),
    ],
)
def test_filters_round_trip_through_the_query(filters: Filters) -> None:
    params = QueryParams(query_items(filters, "day"))
    assert parse_filters(params) == filters
    assert parse_by(params) == "day"


def test_a_rows_group_narrows_the_drill_down_to_it() -> None:
    base = Filters(since=at("2026-11-01T00:00:00"), vendors=("mentionsapi",))
    day = within_group(base, "day", "2026-11-03")
    assert (day.since, day.until) == (at("2026-11-03T00:00:00"), at("2026-11-04T00:00:00"))
    week = within_group(base, "week", "2026-10-26")  # starts before the filter
    assert (week.since, week.until) == (at("2026-11-01T00:00:00"), at("2026-11-02T00:00:00"))
    month = within_group(base, "month", "2026-12")
    assert (month.since, month.until) == (at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00"))
    assert within_group(base, "provider", "openai").providers == ("openai",)
    assert within_group(base, "vendor", "mentionlab").vendors == ("mentionlab",)
    assert within_group(base, "model", UNKNOWN) == base
    assert within_group(base, None, None) == base
