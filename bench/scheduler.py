"""Scenario "scheduler": the cost of one scheduler tick does not grow with the archive.

`tracked_ids` is bulk-loaded (INSERT ... SELECT generate_series, then VACUUM
ANALYZE) at two sizes with the same due set, DUE ids in `tracked`/`polling` with
next_poll_at <= now, split evenly between the vendors:

- the baseline: the due ids alone (no archive);
- the archive: the same due ids plus 99 x as many archived rows (1,000,000 rows,
  99 % final).

One tick is what beat's `dispatch_due` does before it sends anything:
`claim_batches(session, runtime, now=...)` inside `runtime.db.session()`,
commit included. The rate budgets are set far above any plan, so each vendor
claims MAX_IN_FLIGHT (default 2,000) ids in batches of BATCH_SIZE (100) per tick.
Between ticks the claimed ids are handed back and the table vacuumed (outside the
timing), so every tick finds the same due set. Figures: the median tick at both
sizes (target < 50 ms each) and their ratio; then every statement of one tick at
the large size is replayed under EXPLAIN (ANALYZE, BUFFERS) and the plans checked
for a Seq Scan on tracked_ids (target: none, index access only).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, create_engine, event, text

from bench.harness import (
    PROJECTS,
    Result,
    autocommit,
    console,
    fresh_database,
    in_process_product,
)

TICK_TARGET_MS = 50.0
SEQ_SCAN = "Seq Scan on tracked_ids"


@dataclass(frozen=True)
class Plan:
    due: int  # due ids, both sizes
    archive_factor: int  # archived rows per due id in the large table
    ticks: int  # timed ticks per size (after one warm-up)


FULL = Plan(due=10_000, archive_factor=99, ticks=20)
SMOKE = Plan(due=500, archive_factor=9, ticks=3)


@dataclass
class Size:
    total: int
    archived: int
    ticks_ms: list[float] = field(default_factory=list)
    claimed: int = 0
    batches: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ticks_ms)


# --- Data ---------------------------------------------------------------------

# Row g (1-based, = id) is archived when g <= :archived, else due. A due row's
# next_poll_at depends on its id only, so RESET_SQL puts a claimed row back exactly.
LOAD_SQL = """
INSERT INTO tracked_ids (
    id, vendor, project_id, external_id, state, registered_at, remote_created_at,
    deadline_at, next_poll_at, attempts, last_http_status, last_polled_at,
    final_at, archived_at
)
SELECT
    g,
    CASE WHEN g % 2 = 0 THEN 'mentionsapi' ELSE 'mentionlab' END,
    CASE WHEN g % 2 = 0 THEN '' ELSE (CAST(:projects AS text[]))[1 + g % 3] END,
    CASE WHEN g % 2 = 0 THEN 'ask_' || lpad(g::text, 26, '0')
         ELSE CAST(md5(g::text) AS uuid)::text END,
    CASE WHEN g <= :archived THEN 'archived'
         WHEN g % 3 = 0 THEN 'polling' ELSE 'tracked' END,
    reg,
    CASE WHEN g <= :archived OR g % 3 = 0 THEN reg END,
    reg + interval '30 days',
    CASE WHEN g <= :archived THEN reg + interval '10 minutes'
         ELSE CAST(:now AS timestamptz) - (g % 600) * interval '1 second' END,
    CASE WHEN g <= :archived THEN 3 WHEN g % 3 = 0 THEN 1 ELSE 0 END,
    CASE WHEN g <= :archived OR g % 3 = 0 THEN 200 END,
    CASE WHEN g <= :archived OR g % 3 = 0 THEN reg + interval '5 minutes' END,
    CASE WHEN g <= :archived THEN reg + interval '10 minutes' END,
    CASE WHEN g <= :archived THEN reg + interval '10 minutes' END
FROM generate_series(1, :total) AS g,
     LATERAL (SELECT CAST(:now AS timestamptz) - (g % 43200) * interval '1 minute' AS reg) AS r
