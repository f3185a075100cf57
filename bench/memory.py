"""Scenario "memory": worker RSS stays flat while archiving 100,000 ids.

`celery worker --concurrency=2` plus beat archive IDS asks + IDS executions, with
pool recycling switched off (`--max-tasks-per-child` far above the run's task
count) so a leak cannot hide behind process replacement. Every ~0.1 s from the
first request on (not while the processes idle before it), the RSS of each pool
process is read with psutil. Figures:

- the largest RSS of any pool process (target < 250 MB);
- growth: the mean of the largest pool RSS over the last 10 % of samples against
  the first 10 % (target < 10 %); the first window is the baseline.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import psutil

from bench.harness import (
    CeleryCluster,
    Result,
    console,
    final_ask_ids,
    final_execution_ids,
    flush_redis,
    fresh_database,
    run_dir,
)
from bench.throughput import SEED, celery_archive, check_all_final, register_all

PROCESSES = 2
RSS_TARGET_MB = 250.0
GROWTH_TARGET = 10.0  # %
MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    ids: int  # of each vendor


FULL = Plan(ids=50_000)
SMOKE = Plan(ids=300)


@dataclass
class Samples:
    pool_max_mb: list[float] = field(default_factory=list)  # largest pool process
    main_mb: list[float] = field(default_factory=list)  # the consumer process
    pids: set[int] = field(default_factory=set)

    def take(self, celery: CeleryCluster) -> None:
        try:
            main = psutil.Process(celery.procs[0].pid)
            children = main.children()
            rss = [c.memory_info().rss / MB for c in children]
            main_rss = main.memory_info().rss / MB
        except psutil.Error:
            return  # a process came or went mid-read: skip this sample
        if rss:
            self.pool_max_mb.append(max(rss))
            self.main_mb.append(main_rss)
            self.pids.update(c.pid for c in children)


def tenth(values: list[float], k: int) -> float:
    """The mean of the k-th tenth of `values` (0 the first, 1 the second, -1 the
    last). The second is past the warm-up (the first seconds' in-flight work and
    buffers), which the first tenth of a short run is mostly made of."""
    n = max(1, len(values) // 10)
    start = k * n if k >= 0 else len(values) - n
    return statistics.mean(values[start : start + n] or values[:n])


def run(smoke: bool = False) -> list[Result]:
    plan = SMOKE if smoke else FULL
    workdir = run_dir("memory")
    database_url = fresh_database()
    flush_redis()
    asks = final_ask_ids(SEED, plan.ids)
    executions = final_execution_ids(SEED, plan.ids)
    ids = register_all(database_url, asks, executions)
    console.print(f"[dim]memory: archiving {ids:,} ids with {PROCESSES} pool processes ...[/]")
    samples = Samples()
    seconds, _ = celery_archive(
        database_url,
        workdir,
        PROCESSES,
        worker_args=["--max-tasks-per-child=1000000"],
        sample=samples.take,
    )
    check_all_final(database_url, ids, workdir)
    if not samples.pool_max_mb:
        raise RuntimeError("memory: no RSS sample was taken")
    # The series itself, for telling a leak (growth to the end) from warm-up.
    (workdir / "rss.csv").write_text(
        "pool_max_mb,consumer_mb\n"
        + "".join(
            f"{p:.1f},{m:.1f}\n" for p, m in zip(samples.pool_max_mb, samples.main_mb, strict=True)
        )
    )
    first = tenth(samples.pool_max_mb, 0)
    last = tenth(samples.pool_max_mb, -1)
    growth = 100 * (last / first - 1)
    warm = tenth(samples.pool_max_mb, 1)
    console.print(
        f"[dim]  {ids:,} ids in {seconds:.1f}s; {len(samples.pool_max_mb)} samples of "
        f"{len(samples.pids)} pool processes; pool RSS first 10 % {first:.1f} MB, last 10 % "
        f"{last:.1f} MB; consumer {tenth(samples.main_mb, 0):.1f} -> "
        f"{tenth(samples.main_mb, -1):.1f} MB[/]"
    )
    return [
        Result(
            "memory",
            f"largest pool process RSS, {ids:,} ids",
            max(samples.pool_max_mb),
            "MB",
            target=RSS_TARGET_MB,
            higher_is_better=False,
        ),
        Result(
            "memory",
            "pool RSS growth, last 10 % vs first 10 %",
            growth,
            "%",
            target=GROWTH_TARGET,
            higher_is_better=False,
            note=f"({first:.1f} MB in the first 10 % -> {last:.1f} MB in the last)",
        ),
        Result(
            "memory",
            "pool RSS growth after warm-up, last 10 % vs second 10 %",
            100 * (last / warm - 1),
            "%",
            target=None,
            higher_is_better=False,
            note=f"({warm:.1f} MB -> {last:.1f} MB; the series: rss.csv of the run)",
        ),
    ]
