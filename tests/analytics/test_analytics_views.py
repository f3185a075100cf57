"""The three views, row by row, on the hand-built archive (conftest.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select

from tests.analytics.conftest import (
    FETCHED,
    L1_ID,
    L2_ID,
    L4_ID,
    PROJECT,
    _ask,
    _mention,
    _run,
    at,
)
from tests.resources import session_scope, suite_db
from worker.analytics.views import VIEWS, answer_facts, citation_facts, mention_facts
from worker.store import upsert_answers
from worker.vendors.mentionlab.normalize import normalize_execution
from worker.vendors.mentionsapi.normalize import normalize_ask


def rows(table: Any, *columns: str) -> list[tuple[Any, ...]]:
    with session_scope() as session:
        result = session.execute(select(*(table.c[c] for c in columns)))
        return sorted((tuple(r) for r in result), key=repr)


def test_declared_columns_match_the_views(backend: str) -> None:
    # worker/analytics/views.py must describe what the migration created.
    inspector = inspect(suite_db().engine)
    for name, table in VIEWS.items():
        assert [c["name"] for c in inspector.get_columns(name)] == table.c.keys(), name


def test_mention_facts(archive: str) -> None:
    got = rows(
        mention_facts,
        "answer_key",
        "brand",
        "is_primary",
        "rank",
        "occurrences",
        "sentiment_label",
        "sentiment_score",
    )
    a1o, a1a = "mentionsapi/openai/ask_a1", "mentionsapi/anthropic/ask_a1"
    a2o, a5g = "mentionsapi/openai/ask_a2", "mentionsapi/google/ask_a5"
    l1, l4 = f"mentionlab/{L1_ID}", f"mentionlab/{L4_ID}"
    expected = [
        # Acme twice in one answer: one mention, best rank 0 -> position 1,
        # labels positive + neutral -> 'mixed', scores (100 + 50) / 2 = 75.
        (a1o, "Acme", None, 1, 2, "mixed", 75.0),
        (a1o, "Globex", None, 2, 1, "negative", 0.0),
        (a1a, "Globex", None, 1, 1, "positive", 100.0),
        # No sentiment: no label, no score.
        (a2o, "Acme", None, 3, 1, None, None),
        # No provider in the mention: the ask's only provider (openai).
        (a2o, "Initech", None, 1, 1, "neutral", 50.0),
        # 'Positive' is read as positive.
        (a5g, "Initech", None, 1, 1, "positive", 100.0),
        # MentionLab: no rank; labels from the score's third of the scale
        # (80 * 3 = 240 > 200: positive; 30 * 3 = 90 < 100: negative).
        (l1, "Acme", True, None, 1, "positive", 80.0),
        (l1, "Globex", False, None, 1, "negative", 30.0),
        (l1, "Initech", False, None, 1, None, None),
        (l4, "Acme", True, None, 1, "neutral", 50.0),
    ]
    assert got == sorted(expected, key=repr)


def test_answered_at_and_project(archive: str) -> None:
    got = dict(rows(answer_facts, "answer_key", "answered_at"))
    assert got == {
        # --created-at given at registration
        "mentionsapi/openai/ask_a1": at("2026-11-02T10:00:00Z"),
        "mentionsapi/anthropic/ask_a1": at("2026-11-02T10:00:00Z"),
        "mentionsapi/perplexity/ask_a3": at("2026-11-09T12:00:00Z"),
        # no --created-at: the registration time
        "mentionsapi/openai/ask_a2": at("2026-11-03T08:00:00Z"),
        # never registered: the fetch time
        "mentionsapi/google/ask_a5": at("2026-11-10T12:00:00Z"),
        # initiatedAt, in UTC
        f"mentionlab/{L1_ID}": at("2026-11-03T01:30:00Z"),
        f"mentionlab/{L2_ID}": at("2026-11-10T09:00:00Z"),
        # no initiatedAt: createdAt
        f"mentionlab/{L4_ID}": at("2026-11-11T09:00:00Z"),
    }
    projects = set(rows(answer_facts, "vendor", "project_id"))
    assert projects == {("mentionsapi", None), ("mentionlab", PROJECT)}


def test_answer_facts_counts_every_answer(archive: str) -> None:
    got = rows(answer_facts, "answer_id", "provider", "model", "brands", "citations")
    assert got == sorted(
        [
            ("ask_a1", "openai", "gpt-4o-2024-11-20", 2, 2),
            ("ask_a1", "anthropic", "claude-sonnet-4-20250514", 1, 1),
            # the top-level citation counts: openai's own list is empty
            ("ask_a2", "openai", "gpt-4o-mini-2024-07-18", 2, 1),
            # no mentions, still an answer
            ("ask_a3", "perplexity", "sonar", 0, 2),
            ("ask_a5", "google", "gemini-2.5-pro", 1, 0),
            # MentionLab: the provider inferred from the model
            (L1_ID, "openai", "gpt-4o", 3, 3),
            (L2_ID, "anthropic", "claude-3-5-sonnet", 0, 0),
            (L4_ID, "microsoft", "copilot", 1, 1),
        ],
        key=repr,
    )
    # The failed ask (ask_a4) and the failed run (L3) are not answers.


def test_citation_facts_normalize_domains(archive: str) -> None:
    got = rows(citation_facts, "answer_id", "provider", "url", "domain", "title")
    assert got == sorted(
        [
            ("ask_a1", "openai", "https://www.Example.com/a", "example.com", "A"),
            ("ask_a1", "openai", "https://example.com/b", "example.com", "B"),
            ("ask_a1", "anthropic", "https://news.site/x", "news.site", "X"),
            # only top-level citations: attributed to the ask's only provider
            ("ask_a2", "openai", "https://EXAMPLE.COM/c", "example.com", "C"),
            ("ask_a3", "perplexity", "https://example.com/b", "example.com", "B"),
            ("ask_a3", "perplexity", "https://other.org/p", "other.org", "P"),
            (L1_ID, "openai", "https://www.example.com/d", "example.com", None),
            (L1_ID, "openai", "https://example.com/e", "example.com", None),
            (L1_ID, "openai", "https://other.org/f", "other.org", None),
            # no domain field: the URL's host, lowercased, without www.
            (L4_ID, "microsoft", "https://www.Other.org/g", "other.org", None),
        ],
        key=repr,
    )


def test_blank_brand_names_are_not_brands(backend: str) -> None:
    """A MentionLab entity with a blank name counts under its key (migration
    0007); with neither, like a MentionsAPI mention with a blank brand, it is
    no mention at all."""
    entities = [
        {"displayKey": "key-acme", "displayName": "", "isPrimary": True, "sentimentScore": 90},
        {"displayKey": "", "displayName": "", "isPrimary": False},
    ]
    run = _run(L1_ID, "success", "gpt-4o", entities, [], "2026-11-03T10:00:00.000Z")
    ask = _ask("ask_b1", [("openai", "gpt-4o", [])], [_mention("", "openai", 0, "positive")])
    with session_scope() as session:
        upsert_answers(
            session,
            [
                normalize_execution(
                    run, job_execution_id=L1_ID, project_id=PROJECT, fetched_at=FETCHED
                ),
                normalize_ask(ask, ask_id="ask_b1", fetched_at=FETCHED),
            ],
        )
    assert rows(mention_facts, "answer_key", "brand", "is_primary", "sentiment_score") == [
        (f"mentionlab/{L1_ID}", "key-acme", True, 90.0)
    ]
    assert rows(answer_facts, "answer_key", "brands") == sorted(
        [(f"mentionlab/{L1_ID}", 1), ("mentionsapi/openai/ask_b1", 0)], key=repr
    )
