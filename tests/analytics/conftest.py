"""A small hand-built archive of both vendors, on Postgres and on SQLite.

Every expected number in the analytics tests is worked out by hand from the
payloads below; the comments there say what each answer is for. Answers go in
through the worker's own path: the normalizers, then `upsert_answers`, with the
ids registered as `mentionsync track` registers them.

Weeks (ISO, Monday first) of November 2026: the 2nd and the 9th.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models import Vendor
from tests.resources import session_scope
from worker.config import load_settings
from worker.migrate import upgrade
from worker.registry import label_arguments, register
from worker.store import upsert_answers
from worker.vendors.mentionlab.normalize import normalize_execution
from worker.vendors.mentionsapi.normalize import normalize_ask

FETCHED = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
PROJECT = "proj-1"


def _ask(
    ask_id: str,
    providers: list[tuple[str, str, list[dict[str, Any]]]],
    mentions: list[dict[str, Any]],
    citations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": ask_id,
        "status": "succeeded",
        "providers": [
            {"provider": p, "model": m, "content": "...", "citations": c} for p, m, c in providers
        ],
        "brand_mentions": mentions,
        # The vendor's top-level list is the union of the providers' lists.
        "citations": citations
        if citations is not None
        else [c for _, _, cs in providers for c in cs],
    }


def _mention(brand: str, provider: str | None, rank: int, sentiment: str | None) -> dict[str, Any]:
    m: dict[str, Any] = {"brand": brand, "rank": rank, "context": f"{brand} at {rank}"}
    if provider is not None:
        m["provider"] = provider
    if sentiment is not None:
        m["sentiment"] = sentiment
    return m


# --- MentionsAPI --------------------------------------------------------------------

# Registered with --created-at 2026-11-02T10:00Z. Two providers; Acme twice in
# openai's answer (ranks 0 and 3, positive then neutral).
A1 = _ask(
    "ask_a1",
    [
        (
            "openai",
            "gpt-4o-2024-11-20",
            [
                {"url": "https://www.Example.com/a", "domain": "www.Example.com", "title": "A"},
                {"url": "https://example.com/b", "domain": "example.com", "title": "B"},
            ],
        ),
        (
            "anthropic",
            "claude-sonnet-4-20250514",
            [{"url": "https://news.site/x", "domain": "News.Site", "title": "X"}],
        ),
    ],
    [
        _mention("Acme", "openai", 0, "positive"),
        _mention("Globex", "openai", 1, "negative"),
        _mention("Acme", "openai", 3, "neutral"),
        _mention("Globex", "anthropic", 0, "positive"),
    ],
)
# What ask_a1 cost: exact decimals, for the export round-trip.
A1["usage"] = {"billable_units": 2, "cost_cents": 12.345678, "cost_breakdown": {"openai": 7.5}}
# Registered without --created-at at 2026-11-03T08:00Z. One provider; a mention
# without sentiment, a mention without provider, and only top-level citations.
A2 = _ask(
    "ask_a2",
    [("openai", "gpt-4o-mini-2024-07-18", [])],
    [_mention("Acme", "openai", 2, None), _mention("Initech", None, 0, "neutral")],
    citations=[{"url": "https://EXAMPLE.COM/c", "domain": "EXAMPLE.COM", "title": "C"}],
)
# --created-at 2026-11-09T12:00Z. No brand mentioned at all.
A3 = _ask(
    "ask_a3",
    [
        (
            "perplexity",
            "sonar",
            [
                {"url": "https://example.com/b", "domain": "www.example.com", "title": "B"},
                {"url": "https://other.org/p", "domain": "other.org", "title": "P"},
            ],
        )
    ],
    [],
)
# --created-at 2026-11-09T12:00Z, but the vendor's job failed: no answer.
A4 = {"id": "ask_a4", "status": "failed", "error": {"code": "provider_error", "message": "x"}}
# Never registered (archived by an older version): answered_at is its fetch time,
# 2026-11-10T12:00Z. The label arrives capitalized.
A5 = _ask(
    "ask_a5", [("google", "gemini-2.5-pro", [])], [_mention("Initech", "google", 0, "Positive")]
)
A5_FETCHED = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)

# --- MentionLab ---------------------------------------------------------------------

L1_ID = "11111111-1111-4111-8111-111111111111"
L2_ID = "22222222-2222-4222-8222-222222222222"
L3_ID = "33333333-3333-4333-8333-333333333333"
L4_ID = "44444444-4444-4444-8444-444444444444"


def _run(
    run_id: str,
    status: str,
    model: str,
    entities: list[dict[str, Any]],
    sources: list[dict[str, Any]],
    initiated_at: str | None = None,
    created_at: str = "2026-11-11T09:00:00.000Z",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobExecutionId": run_id,
        "createdAt": created_at,
        "model": model,
        "status": status,
        "executionNumber": 1,
        "hasSources": bool(sources),
        "hasShopping": False,
        "sources": sources,
        "entities": entities,
    }
    if initiated_at is not None:
        body["initiatedAt"] = initiated_at
    return body


def _entity(name: str, primary: bool, score: float | None) -> dict[str, Any]:
    e: dict[str, Any] = {"displayKey": f"key-{name}", "displayName": name, "isPrimary": primary}
    if score is not None:
        e["sentimentScore"] = score
    return e


# Initiated 2026-11-02T23:30-02:00, which is 2026-11-03T01:30Z: the 3rd in UTC.
L1 = _run(
    L1_ID,
    "success",
    "gpt-4o",
    [_entity("Acme", True, 80.0), _entity("Globex", False, 30.0), _entity("Initech", False, None)],
    [
        {"domain": "www.example.com", "url": "https://www.example.com/d"},
        {"domain": "Example.com", "url": "https://example.com/e"},
        {"domain": "other.org", "url": "https://other.org/f"},
    ],
    initiated_at="2026-11-02T23:30:00.000-02:00",
)
# 2026-11-10T09:00Z: an answer that mentions nothing and cites nothing.
L2 = _run(L2_ID, "success", "claude-3-5-sonnet", [], [], "2026-11-10T09:00:00.000Z")
# A failed run: no answer.
L3 = _run(L3_ID, "failed", "gpt-4o", [], [], "2026-11-10T10:00:00.000Z")
# No initiatedAt: answered_at falls back to createdAt, 2026-11-11T09:00Z. Its
# only source has no domain: the URL's host is used.
L4 = _run(
    L4_ID, "success", "copilot", [_entity("Acme", True, 50.0)], [{"url": "https://www.Other.org/g"}]
)


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, configure: Callable[..., None]) -> str:
    """Run the test on the suite's Postgres database, then on a fresh SQLite file."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'analytics.db'}"
        upgrade("head", database_url=url)
        configure(DATABASE_URL=url)
    return request.param


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def load_archive() -> None:
    settings = load_settings()

    def track(ids: list[str], **kwargs: Any) -> None:
        with session_scope() as session:
            register(session, Vendor.MENTIONSAPI, label_arguments(ids), settings=settings, **kwargs)

    track(["ask_a1"], created_at=at("2026-11-02T10:00:00Z"), now=FETCHED)
    track(["ask_a2"], now=at("2026-11-03T08:00:00Z"))
    track(["ask_a3", "ask_a4"], created_at=at("2026-11-09T12:00:00Z"), now=FETCHED)
    with session_scope() as session:
        register(
            session,
            Vendor.MENTIONLAB,
            label_arguments([L1_ID, L2_ID, L3_ID, L4_ID]),
            settings=settings,
            project_id=PROJECT,
            now=FETCHED,
        )
    answers = [
        normalize_ask(A1, ask_id="ask_a1", fetched_at=FETCHED),
        normalize_ask(A2, ask_id="ask_a2", fetched_at=FETCHED),
        normalize_ask(A3, ask_id="ask_a3", fetched_at=FETCHED),
        normalize_ask(A4, ask_id="ask_a4", fetched_at=FETCHED),
        normalize_ask(A5, ask_id="ask_a5", fetched_at=A5_FETCHED),
        *(
            normalize_execution(body, job_execution_id=i, project_id=PROJECT, fetched_at=FETCHED)
            for i, body in ((L1_ID, L1), (L2_ID, L2), (L3_ID, L3), (L4_ID, L4))
        ),
    ]
    with session_scope() as session:
        upsert_answers(session, answers)


@pytest.fixture
def archive(backend: str) -> str:
    load_archive()
    return backend
