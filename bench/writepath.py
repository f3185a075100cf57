"""Scenario "writepath": how close the product's archive write comes to COPY.

Realistic final bodies of both vendors (simulator.Dataset, the same bodies the
simulator serves) are parsed and normalized once by the product's own
normalizers, outside any timing. Then, into empty archive tables:

- the product's write: `upsert_answers(session, batch)` for batches of
  BATCH_SIZE answers of one vendor, sorted by key as `apply_outcomes` sorts
  them, one `db.session()` transaction per batch, as a worker does;
- the physical limit: one `COPY ... FROM STDIN` per table (parents first, then
  children) of exactly the same rows, in one transaction, through psycopg's
  `cursor.copy` with its default adaptation (JSON documents through `Jsonb`).

The tables are truncated and a CHECKPOINT taken before each timed write. The
figure is normalized rows (parent + child rows) per second for both, and their
ratio (target: upsert >= 50 % of COPY). Both writes must leave identical tables:
the row count and an md5 over the rows in primary-key order are compared per
table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, create_engine, text

from bench.harness import (
    Result,
    autocommit,
    console,
    final_ask_ids,
    final_execution_ids,
    fresh_database,
    in_process_product,
)

if TYPE_CHECKING:
    from worker.normalize import Normalized

SEED = 11
FETCHED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RATIO_TARGET = 50.0  # % of COPY's rows/s
# Parents before children (foreign keys); TRUNCATE takes them all at once.
TABLES = (
    "asks",
    "ask_provider_responses",
    "ask_citations",
    "ask_brand_mentions",
    "job_executions",
    "job_execution_sources",
    "job_execution_entities",
)


@dataclass(frozen=True)
class Plan:
    asks: int
    executions: int
    rounds: int  # upsert and COPY each run this often, alternating; the median counts


FULL = Plan(asks=5_000, executions=5_000, rounds=3)
SMOKE = Plan(asks=100, executions=100, rounds=1)


@dataclass
class Timing:
    label: str
    rows: int = 0
    seconds: list[float] = field(default_factory=list)
    contents: dict[str, tuple[int, str]] = field(default_factory=dict)
    batch_size: int = 0  # answers per transaction

    @property
    def rows_per_second(self) -> float:
        return self.rows / statistics.median(self.seconds)


# --- Answers --------------------------------------------------------------------


def ask_answers(n: int) -> Iterator[Normalized]:
    from simulator import Dataset
    from worker.normalize import parse_json
    from worker.vendors.mentionsapi.normalize import normalize_ask

    dataset = Dataset(seed=SEED, anchor=FETCHED_AT, max_pending_polls=0)
    for ask_id in final_ask_ids(SEED, n):
        _, body = dataset.final_bytes("mentionsapi", ask_id)
        yield normalize_ask(parse_json(body), ask_id=ask_id, fetched_at=FETCHED_AT)


def execution_answers(n: int) -> Iterator[Normalized]:
    from simulator import Dataset
    from worker.normalize import parse_json
    from worker.vendors.mentionlab.normalize import normalize_execution

    dataset = Dataset(seed=SEED, anchor=FETCHED_AT, max_pending_polls=0)
    for project_id, execution_id in final_execution_ids(SEED, n):
        _, body = dataset.final_bytes("mentionlab", execution_id, project_id)
        yield normalize_execution(
            parse_json(body),
            job_execution_id=execution_id,
            project_id=project_id,
            fetched_at=FETCHED_AT,
        )


def batches(answers: Sequence[Normalized], size: int) -> list[list[Normalized]]:
    """One vendor's answers as the worker writes them: per claim, sorted by key."""
    return [
        sorted(answers[i : i + size], key=lambda a: a.key_value)
        for i in range(0, len(answers), size)
    ]


