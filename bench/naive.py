"""The naive baseline of the throughput scenario: what a first script would do.

One request at a time over one httpx client, the product's own normalizers (so
the rows are the same), and one ORM `Session.merge` per row with a commit per
answer. No Celery, no batching, no rate budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench.harness import MENTIONLAB_KEY, MENTIONSAPI_KEY


def _models_by_table() -> dict[str, type[Any]]:
    from models import Base

    return {m.class_.__table__.name: m.class_ for m in Base.registry.mappers}


def fetch_answer(
    client: httpx.Client, base_url: str, vendor: str, project_id: str, external_id: str
) -> Any:
    """One plain GET and the product's normalizer: what both baselines do per id."""
    from worker.normalize import parse_json
    from worker.normalize.mentionlab import normalize_execution
    from worker.normalize.mentionsapi import normalize_ask

    if vendor == "mentionsapi":
        response = client.get(
            f"{base_url}/v1/ask/{external_id}",
            headers={"Authorization": f"Bearer {MENTIONSAPI_KEY}"},
        )
        response.raise_for_status()
        return normalize_ask(
            parse_json(response.content), ask_id=external_id, fetched_at=datetime.now(UTC)
        )
    response = client.get(
        f"{base_url}/api/v1/job-executions/{external_id}",
        headers={"x-api-key": MENTIONLAB_KEY, "x-project-id": project_id},
    )
    response.raise_for_status()
    return normalize_execution(
        parse_json(response.content),
        job_execution_id=external_id,
        project_id=project_id,
        fetched_at=datetime.now(UTC),
    )


def archive(
    database_url: str,
    base_url: str,
    asks: Sequence[str],
    executions: Sequence[tuple[str, str]],
) -> float:
    """Fetch and store every id, one after the other; return the seconds it took."""
    models = _models_by_table()
    engine = create_engine(database_url)
    client = httpx.Client(timeout=30.0)

    def store(session: Session, answer: Any) -> None:
        session.merge(models[answer.table](**answer.row))
        for table, rows in answer.children.items():
            for row in rows:
                session.merge(models[table](**row))
        session.commit()

    started = time.perf_counter()
    try:
        with Session(engine) as session:
            for ask_id in asks:
                store(session, fetch_answer(client, base_url, "mentionsapi", "", ask_id))
            for project_id, execution_id in executions:
                answer = fetch_answer(client, base_url, "mentionlab", project_id, execution_id)
                store(session, answer)
        return time.perf_counter() - started
    finally:
        client.close()
        engine.dispose()
