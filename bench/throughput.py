"""Scenario "throughput": ids archived per second, tracking to final, against a naive
loop and a dlt pipeline, on the same ids, the same simulator and the same Postgres.

The simulator adds no latency and no rate limit, and every id is final on the
first fetch (max_pending_polls=0), so nothing but the archiver limits the rate.

- mentionsync: `celery worker --concurrency=N` (N = 1, 2, 4 processes) plus beat,
  over ASKS + EXECUTIONS tracked ids; the clock runs from the first request the
  simulator sees (worker boot is excluded) until no id is active.
- naive: one process, one request at a time, the product's normalizers, and one
  ORM `Session.merge` per row with a commit per id (what a first script does).
- dlt: a dlt pipeline (`bench/dlt_pipeline.py`) fetching the same ids through a
  parallelized transformer and loading the same tables with
  write_disposition="merge".
- `mentionsync sync --until-done` (issue 13: the no-Celery path for backfills),
  on the dlt baseline's ids, the same clock as the Celery rows (first request to
  no active id); targets at least 5x the naive loop and 2x dlt.

The baselines are slower, so they run on the first NAIVE_IDS / DLT_IDS of each
vendor's ids (rates are compared, not durations). Every run must leave rows
identical to mentionsync's for the same ids: per table, the row count and an md5
over every row in primary-key order, with JSON compared as jsonb and numerics
without trailing zeros.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, create_engine, text

from bench.harness import (
    CeleryCluster,
    Result,
    SimulatorProcess,
    _child_env,
    _stop,
    console,
    count_by_state,
    final_ask_ids,
    final_execution_ids,
    flush_redis,
    fresh_database,
    register_executions,
    register_ids,
    run_dir,
    wait_until,
    worker_env,
)

SEED = 21
WORKER_COUNTS = (1, 2, 4)
NAIVE_TARGET = 10.0  # x the naive loop's ids/s
DLT_TARGET = 2.0  # x dlt's ids/s
SYNC_NAIVE_TARGET = 5.0  # `sync --until-done`: x the naive loop's ids/s
SYNC_DLT_TARGET = 2.0  # and x dlt's
ACTIVE_COUNT = "SELECT count(*) FROM tracked_ids WHERE state IN ('tracked', 'polling')"
# Archive tables and their primary keys; the first key column is the vendor's id.
TABLES: dict[str, tuple[str, ...]] = {
    "asks": ("ask_id",),
    "ask_provider_responses": ("ask_id", "position"),
    "ask_citations": ("ask_id", "position"),
    "ask_brand_mentions": ("ask_id", "position"),
    "job_executions": ("job_execution_id",),
    "job_execution_sources": ("job_execution_id", "position"),
    "job_execution_entities": ("job_execution_id", "position"),
}


@dataclass(frozen=True)
class Plan:
    asks: int
    executions: int
    naive_ids: int  # of each vendor
    dlt_ids: int  # of each vendor
    workers: tuple[int, ...] = WORKER_COUNTS


FULL = Plan(asks=20_000, executions=20_000, naive_ids=1_000, dlt_ids=5_000)
SMOKE = Plan(asks=150, executions=150, naive_ids=30, dlt_ids=60, workers=(2,))


@dataclass
class Run:
    label: str
    ids: int
    seconds: float = 0.0
    rows: int = 0
    fingerprint: dict[str, tuple[int, str]] = field(default_factory=dict)
    subsets: dict[int, dict[str, tuple[int, str]]] = field(default_factory=dict)
    notes: str = ""

    @property
    def ids_per_second(self) -> float:
        return self.ids / self.seconds if self.seconds else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# --- Comparing contents -----------------------------------------------------------


def _columns(table: str) -> list[str]:
    """Each column as canonical text, whoever created the table and with what types."""
    from sqlalchemy import JSON, Numeric

    from models import metadata

    out = []
    for column in metadata.tables[table].columns:
        if column.name == "fetched_at":
            continue  # when each system happened to fetch: differs by design
        if isinstance(column.type, JSON):
            out.append(f"coalesce(t.{column.name}::jsonb::text, '<null>')")
        elif isinstance(column.type, Numeric) and column.type.asdecimal:
            out.append(f"coalesce(trim_scale(t.{column.name}::numeric)::text, '<null>')")
        else:
            out.append(f"coalesce(t.{column.name}::text, '<null>')")
    return out


def fingerprint(
    conn: Connection, schema: str, keys: tuple[Sequence[str], Sequence[str]] | None = None
) -> dict[str, tuple[int, str]]:
    """Per table: rows and an md5 over them in key order; only the given asks and
    executions when `keys` is set."""
    out: dict[str, tuple[int, str]] = {}
    for table, key in TABLES.items():
        row = " || '|' || ".join(_columns(table))
        order = ", ".join(f"t.{k}::text" for k in key)
        where, params = "", {}
        if keys is not None:
            wanted = keys[0] if table.startswith("ask") else keys[1]
            where, params = f"WHERE t.{key[0]}::text = ANY(:keys)", {"keys": list(wanted)}
        # Table and column names come from TABLES and the models, never from input.
        digest_sql = f"md5(coalesce(string_agg(md5({row}), '' ORDER BY {order}), ''))"
        sql = f"SELECT count(*), {digest_sql} FROM {schema}.{table} AS t {where}"  # noqa: S608
        count, digest = conn.execute(text(sql), params).one()
        out[table] = (int(count), str(digest))
    return out


def total_rows(prints: dict[str, tuple[int, str]]) -> int:
    return sum(count for count, _ in prints.values())


# --- mentionsync ------------------------------------------------------------------


# An Enterprise-sized key for every mentionsync row: the simulator does not limit here.
UNLIMITED = {
    "MENTIONSAPI_RATE_LIMIT": "100000",
    "MENTIONSAPI_RATE_BURST": "100000",
    "MENTIONLAB_RATE_LIMIT": "100000",
    "MENTIONLAB_RATE_BURST": "100000",
    "LOG_LEVEL": "WARNING",
}


def time_to_final(
    sim: SimulatorProcess,
    database_url: str,
    check: Callable[[], None],
    what: str,
    sample: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """(Seconds from the first request the simulator sees until no id is active,
    requests served); `check` runs at every look (raise to give up), `sample`
    at every look from the first request on."""
    engine = create_engine(database_url)
    try:

        def started() -> bool:
            check()
            return int(sim.stats()["requests"]) > 0

        wait_until(started, 90, f"{what}'s first request", interval=0.02)
        first = time.monotonic()

        def done() -> bool:
            check()
            if sample is not None:
                sample()
            with engine.connect() as conn:
                return int(conn.execute(text(ACTIVE_COUNT)).scalar_one()) == 0

        wait_until(done, 1800, "every id final", interval=0.1)
        return time.monotonic() - first, int(sim.stats()["requests"])
    finally:
        engine.dispose()


def celery_archive(
    database_url: str,
    workdir: Path,
    processes: int,
    *,
    latency_ms: float = 0.0,
    env: dict[str, str] | None = None,
    worker_args: Sequence[str] = (),
    sample: Callable[[CeleryCluster], None] | None = None,
) -> tuple[float, int]:
    """Archive every tracked id with one `celery worker --concurrency=processes` and
    beat; (seconds from the first request to no active id, requests served)."""
    with SimulatorProcess(workdir, seed=SEED, max_pending_polls=0, latency_ms=latency_ms) as sim:
        settings = worker_env(database_url, sim.base_url, **UNLIMITED, **(env or {}))
        with CeleryCluster(
            workdir, settings, workers=1, concurrency=processes, worker_args=[*worker_args]
        ) as celery:
            # Sampled while archiving: from the first request, not while idle.
            return time_to_final(
                sim,
                database_url,
                celery.check_alive,
                "the workers",
                sample=None if sample is None else lambda: sample(celery),
            )


def sync_archive(database_url: str, workdir: Path) -> tuple[float, int]:
    """Archive every tracked id with `mentionsync sync --until-done` (no Celery), with
    the Celery rows' settings; (seconds from the first request to no active id,
    requests served)."""
    with SimulatorProcess(workdir, seed=SEED, max_pending_polls=0) as sim:
        settings = worker_env(database_url, sim.base_url, **UNLIMITED)
        with (workdir / "sync.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "sync", "--until-done"],
                env=_child_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,
            )
            try:

                def check() -> None:
                    code = proc.poll()
                    if code is not None and code != 0:
                        raise RuntimeError(f"sync exited with {code}; see {workdir}/sync.log")

                measured = time_to_final(sim, database_url, check, "sync")
                proc.wait(120)
                check()
            finally:
                _stop(proc)
    return measured


def check_all_final(database_url: str, expected: int, workdir: Path) -> None:
    states = count_by_state(database_url)
    # A vendor-side failure is archived too, under the state `failed`.
    if states.get("archived", 0) + states.get("failed", 0) != expected:
        raise RuntimeError(f"states at the end {states}, expected {expected}; logs in {workdir}")


def register_all(database_url: str, asks: list[str], executions: list[tuple[str, str]]) -> int:
    return register_ids(database_url, "mentionsapi", asks) + register_executions(
        database_url, executions
    )


def run_mentionsync(
    plan: Plan, asks: list[str], executions: list[tuple[str, str]], processes: int
) -> Run:
    workdir = run_dir(f"throughput-{processes}")
    run = Run(f"mentionsync, {processes} worker process{'es' * (processes > 1)}", 0)
    database_url = fresh_database()
    flush_redis()
    run.ids = register_all(database_url, asks, executions)
    run.seconds, requests = celery_archive(database_url, workdir, processes)
    check_all_final(database_url, run.ids, workdir)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            run.fingerprint = fingerprint(conn, "public")
            for n in {plan.naive_ids, plan.dlt_ids}:
                run.subsets[n] = fingerprint(conn, "public", _subset(asks, executions, n))
    finally:
        engine.dispose()
    run.rows = total_rows(run.fingerprint)
    run.notes = f"{requests:,} requests for {run.ids:,} ids; logs {workdir}"
    return run


def run_sync(asks: list[str], executions: list[tuple[str, str]]) -> Run:
    workdir = run_dir("throughput-sync")
    run = Run("sync --until-done", 0)
    database_url = fresh_database()
    flush_redis()
    run.ids = register_all(database_url, asks, executions)
    run.seconds, requests = sync_archive(database_url, workdir)
    check_all_final(database_url, run.ids, workdir)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            run.fingerprint = fingerprint(conn, "public")
    finally:
        engine.dispose()
    run.rows = total_rows(run.fingerprint)
    run.notes = f"{requests:,} requests for {run.ids:,} ids; logs {workdir}"
    return run


def _subset(
    asks: list[str], executions: list[tuple[str, str]], n: int
) -> tuple[list[str], list[str]]:
    return asks[:n], [e for _, e in executions[:n]]


# --- Baselines --------------------------------------------------------------------


def run_baseline(
    label: str,
    archive: Callable[[str, str, list[str], list[tuple[str, str]]], float],
    schema: str,
    asks: list[str],
    executions: list[tuple[str, str]],
) -> Run:
    """One baseline over the given ids, on a fresh database and simulator."""
    workdir = run_dir(f"throughput-{label.split()[0]}")
    run = Run(label, len(asks) + len(executions))
    database_url = fresh_database()
    with SimulatorProcess(workdir, seed=SEED, max_pending_polls=0) as sim:
        run.seconds = archive(database_url, sim.base_url, asks, executions)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            run.fingerprint = fingerprint(conn, schema)
    finally:
        engine.dispose()
    run.rows = total_rows(run.fingerprint)
    return run


def differences(a: dict[str, tuple[int, str]], b: dict[str, tuple[int, str]]) -> list[str]:
    return [f"{t}: {a[t]} vs {b[t]}" for t in TABLES if a[t] != b[t]]


# --- Scenario ---------------------------------------------------------------------


def run(smoke: bool = False) -> list[Result]:
    from bench import dlt_pipeline, naive

    plan = SMOKE if smoke else FULL
    asks = final_ask_ids(SEED, plan.asks)
    executions = final_execution_ids(SEED, plan.executions)
    runs = []
    for processes in plan.workers:
        console.print(
            f"[dim]throughput: mentionsync with {processes} process(es), "
            f"{len(asks):,} asks + {len(executions):,} executions ...[/]"
        )
        r = run_mentionsync(plan, asks, executions, processes)
        console.print(
            f"[dim]  {r.ids:,} ids in {r.seconds:.1f}s: {r.ids_per_second:,.0f} ids/s, "
            f"{r.rows_per_second:,.0f} rows/s ({r.notes})[/]"
        )
        runs.append(r)
    mismatches = [
        f"{r.label}: {line}"
        for r in runs[1:]
        for line in differences(r.fingerprint, runs[0].fingerprint)
    ]
    best = max(runs, key=lambda r: r.ids_per_second)

    console.print(
        f"[dim]throughput: sync --until-done, {plan.dlt_ids:,} asks + "
        f"{plan.dlt_ids:,} executions (the dlt baseline's ids) ...[/]"
    )
    sync = run_sync(asks[: plan.dlt_ids], executions[: plan.dlt_ids])
    console.print(
        f"[dim]  {sync.ids:,} ids in {sync.seconds:.1f}s: {sync.ids_per_second:,.0f} ids/s, "
        f"{sync.rows_per_second:,.0f} rows/s ({sync.notes})[/]"
    )
    mismatches += [
        f"{sync.label}: {line}"
        for line in differences(sync.fingerprint, best.subsets[plan.dlt_ids])
    ]

    baselines = []
    for label, archive, schema, n in (
        ("naive loop", naive.archive, "public", plan.naive_ids),
        ("dlt pipeline", dlt_pipeline.archive, dlt_pipeline.DATASET, plan.dlt_ids),
    ):
        console.print(f"[dim]throughput: {label}, {n:,} asks + {n:,} executions ...[/]")
        b = run_baseline(label, archive, schema, asks[:n], executions[:n])
        console.print(
            f"[dim]  {b.ids:,} ids in {b.seconds:.1f}s: {b.ids_per_second:,.0f} ids/s, "
            f"{b.rows_per_second:,.0f} rows/s[/]"
        )
        mismatches += [f"{label}: {line}" for line in differences(b.fingerprint, best.subsets[n])]
        baselines.append(b)
    naive_run, dlt_run = baselines
    for line in mismatches:
        console.print(f"[red]throughput: rows differ: {line}[/]")

    results: list[Result] = []
    for r in runs:
        results += [
            Result(
                "throughput",
                f"{r.label}: ids/s",
                r.ids_per_second,
                "ids/s",
                target=NAIVE_TARGET * naive_run.ids_per_second,
                baseline=naive_run.ids_per_second,
                baseline_label="naive",
                note=f"({r.ids_per_second / dlt_run.ids_per_second:.1f}x dlt)",
            ),
            Result("throughput", f"{r.label}: rows/s", r.rows_per_second, "rows/s", target=None),
        ]
    for b in baselines:
        results.append(
            Result(
                "throughput",
                f"{b.label} ({b.ids:,} ids): ids/s",
                b.ids_per_second,
                "ids/s",
                target=None,
                note=f"({b.rows_per_second:,.0f} rows/s)",
            )
        )
    results += [
        Result(
            "throughput",
            f"sync --until-done ({sync.ids:,} ids): ids/s",
            sync.ids_per_second,
            "ids/s",
            target=SYNC_NAIVE_TARGET * naive_run.ids_per_second,
            baseline=naive_run.ids_per_second,
            baseline_label="naive",
            note=f"({sync.rows_per_second:,.0f} rows/s)",
        ),
        Result(
            "throughput",
            "sync --until-done vs dlt (same ids)",
            sync.ids_per_second,
            "ids/s",
            target=SYNC_DLT_TARGET * dlt_run.ids_per_second,
            baseline=dlt_run.ids_per_second,
            baseline_label="dlt",
        ),
        Result(
            "throughput",
            f"best mentionsync ({best.label.split(', ')[1]}) vs dlt",
            best.ids_per_second,
            "ids/s",
            target=DLT_TARGET * dlt_run.ids_per_second,
            baseline=dlt_run.ids_per_second,
            baseline_label="dlt",
        ),
        Result(
            "throughput",
            "tables whose rows differ between the systems",
            float(len(mismatches)),
            "",
            target=1.0,
            higher_is_better=False,
            note=f"(count + md5 of {len(TABLES)} tables, per run)",
        ),
    ]
    return results
