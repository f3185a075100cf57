"""What the "pace" and "backfill" scenarios share: a simulator at a real vendor's
pace, the settings a new user sets, sampling while a run goes on, the steady-window
rates, and the check of every archive against the simulator's payloads.

Vendor pace (issue 13): every answer takes 250 +- 150 ms (uniform), MentionsAPI
allows 500 requests/s per key (its Enterprise plan: burst 1000, so its
X-RateLimit-Limit is 1000), MentionLab 100/s (burst 100). Every id is final on
its first poll, so one successful request archives one id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from sqlalchemy import Connection, Engine, create_engine, text

from bench.harness import (
    Result,
    SimulatorProcess,
    _child_env,
    _stop,
    console,
    final_ask_ids,
    final_execution_ids,
    register_executions,
    register_ids,
)

MENTIONSAPI, MENTIONLAB = "mentionsapi", "mentionlab"
VENDORS = (MENTIONSAPI, MENTIONLAB)
LABELS = {MENTIONSAPI: "MentionsAPI", MENTIONLAB: "MentionLab"}
LATENCY_MS = 250.0
JITTER_MS = 150.0
LIMITS = {MENTIONSAPI: 500.0, MENTIONLAB: 100.0}
RATE_TARGET = 0.95  # of each vendor's limit, successful requests/s in the steady window
SHARE_429_TARGET = 1.0  # % of each vendor's answers
RSS_TARGET_MB = 250.0
# How often the run asks the database whether every id is final: the query
# scans tracked_ids, and asked more often it takes CPU from the run it measures.
DRAIN_CHECK_SECONDS = 1.0
EDGE = 0.10  # the steady window leaves out the first and last 10 % of a vendor's run
MB = 1024 * 1024
TRUTH_SCHEMA = "bench_truth"
ACTIVE_BY_VENDOR = (
    "SELECT vendor::text, count(*) FROM tracked_ids "
    "WHERE state IN ('tracked', 'polling') GROUP BY vendor"
)


def split(total: int) -> tuple[int, int]:
    """Asks and executions of `total` ids, 5 to 1 like the limits (30,000 + 6,000)."""
    executions = max(1, round(total / 6))
    return max(1, total - executions), executions


def simulator(workdir: Path, seed: int) -> SimulatorProcess:
    return SimulatorProcess(
        workdir,
        seed=seed,
        max_pending_polls=0,
        latency_ms=LATENCY_MS,
        latency_jitter_ms=JITTER_MS,
        rate_limits=dict(LIMITS),
    )


def user_child_env(env: dict[str, str]) -> dict[str, str]:
    """The child's environment: ours minus any mentionsync setting we happen to carry
    (a tuned variable in the shell would void "defaults"), plus `env`."""
    from worker.config import Settings

    names = {name.upper() for name in Settings.model_fields}
    base = {k: v for k, v in _child_env({}).items() if k.upper() not in names}
    return {**base, **env}


def register(database_url: str, seed: int, asks: int, executions: int) -> tuple[int, int]:
    """Track the first `asks` + `executions` final ids of the seed; (asks, executions)."""
    ask_ids = final_ask_ids(seed, asks)
    pairs = final_execution_ids(seed, executions)
    return register_ids(database_url, MENTIONSAPI, ask_ids), register_executions(
        database_url, pairs
    )


def active_by_vendor(conn: Connection) -> dict[str, int]:
    rows = conn.execute(text(ACTIVE_BY_VENDOR)).all()
    return {str(v): int(n) for v, n in rows}


def note_drained(engine: Engine, drained_at: dict[str, float], now: float) -> bool:
    """Record when each vendor's last id went final; True once every vendor's has."""
    with engine.connect() as conn:
        active = active_by_vendor(conn)
    for vendor in VENDORS:
        if vendor not in drained_at and not active.get(vendor):
            drained_at[vendor] = now
    return len(drained_at) == len(VENDORS)


# --- Processes ------------------------------------------------------------------


@dataclass
class Command:
    """One product command (`mentionsync run`, `sync`) in its own session."""

    workdir: Path
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> Command:
        self._log = (self.workdir / f"{self.name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *self.argv],
            env=user_child_env(self.env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"`mentionsync {' '.join(self.argv)}` exited with {self.proc.returncode}; "
                f"see {self.workdir / self.name}.log"
            )

    def interrupt(self) -> None:
        """Ctrl-C, as a user would stop it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)

    def stop(self, grace: float = 60.0) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=grace)
        if self._log is not None:
            self._log.close()


