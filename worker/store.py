"""Idempotent writes of normalized answers: one statement per table per batch."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    BindParameter,
    Column,
    ColumnClause,
    CursorResult,
    String,
    Table,
    bindparam,
    delete,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
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
    postgres = session.get_bind().dialect.name == "postgresql"
    for table_name, batch in by_table.items():
        parent = metadata.tables[table_name]
        any_answer = next(iter(batch.values()))
        key = parent.c[any_answer.key]
        parent_rows = [a.row for a in batch.values()]

        # Only the columns the rows carry are replaced: `reprocess` rebuilds from
        # raw_payload and leaves raw_body (the exact body, when kept) as it is.
        given = [c for c in parent.columns if c.name in parent_rows[0]]
        replaced: list[Any] = []
        if postgres:
            replaced = _upsert_from_arrays(session, parent, key, given, parent_rows)
        else:
            stmt = dialect_insert(session, parent)
            stmt = stmt.on_conflict_do_update(
                index_elements=[key],
                set_={c.name: stmt.excluded[c.name] for c in given if c.name != key.name},
            )
            for chunk in _chunks(parent_rows, len(parent.columns)):
                session.execute(stmt, list(chunk))
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
        if session.get_bind().dialect.name == "postgresql":
            # One statement: executemany would send one per name.
            columns = (table.c.name, table.c.fold_key)
            sql = _insert_sql(
                session.get_bind().dialect, table, tuple(columns), "name", upsert=False
            )
            execute_arrays(session, sql, array_params(session, columns, names))
            return
        for chunk in _chunks(names, 2):
            stmt = dialect_insert(session, table).on_conflict_do_nothing(index_elements=["name"])
            session.execute(stmt, list(chunk))


def _upsert_from_arrays(
    session: Session,
    table: Table,
    key: Column[Any],
    columns: Sequence[Column[Any]],
    rows: Sequence[Mapping[str, Any]],
) -> list[Any]:
    """`INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE`: the keys of
    the rows that were there already.

    Which parents were there already: only their old children need deleting,
    and on a first archive (the usual case) none do. xmax is zero on a row this
    INSERT created, our transaction id on one it updated; asked in the same
    statement, so no other writer can slip in."""
    sql = _insert_sql(session.get_bind().dialect, table, tuple(columns), key.name, upsert=True)
    result = execute_arrays(session, sql, array_params(session, columns, rows))
    return [key for key, existed in result if existed]


@functools.cache
def _insert_sql(
    dialect: Dialect,
    table: Table,
    columns: tuple[Column[Any], ...],
    conflict: str,
    *,
    upsert: bool,
) -> str:
    """An INSERT of rows given as one array per column (see `array_params`):
    the statement's text is the same whatever the row count, so it is built
    and prepared once, and nothing is parsed per row. On a conflict on the
    column `conflict`, `upsert` replaces the other columns and returns each
    row's key and whether it was there already; else the row is skipped."""
    quote = dialect.identifier_preparer.quote
    names = [quote(c.name) for c in columns]
    key = quote(conflict)
    # Built from the tables' own names and types, never from input.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(names)})"  # noqa: S608
        f" SELECT * FROM {unnest_arrays(dialect, columns)} ON CONFLICT ({key})"
    )
    if upsert:
        # The key itself when there is nothing else: DO UPDATE still returns the row.
        replaced = [f"{n} = EXCLUDED.{n}" for c, n in zip(columns, names, strict=True)]
        kept = [r for c, r in zip(columns, replaced, strict=True) if c.name != conflict]
        sets = ", ".join(kept) or f"{key} = EXCLUDED.{key}"
        # Keys as text, as the models give them (UUIDs included).
        return sql + f" DO UPDATE SET {sets} RETURNING CAST({key} AS text), xmax <> 0"
    return sql + " DO NOTHING"


def unnest_arrays(dialect: Dialect, columns: Sequence[ColumnClause[Any]]) -> str:
    """`unnest(CAST(%(a0)s AS type0[]), ...)`, for `execute_arrays`: rows passed as
    one array per column, named as `array_params` names them.

    Text and JSON arrays go in psycopg's binary format: its text format escapes
    every quote of every element (a JSON document has hundreds) in Python, which
    cost more than the rest of a write. Other types keep the automatic format,
    which tolerates a column mixing Python types (ints among floats, say)."""
    casts = ", ".join(
        f"CAST(%(a{i}){'b' if _binary(c) else 's'} AS {c.type.compile(dialect=dialect)}[])"
        for i, c in enumerate(columns)
    )
    return f"unnest({casts})"


def _binary(col: ColumnClause[Any]) -> bool:
    return isinstance(col.type, String | JSON)


def execute_arrays(
    session: Session, sql: str, params: Mapping[str, list[Any]]
) -> CursorResult[*tuple[Any, ...]]:
    """Run a statement of `unnest_arrays` in the session's transaction. It goes to
    the driver as written (psycopg's placeholders pick each array's format), and
    its rows come back as the driver gives them."""
    return session.connection().exec_driver_sql(sql, dict(params))


def array_params(
    session: Session, columns: Sequence[ColumnClause[Any]], rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """The parameters of `unnest_arrays`: each column's values, converted as an
    INSERT would convert them (JSON documents, UTC timestamps)."""
    dialect = session.get_bind().dialect
    params = {}
    for i, col in enumerate(columns):
        process = col.type.dialect_impl(dialect).bind_processor(dialect)
        values = [row.get(col.key) for row in rows]
        params[f"a{i}"] = [process(v) for v in values] if process else values
    return params


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
    # Most columns need no conversion: only those that do are visited per row.
    convert = [(i, process) for i, process in enumerate(processors) if process is not None]
    keys = [c.key for c in columns]
    sql = f"COPY {table.name} ({', '.join(c.name for c in columns)}) FROM STDIN"
    driver = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]  # psycopg, checked above
            for row in rows:
                values = list(map(row.get, keys))
                for i, process in convert:
                    values[i] = process(values[i])
                copy.write_row(values)
    except psycopg.Error as exc:
        # As an INSERT would fail: callers (and the one-by-one fallback) see DBAPIError.
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


def store_quarantined(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bodies that could not be archived, kept verbatim with the reason."""
    if rows:
        session.execute(QuarantinedPayload.__table__.insert(), rows)
