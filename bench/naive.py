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


# (vendor, project_id, external_id): one id to fetch, in the order to fetch it.
Item = tuple[str, str, str]


def items(asks: Sequence[str], executions: Sequence[tuple[str, str]]) -> list[Item]:
    """Every ask, then every execution (the throughput scenario's order)."""
    return [("mentionsapi", "", a) for a in asks] + [("mentionlab", p, e) for p, e in executions]


def interleaved(asks: Sequence[str], executions: Sequence[tuple[str, str]]) -> list[Item]:
    """Both vendors' ids mixed in proportion (vendor pace: a deadline may stop the
    loop anywhere, and both vendors should have been fetched by then)."""
    out: list[Item] = []
    a = e = 0
    while a < len(asks) or e < len(executions):
        # Keep e / a at executions / asks: the vendor behind its share goes next.
        if e < len(executions) and (a >= len(asks) or e * len(asks) <= a * len(executions)):
            out.append(("mentionlab", *executions[e]))
            e += 1
        else:
            out.append(("mentionsapi", "", asks[a]))
            a += 1
    return out


def archive(
    database_url: str,
    base_url: str,
    asks: Sequence[str],
    executions: Sequence[tuple[str, str]],
) -> float:
    """Fetch and store every id, one after the other; return the seconds it took."""
    return archive_items(database_url, base_url, items(asks, executions))[0]


def archive_items(
    database_url: str, base_url: str, todo: Sequence[Item], *, deadline: float | None = None
) -> tuple[float, int]:
    """Fetch and store the items in order until done or until `deadline`
    (time.monotonic()); (seconds it took, ids archived)."""
    models = _models_by_table()
    engine = create_engine(database_url)
    client = httpx.Client(timeout=30.0)

    def store(session: Session, answer: Any) -> None:
        session.merge(models[answer.table](**answer.row))
        for table, rows in answer.children.items():
            for row in rows:
                session.merge(models[table](**row))
        session.commit()

    done = 0
    started = time.perf_counter()
    try:
        with Session(engine) as session:
            for vendor, project_id, external_id in todo:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                store(session, fetch_answer(client, base_url, vendor, project_id, external_id))
                done += 1
        return time.perf_counter() - started, done
    finally:
        client.close()
        engine.dispose()
