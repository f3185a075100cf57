"""Scenario "backfill" (issue 13): `mentionsync sync --until-done` at a real
vendor's pace, with the defaults.

The simulator of the pace scenario (250 +- 150 ms; MentionsAPI 500/s, MentionLab
100/s; bench/vendorpace.py), 100,000 ids (83,333 asks + 16,667 executions, 5:1
like the limits) all final on their first poll, and `mentionsync sync
--until-done` with only the database, Redis, the API keys and the base URLs set.
Figures:

- per vendor, successful requests/s over the steady window (target >= 95 % of
  its limit) and the 429 share of the whole run (target < 1 %);
- the largest RSS of any of its processes (it may start several; psutil every
  0.25 s over the whole process tree), target < 250 MB, and the peak of their sum;
- wall time, from starting the command to its exit, and ids final per second;
- every archive exact against the simulator's payloads.

`--ids N` scales it (CI's smoke runs a few hundred). A run still going after
`max_seconds` is stopped with Ctrl-C (SIGINT), measured as far as it went, and
the table says so.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench.harness import (
    Result,
    console,
    count_by_state,
    flush_redis,
    fresh_database,
    run_dir,
    user_env,
)
from bench.vendorpace import (
    DRAIN_CHECK_SECONDS,
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

SEED = 41
# How long a Ctrl-C'd sync may take to write what it has in flight and exit.
STOP_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Plan:
    ids: int
    max_seconds: float


FULL = Plan(ids=100_000, max_seconds=600.0)
SMOKE = Plan(ids=120, max_seconds=120.0)


def plan_for(smoke: bool, ids: int | None, max_seconds: float | None) -> Plan:
    plan = SMOKE if smoke else FULL
    return Plan(ids if ids is not None else plan.ids, max_seconds or plan.max_seconds)


def run(
    smoke: bool = False, ids: int | None = None, max_seconds: float | None = None
) -> list[Result]:
    plan = plan_for(smoke, ids, max_seconds)
    scenario = "backfill"
    workdir = run_dir("backfill")
    database_url = fresh_database()
    flush_redis()
    n_asks, n_executions = split(plan.ids)
    asks, executions = register(database_url, SEED, n_asks, n_executions)
    total = asks + executions
    console.print(
        f"[dim]backfill: `mentionsync sync --until-done` with the defaults, {asks:,} asks + "
        f"{executions:,} executions at vendor pace (at most {plan.max_seconds:g}s) ...[/]"
    )
    engine = create_engine(database_url)
    drained_at: dict[str, float] = {}
    interrupted = False
    try:
        with simulator(workdir, SEED) as sim:
            command = Command(
                workdir, "sync", ["sync", "--until-done"], user_env(database_url, sim.base_url)
            )
            started = time.monotonic()
            command.start()
            proc = command.proc
            assert proc is not None
            try:
                with Sampler(sim, proc.pid, postmaster_pid(engine)) as sampler:
                    while proc.poll() is None:
                        elapsed = time.monotonic() - started
                        if elapsed > plan.max_seconds and not interrupted:
                            command.interrupt()
                            interrupted = True
                        if elapsed > plan.max_seconds + STOP_GRACE_SECONDS:
                            break  # Ctrl-C did not stop it: command.stop() terminates it
                        note_drained(engine, drained_at, sampler.now())
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(DRAIN_CHECK_SECONDS)
                    wall = time.monotonic() - started
                    end = sampler.now()
            finally:
                command.stop()
                exit_code = proc.returncode
    finally:
        engine.dispose()
    states = count_by_state(database_url)
    final = states.get("archived", 0) + states.get("failed", 0)
    result = outcome(
        scenario,
        sampler,
        end,
        drained_at,
        {"mentionsapi": asks, "mentionlab": executions},
        database_url,
        SEED,
        sim,
        workdir,
    )
    figures, mem, exact = result.figures, result.memory, result.exact
    console.print(
        f"[dim]  exit {exit_code} after {wall:.1f}s; states {states}; RSS by role "
        f"{mem.by_role}, peak sum {mem.peak_total_mb:.0f} MB; exactness over {exact.ids:,} ids "
        f"in {exact.seconds:.1f}s; logs {workdir}[/]"
    )
    note = f"stopped after {plan.max_seconds:g} s, not drained" if interrupted else ""
    results = rate_results(scenario, figures, note)
    results += memory_results(scenario, mem, total=True)
    results += cpu_results(scenario, sampler, final)
    results += [
        Result(
            scenario,
            f"ids final of {total:,}",
            float(final),
            "ids",
            target=float(total),
            note=f"(exit {exit_code}{', interrupted' if interrupted else ''})",
        ),
        Result(
            scenario,
            "wall time, start to exit",
            wall,
            "s",
            target=None,
            note=f"({final / wall:,.1f} ids/s final)",
        ),
        exact_result(scenario, exact),
    ]
    if interrupted:
        results += after_interrupt(scenario, database_url, sampler, final)
    return results


def after_interrupt(scenario: str, database_url: str, sampler: Sampler, final: int) -> list[Result]:
    """What a Ctrl-C must not lose (issue 13): every answer the vendor sent (a 200:
    each id is final on its first one) archived, and no id left leased."""
    ok = sum(sampler.samples[-1].ok.values()) if sampler.samples else 0
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            leased = int(
                conn.execute(
                    text("SELECT count(*) FROM tracked_ids WHERE lease_token IS NOT NULL")
                ).scalar_one()
            )
    finally:
        engine.dispose()
    return [
        Result(
            scenario,
            "after Ctrl-C: answers received (200) but not archived",
            float(max(0, ok - final)),
            "",
            target=1.0,
            higher_is_better=False,
            note=f"({ok:,} answers, {final:,} ids final)",
        ),
        Result(
            scenario,
            "after Ctrl-C: ids still leased",
            float(leased),
            "",
            target=1.0,
            higher_is_better=False,
        ),
    ]
