"""Hostile vendor bodies, end to end over loopback HTTP into real Postgres.

A scripted stub plays both vendors: every id gets hand-made bodies, served in
order (the last one repeats). `mentionsync sync --until-done` then runs for real.
Each body must end either archived exactly (rows checked field by field against
what was served) or quarantined with its raw bytes (capped) and a reason, the id
in `invalid_payload` after INVALID_PAYLOAD_ATTEMPTS unarchivable bodies in a row.
The good ids of the same batch are archived whatever their neighbours sent.
"""

from __future__ import annotations

import json
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import select, text

from models import (
    Ask,
    AskBrandMention,
    AskCitation,
    AskProviderResponse,
    JobExecution,
    JobExecutionEntity,
    JobExecutionSource,
    QuarantinedPayload,
    TrackedId,
    TrackedState,
    Vendor,
)
from tests.expected import check_ask, check_execution
from tests.fixtures.bodies import ask_body, dumps, run_body, run_id
from tests.fixtures.bodies import provider as _provider
from tests.helpers import archive_snapshot, cli
from tests.resources import session_scope, suite_db, suite_runtime
from tests.vendor_stub import Reply, VendorStub
from worker.analytics.reprocess import reprocess
from worker.config import load_settings
from worker.registry import label_arguments, register
from worker.vendors.base import Target

PROJECT = "proj-hostile-0001"
# Every string a careless pipeline mangles: emoji (astral, ZWJ sequences), quotes,
# backslashes (including the six characters `\u0000`, which are not a NUL), RTL
# text and bidi overrides, invisible characters, C0 controls other than NUL,
# line and paragraph separators, combining marks, CJK and mathematical letters.
NASTY = (
    "Emoji 🚀 👩\u200d👩\u200d👧 🇺🇦 «guillemets» “curly” \"double\" 'single' `back`"
    " back\\slash C:\\new\\table \\u0000 \\\\server\\share"
    " RTL: مرحبا بالعالم שלום עולם \u202eevil\u202c \u200fmark\u200e"
    " zero\u200bwidth BOM\ufeff LS\u2028PS\u2029 ctl\u0001\u0007\u001b\u001f\u007f"
    " e\u0301 \U0001d518\U0001d52b\U0001d526 数据库 東京クラウド Самолёт"
    " tab\tnewline\ncr\r </script> ${x} %s %n"
)


# --- the database side ----------------------------------------------------------


def track(*, asks: list[str], runs: list[str]) -> None:
    settings = load_settings()
    with session_scope() as session:
        for vendor, ids, project in (
            (Vendor.MENTIONSAPI, asks, ""),
            (Vendor.MENTIONLAB, runs, PROJECT),
        ):
            result = register(
                session, vendor, label_arguments(ids), settings=settings, project_id=project
            )
            assert not result.rejected, result.rejected
            assert result.added == len(ids)


def sync(timeout: float = 60) -> None:
    result = cli("sync", "--until-done", "--timeout", str(timeout), timeout=timeout + 30)
    assert result.returncode == 0, result.stderr[-4000:]


def tracked(vendor: Vendor, external_id: str) -> TrackedId:
    with session_scope() as session:
        row = session.scalars(
            select(TrackedId).where(
                TrackedId.vendor == vendor, TrackedId.external_id == external_id
            )
        ).one()
        session.expunge(row)
        return row


def quarantined(vendor: Vendor, external_id: str) -> list[QuarantinedPayload]:
    with session_scope() as session:
        rows = session.scalars(
            select(QuarantinedPayload)
            .where(
                QuarantinedPayload.vendor == vendor, QuarantinedPayload.external_id == external_id
            )
            .order_by(QuarantinedPayload.id)
        ).all()
        for row in rows:
            session.expunge(row)
        return list(rows)


def archived_ids() -> tuple[set[str], set[str]]:
    with session_scope() as session:
        return set(session.scalars(select(Ask.ask_id))), set(
            session.scalars(select(JobExecution.job_execution_id))
        )


# --- the cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """An id whose every body is unarchivable, and why the worker must say so."""

    vendor: Vendor
    external_id: str
    reply: Reply
    reason: str  # a fragment of the stored reason


def _html() -> Reply:
    # What a proxy or load balancer in front of the vendor sends with a 200.
    page = b"<!DOCTYPE html><html><head><title>Oops</title></head><body>"
    return Reply(page + b"<h1>502 Bad Gateway</h1></body></html>", content_type="text/html")