# --- Sampling -------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    ok: dict[str, int]  # 200s per vendor, so far
    answered: dict[str, int]
    limited: dict[str, int]  # 429s per vendor, so far
    in_flight: int
    max_in_flight: int  # the most the simulator held at once, so far
    rss_mb: dict[int, float]  # pid -> RSS of every process of the tree


@dataclass
class Sampler:
    """A thread reading the simulator's counters and every process's RSS (the
    command and all its descendants, whatever they are) every `interval` s."""

    sim: SimulatorProcess
    root_pid: int
    # The database server's main process: its CPU and its children's is Postgres's.
    postgres_pid: int | None = None
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)
    # CPU seconds (user + system) of each process of the command's tree, as last seen.
    cpu_s: dict[int, float] = field(default_factory=dict)
    postgres_cpu_s: float = 0.0
    simulator_cpu_s: float = 0.0
    started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self.postgres_cpu_s = -_tree_cpu(self.postgres_pid)
        self.simulator_cpu_s = -_tree_cpu(self.sim.proc.pid if self.sim.proc is not None else None)
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.postgres_cpu_s += _tree_cpu(self.postgres_pid)
        self.simulator_cpu_s += _tree_cpu(self.sim.proc.pid if self.sim.proc is not None else None)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set():
                self.take(client)
                self._stop.wait(self.interval)
            self.take(client)

    def take(self, client: httpx.Client) -> None:
        rss = self._rss()
        try:
            stats = client.get(f"{self.sim.base_url}/_sim/stats").json()
        except httpx.HTTPError:
            return
        by_vendor = stats["by_vendor"]
        self.samples.append(
            Sample(
                t=time.monotonic() - self.started,
                ok={v: int(by_vendor[v]["by_status"].get("200", 0)) for v in VENDORS},
                answered={v: int(by_vendor[v]["answered"]) for v in VENDORS},
                limited={v: int(by_vendor[v]["rate_limited"]) for v in VENDORS},
                in_flight=int(stats["in_flight"]),
                max_in_flight=int(stats["max_in_flight"]),
                rss_mb=rss,
            )
        )

    def _rss(self) -> dict[int, float]:
        out: dict[int, float] = {}
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return out
        for proc in procs:
            try:
                out[proc.pid] = proc.memory_info().rss / MB
                times = proc.cpu_times()
                self.cpu_s[proc.pid] = times.user + times.system
                if proc.pid not in self.roles:
                    self.roles[proc.pid] = role(proc)
            except psutil.Error:
                continue  # came or went mid-read
        return out

    def now(self) -> float:
        return time.monotonic() - self.started


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process, its children alive and those it has reaped."""
    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in proc.children():
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    except psutil.Error:
        return 0.0
    return float(total)


def postmaster_pid(engine: Engine) -> int | None:
    """The Postgres server's main process, if it runs on this machine."""
    with engine.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        return int(psutil.Process(int(backend)).ppid())
    except psutil.Error:
        return None  # a server elsewhere: its CPU is not this machine's


def cpu_results(scenario: str, sampler: Sampler, ids: int) -> list[Result]:
    """CPU time per final id: mentionsync's processes, Postgres (all of the
    server's processes) and the simulator. Not targets: where the CPU of a run
    goes, to compare changes by (the rates move with the machine's speed). A
    process of the command that exited loses up to one sample interval."""
    per = 1e6 / max(1, ids)
    parts = {
        "mentionsync, all its processes": sum(sampler.cpu_s.values()),
        "Postgres": sampler.postgres_cpu_s,
        "simulator": sampler.simulator_cpu_s,
    }
    return [
        Result(scenario, f"CPU per final id: {name}", seconds * per, "µs", target=None)
        for name, seconds in parts.items()
    ]


def role(proc: psutil.Process) -> str:
    """What a process of the tree is, from its command line and parent."""
    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent is not None else ""
    except psutil.Error:
        return "?"
    if "celery" in cmd and " beat" in cmd:
        return "beat"
    if "celery" in cmd and " worker" in cmd:
        return "pool" if "celery" in parent_cmd and " worker" in parent_cmd else "worker"
    if "worker.cli" in cmd:
        return cmd.split("worker.cli", 1)[1].split()[0]
    return "child"


# --- Figures --------------------------------------------------------------------


@dataclass
class VendorFigures:
    vendor: str
    ok_per_second: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)
    share_429: float = 0.0
    answered: int = 0
    limited: int = 0
    drained_at: float | None = None  # seconds from the sampler's start


