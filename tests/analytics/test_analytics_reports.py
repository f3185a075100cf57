"""Every report on the hand-built archive (conftest.py), with the arithmetic by hand.

The archive, as the views see it (one row per brand and answer):

    answer                    day (UTC)   week   mentions (rank, label/score)
    ask_a1 openai             11-02       11-02  Acme (1, mixed 75), Globex (2, negative 0)
    ask_a1 anthropic          11-02       11-02  Globex (1, positive 100)
    ask_a2 openai             11-03       11-02  Acme (3, none), Initech (1, neutral 50)
    L1 openai (gpt-4o)        11-03       11-02  Acme (positive 80), Globex (negative 30),
                                                 Initech (none)
    ask_a3 perplexity         11-09       11-09  -
    ask_a5 google             11-10       11-09  Initech (1, positive 100)
    L2 anthropic              11-10       11-09  -
    L4 microsoft (copilot)    11-11       11-09  Acme (neutral 50)

8 answers, 10 mentions: Acme 4, Globex 3, Initech 3.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.analytics.conftest import at
from tests.resources import read_session
from worker.analytics.reports import Filters, Report, run_report


def report(kind: str, by: str | None = None, **filters: Any) -> Report:
    with read_session() as session:
        return run_report(session, kind, Filters(**filters), by, top_urls=1)


def keyed(result: Report, *columns: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Rows by (group, series), so that ties may come in any order."""
    key = [c for c in (result.by, result.series) if c]
    out = {tuple(row[c] for c in key): tuple(row[c] for c in columns) for row in result.rows}
    assert len(out) == len(result.rows)
    return out


def test_share_of_voice(archive: str) -> None:
    result = report("share-of-voice")
    # Acme counts once for ask_a1/openai although listed twice there.
    assert keyed(result, "mentions", "total_mentions", "share") == {
        ("Acme",): (4, 10, pytest.approx(4 / 10)),
        ("Globex",): (3, 10, pytest.approx(3 / 10)),
        ("Initech",): (3, 10, pytest.approx(3 / 10)),
    }
    assert result.rows[0]["brand"] == "Acme"  # largest share first
    assert result.period == (at("2026-11-02T10:00:00Z"), at("2026-11-11T09:00:00Z"))


def test_share_of_voice_by_vendor(archive: str) -> None:
    assert keyed(report("share-of-voice", "vendor"), "mentions", "share") == {
        # MentionsAPI: Acme a1o a2o, Globex a1o a1a, Initech a2o a5g: 2 of 6 each
        ("mentionsapi", "Acme"): (2, pytest.approx(2 / 6)),
        ("mentionsapi", "Globex"): (2, pytest.approx(2 / 6)),
        ("mentionsapi", "Initech"): (2, pytest.approx(2 / 6)),
        # MentionLab: Acme L1 L4, Globex L1, Initech L1: of 4
        ("mentionlab", "Acme"): (2, pytest.approx(2 / 4)),
        ("mentionlab", "Globex"): (1, pytest.approx(1 / 4)),
        ("mentionlab", "Initech"): (1, pytest.approx(1 / 4)),
    }


def test_share_of_voice_by_week_with_brands(archive: str) -> None:
    result = report("share-of-voice", "week", brands=("Globex", "Acme", "Globex"))
    # Week of 11-02: 8 mentions, Acme 3 (a1o a2o L1), Globex 3 (a1o a1a L1).
    # Week of 11-09: 2 mentions (a5g Initech, L4 Acme); Globex none: 0, not absent.
    # The denominator is every brand's mentions, not only the brands asked for.
    assert keyed(result, "mentions", "total_mentions", "share") == {
        ("2026-11-02", "Acme"): (3, 8, pytest.approx(3 / 8)),
        ("2026-11-02", "Globex"): (3, 8, pytest.approx(3 / 8)),
        ("2026-11-09", "Acme"): (1, 2, pytest.approx(1 / 2)),
        ("2026-11-09", "Globex"): (0, 2, 0.0),
    }
    assert [r["week"] for r in result.rows] == ["2026-11-02"] * 2 + ["2026-11-09"] * 2


def test_visibility(archive: str) -> None:
    assert keyed(report("visibility"), "answers_mentioning", "answers", "visibility") == {
        # 8 answers, including the two that mention nothing (ask_a3, L2)
        ("Acme",): (4, 8, pytest.approx(4 / 8)),
        ("Globex",): (3, 8, pytest.approx(3 / 8)),
        ("Initech",): (3, 8, pytest.approx(3 / 8)),
    }


def test_visibility_by_provider(archive: str) -> None:
    # openai: a1o, a2o, L1 (3 answers); anthropic: a1a, L2 (2); perplexity: a3;
    # google: a5; microsoft: L4 (1 each).
    assert keyed(report("visibility", "provider"), "answers_mentioning", "answers") == {
        ("openai", "Acme"): (3, 3),
        ("openai", "Globex"): (2, 3),
        ("openai", "Initech"): (2, 3),
        ("anthropic", "Globex"): (1, 2),
        ("google", "Initech"): (1, 1),
        ("microsoft", "Acme"): (1, 1),
    }