def _truncated(doc: dict[str, Any]) -> Reply:
    raw = dumps(doc)
    return Reply(raw[: len(raw) // 2])


def _bad_asks() -> list[Bad]:
    def wrong(ask_id: str, reason: str, **changes: Any) -> Bad:
        return Bad(Vendor.MENTIONSAPI, ask_id, Reply(dumps(ask_body(ask_id, **changes))), reason)

    good = ask_body("ask_x")
    usage_str = {**good["usage"], "latency_ms": "1240"}
    mention = good["brand_mentions"][0]
    return [
        Bad(
            Vendor.MENTIONSAPI,
            "ask_truncated",
            _truncated(ask_body("ask_truncated")),
            "malformed JSON",
        ),
        Bad(Vendor.MENTIONSAPI, "ask_html", _html(), "malformed JSON"),
        Bad(Vendor.MENTIONSAPI, "ask_empty", Reply(b""), "malformed JSON"),
        Bad(
            Vendor.MENTIONSAPI,
            "ask_array",
            Reply(dumps([ask_body("ask_array")])),
            "expected a JSON object",
        ),
        Bad(
            Vendor.MENTIONSAPI,
            "ask_bad_utf8",
            Reply(b'{"id": "ask_bad_utf8", "cache_tier": "caf\xe9 \xff\xfe"}'),
            "malformed JSON",
        ),
        Bad(
            Vendor.MENTIONSAPI,
            "ask_lone_surrogate",
            Reply(b'{"id": "ask_lone_surrogate", "cache_tier": "\\ud800 alone"}'),
            "malformed JSON",
        ),
        wrong("ask_cached_yes", "wrong type at cached", cached="yes"),
        wrong("ask_latency_str", "wrong type at usage.latency_ms", usage=usage_str),
        wrong(
            "ask_rank_overflow",
            "wrong type at brand_mentions.0.rank",
            brand_mentions=[{**mention, "rank": 2**31}],
        ),
        wrong(
            "ask_rank_bool",
            "wrong type at brand_mentions.0.rank",
            brand_mentions=[{**mention, "rank": True}],
        ),
        wrong("ask_providers_obj", "wrong type at providers", providers={"openai": {}}),
        wrong("ask_status_num", "wrong type at status", status=1),
        wrong("ask_status_unknown", "wrong type at status", status="done"),
        wrong("ask_other_id", "not the requested 'ask_other_id'", id="ask_someone_else"),
    ]


def _bad_runs() -> list[Bad]:
    def wrong(n: int, reason: str, **changes: Any) -> Bad:
        return Bad(
            Vendor.MENTIONLAB, run_id(n), Reply(dumps(run_body(run_id(n), **changes))), reason
        )

    entity = run_body(run_id(0))["entities"][0]
    no_status = run_body(run_id(109))
    del no_status["status"]
    return [
        Bad(Vendor.MENTIONLAB, run_id(101), _truncated(run_body(run_id(101))), "malformed JSON"),
        Bad(Vendor.MENTIONLAB, run_id(102), _html(), "malformed JSON"),
        wrong(
            103,
            "wrong type at entities.0.sentimentScore",
            entities=[{**entity, "sentimentScore": "high"}],
        ),
        wrong(104, "wrong type at entities.0.isPrimary", entities=[{**entity, "isPrimary": "yes"}]),
        wrong(105, "wrong type at executionNumber", executionNumber="1"),
        wrong(106, "wrong type at executionNumber", executionNumber=1.5),
        wrong(107, "wrong type at sources", sources="reddit.com"),
        wrong(108, f"not the requested '{run_id(108)}'", jobExecutionId=run_id(999)),
        Bad(Vendor.MENTIONLAB, run_id(109), Reply(dumps(no_status)), "status is missing"),
        wrong(110, "aiResponseId is not a UUID", aiResponseId="not-a-uuid"),
        wrong(111, "jobExecutionId is not a UUID", jobExecutionId="run-111"),
        wrong(112, "outside 0..100", entities=[{**entity, "sentimentScore": 150}]),
        wrong(113, "createdAt is not an ISO 8601 timestamp", createdAt="yesterday"),
        wrong(114, "initiatedAt is out of range", initiatedAt="0001-01-01T00:00:00+01:00"),
        wrong(115, "createdAt is out of range", createdAt="9999-12-31T23:59:59Z"),
    ]


# Ids whose bodies must be archived exactly, however odd they look.
UNICODE_ASK = "ask_🚀_数据库_Ω_é"  # registration allows letters and symbols of any script
LONG_TEXT = ('A long answer ✓ with emoji 🚀 and "quotes"\n' * 30_000)[: 1024 * 1024]


def _c(url: str | None, title: str, **extra: Any) -> dict[str, Any]:
    citation: dict[str, Any] = {"domain": "example.com", "title": title, **extra}
    if url is not None:
        citation["url"] = url
    return citation


def _dupes_ask() -> dict[str, Any]:
    c1, c2, no_url = (
        _c("https://a.example/1", "one"),
        _c("https://a.example/2", "two"),
        _c(None, "n"),
    )
    first = _provider(
        "openai", "first", citations=[c1, {**c1, "title": "1 again"}, no_url, no_url, c2]
    )
    second = _provider("anthropic", "second")
    m1 = {"brand": "Acme", "provider": "openai", "rank": 1, "sentiment": "positive", "context": "a"}
    m2 = {**m1, "brand": "Other"}
    return ask_body(
        "ask_dupes",
        providers=[first, dict(first), {**first, "x_debug": "not documented"}, second],
        brand_mentions=[m1, dict(m1), {**m1, "rank": 3}, {**m1, "context": "b"}, m2, dict(m2)],
        citations=[c1, dict(c1), {**c1, "title": "same url"}, c2],
    )


# What ask_dupes must become, written out by hand rather than computed.
DUPES_PROVIDERS = [
    ("openai", "openai-model", "first", 100, 1, 2),
    ("anthropic", "anthropic-model", "second", 100, 1, 2),
]
DUPES_CITATIONS = [
    (None, None, "https://a.example/1", "example.com", "one"),
    (None, None, "https://a.example/2", "example.com", "two"),
    ("openai", "openai-model", "https://a.example/1", "example.com", "one"),
    ("openai", "openai-model", None, "example.com", "n"),
    ("openai", "openai-model", "https://a.example/2", "example.com", "two"),
]
DUPES_MENTIONS = [
    ("Acme", "openai", 1, "positive", "a"),
    ("Acme", "openai", 3, "positive", "a"),
    ("Acme", "openai", 1, "positive", "b"),
    ("Other", "openai", 1, "positive", "a"),
]


def _nasty_ask(ask_id: str) -> dict[str, Any]:
    provider = _provider(
        NASTY, NASTY, model=NASTY, citations=[_c(f"https://x.example/{NASTY}", NASTY)]
    )
    mention = {"brand": NASTY, "provider": NASTY, "rank": 0, "sentiment": NASTY, "context": NASTY}
    return ask_body(
        ask_id,
        request_id=NASTY,
        cache_tier=NASTY,
        providers=[provider],
        brand_mentions=[mention],
        citations=[_c(f"https://x.example/?q={NASTY}", NASTY)],
        usage={"cost_cents": 4, "cost_breakdown": {NASTY: NASTY, "🔑": ["\\", '"', "\u202e"]}},
        **{f"x_{NASTY}": NASTY},
    )


def _extra_ask() -> dict[str, Any]:
    # Unknown fields at every level: rows ignore them, raw_payload keeps them all.
    provider = _provider(
        "openai",
        "with extras",
        tokens={"input": 1, "output": 2, "cached": 7},
        citations=[_c("https://a.example/", "t", x_rank=3, x_snippet={"text": "…"})],
        x_finish_reason="stop",
        x_logprobs=None,
    )
    return ask_body(
        "ask_extra",
        providers=[provider],
        brand_mentions=[{"brand": "Acme", "x_aliases": ["ACME", "Acme Inc."], "x_score": 0.5}],
        usage={"billable_units": 2, "cost_cents": 12.5, "x_currency": "USD", "x_tax": {"vat": 0.2}},
        x_trace={"span_id": "abc", "nested": [1, [2, [3, {"deep": True}]]], "big": 2**63 - 1},
        x_float=0.1,
        x_small=2.5e-8,
        x_negative=-(2**63),
        x_empty={},
        x_list=[],
        x_null=None,
    )


def _good_asks() -> dict[str, dict[str, Any]]:
    sparse_providers = [{"provider": "openai"}, {"content": None, "tokens": {"input": 5}}]
    return {
        "ask_dupes": _dupes_ask(),
        UNICODE_ASK: _nasty_ask(UNICODE_ASK),
        "ask_nasty_escaped": _nasty_ask("ask_nasty_escaped"),
        "ask_long": ask_body(
            "ask_long",
            providers=[_provider("openai", LONG_TEXT)],
            brand_mentions=[{"brand": "Acme", "context": LONG_TEXT[:200_000]}],
        ),
        "ask_extra": _extra_ask(),
        # Every MentionsAPI field is optional: a bare body is a succeeded answer.
        "ask_bare": {"id": "ask_bare"},
        "ask_failed_bare": {"status": "failed"},
        "ask_sparse": {
            "status": "succeeded",
            "cached": None,
            "providers": sparse_providers,
            "brand_mentions": [{"brand": "Acme"}],
            "citations": [{"url": "https://a.example/"}, {"title": "no url"}],
            "usage": {"cost_cents": 4.5},
        },
    }


def _good_runs() -> dict[str, dict[str, Any]]:
    s1 = {"domain": "reddit.com", "url": "https://reddit.com/r/crm/"}
    s2 = {"domain": "g2.com", "url": "https://g2.com/"}
    no_url = {"domain": "no-url.example"}
    e1 = run_body(run_id(0))["entities"][0]
    e2 = {
        "displayKey": "00000000-0000-4000-8000-0000000000e2",
        "displayName": "Beta",
        "isPrimary": False,
    }
    no_key = {"displayName": "Keyless", "isPrimary": False, "sentimentScore": 0}
    nasty_entity = {
        "displayKey": NASTY,
        "displayName": NASTY,
        "isPrimary": False,
        "sentimentScore": 100,
    }
    sparse = run_body(run_id(6), entities=[{"displayKey": "k", "displayName": "no score"}])
    for optional in ("queryId", "country", "language"):
        del sparse[optional]
    return {
        run_id(1): run_body(
            run_id(1),
            sources=[s1, {**s1, "domain": "other.example"}, no_url, dict(no_url), s2],
            entities=[
                e1,
                {**e1, "displayName": "Renamed", "sentimentScore": 1.0},
                e2,
                no_key,
                dict(no_key),
            ],
        ),
        run_id(2): run_body(
            run_id(2),
            model=NASTY,
            country=NASTY,
            language=NASTY,
            sources=[{"domain": NASTY, "url": f"https://x.example/{NASTY}"}],
            entities=[nasty_entity],
            **{f"x_{NASTY}": [NASTY]},
        ),
        run_id(3): run_body(run_id(3), entities=[nasty_entity], x_note=NASTY),
        run_id(4): run_body(
            run_id(4),
            x_answer=LONG_TEXT,
            entities=[{**e1, "displayName": LONG_TEXT[:100_000]}],
        ),
        run_id(5): run_body(
            run_id(5).upper(),  # the vendor's UUID in upper case is still the same id
            createdAt="2026-06-08T12:15:31.5+02:00",
            sources=[{**s1, "x_position": 3}],
            entities=[{**e1, "x_aliases": ["ACME"]}],
            x_trace={"span_id": "abc", "shard": 7},
        ),
        run_id(6): sparse,
        run_id(7): run_body(run_id(7), status="failed", sources=[], entities=[], hasSources=False),
    }


# Which bodies go out as pure-ASCII JSON (\uXXXX escapes, surrogate pairs for emoji).
ESCAPED = {"ask_nasty_escaped", run_id(3)}
DUPES_SOURCES = [
    ("reddit.com", "https://reddit.com/r/crm/"),
    ("no-url.example", None),
    ("g2.com", "https://g2.com/"),
]
DUPES_ENTITIES = [
    ("550e8400-e29b-41d4-a716-446655440000", "Acme Corp", True, 72.3),
    ("00000000-0000-4000-8000-0000000000e2", "Beta", False, None),
    (None, "Keyless", False, 0.0),
]


# --- checks -----------------------------------------------------------------------


def _script_good(stub: VendorStub, vendor: Vendor, bodies: dict[str, dict[str, Any]]) -> None:
    for external_id, body in bodies.items():
        stub.script(vendor, external_id, Reply(dumps(body, ascii_only=external_id in ESCAPED)))


def _expect_archived(stub: VendorStub, vendor: Vendor, external_id: str, status: str) -> None:
    row = tracked(vendor, external_id)
    final = TrackedState.FAILED if status == "failed" else TrackedState.ARCHIVED
    assert row.state is final, (row.state, row.last_error)
    assert (row.attempts, row.consecutive_errors, row.last_http_status) == (1, 0, 200)
    assert row.archived_at is not None
    # Fetched once: a final answer is never fetched again.
    assert len(stub.requests(vendor, external_id)) == 1
    assert quarantined(vendor, external_id) == []


def _check_good_ask(stub: VendorStub, ask_id: str, body: dict[str, Any]) -> None:
    _expect_archived(stub, Vendor.MENTIONSAPI, ask_id, body.get("status", "succeeded"))
    with session_scope() as session:
        check_ask(session, ask_id, body)
    headers = stub.requests(Vendor.MENTIONSAPI, ask_id)[0].headers
    assert headers["authorization"] == "Bearer lvk_test_suite_key"


def _check_good_run(stub: VendorStub, job_execution_id: str, body: dict[str, Any]) -> None:
    _expect_archived(stub, Vendor.MENTIONLAB, job_execution_id, body["status"])
    with session_scope() as session:
        check_execution(session, job_execution_id, PROJECT, body)
    headers = stub.requests(Vendor.MENTIONLAB, job_execution_id)[0].headers
    assert headers["x-project-id"] == PROJECT
    assert headers["x-api-key"] == "ml_test_suite_key"


def _check_bad(stub: VendorStub, bad: Bad, attempts: int) -> None:
    row = tracked(bad.vendor, bad.external_id)
    assert row.state is TrackedState.INVALID_PAYLOAD, (row.state, row.last_error)
    assert row.attempts == attempts and row.last_http_status == 200
    assert row.last_error is not None and row.last_error.startswith("invalid payload: ")
    assert bad.reason in row.last_error, row.last_error
    assert row.archived_at is None and row.final_at is not None
    # Fetched again after each unarchivable body, then given up on.
    assert len(stub.requests(bad.vendor, bad.external_id)) == attempts
    stored = quarantined(bad.vendor, bad.external_id)
    assert len(stored) == attempts
    for q in stored:
        assert q.tracked_id == row.id and q.http_status == 200
        assert bad.reason in q.reason, q.reason
        assert q.body == bad.reply.body  # verbatim, byte for byte
        assert q.body_truncated is False


def _collect(failures: list[str], label: str, check: Callable[[], None]) -> None:
    """Run one case's checks, keeping its failure so every case gets reported."""
    try:
        check()
    except AssertionError as exc:
        failures.append(f"{label}: {exc!s:.2000}")


# --- tests --------------------------------------------------------------------------


def test_hostile_bodies_are_archived_exactly_or_quarantined(stub: VendorStub) -> None:
    attempts = load_settings().invalid_payload_attempts
    assert attempts == 3  # the documented default, which this test runs with
    good_asks, good_runs = _good_asks(), _good_runs()
    bad = _bad_asks() + _bad_runs()
    _script_good(stub, Vendor.MENTIONSAPI, good_asks)
    _script_good(stub, Vendor.MENTIONLAB, good_runs)
    for case in bad:
        stub.script(case.vendor, case.external_id, case.reply)
    # Good and bad ids interleaved, so they share batches.
    bad_asks = [b.external_id for b in bad if b.vendor is Vendor.MENTIONSAPI]
    bad_runs = [b.external_id for b in bad if b.vendor is Vendor.MENTIONLAB]
    track(
        asks=[x for pair in zip(good_asks, bad_asks, strict=False) for x in pair]
        + bad_asks[len(good_asks) :],
        runs=[x for pair in zip(good_runs, bad_runs, strict=False) for x in pair]
        + bad_runs[len(good_runs) :],
    )

    sync()

    failures: list[str] = []
    for ask_id, body in good_asks.items():
        _collect(failures, ask_id, partial(_check_good_ask, stub, ask_id, body))
    for job_execution_id, body in good_runs.items():
        _collect(failures, job_execution_id, partial(_check_good_run, stub, job_execution_id, body))
    for case in bad:
        _collect(failures, case.external_id, partial(_check_bad, stub, case, attempts))
    assert not failures, "\n".join(failures)
    # Nothing half-archived for a quarantined id.
    assert archived_ids() == (set(good_asks), set(good_runs))


def test_hostile_rows_hold_exactly_what_was_served(stub: VendorStub) -> None:
    """The cases above, checked against rows written out by hand (not recomputed)."""
    good_asks, good_runs = _good_asks(), _good_runs()
    _script_good(stub, Vendor.MENTIONSAPI, good_asks)
    _script_good(stub, Vendor.MENTIONLAB, good_runs)
    track(asks=list(good_asks), runs=list(good_runs))

    sync()

    with session_scope() as session:

        def rows(model: Any, key: Any, value: str, *columns: str) -> list[tuple[Any, ...]]:
            found = session.scalars(select(model).where(key == value).order_by(model.position))
            return [tuple(getattr(r, c) for c in columns) for r in found]

        p_cols = ("provider", "model", "content", "latency_ms", "input_tokens", "output_tokens")
        c_cols = ("provider", "model", "url", "domain", "title")
        m_cols = ("brand", "provider", "rank", "sentiment", "context")
        a = AskProviderResponse.ask_id
        assert rows(AskProviderResponse, a, "ask_dupes", *p_cols) == DUPES_PROVIDERS
        assert rows(AskCitation, AskCitation.ask_id, "ask_dupes", *c_cols) == DUPES_CITATIONS
        assert rows(AskBrandMention, AskBrandMention.ask_id, "ask_dupes", *m_cols) == DUPES_MENTIONS
        # The raw payload keeps every duplicate the rows dropped.
        assert session.get(Ask, "ask_dupes").raw_payload == good_asks["ask_dupes"]

        for ask_id in (UNICODE_ASK, "ask_nasty_escaped"):
            ask = session.get(Ask, ask_id)
            assert ask is not None and (ask.request_id, ask.cache_tier) == (NASTY, NASTY)
            assert ask.raw_payload[f"x_{NASTY}"] == NASTY
            assert ask.cost_breakdown == {NASTY: NASTY, "🔑": ["\\", '"', "\u202e"]}
            assert rows(AskProviderResponse, a, ask_id, "provider", "model", "content") == [
                (NASTY, NASTY, NASTY)
            ]
            assert rows(AskBrandMention, AskBrandMention.ask_id, ask_id, *m_cols) == [
                (NASTY, NASTY, 0, NASTY, NASTY)
            ]
            assert [t for (t,) in rows(AskCitation, AskCitation.ask_id, ask_id, "title")] == [
                NASTY,
                NASTY,
            ]

        (content,) = rows(AskProviderResponse, a, "ask_long", "content")[0]
        assert len(content) == 1024 * 1024 and content == LONG_TEXT
        assert rows(AskBrandMention, AskBrandMention.ask_id, "ask_long", "context") == [
            (LONG_TEXT[:200_000],)
        ]

        bare = session.get(Ask, "ask_bare")
        assert (
            bare is not None
            and bare.status == "succeeded"
            and bare.raw_payload == {"id": "ask_bare"}
        )
        failed = session.get(Ask, "ask_failed_bare")
        assert failed is not None
        assert (failed.status, failed.error_code, failed.error_message) == (
            "failed",
            "provider_error",
            "Request failed.",
        )
        sparse = session.get(Ask, "ask_sparse")
        assert sparse is not None and sparse.cost_cents == Decimal("4.5")

        j = JobExecutionSource.job_execution_id
        e = JobExecutionEntity.job_execution_id
        e_cols = ("display_key", "display_name", "is_primary", "sentiment_score")
        assert rows(JobExecutionSource, j, run_id(1), "domain", "url") == DUPES_SOURCES
        assert rows(JobExecutionEntity, e, run_id(1), *e_cols) == DUPES_ENTITIES
        for n in (2, 3):
            assert rows(JobExecutionEntity, e, run_id(n), *e_cols) == [(NASTY, NASTY, False, 100.0)]
        nasty_run = session.get(JobExecution, run_id(2))
        assert nasty_run is not None and (nasty_run.model, nasty_run.country) == (NASTY, NASTY)
        assert session.get(JobExecution, run_id(3)).raw_payload["x_note"] == NASTY
        assert session.get(JobExecution, run_id(4)).raw_payload["x_answer"] == LONG_TEXT
        offset = session.get(JobExecution, run_id(5))
        assert offset is not None
        assert offset.created_at == datetime(2026, 6, 8, 10, 15, 31, 500000, tzinfo=UTC)
        assert offset.raw_payload["jobExecutionId"] == run_id(5).upper()
        sparse_run = session.get(JobExecution, run_id(6))
        assert sparse_run is not None
        assert (sparse_run.query_id, sparse_run.country, sparse_run.language) == (None, None, None)
        assert rows(JobExecutionEntity, e, run_id(6), *e_cols) == [("k", "no score", None, None)]


def test_bad_bodies_are_fetched_again_and_a_good_one_still_archives(stub: VendorStub) -> None:
    attempts = load_settings().invalid_payload_attempts
    good_ask, good_run = ask_body("ask_flaky"), run_body(run_id(201))
    wrong_run = Reply(dumps(run_body(run_id(201), executionNumber="1")))
    flaky = {
        (Vendor.MENTIONSAPI, "ask_flaky"): [_truncated(good_ask), _html(), Reply(dumps(good_ask))],
        (Vendor.MENTIONLAB, run_id(201)): [_truncated(good_run), wrong_run, Reply(dumps(good_run))],
    }
    for (vendor, external_id), replies in flaky.items():
        stub.script(vendor, external_id, *replies)
    # Only bad bodies in a row count: a pending answer in between starts the count again.
    queued = Reply(dumps({"id": "ask_streak", "status": "queued"}), status=202)
    streak = ask_body("ask_streak")
    stub.script(Vendor.MENTIONSAPI, "ask_streak", _html(), _html(), queued, _html(), _html())
    stub.scripts[(Vendor.MENTIONSAPI, "ask_streak")].append(Reply(dumps(streak)))
    # Out of attempts is final, even if the next body would have been fine.
    late = Reply(dumps(ask_body("ask_too_late")))
    stub.script(Vendor.MENTIONSAPI, "ask_too_late", *[_html()] * attempts, late)
    track(asks=["ask_flaky", "ask_streak", "ask_too_late"], runs=[run_id(201)])

    sync()

    for (vendor, external_id), replies in flaky.items():
        row = tracked(vendor, external_id)
        assert row.state is TrackedState.ARCHIVED, row.last_error
        assert (row.attempts, row.consecutive_errors, row.last_error) == (3, 0, None)
        assert len(stub.requests(vendor, external_id)) == 3
        # Both bad bodies are kept, in order, even though the answer was archived.
        assert [q.body for q in quarantined(vendor, external_id)] == [r.body for r in replies[:2]]
    with session_scope() as session:
        check_ask(session, "ask_flaky", good_ask)
        check_execution(session, run_id(201), PROJECT, good_run)
        check_ask(session, "ask_streak", streak)
    row = tracked(Vendor.MENTIONSAPI, "ask_streak")
    assert row.state is TrackedState.ARCHIVED and row.attempts == 6
    assert len(quarantined(Vendor.MENTIONSAPI, "ask_streak")) == 4

    row = tracked(Vendor.MENTIONSAPI, "ask_too_late")
    assert row.state is TrackedState.INVALID_PAYLOAD and row.attempts == attempts
    assert len(stub.requests(Vendor.MENTIONSAPI, "ask_too_late")) == attempts
    assert len(quarantined(Vendor.MENTIONSAPI, "ask_too_late")) == attempts
    assert archived_ids() == ({"ask_flaky", "ask_streak"}, {run_id(201)})


def _sized(doc: dict[str, Any], size: int, where: Callable[[dict[str, Any], str], None]) -> bytes:
    """`doc` as JSON of exactly `size` bytes, padded through one string field."""
    where(doc, "")
    missing = size - len(dumps(doc))
    where(doc, "y" * missing)
    raw = dumps(doc)
    assert len(raw) == size
    return raw


def _ask_content(doc: dict[str, Any], text: str) -> None:
    doc["providers"][0]["content"] = text


def _run_note(doc: dict[str, Any], text: str) -> None:
    doc["x_note"] = text


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def test_bodies_over_max_response_bytes_are_capped_and_not_read_to_the_end(
    stub: VendorStub, configure: Callable[..., None]
) -> None:
    cap, huge = 65536, 64 * 1024 * 1024
    configure(MAX_RESPONSE_BYTES=str(cap))
    attempts = load_settings().invalid_payload_attempts
    ma, ml = Vendor.MENTIONSAPI, Vendor.MENTIONLAB

    # Exactly at the cap is fine; one byte more is not (with and without Content-Length).
    fits = {
        (ma, "ask_at_cap"): Reply(_sized(ask_body("ask_at_cap"), cap, _ask_content)),
        (ml, run_id(301)): Reply(_sized(run_body(run_id(301)), cap, _run_note), chunked=True),
        (ma, "ask_small"): Reply(dumps(ask_body("ask_small"))),
        (ml, run_id(302)): Reply(dumps(run_body(run_id(302)))),
    }
    prefix = b'{"id": "ask_huge", "status": "succeeded", "providers": [{"content": "'
    zipped = prefix + b"z" * (32 * 1024 * 1024)
    over: dict[tuple[Vendor, str], tuple[Reply, bytes]] = {
        (ma, "ask_over_cap"): Reply(_sized(ask_body("ask_over_cap"), cap + 1, _ask_content)),
        (ml, run_id(303)): Reply(_sized(run_body(run_id(303)), cap + 1, _run_note), chunked=True),
        (ma, "ask_huge"): Reply(prefix, pad_to=huge),
        (ma, "ask_huge_chunked"): Reply(prefix, pad_to=huge, chunked=True),
        (ml, run_id(304)): Reply(prefix, pad_to=huge),
        (ml, run_id(305)): Reply(prefix, pad_to=huge, chunked=True),
        # Small on the wire, 32 MiB once inflated: the cap is on what is decoded.
        (ma, "ask_gzip"): Reply(_gzip(zipped), headers=(("Content-Encoding", "gzip"),)),
    }
    assert len(over[(ma, "ask_gzip")].body) < cap
    for (vendor, external_id), reply in {**fits, **over}.items():
        stub.script(vendor, external_id, reply)
    everything = [*fits, *over]
    track(asks=[i for v, i in everything if v is ma], runs=[i for v, i in everything if v is ml])

    sync()

    with session_scope() as session:
        for vendor, external_id in fits:
            body = json.loads(fits[(vendor, external_id)].body)
            if vendor is ma:
                check_ask(session, external_id, body)
            else:
                check_execution(session, external_id, PROJECT, body)
    for (vendor, external_id), reply in over.items():
        row = tracked(vendor, external_id)
        assert row.state is TrackedState.INVALID_PAYLOAD, (external_id, row.last_error)
        assert row.last_error == f"invalid payload: body larger than {cap} bytes"
        expected = zipped[:cap] if external_id == "ask_gzip" else reply.head(cap)
        stored = quarantined(vendor, external_id)
        assert len(stored) == attempts
        for q in stored:
            assert q.body_truncated is True and len(q.body) == cap
            assert q.body == expected, external_id
        if reply.pad_to == huge:
            for request in stub.requests(vendor, external_id):
                # Socket buffers take a few MiB; a worker reading on would take all 64.
                assert request.sent < huge // 4, (external_id, request.sent)
    assert archived_ids() == ({"ask_at_cap", "ask_small"}, {run_id(301), run_id(302)})


def _archive_with_neighbours(stub: VendorStub, ask_id: str, reply: Reply) -> list[str]:
    """Serve `reply` for ask_id between two ordinary answers, sync, return the neighbours."""
    neighbours = [f"{ask_id}_before", f"{ask_id}_after"]
    for neighbour in neighbours:
        stub.script(Vendor.MENTIONSAPI, neighbour, Reply(dumps(ask_body(neighbour))))
    stub.script(Vendor.MENTIONSAPI, ask_id, reply)
    track(asks=[neighbours[0], ask_id, neighbours[1]], runs=[])
    sync()
    with session_scope() as session:
        for neighbour in neighbours:
            check_ask(session, neighbour, ask_body(neighbour))
    return neighbours


# numeric(18, 6) holds less than 10**12 cents: the body validates, the database refuses it.
COST_OVERFLOW = ask_body("ask_cost_overflow", usage={"cost_cents": 1e15})


def test_a_body_the_database_refuses_is_quarantined_alone(stub: VendorStub) -> None:
    attempts = load_settings().invalid_payload_attempts
    neighbours = _archive_with_neighbours(stub, "ask_cost_overflow", Reply(dumps(COST_OVERFLOW)))

    row = tracked(Vendor.MENTIONSAPI, "ask_cost_overflow")
    assert row.state is TrackedState.INVALID_PAYLOAD, row.last_error
    assert row.last_error is not None and "the database refused the rows" in row.last_error
    stored = quarantined(Vendor.MENTIONSAPI, "ask_cost_overflow")
    assert len(stored) == attempts
    assert all(json.loads(q.body) == COST_OVERFLOW and q.http_status == 200 for q in stored)
    assert archived_ids() == (set(neighbours), set())


def test_a_body_the_database_refuses_is_quarantined_as_received(stub: VendorStub) -> None:
    served = json.dumps(COST_OVERFLOW, indent=2).encode()  # pretty-printed, as many APIs do
    _archive_with_neighbours(stub, "ask_cost_overflow", Reply(served))

    stored = quarantined(Vendor.MENTIONSAPI, "ask_cost_overflow")
    assert stored
    assert [q.body for q in stored] == [served] * len(stored)


BIG = 123456789012345678901234567890  # valid JSON; wider than 64 bits


def test_unknown_fields_keep_integers_wider_than_64_bits(stub: VendorStub) -> None:
    body = ask_body("ask_bigint", x_snowflake=BIG, x_list=[BIG, -BIG])
    _archive_with_neighbours(stub, "ask_bigint", Reply(dumps(body)))

    with session_scope() as session:
        ask = session.get(Ask, "ask_bigint")
        assert ask is not None  # archived: nothing in the body is wrong
        assert ask.raw_payload["x_snowflake"] == BIG
        assert ask.raw_payload == body


def test_a_compressed_body_is_capped_before_it_is_inflated(
    stub: VendorStub, configure: Callable[..., None]
) -> None:
    cap = 65536
    configure(MAX_RESPONSE_BYTES=str(cap))
    bomb = _gzip(b"z" * (200 * 1024 * 1024))  # about 200 KB on the wire
    stub.script(
        Vendor.MENTIONSAPI, "ask_bomb", Reply(bomb, headers=(("Content-Encoding", "gzip"),))
    )
    client = suite_runtime().clients[Vendor.MENTIONSAPI]

    tracemalloc.start()
    try:
        raw = client.get(Target(Vendor.MENTIONSAPI, "ask_bomb"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert raw.truncated and raw.body == b"z" * cap
    # Reading a capped body needs the cap plus a read buffer, not a thousand times that.
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB allocated to read {cap} bytes"


def _without_nul(value: Any) -> Any:
    """The document as archived: U+0000 removed from every string (written apart
    from the worker's byte-level rule, as an oracle)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def test_answers_with_nul_are_archived_without_it_and_kept_exactly(stub: VendorStub) -> None:
    ask = ask_body(
        "ask_nul",
        providers=[_provider("openai", "before\u0000after")],
        x_meta={"k\u0000ey": "\\u0000 is six characters"},
    )
    run = run_body(
        run_id(120),
        entities=[{**run_body(run_id(0))["entities"][0], "displayName": "Acme\u0000Corp"}],
    )
    ask_served, run_served = dumps(ask), dumps(run)
    stub.script(Vendor.MENTIONSAPI, "ask_nul", Reply(ask_served))
    stub.script(Vendor.MENTIONLAB, run_id(120), Reply(run_served))
    track(asks=["ask_nul"], runs=[run_id(120)])
    sync()

    with session_scope() as session:
        check_ask(session, "ask_nul", _without_nul(ask))
        check_execution(session, run_id(120), PROJECT, _without_nul(run))
        stored_ask = session.get(Ask, "ask_nul")
        stored_run = session.get(JobExecution, run_id(120))
        assert stored_ask is not None and stored_run is not None
        # The exact bytes stay, so `reprocess` can rebuild from what was served.
        assert stored_ask.raw_body == ask_served
        assert stored_run.raw_body == run_served
    assert tracked(Vendor.MENTIONSAPI, "ask_nul").state is TrackedState.ARCHIVED
    assert quarantined(Vendor.MENTIONSAPI, "ask_nul") == []

    # `reprocess` rebuilds the same rows from the exact bytes, and keeps them.
    before = archive_snapshot()
    result = reprocess(suite_db(), [Vendor.MENTIONSAPI, Vendor.MENTIONLAB])
    assert result.failures == [] and result.answers == 2
    assert archive_snapshot() == before
    with session_scope() as session:
        assert session.scalar(select(Ask.raw_body).where(Ask.ask_id == "ask_nul")) == ask_served


def test_an_ordinary_answer_keeps_no_second_copy(stub: VendorStub) -> None:
    _archive_with_neighbours(stub, "ask_plain", Reply(dumps(ask_body("ask_plain"))))
    with session_scope() as session:
        stored = session.get(Ask, "ask_plain")
        assert stored is not None and stored.raw_body is None


def test_deeply_nested_unknown_fields_are_archived(stub: VendorStub) -> None:
    deep: Any = [1]
    for _ in range(900):  # past orjson's and json's encoders, within its decoder
        deep = [deep]
    body = ask_body("ask_deep", x_deep=deep)
    _archive_with_neighbours(stub, "ask_deep", Reply(dumps_deep(body)))

    assert tracked(Vendor.MENTIONSAPI, "ask_deep").state is TrackedState.ARCHIVED
    with session_scope() as session:
        depth = session.scalar(
            text("SELECT jsonb_typeof(raw_payload #> :path) FROM asks WHERE ask_id = 'ask_deep'"),
            {"path": ["x_deep"] + ["0"] * 900},
        )
        assert depth == "array"
    before = archive_snapshot()
    result = reprocess(suite_db(), [Vendor.MENTIONSAPI])
    assert result.failures == []
    assert archive_snapshot() == before


def dumps_deep(doc: dict[str, Any]) -> bytes:
    """JSON for documents nested deeper than the encoders' recursion limits."""
    deep = doc.pop("x_deep")
    depth = 0
    while isinstance(deep, list) and len(deep) == 1 and isinstance(deep[0], list):
        deep, depth = deep[0], depth + 1
    inner = b"[" * (depth + 1) + b",".join(str(x).encode() for x in deep) + b"]" * (depth + 1)
    return dumps(doc)[:-1] + b', "x_deep": ' + inner + b"}"


def test_an_echoed_api_key_is_stored_nowhere(stub: VendorStub) -> None:
    key = load_settings().mentionsapi_api_key
    assert key is not None
    secret = key.get_secret_value()
    body = ask_body(
        "ask_echo",
        providers=[_provider("openai", f"your key is {secret}")],
        x_debug={"authorization": f"Bearer {secret}"},
    )
    _archive_with_neighbours(stub, "ask_echo", Reply(dumps(body)))

    assert tracked(Vendor.MENTIONSAPI, "ask_echo").state is TrackedState.ARCHIVED
    with session_scope() as session:
        for table in ("asks", "ask_provider_responses", "tracked_ids", "quarantined_payloads"):
            dump = session.scalar(text(f"SELECT string_agg(t::text, '') FROM {table} t"))  # noqa: S608
            assert secret not in (dump or ""), table
        content = session.scalar(
            text("SELECT content FROM ask_provider_responses WHERE ask_id = 'ask_echo'")
        )
        assert content == "your key is [REDACTED]"


def test_stacked_content_encodings_are_refused_not_inflated(stub: VendorStub) -> None:
    twice = _gzip(_gzip(b"z" * (300 * 1024 * 1024)))  # a few hundred bytes on the wire
    stub.script(
        Vendor.MENTIONSAPI,
        "ask_gzip2",
        Reply(twice, headers=(("Content-Encoding", "gzip, gzip"),)),
    )
    client = suite_runtime().clients[Vendor.MENTIONSAPI]
    tracemalloc.start()
    try:
        raw = client.get(Target(Vendor.MENTIONSAPI, "ask_gzip2"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raw.refused is not None and "gzip, gzip" in raw.refused
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB allocated"

    _archive_with_neighbours(
        stub, "ask_gzip2", Reply(twice, headers=(("Content-Encoding", "gzip, gzip"),))
    )
    row = tracked(Vendor.MENTIONSAPI, "ask_gzip2")
    assert row.state is TrackedState.INVALID_PAYLOAD
    assert row.last_error is not None and "unsupported Content-Encoding" in row.last_error