def interleave(*groups: list[list[Normalized]]) -> list[list[Normalized]]:
    """Batches of both vendors alternating, as concurrent workers would write them."""
    out: list[list[Normalized]] = []
    for i in range(max(len(g) for g in groups)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def rows_by_table(answers: Sequence[Normalized]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for answer in answers:
        rows[answer.table].append(answer.row)
        for child, child_rows in answer.children.items():
            rows[child] += child_rows
    return rows


# --- Writes ---------------------------------------------------------------------


def prepare(conn: Connection) -> None:
    """Empty archive tables and a fresh checkpoint, so each write starts the same."""
    conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
    conn.execute(text("CHECKPOINT"))


def write_upsert(answer_batches: Sequence[Sequence[Normalized]]) -> tuple[float, int]:
    """The product's write, one transaction per batch; (seconds, rows written)."""
    from worker.resources import process_runtime
    from worker.store import upsert_answers

    written = 0
    started = time.perf_counter()
    for batch in answer_batches:
        with process_runtime().db.session() as session:
            written += upsert_answers(session, batch)
    return time.perf_counter() - started, written


def json_columns(name: str) -> frozenset[str]:
    """Columns COPY must send as JSON documents. Like the product's JSON type
    (none_as_null=True), None there is SQL NULL, not the JSON value null."""
    from models import metadata

    return frozenset(c.name for c in metadata.tables[name].columns if isinstance(c.type, JSON))


def copy_tables(cur: Any, rows: dict[str, list[dict[str, Any]]], schema: str = "public") -> int:
    """COPY each table's rows (parents first) on a psycopg cursor; rows written."""
    from models import metadata

    written = 0
    for name in TABLES:
        columns = [c.name for c in metadata.tables[name].columns]
        as_json = [c in json_columns(name) for c in columns]
        sql = f"COPY {schema}.{name} ({', '.join(columns)}) FROM STDIN"
        with cur.copy(sql) as copy:
            for row in rows[name]:
                copy.write_row(
                    [
                        Jsonb(row[c]) if j and row.get(c) is not None else row.get(c)
                        for c, j in zip(columns, as_json, strict=True)
                    ]
                )
        written += len(rows[name])
    return written


def write_copy(database_url: str, rows: dict[str, list[dict[str, Any]]]) -> tuple[float, int]:
    """COPY every table's rows in one transaction; (seconds, rows written)."""
    engine = create_engine(database_url)
    try:
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert conn is not None
            started = time.perf_counter()
            with conn.cursor() as cur:
                written = copy_tables(cur, rows)
            conn.commit()
            seconds = time.perf_counter() - started
        finally:
            raw.close()
    finally:
        engine.dispose()
    return seconds, written


def contents(conn: Connection) -> dict[str, tuple[int, str]]:
    """Per table: row count and an md5 over every row's text, in primary-key order."""
    from models import metadata

    out: dict[str, tuple[int, str]] = {}
    for name in TABLES:
        key = ", ".join(f"t.{c.name}" for c in metadata.tables[name].primary_key.columns)
        # Names come from TABLES and the models, never from input.
        sql = f"SELECT count(*), md5(coalesce(string_agg(md5(t::text), '' ORDER BY {key}), ''))"
        count, digest = conn.execute(text(f"{sql} FROM {name} AS t")).one()
        out[name] = (int(count), str(digest))
    return out


# --- Scenario -------------------------------------------------------------------


def generate(plan: Plan, batch_size: int) -> list[list[Normalized]]:
    started = time.perf_counter()
    asks = list(ask_answers(plan.asks))
    executions = list(execution_answers(plan.executions))
    console.print(
        f"[dim]writepath: {len(asks):,} asks + {len(executions):,} executions "
        f"normalized in {time.perf_counter() - started:.1f}s (not timed)[/]"
    )
    return interleave(batches(asks, batch_size), batches(executions, batch_size))


def measure(plan: Plan) -> tuple[Timing, Timing]:
    from worker.config import load_settings

    database_url = fresh_database()
    upsert, copy = Timing("upsert_answers"), Timing("COPY")
    with autocommit(database_url) as conn, in_process_product(database_url):
        upsert.batch_size = load_settings().batch_size
        answer_batches = generate(plan, upsert.batch_size)
        rows = rows_by_table([a for batch in answer_batches for a in batch])
        for _ in range(plan.rounds):
            prepare(conn)
            seconds, upsert.rows = write_upsert(answer_batches)
            upsert.seconds.append(seconds)
            upsert.contents = contents(conn)
            prepare(conn)
            seconds, copy.rows = write_copy(database_url, rows)
            copy.seconds.append(seconds)
            copy.contents = contents(conn)
            console.print(
                f"[dim]writepath: {upsert.rows:,} rows: upsert {upsert.seconds[-1]:.2f}s, "
                f"COPY {copy.seconds[-1]:.2f}s[/]"
            )
        prepare(conn)
    return upsert, copy


def compare(upsert: Timing, copy: Timing) -> list[str]:
    """Tables whose contents differ between the two writes, with both fingerprints."""
    return [
        f"{name}: upsert {upsert.contents[name]} vs COPY {copy.contents[name]}"
        for name in TABLES
        if upsert.contents[name] != copy.contents[name]
    ]


def run(smoke: bool = False) -> list[Result]:
    plan = SMOKE if smoke else FULL
    upsert, copy = measure(plan)
    if upsert.rows != copy.rows:
        raise RuntimeError(f"upsert wrote {upsert.rows} rows, COPY {copy.rows}")
    differences = compare(upsert, copy)
    for name in TABLES:
        count, digest = upsert.contents[name]
        console.print(f"[dim]writepath: {name}: {count:,} rows, md5 {digest}[/]")
    for line in differences:
        console.print(f"[red]writepath: contents differ: {line}[/]")
    answers = plan.asks + plan.executions
    return [
        Result(
            "writepath",
            f"COPY, {answers:,} answers",
            copy.rows_per_second,
            "rows/s",
            target=None,
            note=f"({copy.rows:,} rows)",
        ),
        Result(
            "writepath",
            f"upsert_answers, batches of {upsert.batch_size}",
            upsert.rows_per_second,
            "rows/s",
            target=RATIO_TARGET / 100 * copy.rows_per_second,
            baseline=copy.rows_per_second,
            baseline_label="COPY",
            note=f"({100 * upsert.rows_per_second / copy.rows_per_second:.0f} % of COPY)",
        ),
        Result(
            "writepath",
            "tables differing upsert vs COPY",
            float(len(differences)),
            "",
            target=1.0,
            higher_is_better=False,
            note=f"(of {len(TABLES)}: count + md5 per table)",
        ),
    ]
