"""Scenario "ratelimit": how much of a key's rate limit the workers actually use.

The simulator meters the MentionsAPI key at R requests/s (burst R). One
`celery worker --concurrency=4` plus beat work through ids that are final on the
first fetch, so every accepted request is a 200 and the only thing between the
workers and R is the rate limit. Over a steady window (after a warm-up) the
simulator's own counters give:

- successful requests/s (its 200s), target >= 95 % of R, baseline R;
- the share of requests answered 429, target < 1 %.

The same run is repeated with our shared budget effectively disabled (a
configured rate far above the vendor's), so that only 429 / Retry-After handling
limits the workers: the difference is what the shared budget buys.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    CeleryCluster,
    Result,
    SimulatorProcess,
    console,
    count_by_state,
    final_ask_ids,
    flush_redis,
    fresh_database,
    register_ids,
    run_dir,
    wait_until,
    worker_env,
)

SEED = 7
RATE = 50.0  # the simulator's limit per key, requests/s (burst = RATE)
CONCURRENCY = 4
ACTIVE = ("tracked", "polling")


@dataclass(frozen=True)
class Plan:
    ids: int
    skip: float  # seconds after the first request before the window opens
    window: float  # seconds measured


FULL = Plan(ids=3000, skip=3.0, window=25.0)
SMOKE = Plan(ids=300, skip=1.0, window=8.0)


@dataclass
class Measurement:
    label: str
    budget_rate: float
    budget_burst: float
    seconds: float = 0.0
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    active_at_end: int = 0
    states_at_end: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    logs: str = ""

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def share_429(self) -> float:
        return 100.0 * self.rate_limited / self.requests if self.requests else 0.0

    @property
    def drained(self) -> bool:
        """The queue ran dry inside the window: the figure understates capacity."""
        return self.active_at_end == 0


def _counters(stats: dict[str, Any]) -> tuple[int, int, int]:
    return int(stats["requests"]), int(stats["by_status"].get("200", 0)), int(stats["rate_limited"])


def measure(label: str, plan: Plan, budget_rate: float, budget_burst: float) -> Measurement:
    workdir = run_dir(label)
    result = Measurement(label, budget_rate, budget_burst, logs=str(workdir))
    database_url = fresh_database()
    flush_redis()
    added = register_ids(database_url, "mentionsapi", final_ask_ids(SEED, plan.ids))
    assert added == plan.ids, f"registered {added} of {plan.ids} ids"

    with SimulatorProcess(workdir, seed=SEED, rate_limit=RATE, max_pending_polls=0) as sim:
        env = worker_env(
            database_url,
            sim.base_url,
            MENTIONSAPI_RATE_LIMIT=f"{budget_rate:g}",
            MENTIONSAPI_RATE_BURST=f"{budget_burst:g}",
        )
        with CeleryCluster(workdir, env, workers=1, concurrency=CONCURRENCY) as celery:

            def started() -> bool:
                celery.check_alive()
                return _counters(sim.stats())[0] > 0

            wait_until(started, 90, "the workers' first request", interval=0.05)
            first = time.monotonic()
            time.sleep(max(0.0, first + plan.skip - time.monotonic()))
            opened = time.monotonic()
            req0, ok0, lim0 = _counters(sim.stats())
            end = opened + plan.window
            while (now := time.monotonic()) < end:
                time.sleep(min(0.5, end - now))
                req, ok, lim = _counters(sim.stats())
                result.samples.append(
                    {
                        "t": round(time.monotonic() - opened, 3),
                        "requests": req,
                        "ok": ok,
                        "429": lim,
                    }
                )
            req1, ok1, lim1 = _counters(sim.stats())
            closed = time.monotonic()
            celery.check_alive()
            result.seconds = closed - opened
            result.requests, result.ok, result.rate_limited = req1 - req0, ok1 - ok0, lim1 - lim0
            result.states_at_end = count_by_state(database_url)
            result.active_at_end = sum(result.states_at_end.get(s, 0) for s in ACTIVE)
    (workdir / "measurement.json").write_text(
        json.dumps(asdict(result) | {"ok_per_second": result.ok_per_second}, indent=2)
    )
    return result


def run(smoke: bool = False) -> list[Result]:
    plan = SMOKE if smoke else FULL
    runs = [
        ("shared budget 50/s", RATE, RATE),
        ("budget disabled", 100_000.0, 100_000.0),
    ]
    results: list[Result] = []
    for label, rate, burst in runs:
        console.print(
            f"[dim]ratelimit: {label}: {plan.ids} ids, R={RATE:g}/s, "
            f"window {plan.window:g}s after {plan.skip:g}s ...[/]"
        )
        m = measure(label.replace(" ", "-").replace("/", ""), plan, rate, burst)
        if m.requests == 0:
            raise RuntimeError(f"{label}: no request reached the simulator in the window")
        if m.drained and not smoke:
            raise RuntimeError(
                f"{label}: every id was final before the window closed; register more ids"
            )
        note = "(queue drained)" if m.drained else ""
        scenario = f"ratelimit: {label}"
        results += [
            Result(
                scenario,
                "successful req/s",
                m.ok_per_second,
                "/s",
                target=0.95 * RATE,
                baseline=RATE,
                baseline_label="R",
                note=note,
            ),
            Result(
                scenario,
                "429 share",
                m.share_429,
                "%",
                target=1.0,
                higher_is_better=False,
                note=note,
            ),
        ]
        console.print(
            f"[dim]  {m.ok} ok, {m.rate_limited} 429 of {m.requests} requests in "
            f"{m.seconds:.1f}s; states at end {m.states_at_end}; logs {Path(m.logs)}[/]"
        )
    return results
