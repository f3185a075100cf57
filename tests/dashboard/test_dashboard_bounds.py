"""A report page stays bounded with thousands of brands: the most mentioned ones,
with the same figures as `run_report` gives them unbounded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fixtures.bodies import ask_body
from tests.resources import read_session, session_scope
from worker.analytics.reports import Filters, run_report
from worker.dashboard import queries
from worker.store import upsert_answers
from worker.vendors.mentionsapi.normalize import normalize_ask

FETCHED = datetime(2026, 11, 20, 12, tzinfo=UTC)
# Brand n is mentioned in the first 12 - n answers: a strict ranking, Brand 0 first.
BRANDS = [f"Brand {n}" for n in range(12)]


def mention(brand: str) -> dict[str, object]:
    return {"brand": brand, "provider": "openai", "rank": 1, "sentiment": "positive"}


@pytest.fixture
def archive() -> None:
    answers = []
    for i in range(12):
        brands = [b for n, b in enumerate(BRANDS) if i < 12 - n]
        body = ask_body(f"ask_{i:02d}", brand_mentions=[mention(b) for b in brands])
        answers.append(normalize_ask(body, ask_id=body["id"], fetched_at=FETCHED))
    with session_scope() as session:
        upsert_answers(session, answers)


@pytest.mark.usefixtures("archive")
@pytest.mark.parametrize("kind", ["share-of-voice", "visibility"])
def test_a_brand_report_shows_the_most_mentioned_brands_with_unchanged_figures(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "MAX_BRANDS", 3)
    with read_session() as session:
        full = run_report(session, kind, Filters(), None)
        shown = queries.report(session, kind, Filters(), None)
    assert {r["brand"] for r in full.rows} >= set(BRANDS)
    assert [r["brand"] for r in shown.rows] == BRANDS[:3]
    # Shares keep their denominators: each shown row is the unbounded one.
    by_brand = {r["brand"]: r for r in full.rows}
    for row in shown.rows:
        assert row == by_brand[row["brand"]]
    assert any("3 most mentioned brands" in note for note in shown.notes)


@pytest.mark.usefixtures("archive")
def test_a_brand_filter_or_few_brands_are_not_narrowed(monkeypatch: pytest.MonkeyPatch) -> None:
    with read_session() as session:
        assert queries.report(session, "visibility", Filters(), None).rows == (
            run_report(session, "visibility", Filters(), None).rows
        )
        monkeypatch.setattr(queries, "MAX_BRANDS", 3)
        chosen = Filters(brands=("Brand 7",))
        assert queries.report(session, "visibility", chosen, None).rows == (
            run_report(session, "visibility", chosen, None).rows
        )
