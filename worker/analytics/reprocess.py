"""`mentionsync reprocess`: rebuild the normalized rows from the stored raw payloads.

For after a normalizer fix: every archived answer goes through today's
normalizer again and is written with the worker's own upsert, so the result is
exactly what archiving it today would give. No API is called. Running it twice
leaves identical rows: the input is the stored payload and its stored fetch time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, literal, select
from sqlalchemy.orm import Session

from models import Vendor
from worker.db import Database
from worker.normalize import Normalized, PayloadError
from worker.normalize.common import parse_document
from worker.store import upsert_answers
from worker.vendors.base import Target, VendorSpec
from worker.vendors.registry import VENDORS

# Raw payloads reach a few hundred kB (long answers from several providers):
# a batch of this many stays well within memory.
BATCH_SIZE = 100


@dataclass
class Failure:
    vendor: Vendor
    answer_id: str
    reason: str


@dataclass
class Reprocessed:
    answers: int = 0
    rows_written: int = 0
    failures: list[Failure] = field(default_factory=list)


def _key(vendor: Vendor) -> Any:
    return VENDORS[vendor].archive_key


def _conditions(vendor: Vendor, since: datetime | None) -> list[ColumnElement[bool]]:
    # --since picks answers archived since then: those a faulty normalizer wrote.
    fetched_at = VENDORS[vendor].archive_table.__table__.c.fetched_at
    return [] if since is None else [fetched_at >= since]


def count_stored(session: Session, vendors: Iterable[Vendor], since: datetime | None) -> int:
    return sum(
        session.scalar(select(func.count(_key(v))).where(*_conditions(v, since))) or 0
        for v in vendors
    )


def _normalize(spec: VendorSpec, row: Any) -> Normalized:
    # The stored JSON as text, read the way the worker reads a body: integers of
    # any width and deep nesting come through, as they did the first time. The
    # exact body, where one was kept (raw_payload had to differ from it), wins.
    body = row.raw_body if row.raw_body is not None else row.raw_text.encode()
    document = parse_document(body)
    target = Target(spec.vendor, row.external_id, row.project_id)
    answer = spec.normalize(document.payload, target=target, fetched_at=row.fetched_at)
    answer.row["raw_payload"] = document.text
    return answer


def _columns(spec: VendorSpec) -> tuple[Any, ...]:
    table = spec.archive_table.__table__
    project = table.c.get("project_id")
    return (
        spec.archive_key.label("external_id"),
        (project if project is not None else literal("")).label("project_id"),
        cast(table.c.raw_payload, Text).label("raw_text"),
        table.c.raw_body,
        table.c.fetched_at,
    )


def reprocess(
    db: Database,
    vendors: Iterable[Vendor],
    *,
    since: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> Reprocessed:
    """Normalize and upsert every stored answer of `vendors`, one batch per transaction.

    Batches walk the primary key, so each one is an index range scan whatever
    the archive's size. A batch locks its parent rows (FOR UPDATE; SQLite's
    IMMEDIATE transaction does the same) so a worker re-archiving one of those
    answers at the same moment waits, and then wins with its newer payload.
    A payload today's normalizer rejects is reported and its rows left as they are.
    """
    result = Reprocessed()
    for vendor in vendors:
        spec = VENDORS[vendor]
        key = _key(vendor)
        last: str | None = None
        while True:
            with db.session() as session:
                stmt = (
                    select(*_columns(spec))
                    .where(*_conditions(vendor, since))
                    .order_by(key)
                    .limit(batch_size)
                    .with_for_update()
                )
                if last is not None:
                    stmt = stmt.where(key > last)
                rows = session.execute(stmt).all()
                if not rows:
                    break
                answers = []
                for row in rows:
                    try:
                        answers.append(_normalize(spec, row))
                    except PayloadError as exc:
                        result.failures.append(Failure(vendor, str(row[0]), str(exc)))
                # Already in key order, the order the worker writes in too.
                result.rows_written += upsert_answers(session, answers)
            result.answers += len(answers)
            last = rows[-1][0]
            if progress is not None:
                progress(len(rows))
    return result