def _at(samples: Sequence[Sample], vendor: str, t: float) -> float:
    """200s of `vendor` at time t, linear between samples."""
    before = samples[0]
    for s in samples:
        if s.t >= t:
            if s.t == before.t:
                return float(s.ok[vendor])
            w = (t - before.t) / (s.t - before.t)
            return before.ok[vendor] + w * (s.ok[vendor] - before.ok[vendor])
        before = s
    return float(samples[-1].ok[vendor])


def vendor_figures(
    samples: Sequence[Sample], vendor: str, end: float, drained_at: float | None
) -> VendorFigures:
    """Successful requests/s of one vendor over its steady window: from its first
    answer to the moment its last id went final (or the end of the measurement),
    leaving out the first and last EDGE of that span. The 429 share is over the
    whole run, warm-up included."""
    out = VendorFigures(vendor, drained_at=drained_at)
    if not samples:
        return out
    last = samples[-1]
    out.answered, out.limited = last.answered[vendor], last.limited[vendor]
    out.share_429 = 100.0 * out.limited / out.answered if out.answered else 0.0
    first = next((s.t for s in samples if s.answered[vendor] > 0), None)
    if first is None:
        return out
    stop = min(drained_at if drained_at is not None else end, end)
    span = stop - first
    if span <= 0:
        return out
    a, b = first + EDGE * span, stop - EDGE * span
    out.window = (a, b)
    out.ok_per_second = (_at(samples, vendor, b) - _at(samples, vendor, a)) / (b - a)
    return out


@dataclass
class Memory:
    largest_mb: float = 0.0
    largest_role: str = ""
    peak_total_mb: float = 0.0  # the most all processes held at one sample
    by_role: dict[str, float] = field(default_factory=dict)  # role -> largest RSS
    processes: int = 0


def memory(sampler: Sampler) -> Memory:
    out = Memory()
    pids: set[int] = set()
    for s in sampler.samples:
        out.peak_total_mb = max(out.peak_total_mb, sum(s.rss_mb.values()))
        for pid, mb in s.rss_mb.items():
            pids.add(pid)
            r = sampler.roles.get(pid, "?")
            out.by_role[r] = max(out.by_role.get(r, 0.0), mb)
            if mb > out.largest_mb:
                out.largest_mb, out.largest_role = mb, r
    out.processes = len(pids)
    return out


@dataclass
class Outcome:
    """What a pace or backfill run measured, from its samples and its archive."""

    figures: list[VendorFigures]
    memory: Memory
    exact: Exactness


def outcome(
    scenario: str,
    sampler: Sampler,
    end: float,
    drained_at: dict[str, float],
    ids: dict[str, int],
    database_url: str,
    seed: int,
    sim: SimulatorProcess,
    workdir: Path,
) -> Outcome:
    """The figures of a run (printed), its samples saved to workdir/samples.json."""
    figures = [vendor_figures(sampler.samples, v, end, drained_at.get(v)) for v in VENDORS]
    exact = check_exact(database_url, seed, sim.anchor)
    (workdir / "samples.json").write_text(
        json.dumps([asdict(s) for s in sampler.samples], separators=(",", ":"))
    )
    print_figures(scenario, figures, ids)
    for line in exact.differing:
        console.print(f"[red]{scenario}: rows differ from the simulator's payloads: {line}[/]")
    return Outcome(figures, memory(sampler), exact)


def print_figures(scenario: str, figures: Sequence[VendorFigures], ids: dict[str, int]) -> None:
    for f in figures:
        final = f"final at {f.drained_at:.1f}s" if f.drained_at is not None else "NOT all final"
        console.print(
            f"[dim]  {scenario}: {f.vendor}: {f.ok_per_second:,.1f} ok/s in {f.window[0]:.1f}-"
            f"{f.window[1]:.1f}s; {f.limited:,} 429s of {f.answered:,}; {ids[f.vendor]:,} ids "
            f"{final}[/]"
        )


def rate_results(scenario: str, figures: Sequence[VendorFigures], note: str = "") -> list[Result]:
    results = []
    for f in figures:
        limit = LIMITS[f.vendor]
        lo, hi = f.window
        window = f"(window {lo:.0f}-{hi:.0f} s{', ' + note if note else ''})"
        results += [
            Result(
                scenario,
                f"{LABELS[f.vendor]}: successful req/s, steady window",
                f.ok_per_second,
                "/s",
                target=RATE_TARGET * limit,
                baseline=limit,
                baseline_label="limit",
                note=window,
            ),
            Result(
                scenario,
                f"{LABELS[f.vendor]}: 429 share, whole run",
                f.share_429,
                "%",
                target=SHARE_429_TARGET,
                higher_is_better=False,
                note=f"({f.limited:,} of {f.answered:,})",
            ),
        ]
    return results