"""
RESET_SQL = """
UPDATE tracked_ids
SET lease_token = NULL, next_poll_at = CAST(:now AS timestamptz) - (id % 600) * interval '1 second'
WHERE lease_token IS NOT NULL
"""


def load(conn: Connection, total: int, archived: int, now: datetime) -> None:
    params = {"total": total, "archived": archived, "now": now, "projects": list(PROJECTS)}
    conn.execute(text(LOAD_SQL), params)
    conn.execute(
        text("SELECT setval(pg_get_serial_sequence('tracked_ids', 'id'), :n)"), {"n": total}
    )
    conn.execute(text("VACUUM ANALYZE tracked_ids"))


def reset(conn: Connection, now: datetime) -> None:
    """Hand every claimed id back as it was, and clear out the dead row versions."""
    conn.execute(text(RESET_SQL), {"now": now})
    conn.execute(text("VACUUM (INDEX_CLEANUP ON) tracked_ids"))


# --- Ticks ----------------------------------------------------------------------


def tick(now: datetime) -> tuple[float, int, int]:
    """One scheduler tick as `dispatch_due` runs it; (seconds, ids claimed, batches)."""
    from worker.poller import claim_batches
    from worker.resources import process_runtime

    runtime = process_runtime()  # built once, outside the timed tick
    started = time.perf_counter()
    with runtime.db.session() as session:
        claims, waiting = claim_batches(session, runtime, now=now)
    seconds = time.perf_counter() - started
    if waiting:
        raise RuntimeError(f"vendors gated during the tick: {waiting}")
    return seconds, sum(len(c.ids) for c in claims), len(claims)


@contextmanager
def captured_statements() -> Iterator[list[tuple[str, Any]]]:
    """The SQL and parameters the product sends while the block runs."""
    from worker.resources import process_runtime

    engine = process_runtime().db.engine
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def explain(database_url: str, statements: list[tuple[str, Any]]) -> list[str]:
    """Replay a tick's statements in order under EXPLAIN (ANALYZE, BUFFERS), in one
    transaction that is rolled back."""
    engine = create_engine(database_url)
    plans: list[str] = []
    try:
        with engine.connect() as conn:
            for statement, parameters in statements:
                if statement.lstrip().upper().startswith("SET "):
                    # A session setting (the claim's synchronous_commit): no plan.
                    conn.exec_driver_sql(statement, parameters or None)
                    plans.append("(a setting, not a query: no plan)")
                    continue
                rows = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters or None
                ).all()
                plans.append("\n".join(row[0] for row in rows))
            conn.rollback()
    finally:
        engine.dispose()
    return plans


def measure(plan: Plan, total: int, now: datetime) -> tuple[Size, list[tuple[str, str]]]:
    """Load one table size and time its ticks; also (SQL, plan) of each statement of
    one more tick, replayed under EXPLAIN."""
    size = Size(total, total - plan.due)
    database_url = fresh_database()
    with autocommit(database_url) as conn, in_process_product(database_url):
        started = time.perf_counter()
        load(conn, total, size.archived, now)
        console.print(
            f"[dim]scheduler: loaded {total:,} rows ({size.archived:,} archived, "
            f"{plan.due:,} due) in {time.perf_counter() - started:.1f}s[/]"
        )
        tick(now)  # warm-up: connection, statement caches
        reset(conn, now)
        for _ in range(plan.ticks):
            seconds, size.claimed, size.batches = tick(now)
            size.ticks_ms.append(seconds * 1000)
            reset(conn, now)
        with captured_statements() as statements:
            tick(now)
        reset(conn, now)
        plans = explain(database_url, statements)
        reset(conn, now)
    return size, list(zip((s for s, _ in statements), plans, strict=True))


# --- Report ---------------------------------------------------------------------


def print_plans(plans: list[tuple[str, str]]) -> None:
    claims = [(sql, p) for sql, p in plans if "UPDATE tracked_ids" in sql]
    others = [(sql, p) for sql, p in plans if "UPDATE tracked_ids" not in sql]
    if claims:
        first_sql, first = claims[0]
        console.print("[bold]scheduler: the claim statement (postgres)[/]")
        console.print(first_sql, markup=False, highlight=False)
        console.print("[bold]EXPLAIN (ANALYZE, BUFFERS), first claim of the tick[/]")
        console.print(first, markup=False, highlight=False)
        console.print(f"[bold]... last of the tick's {len(claims)} claims[/]")
        console.print(claims[-1][1], markup=False, highlight=False)
    for sql, p in others:
        if "count(" in sql:
            console.print("[bold]EXPLAIN (ANALYZE, BUFFERS), in_flight[/]")
            console.print(p, markup=False, highlight=False)
            break


def run(smoke: bool = False) -> list[Result]:
    plan = SMOKE if smoke else FULL
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    small, _ = measure(plan, plan.due, now)
    large, plans = measure(plan, plan.due * (plan.archive_factor + 1), now)
    if small.claimed != large.claimed:
        raise RuntimeError(f"ticks claimed {small.claimed} vs {large.claimed} ids")
    print_plans(plans)
    seq_scans = sum(SEQ_SCAN in p for _, p in plans)
    console.print(
        f"[dim]scheduler: each tick claimed {large.claimed:,} ids in {large.batches} "
        f"batches with {len(plans)} statements; ticks (ms) {small.total:,} rows: "
        f"{[round(t, 1) for t in small.ticks_ms]}; {large.total:,} rows: "
        f"{[round(t, 1) for t in large.ticks_ms]}[/]"
    )
    note = f"({large.claimed:,} ids in {large.batches} batches)"
    return [
        Result(
            "scheduler",
            f"tick, {small.total:,} rows (no archive)",
            small.median_ms,
            "ms",
            target=TICK_TARGET_MS,
            higher_is_better=False,
            note=note,
        ),
        Result(
            "scheduler",
            f"tick, {large.total:,} rows ({large.archived / large.total:.0%} archived)",
            large.median_ms,
            "ms",
            target=TICK_TARGET_MS,
            higher_is_better=False,
            baseline=small.median_ms,
            baseline_label=f"{small.total:,} rows",
            note=note,
        ),
        Result(
            "scheduler",
            f"tick statements with a Seq Scan on tracked_ids, {large.total:,} rows",
            float(seq_scans),
            "",
            target=1.0,
            higher_is_better=False,
            note=f"(of {len(plans)})" + (" tiny tables: the planner may scan" if smoke else ""),
        ),
    ]
