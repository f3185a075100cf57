"""Scenario "pace" (issue 13): Celery at a real vendor's pace, with the defaults.

The simulator answers in 250 +- 150 ms and limits MentionsAPI to 500 requests/s
and MentionLab to 100/s (bench/vendorpace.py); 30,000 asks + 6,000 executions are
tracked, all final on their first poll. `mentionsync run` (a celery worker and
beat, as the README starts them) gets only what a new user sets: the database,
Redis, the API keys and the base URLs. No concurrency, rate or batch setting.

Figures, each vendor on its own:
- successful requests/s over the steady window (the vendor's run from its first
  answer to its last id final, without the first and last 10 %), target >= 95 %
  of its limit;
- the share of its answers that were 429s over the whole run, target < 1 %;
- the largest RSS of any process of `mentionsync run` (psutil, every 0.25 s;
  supervisor, worker, pool processes, beat), target < 250 MB;
- every archive exact against the simulator's payloads (bench/vendorpace.py).

A run that has not finished after `max_seconds` is stopped and measured as far
as it went (the table says so). Baselines, in the same run, at the same pace, on
the same ids (both vendors interleaved 5:1) for `baseline_seconds` each: the naive
loop and the dlt pipeline of the throughput scenario (16 extract threads). Their
ids/s is compared with mentionsync's successful requests/s of both vendors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import create_engine

from bench.harness import (
    Result,
    console,
    final_ask_ids,
    final_execution_ids,
    flush_redis,
    fresh_database,
    run_dir,
    user_env,
    wait_until,
)
from bench.naive import Item, interleaved
from bench.vendorpace import (
    DRAIN_CHECK_SECONDS,
    VENDORS,
    Command,
    Sampler,
    cpu_results,
    exact_result,
    memory_results,
    note_drained,
    outcome,
    postmaster_pid,
    rate_results,
    register,
    simulator,
    split,
)

SEED = 31


@dataclass(frozen=True)
class Plan:
    asks: int
    executions: int
    max_seconds: float  # mentionsync is measured this long at most
    baseline_seconds: float  # each baseline fetches this long


FULL = Plan(asks=30_000, executions=6_000, max_seconds=300.0, baseline_seconds=25.0)
SMOKE = Plan(asks=100, executions=20, max_seconds=90.0, baseline_seconds=1.0)


def plan_for(smoke: bool, ids: int | None, max_seconds: float | None) -> Plan:
    plan = SMOKE if smoke else FULL
    if ids is not None:
        asks, executions = split(ids)
        plan = Plan(asks, executions, plan.max_seconds, plan.baseline_seconds)
    if max_seconds is not None:
        plan = Plan(plan.asks, plan.executions, max_seconds, plan.baseline_seconds)
    return plan


@dataclass
class Baseline:
    label: str
    seconds: float
    ids: int

    @property
    def ids_per_second(self) -> float:
        return self.ids / self.seconds if self.seconds else 0.0


def run_baseline(
    label: str,
    archive: Callable[..., tuple[float, int]],
    todo: Sequence[Item],
    seconds: float,
) -> Baseline:
    """One baseline on a fresh database and simulator at vendor pace, stopped
    handing out ids after `seconds`; its clock includes finishing what it took."""
    workdir = run_dir(f"pace-{label.split()[0]}")
    database_url = fresh_database()
    with simulator(workdir, SEED) as sim:
        took, ids = archive(database_url, sim.base_url, todo, deadline=time.monotonic() + seconds)
    return Baseline(label, took, ids)


def run(
    smoke: bool = False, ids: int | None = None, max_seconds: float | None = None
) -> list[Result]:
    from bench import dlt_pipeline, naive

    plan = plan_for(smoke, ids, max_seconds)
    scenario = "pace"
    workdir = run_dir("pace")
    database_url = fresh_database()
    flush_redis()
    asks, executions = register(database_url, SEED, plan.asks, plan.executions)
    expected = {"mentionsapi": asks, "mentionlab": executions}
    console.print(
        f"[dim]pace: `mentionsync run` with the defaults, {asks:,} asks + {executions:,} "
        f"executions, 250 +- 150 ms, limits 500/s and 100/s (at most {plan.max_seconds:g}s) ...[/]"
    )
    engine = create_engine(database_url)
    drained_at: dict[str, float] = {}
    try:
        with simulator(workdir, SEED) as sim:
            command = Command(workdir, "run", ["run"], user_env(database_url, sim.base_url))
            command.start()
            assert command.proc is not None
            try:
                with Sampler(sim, command.proc.pid, postmaster_pid(engine)) as sampler:

                    def started() -> bool:
                        command.check_alive()
                        return int(sim.stats()["requests"]) > 0

                    wait_until(started, 120, "the workers' first request", interval=0.05)
                    deadline = sampler.now() + plan.max_seconds

                    def done() -> bool:
                        command.check_alive()
                        drained = note_drained(engine, drained_at, sampler.now())
                        return drained or sampler.now() > deadline

                    wait_until(
                        done, plan.max_seconds + 60, "every id final", interval=DRAIN_CHECK_SECONDS
                    )
                    end = sampler.now()
            finally:
                command.stop()
    finally:
        engine.dispose()
    drained = len(drained_at) == len(VENDORS)
    result = outcome(scenario, sampler, end, drained_at, expected, database_url, SEED, sim, workdir)
    figures, mem, exact = result.figures, result.memory, result.exact
    in_flight = sampler.samples[-1].max_in_flight if sampler.samples else 0
    console.print(
        f"[dim]  most requests in flight at the simulator at once: {in_flight}; RSS by role "
        f"{mem.by_role}; exactness over {exact.ids:,} ids in {exact.seconds:.1f}s; "
        f"logs {workdir}[/]"
    )
    note = "" if drained else f"stopped after {plan.max_seconds:g} s, not drained"
    results = rate_results(scenario, figures, note)
    results += memory_results(scenario, mem)
    results += cpu_results(scenario, sampler, sum(expected.values()))
    results.append(exact_result(scenario, exact))

    # Baselines: the same pace, the first ids of the same set, both vendors mixed.
    todo = interleaved(final_ask_ids(SEED, plan.asks), final_execution_ids(SEED, plan.executions))
    ours = sum(f.ok_per_second for f in figures)
    for label, archive in (
        ("naive loop", naive.archive_items),
        ("dlt pipeline", dlt_pipeline.archive_items),
    ):
        console.print(f"[dim]pace: {label}, {plan.baseline_seconds:g}s at vendor pace ...[/]")
        b = run_baseline(label, archive, todo, plan.baseline_seconds)
        console.print(f"[dim]  {b.ids:,} ids in {b.seconds:.1f}s: {b.ids_per_second:,.1f} ids/s[/]")
        results.append(
            Result(
                scenario,
                f"mentionsync (both vendors) vs {label} ({b.ids:,} ids in {b.seconds:.0f} s)",
                ours,
                "/s",
                target=None,
                baseline=b.ids_per_second,
                baseline_label=label.split()[0],
            )
        )
    return results
