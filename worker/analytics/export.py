"""`mentionsync export`: a table or view to CSV, JSON lines or Parquet, streamed.

Rows come from a server-side cursor (Postgres) or SQLite's own stepping, a
few thousand at a time, and are written as they come: memory stays flat however
large the archive is.
"""

from __future__ import annotations

import base64
import csv
import enum
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    TypeDecorator,
    select,
)
from sqlalchemy.types import TypeEngine

from models import metadata
from worker.analytics.db import read_engine
from worker.analytics.views import VIEWS

FORMATS = ("csv", "jsonl", "parquet")
BATCH_ROWS = 5000

# The time --since and --until select on, per table; child tables use their
# parent's (the time the answer was archived).
TIME_COLUMNS = {
    "tracked_ids": "registered_at",
    "asks": "fetched_at",
    "job_executions": "fetched_at",
    "quarantined_payloads": "received_at",
    "vendor_accounts": "updated_at",
    "webhook_deliveries": "received_at",
    "alert_state": "updated_at",
}


def exportable() -> dict[str, Table]:
    return {**VIEWS, **dict(sorted(metadata.tables.items()))}


def time_conditions(
    table: Table, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    def window(column: Any) -> list[ColumnElement[bool]]:
        out = []
        if since is not None:
            out.append(column >= since)
        if until is not None:
            out.append(column < until)
        return out

    if since is None and until is None:
        return []
    if table.name in VIEWS:
        return window(table.c.answered_at)
    if table.name in TIME_COLUMNS:
        return window(table.c[TIME_COLUMNS[table.name]])
    fk = next(iter(table.foreign_keys), None)
    if fk is None or fk.column.table.name not in TIME_COLUMNS:
        raise ValueError(f"{table.name} has no time column for --since/--until")
    parent = fk.column.table
    parent_rows = select(fk.column).where(*window(parent.c[TIME_COLUMNS[parent.name]]))
    return [fk.parent.in_(parent_rows)]


@contextmanager
def streamed(stmt: Select[Any], batch_rows: int = BATCH_ROWS) -> Iterator[Iterator[Sequence[Any]]]:
    """Result rows of `stmt` in batches, without loading them all."""
    with read_engine() as engine, engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        yield result.partitions()


def base_type(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    return type_.impl if isinstance(type_, TypeDecorator) else type_  # type: ignore[return-value]


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact, as the database has it
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot export {type(value).__name__}")


def _text(value: Any) -> str:
    """One CSV cell: ISO timestamps, JSON documents, base64 bytes, '' for NULL."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _write_csv(table: Table, batches: Iterator[Sequence[Any]], out: IO[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.c.keys())
    rows = 0
    for batch in batches:
        writer.writerows([_text(v) for v in row] for row in batch)
        rows += len(batch)
    return rows


def _write_jsonl(table: Table, batches: Iterator[Sequence[Any]], out: IO[bytes]) -> int:
    names = table.c.keys()
    rows = 0
    for batch in batches:
        out.write(
            b"".join(
                orjson.dumps(
                    dict(zip(names, row, strict=True)),
                    default=_json_default,
                    # Column names are SQLAlchemy's str subclass.
                    option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
                )
                for row in batch
            )
        )
        rows += len(batch)
    return rows


def export(
    name: str,
    fmt: str,
    out: Path | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write table or view `name` to `out` (stdout when None); returns the row count.

    A file appears only once complete: rows go to `PATH.partial`, renamed at the end.
    """
    table = exportable()[name]
    stmt = select(table).where(*time_conditions(table, since, until))
    if fmt == "parquet" and out is None:
        raise ValueError("Parquet needs a file: give --out PATH")
    partial = out.with_name(out.name + ".partial") if out else None
    try:
        with streamed(stmt, batch_rows) as batches:
            if fmt == "parquet":
                # pyarrow is large: loaded only for Parquet.
                from worker.analytics.parquet import write_parquet

                assert partial is not None
                rows = write_parquet(table, batches, partial)
            elif fmt == "jsonl":
                with _binary_out(partial) as stream:
                    rows = _write_jsonl(table, batches, stream)
            else:
                with _text_out(partial) as stream:
                    rows = _write_csv(table, batches, stream)
        if out and partial:
            os.replace(partial, out)
    finally:
        if partial:
            partial.unlink(missing_ok=True)
    return rows


@contextmanager
def _text_out(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    with path.open("w", encoding="utf-8", newline="") as f:
        yield f


@contextmanager
def _binary_out(path: Path | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with path.open("wb") as f:
        yield f
