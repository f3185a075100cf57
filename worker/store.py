"""Idempotent writes of normalized answers: one statement per table per batch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import BindParameter, Table, bindparam, delete, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models import BrandName, QuarantinedPayload, metadata
from worker.normalize import Normalized
from worker.normalize.names import brand_name_rows

# Bound parameters per statement stay under SQLite's 32766 and Postgres' 65535.
_MAX_PARAMS = 30_000


def dialect_insert(session: Session, table: Table) -> Any:
    """`INSERT` with `ON CONFLICT` support for the session's dialect."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}: use Postgres or SQLite")


def _chunks(rows: Sequence[dict[str, Any]], width: int) -> Iterable[Sequence[dict[str, Any]]]:
    size = max(1, _MAX_PARAMS // max(1, width))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def upsert_answers(session: Session, answers: Iterable[Normalized]) -> int:
    """Insert or replace answers with their children; returns rows written.

    The children of every parent that was already stored are deleted and
    inserted again, in the caller's transaction: a re-fetch with different
    children (a MentionLab run that went through `retrying`) replaces them as a
    whole, and an identical re-fetch leaves identical rows.
    """
    by_table: dict[str, dict[Any, Normalized]] = {}
    for answer in answers:
        # The last body for an id wins if one batch carries it twice.
        by_table.setdefault(answer.table, {})[answer.key_value] = answer

    written = 0
    for table_name, batch in by_table.items():
        parent = metadata.tables[table_name]
        any_answer = next(iter(batch.values()))
        key = parent.c[any_answer.key]
        parent_rows = [a.row for a in batch.values()]

        # Only the columns the rows carry are replaced: `reprocess` rebuilds from
        # raw_payload and leaves raw_body (the exact body, when kept) as it is.
        given = set(parent_rows[0])
        stmt = dialect_insert(session, parent)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key],
            set_={
                c.name: stmt.excluded[c.name]
                for c in parent.columns
                if c.name != key.name and c.name in given
            },
        )
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:
            # Which parents were there already: only their old children need
            # deleting, and on a first archive (the usual case) none do. xmax is
            # zero on a row this INSERT created, our transaction id on one it
            # updated; asked in the same statement, so no other writer can slip in.
            stmt = stmt.returning(key, literal_column("xmax <> 0"))
        replaced: list[Any] = []
        for chunk in _chunks(parent_rows, len(parent.columns)):
            result = session.execute(stmt, list(chunk))
            if postgres:
                replaced += [k for k, existed in result if existed]
        written += len(parent_rows)

        keys = replaced if postgres else list(batch)
        for child_name in any_answer.children:
            child = metadata.tables[child_name]
            for start in range(0, len(keys), 1000):
                # Keys rendered inline: a prepared generic plan made while the table
                # was small would seq-scan it for ever after.
                in_keys: BindParameter[Any] = bindparam(
                    "keys", keys[start : start + 1000], literal_execute=True
                )
                session.execute(delete(child).where(child.c[key.name].in_(in_keys)))
            rows = [row for a in batch.values() for row in a.children.get(child_name, ())]
            if rows:
                _insert_rows(session, child, rows)
                written += len(rows)
    _record_brand_names(session, by_table)
    return written


def _record_brand_names(session: Session, by_table: dict[str, dict[Any, Normalized]]) -> None:
    """Each raw brand name not seen before, with its folded form (models/catalog.py)."""
    children = (
        (name, row)
        for batch in by_table.values()
        for answer in batch.values()
        for name, rows in answer.children.items()
        for row in rows
    )
    # Sorted, so two writers inserting the same new names lock them in one order.
    names = sorted(brand_name_rows(children), key=lambda r: r["name"])
    if names:
        table = BrandName.__table__
        for chunk in _chunks(names, 2):
            # One multi-row statement: executemany would send one per name.
            stmt = dialect_insert(session, table).values(list(chunk))
            session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))


def _insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain inserts of new rows: COPY on Postgres, multi-row INSERTs elsewhere."""
    if session.get_bind().dialect.name != "postgresql":
        for chunk in _chunks(rows, len(table.columns)):
            session.execute(table.insert(), list(chunk))
        return
    connection = session.connection()
    dialect = connection.dialect
    columns = list(table.columns)
    # The same conversions an INSERT would apply (JSON documents, UTC timestamps).
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    sql = f"COPY {table.name} ({', '.join(c.name for c in columns)}) FROM STDIN"
    driver = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]  # psycopg, checked above
            for row in rows:
                copy.write_row(
                    [
                        process(row.get(c.key)) if process else row.get(c.key)
                        for c, process in zip(columns, processors, strict=True)
                    ]
                )
    except psycopg.Error as exc:
        # As an INSERT would fail: callers (and the one-by-one fallback) see DBAPIError.
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


def store_quarantined(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bodies that could not be archived, kept verbatim with the reason."""
    if rows:
        session.execute(QuarantinedPayload.__table__.insert(), rows)
