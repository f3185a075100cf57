"""Upserts on real Postgres: idempotent, children replaced with the parent."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from models import (
    Ask,
    AskBrandMention,
    AskCitation,
    JobExecution,
    JobExecutionEntity,
    JobExecutionSource,
)
from tests.fixtures.documented import ASK_DOC_EXAMPLE as ASK
from tests.fixtures.documented import ASK_ID, RUN_ID
from tests.fixtures.documented import RUN_DOC_EXAMPLE as RUN
from tests.fixtures.documented import RUN_PROJECT as PROJECT
from tests.resources import session_scope
from worker.store import upsert_answers
from worker.vendors.mentionlab.normalize import normalize_execution
from worker.vendors.mentionsapi.normalize import normalize_ask

T1 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def snapshot() -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    out = {}
    with session_scope() as s:
        for model in (
            Ask,
            AskCitation,
            AskBrandMention,
            JobExecution,
            JobExecutionSource,
            JobExecutionEntity,
        ):
            table = model.__table__
            rows = s.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def run(body: dict, fetched_at: datetime = T1):  # type: ignore[no-untyped-def,type-arg]
    return normalize_execution(
        body, job_execution_id=RUN_ID, project_id=PROJECT, fetched_at=fetched_at
    )


def test_archiving_twice_leaves_the_same_rows() -> None:
    answers = [normalize_ask(ASK, ask_id=ASK_ID, fetched_at=T1), run(RUN)]
    with session_scope() as s:
        upsert_answers(s, answers)
    first = snapshot()
    with session_scope() as s:
        upsert_answers(s, answers)
    assert snapshot() == first
    assert len(first["asks"]) == 1 and len(first["ask_citations"]) == 2
    assert len(first["job_execution_entities"]) == 1


def test_refetch_with_different_children_replaces_them() -> None:
    with session_scope() as s:
        upsert_answers(s, [run(RUN)])
    retried = copy.deepcopy(RUN)
    retried["executionNumber"] = 2
    retried["sources"] = [
        {"domain": "g2.com", "url": "https://g2.com/x"},
        {"domain": "a.io", "url": "https://a.io"},
    ]
    retried["entities"] = []
    t2 = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    with session_scope() as s:
        upsert_answers(s, [run(retried, t2)])
    with session_scope() as s:
        parent = s.get(JobExecution, RUN_ID)
        assert parent is not None
        assert (parent.execution_number, parent.fetched_at) == (2, t2)
        urls = s.scalars(select(JobExecutionSource.url).order_by(JobExecutionSource.position)).all()
        assert urls == ["https://g2.com/x", "https://a.io"]
        assert s.scalars(select(JobExecutionEntity)).all() == []


def test_duplicates_inside_one_payload_and_one_batch() -> None:
    body = copy.deepcopy(ASK)
    body["citations"] = body["citations"] * 3
    same = normalize_ask(body, ask_id=ASK_ID, fetched_at=T1)
    with session_scope() as s:
        upsert_answers(s, [same, same])
    with session_scope() as s:
        top = s.scalars(select(AskCitation).where(AskCitation.provider.is_(None))).all()
        assert len(top) == 1


def test_unicode_and_long_content_round_trip() -> None:
    content = '🚀 "Café" O\'Reilly 数据库 ' * 20_000
    body = {"id": "a1", "providers": [{"provider": "p", "content": content}], "x_unknown": ["é"]}
    with session_scope() as s:
        upsert_answers(s, [normalize_ask(body, ask_id="a1", fetched_at=T1)])
    with session_scope() as s:
        ask = s.get(Ask, "a1")
        assert ask is not None and ask.raw_payload == body
        from models import AskProviderResponse

        assert s.scalars(select(AskProviderResponse.content)).one() == content


def test_a_child_row_the_database_refuses_fails_the_batch_as_a_dbapi_error() -> None:
    # Children go in by COPY on Postgres: a refusal must surface as an INSERT's
    # would, so the poller can fall back to one id at a time, and leave nothing.
    good = run(RUN)
    bad = normalize_ask(ASK, ask_id=ASK_ID, fetched_at=T1)
    bad.children["ask_provider_responses"][0]["latency_ms"] = 2**40  # not an integer column value
    with pytest.raises(DBAPIError, match="out of range"), session_scope() as s:
        upsert_answers(s, [good, bad])
    assert all(rows == [] for rows in snapshot().values())
    with session_scope() as s:  # the connection is usable again
        upsert_answers(s, [good])
    assert len(snapshot()["job_executions"]) == 1


def test_a_missing_json_document_is_sql_null() -> None:
    body = copy.deepcopy(ASK)
    del body["usage"]["cost_breakdown"]
    with session_scope() as s:
        upsert_answers(s, [normalize_ask(body, ask_id=ASK_ID, fetched_at=T1)])
    with session_scope() as s:
        # IS NULL finds it: not the JSON value null, which IS NULL would miss.
        assert s.scalar(select(Ask.ask_id).where(Ask.cost_breakdown.is_(None))) == ASK_ID


def test_a_batch_of_new_and_stored_answers_replaces_only_the_stored_children() -> None:
    with session_scope() as s:
        upsert_answers(s, [run(RUN)])
    retried = copy.deepcopy(RUN)
    retried["sources"] = [{"domain": "a.io", "url": "https://a.io"}]
    with session_scope() as s:
        # The run is stored already (its sources are replaced), the ask is new.
        upsert_answers(s, [normalize_ask(ASK, ask_id=ASK_ID, fetched_at=T1), run(retried)])
    with session_scope() as s:
        assert s.scalars(select(JobExecutionSource.url)).all() == ["https://a.io"]
    rows = snapshot()
    assert len(rows["ask_citations"]) == 2 and len(rows["asks"]) == 1
    # Again, both stored now: identical rows.
    with session_scope() as s:
        upsert_answers(s, [normalize_ask(ASK, ask_id=ASK_ID, fetched_at=T1), run(retried)])
    assert snapshot() == rows