def test_visibility_filters(archive: str) -> None:
    result = report("visibility", providers=("OpenAI",), brands=("Globex", "Nobody"))
    assert keyed(result, "answers_mentioning", "answers", "visibility") == {
        ("Globex",): (2, 3, pytest.approx(2 / 3)),
        ("Nobody",): (0, 3, 0.0),
    }
    # --until as a bare date includes that day: 11-09 and 11-10 hold
    # ask_a3 (11-09 12:00), ask_a5 (11-10 12:00) and L2 (11-10 09:00); L4 is on the 11th.
    result = report(
        "visibility", since=at("2026-11-09T00:00:00Z"), until=at("2026-11-11T00:00:00Z")
    )
    assert keyed(result, "answers_mentioning", "answers") == {("Initech",): (1, 3)}
    assert result.period == (at("2026-11-09T00:00:00Z"), at("2026-11-10T23:59:59.999999Z"))
    result = report("visibility", vendors=("mentionlab",), models=("gpt-4o",))
    assert keyed(result, "answers_mentioning", "answers") == {
        ("Acme",): (1, 1),
        ("Globex",): (1, 1),
        ("Initech",): (1, 1),
    }


def test_visibility_by_day_in_utc(archive: str) -> None:
    result = report("visibility", "day", brands=("Acme",))
    # L1 was initiated at 23:30 on the 2nd at UTC-2: the 3rd in UTC.
    # 11-02: a1o a1a (Acme in a1o); 11-03: a2o L1 (both); 11-09: a3; 11-10: a5 L2; 11-11: L4.
    assert keyed(result, "answers_mentioning", "answers") == {
        ("2026-11-02", "Acme"): (1, 2),
        ("2026-11-03", "Acme"): (2, 2),
        ("2026-11-09", "Acme"): (0, 1),
        ("2026-11-10", "Acme"): (0, 2),
        ("2026-11-11", "Acme"): (1, 1),
    }


def test_visibility_by_month(archive: str) -> None:
    result = report("visibility", "month", brands=("Initech",))
    assert keyed(result, "answers_mentioning", "answers") == {("2026-11", "Initech"): (3, 8)}


def test_position(archive: str) -> None:
    result = report("position")
    # Ranks are MentionsAPI's only, made 1-based: Acme 1 (a1o) and 3 (a2o);
    # Globex 2 (a1o) and 1 (a1a); Initech 1 (a2o) and 1 (a5g).
    assert keyed(result, "ranked_mentions", "avg_position", "best_position") == {
        ("Acme",): (2, pytest.approx((1 + 3) / 2), 1),
        ("Globex",): (2, pytest.approx((2 + 1) / 2), 1),
        ("Initech",): (2, pytest.approx((1 + 1) / 2), 1),
    }
    assert [r["brand"] for r in result.rows] == ["Initech", "Globex", "Acme"]  # best first
    assert report("position", vendors=("mentionlab",)).rows == []


def test_sentiment(archive: str) -> None:
    result = report("sentiment")
    columns = ("mentions", "scored", "avg_score", "positive", "neutral", "negative")
    assert keyed(result, *columns, "other", "unlabelled") == {
        # a1o mixed 75, a2o none, L1 positive 80, L4 neutral 50
        ("Acme",): (4, 3, pytest.approx((75 + 80 + 50) / 3), 1, 1, 0, 1, 1),
        # a1o negative 0, a1a positive 100, L1 negative 30
        ("Globex",): (3, 3, pytest.approx((0 + 100 + 30) / 3), 1, 0, 2, 0, 0),
        # a2o neutral 50, a5g positive 100, L1 none
        ("Initech",): (3, 2, pytest.approx((50 + 100) / 2), 1, 1, 0, 0, 1),
    }


def test_sentiment_by_vendor_for_one_brand(archive: str) -> None:
    result = report("sentiment", "vendor", brands=("Acme",))
    assert keyed(result, "mentions", "scored", "avg_score") == {
        ("mentionsapi", "Acme"): (2, 1, pytest.approx(75.0)),
        ("mentionlab", "Acme"): (2, 2, pytest.approx((80 + 50) / 2)),
    }


def test_citations(archive: str) -> None:
    result = report("citations")
    # example.com: a b (a1o), c (a2o), b (a3), d e (L1) = 6, whatever the case
    # or www.; other.org: p (a3), f (L1), g (L4) = 3; news.site: x (a1a) = 1.
    assert keyed(result, "citations", "total_citations", "share") == {
        ("example.com",): (6, 10, pytest.approx(6 / 10)),
        ("other.org",): (3, 10, pytest.approx(3 / 10)),
        ("news.site",): (1, 10, pytest.approx(1 / 10)),
    }
    # Top URL per domain (--top-urls 1): example.com/b was cited by a1o and a3.
    assert [r["top_urls"] for r in result.rows] == [
        [{"url": "https://example.com/b", "citations": 2}],
        [{"url": "https://other.org/f", "citations": 1}],
        [{"url": "https://news.site/x", "citations": 1}],
    ]
    assert [r["domain"] for r in result.rows] == ["example.com", "other.org", "news.site"]


def test_citations_of_answers_mentioning_a_brand(archive: str) -> None:
    # Globex is in a1o, a1a and L1: citations a b x d e f.
    result = report("citations", "vendor", brands=("Globex",))
    assert keyed(result, "citations", "total_citations") == {
        ("mentionsapi", "example.com"): (2, 3),
        ("mentionsapi", "news.site"): (1, 3),
        ("mentionlab", "example.com"): (2, 3),
        ("mentionlab", "other.org"): (1, 3),
    }
    with read_session() as session:
        top = run_report(session, "citations", Filters(), None, top=1)
    assert [(r["domain"], r["share"]) for r in top.rows] == [("example.com", 6 / 10)]


@pytest.mark.parametrize(
    "kind", ["share-of-voice", "visibility", "position", "sentiment", "citations"]
)
def test_empty_archive(backend: str, kind: str) -> None:
    result = report(kind, "week")
    assert result.rows == []
    assert result.period == (None, None)
