"""`mentionsync export`: a table or view to CSV, JSON lines or Parquet, streamed.

Rows come from a server-side cursor (Postgres) or SQLite's own stepping, a
few thousand at a time, and are written as they come: memory stays flat however
large the archive is.

JSON documents are exported as the database's own text of them, never parsed
and encoded again: whatever the database could store (integers wider than 64
bits, nesting deeper than an encoder's recursion limit, any unicode) comes out
exactly, and it is cheaper too.

CSV cells that a spreadsheet would run as a formula are neutralized by default
(OWASP's advice: a leading `'`); `formula_guard=False` writes them as stored.
"""

from __future__ import annotations

import base64
import csv
import enum
import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Integer,
    Numeric,
    Select,
    Table,
    Text,
    cast,
    func,
    select,
)
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.types import TypeEngine

from models import metadata
from models.base import base_type
from worker.analytics.db import read_engine
from worker.analytics.views import VIEWS
from worker.db import Database

FORMATS = ("csv", "jsonl", "parquet")
BATCH_ROWS = 5000
# OWASP's list of first characters that make a spreadsheet read a cell as a
# formula (CSV injection): = + - @, tab and carriage return.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

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
    "scheduler_heartbeats": "last_tick_at",
}
# Reference data the analyst keeps (migration 0010): exported whole, whatever
# the window, since a report of any period reads all of it.
UNTIMED = frozenset(
    {
        "catalog_brands",
        "catalog_aliases",
        "catalog_domains",
        "domain_categories",
        "brand_names",
        "answer_labels",
        "label_facts",
        "domain_category_map",
    }
)


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

    if (since is None and until is None) or table.name in UNTIMED:
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
def streamed(
    db: Database, stmt: Select[Any], batch_rows: int = BATCH_ROWS
) -> Iterator[Iterator[Sequence[Any]]]:
    """Result rows of `stmt` in batches, without loading them all."""
    with read_engine(db) as engine, engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        yield result.partitions()


def is_json(type_: TypeEngine[Any]) -> bool:
    return isinstance(base_type(type_), JSON)


def exported_columns(table: Table) -> list[KeyedColumnElement[Any]]:
    """The columns to select, JSON documents as their text.

    Postgres prints jsonb on one line, numbers exactly as stored; SQLite keeps
    the text that was written. A JSON `null` document reads as NULL, as it did
    when documents were parsed (both are Python None).
    """
    return [
        func.nullif(cast(c, Text), "null").label(c.name) if is_json(c.type) else c for c in table.c
    ]


def neutralize_formula(cell: str) -> str:
    """A cell a spreadsheet shows as text: a leading `'` when it could start a formula."""
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def formula_prone(type_: TypeEngine[Any]) -> bool:
    """Whether a column's CSV cells can start a formula.

    Numbers (a negative one starts with '-' and must stay a number), booleans
    and timestamps cannot; neither can JSON text, which starts with { [ " a
    digit, the '-' of a number, or true/false/null. Text, enums and base64
    bytes (which may start with '+') can.
    """
    return not isinstance(base_type(type_), Boolean | Integer | Numeric | DateTime | JSON)


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


def _guarded_text(value: Any) -> str:
    return neutralize_formula(_text(value))


def _write_csv(
    table: Table, batches: Iterator[Sequence[Any]], out: IO[str], *, formula_guard: bool
) -> int:
    # RFC 4180 line ends: Python's writer quotes only cells holding a character of
    # the terminator, so with "\n" alone a cell's CR went out bare and split its row.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.c.keys())
    cells: list[Callable[[Any], str]] = [
        _guarded_text if formula_guard and formula_prone(c.type) else _text for c in table.c
    ]
    rows = 0
    for batch in batches:
        writer.writerows([cell(v) for cell, v in zip(cells, row, strict=True)] for row in batch)
        rows += len(batch)
    return rows


def _json_fragment(document: str | None) -> orjson.Fragment | None:
    """A selected JSON text, embedded as it is in the line.

    Outside strings, valid JSON may only hold CR and LF as whitespace between
    tokens (SQLite keeps a pretty-printed body as it came): they become spaces,
    so each row stays one line.
    """
    if document is None:
        return None
    if "\n" in document or "\r" in document:
        document = document.replace("\r", " ").replace("\n", " ")
    return orjson.Fragment(document)


def _write_jsonl(table: Table, batches: Iterator[Sequence[Any]], out: IO[bytes]) -> int:
    names = table.c.keys()
    documents = [i for i, c in enumerate(table.c) if is_json(c.type)]
    rows = 0
    for batch in batches:
        lines = []
        for row in batch:
            values = list(row)
            for i in documents:
                values[i] = _json_fragment(values[i])
            lines.append(
                orjson.dumps(
                    dict(zip(names, values, strict=True)),
                    default=_json_default,
                    # Column names are SQLAlchemy's str subclass.
                    option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
                )
            )
        out.write(b"".join(lines))
        rows += len(batch)
    return rows


def export(
    db: Database,
    name: str,
    fmt: str,
    out: Path | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_rows: int = BATCH_ROWS,
    formula_guard: bool = True,
) -> int:
    """Write table or view `name` to `out` (stdout when None); returns the row count.

    A file appears only once complete: rows go to `PATH.partial`, renamed at the end.
    `formula_guard` (CSV only) neutralizes cells a spreadsheet would run as formulas.
    """
    table = exportable()[name]
    stmt = (
        select(*exported_columns(table))
        .select_from(table)
        .where(*time_conditions(table, since, until))
    )
    if fmt == "parquet" and out is None:
        raise ValueError("Parquet needs a file: give --out PATH")
    partial = out.with_name(out.name + ".partial") if out else None
    try:
        with streamed(db, stmt, batch_rows) as batches:
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
                    rows = _write_csv(table, batches, stream, formula_guard=formula_guard)
        if out and partial:
            os.replace(partial, out)
    finally:
        if partial:
            partial.unlink(missing_ok=True)
    return rows


@contextmanager
def utf8_stdout() -> Iterator[IO[str]]:
    """Standard output as UTF-8 text whatever the locale says, as files are written:
    vendor text is any unicode, and a Latin-1 or ASCII terminal must not fail on it."""
    sys.stdout.flush()
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()  # leave sys.stdout's buffer open


@contextmanager
def _text_out(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        with utf8_stdout() as stream:
            yield stream
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
