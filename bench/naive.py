"""The naive baseline of the throughput scenario: what a first script would do.

One request at a time over one httpx client, the product's own normalizers (so
the rows are the same), and one ORM `Session.merge` per row with a commit per
answer. No Celery, no batching, no rate budget.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench.harness import MENTIONLAB_KEY, MENTIONSAPI_KEY

BENCH_KEYS = {"mentionsapi": MENTIONSAPI_KEY, "mentionlab": MENTIONLAB_KEY}


def _models_by_table() -> dict[str, type[Any]]:
    from models import Base

    return {m.class_.__table__.name: m.class_ for m in Base.registry.mappers}


@functools.cache
def _settings(base_url: str) -> Any:
    """Built once: reading settings costs more than the request it describes."""
    from worker.config import Settings

    return Settings.model_validate(
        {f"{vendor}_base_url": base_url for vendor in BENCH_KEYS}
        | {f"{vendor}_api_key": key for vendor, key in BENCH_KEYS.items()}
    )


def fetch_answer(
    client: httpx.Client, base_url: str, vendor: str, project_id: str, external_id: str
) -> Any:
    """One plain GET and the product's normalizer: what both baselines do per id.
    URL, headers and rows come from the vendor's own package, not retyped here."""
    from models import Vendor
    from worker.normalize import parse_json
    from worker.vendors.base import Target
    from worker.vendors.registry import VENDORS

    spec = VENDORS[Vendor(vendor)]
    settings = _settings(base_url)
    target = Target(spec.vendor, external_id, project_id)
    response = client.get(spec.url(settings, target), headers=spec.headers(settings, target))
    response.raise_for_status()
    return spec.normalize(parse_json(response.content), target=target, fetched_at=datetime.now(UTC))


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
