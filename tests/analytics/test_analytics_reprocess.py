"""`mentionsync reprocess`: the normalized rows rebuilt from the raw payloads alone."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, update

from models import Ask, AskBrandMention, JobExecution, Vendor
from tests.analytics.conftest import A2
from tests.helpers import ARCHIVE_MODELS, archive_snapshot, cli
from tests.resources import session_scope, suite_db
from worker.analytics.reprocess import reprocess

CHILDREN = tuple(m for m in ARCHIVE_MODELS if m not in (Ask, JobExecution))


def wreck_normalized_rows(*models: Any) -> None:
    """What a faulty normalizer might have left: children gone, columns wrong."""
    with session_scope() as session:
        for model in models:
            session.execute(delete(model))
        session.execute(update(Ask).values(cached=None, cache_tier="wrong", billable_units=-1))
        session.execute(update(JobExecution).values(model="wrong", initiated_at=None))


def test_reprocess_restores_identical_rows(archive: str) -> None:
    before = archive_snapshot()
    wreck_normalized_rows(*CHILDREN)
    assert archive_snapshot() != before

    # The vendors' base URLs point at a closed port (tests/conftest.py): the rows
    # can only come from the stored payloads.
    result = cli("reprocess")
    assert result.returncode == 0, result.stderr
    # 5 asks (one failed) and 4 runs (one failed) are stored.
    assert "reprocessing 9 stored answers" in result.stderr
    assert "reprocessed 9 answers" in result.stderr
    assert archive_snapshot() == before

    # Idempotent: again on intact rows changes nothing.
    assert cli("reprocess", "--batch-size", "2").returncode == 0
    assert archive_snapshot() == before


def test_reprocess_one_vendor_since(archive: str) -> None:
    before = archive_snapshot()
    wreck_normalized_rows(*CHILDREN)
    wrecked = archive_snapshot()

    # ask_a1..a4 were archived (fetched) on the 20th, ask_a5 on the 10th.
    result = cli("reprocess", "--vendor", "mentionsapi", "--since", "2026-11-20")
    assert result.returncode == 0, result.stderr
    assert "reprocessed 4 answers" in result.stderr  # ask_a1..a4, not ask_a5
    after = archive_snapshot()
    assert [r for r in after["ask_brand_mentions"] if r[0] == "ask_a5"] == []
    assert [r for r in after["ask_brand_mentions"] if r[0] == "ask_a1"] == [
        r for r in before["ask_brand_mentions"] if r[0] == "ask_a1"
    ]
    # MentionLab untouched: still wrecked.
    for table in ("job_executions", "job_execution_entities", "job_execution_sources"):
        assert after[table] == wrecked[table]

    assert cli("reprocess", "--vendor", "mentionlab").returncode == 0
    assert cli("reprocess", "--vendor", "mentionsapi", "--since", "2026-11-10").returncode == 0
    assert archive_snapshot() == before


def test_a_payload_the_normalizer_rejects_is_reported_and_left_alone(archive: str) -> None:
    before = archive_snapshot()
    broken = {**A2, "brand_mentions": [{"brand": "Acme", "rank": "first"}]}
    with session_scope() as session:
        session.execute(update(Ask).where(Ask.ask_id == "ask_a2").values(raw_payload=broken))
    wreck_normalized_rows(AskBrandMention)

    result = cli("reprocess")
    assert result.returncode == 1
    assert "not reprocessed mentionsapi ask_a2: wrong type at brand_mentions.0.rank" in (
        result.stderr.replace("\n", " ")
    )
    assert "reprocessed 8 answers" in result.stderr
    after = archive_snapshot()
    # Everyone else's mentions are back; ask_a2 keeps what it had (none, here).
    assert after["ask_brand_mentions"] == [
        r for r in before["ask_brand_mentions"] if r[0] != "ask_a2"
    ]
    assert after["job_execution_entities"] == before["job_execution_entities"]


def test_reprocess_reports_progress_batch_by_batch(archive: str) -> None:
    # What the progress bar (or, in a log, the periodic line) is fed: one call
    # per batch, adding up to every stored answer.
    calls: list[int] = []
    result = reprocess(suite_db(), list(Vendor), batch_size=2, progress=calls.append)
    assert result.answers == sum(calls) == 9
    assert calls == [2, 2, 1, 2, 2]  # 5 asks, then 4 runs, two at a time