def memory_results(scenario: str, mem: Memory, *, total: bool = False) -> list[Result]:
    roles = ", ".join(f"{r} {mb:.0f}" for r, mb in sorted(mem.by_role.items()))
    results = [
        Result(
            scenario,
            f"largest process RSS (of {mem.processes}: {mem.largest_role})",
            mem.largest_mb,
            "MB",
            target=RSS_TARGET_MB,
            higher_is_better=False,
            note=f"(largest by role, MB: {roles})",
        )
    ]
    if total:
        results.append(
            Result(
                scenario,
                "peak RSS, all its processes together",
                mem.peak_total_mb,
                "MB",
                target=None,
            )
        )
    return results


# --- Exactness ------------------------------------------------------------------


def final_ids(conn: Connection) -> tuple[list[str], list[tuple[str, str]]]:
    """Ids recorded final (archived, or failed: also archived), by vendor."""
    rows = conn.execute(
        text(
            "SELECT vendor::text, project_id, external_id FROM tracked_ids "
            "WHERE state IN ('archived', 'failed')"
        )
    ).all()
    asks = sorted(str(e) for v, _, e in rows if v == MENTIONSAPI)
    executions = sorted((str(p), str(e)) for v, p, e in rows if v == MENTIONLAB)
    return asks, executions


def truth_rows(
    seed: int, anchor: str, asks: Sequence[str], executions: Sequence[tuple[str, str]]
) -> Iterator[Any]:
    """The product's rows of exactly what the simulator served for these ids: its
    payloads (simulator.Dataset, same seed and anchor) through the normalizers."""
    from models import Vendor
    from simulator import Dataset
    from worker.normalize import parse_json
    from worker.vendors.base import Target
    from worker.vendors.registry import VENDORS as SPECS

    dataset = Dataset(seed=seed, anchor=datetime.fromisoformat(anchor), max_pending_polls=0)
    fetched_at = datetime.fromisoformat(anchor)
    todo = [(MENTIONSAPI, "", a) for a in asks] + [(MENTIONLAB, p, e) for p, e in executions]
    for vendor, project_id, external_id in todo:
        spec = SPECS[Vendor(vendor)]
        _, body = dataset.final_bytes(vendor, external_id, project_id or None)
        target = Target(spec.vendor, external_id, project_id)
        yield spec.normalize(parse_json(body), target=target, fetched_at=fetched_at)


def load_truth(database_url: str, answers: Iterator[Any]) -> None:
    """COPY the reference rows into TRUTH_SCHEMA, tables shaped like the archive's."""
    from bench.writepath import TABLES, copy_tables, rows_by_table

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {TRUTH_SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {TRUTH_SCHEMA}"))
            for name in TABLES:
                like = f"(LIKE public.{name} INCLUDING DEFAULTS)"
                conn.execute(text(f"CREATE TABLE {TRUTH_SCHEMA}.{name} {like}"))
        rows = rows_by_table(list(answers))
        raw = engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            with driver.cursor() as cur:
                copy_tables(cur, rows, TRUTH_SCHEMA)
            driver.commit()
        finally:
            raw.close()
    finally:
        engine.dispose()


@dataclass
class Exactness:
    ids: int
    differing: list[str]
    seconds: float


def check_exact(database_url: str, seed: int, anchor: str) -> Exactness:
    """Every archived id's rows against the rows of the simulator's own payload:
    per table, count and md5 over every row in key order (throughput's fingerprint,
    `fetched_at` aside), restricted to the ids recorded final."""
    from bench.throughput import differences, fingerprint

    started = time.perf_counter()
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            asks, executions = final_ids(conn)
        load_truth(database_url, truth_rows(seed, anchor, asks, executions))
        keys = (asks, [e for _, e in executions])
        with engine.connect() as conn:
            archived = fingerprint(conn, "public", keys)
            truth = fingerprint(conn, TRUTH_SCHEMA, keys)
            conn.execute(text(f"DROP SCHEMA {TRUTH_SCHEMA} CASCADE"))
            conn.commit()
    finally:
        engine.dispose()
    return Exactness(
        len(asks) + len(executions), differences(archived, truth), time.perf_counter() - started
    )


def exact_result(scenario: str, exact: Exactness) -> Result:
    from bench.throughput import TABLES

    return Result(
        scenario,
        "tables differing from the simulator's payloads",
        float(len(exact.differing)),
        "",
        target=1.0,
        higher_is_better=False,
        note=f"(count + md5 of {len(TABLES)} tables over {exact.ids:,} final ids)",
    )
