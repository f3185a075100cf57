"""Scenario "latency": with 200 ms per request, throughput should approach
concurrency / latency, the most any client can do with that many requests in flight.

The simulator sleeps LATENCY_MS before every answer (asynchronously, so it serves
any number at once) and limits nothing. mentionsync runs `celery worker
--concurrency=N` plus beat; each process's fetch pipeline keeps up to
FETCH_CONCURRENCY requests of each key in flight (below it, the key's rate x the
vendor's latency decides; with no limit, the cap does), so with both vendors'
ids at once the requests in flight are N x FETCH_CONCURRENCY x 2. Two runs, both
with 2 processes: FETCH_CONCURRENCY 8 (32 in flight) and 25 (100 in flight, what
the old thread pools needed 10 processes x 10 threads for).

The figure is ids archived per second against concurrency / latency (the
baseline); our bar for "approaches" is 80 % of it. The vendor-pace scenario
(bench/vendorpace.py) measures the defaults against a rate-limited vendor.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import (
    Result,
    console,
    final_ask_ids,
    final_execution_ids,
    flush_redis,
    fresh_database,
    run_dir,
)
from bench.throughput import SEED, celery_archive, check_all_final, register_all
from worker.config import Settings

LATENCY_MS = 200.0
RATIO_TARGET = 0.8


@dataclass(frozen=True)
class Setting:
    label: str
    processes: int
    fetch_concurrency: int
    batch_size: int
    ids: int  # of each vendor


BATCH = Settings.model_fields["batch_size"].default
VENDORS = 2  # each key has its own places in flight
FULL = (
    Setting("2 processes, FETCH_CONCURRENCY=8", 2, 8, BATCH, 1000),
    Setting("2 processes, FETCH_CONCURRENCY=25", 2, 25, BATCH, 3000),
)
SMOKE = (Setting("2 processes, FETCH_CONCURRENCY=25", 2, 25, 50, 100),)


def run(smoke: bool = False) -> list[Result]:
    results: list[Result] = []
    for setting in SMOKE if smoke else FULL:
        in_flight = setting.processes * setting.fetch_concurrency * VENDORS
        ideal = in_flight / (LATENCY_MS / 1000)
        console.print(
            f"[dim]latency: {setting.label}: {2 * setting.ids:,} ids, {LATENCY_MS:g} ms per "
            f"request, {in_flight} in flight (ideal {ideal:,.0f} ids/s) ...[/]"
        )
        workdir = run_dir("latency")
        database_url = fresh_database()
        flush_redis()
        asks = final_ask_ids(SEED, setting.ids)
        executions = final_execution_ids(SEED, setting.ids)
        ids = register_all(database_url, asks, executions)
        seconds, requests = celery_archive(
            database_url,
            workdir,
            setting.processes,
            latency_ms=LATENCY_MS,
            env={
                "FETCH_CONCURRENCY": str(setting.fetch_concurrency),
                "BATCH_SIZE": str(setting.batch_size),
            },
        )
        check_all_final(database_url, ids, workdir)
        rate = ids / seconds
        console.print(f"[dim]  {ids:,} ids ({requests:,} requests) in {seconds:.1f}s[/]")
        results.append(
            Result(
                "latency",
                f"{setting.label}: ids/s at {LATENCY_MS:g} ms, {in_flight} in flight",
                rate,
                "ids/s",
                target=RATIO_TARGET * ideal,
                baseline=ideal,
                baseline_label="in flight / latency",
            )
        )
    return results
