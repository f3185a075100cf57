"""What every benchmark scenario shares: a fresh database, the simulator as its own
process, real Celery workers and beat as subprocesses, and the result table.

Environment (all optional):
- BENCH_POSTGRES_URL: server to create the bench database on
  (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
- BENCH_REDIS_URL: broker and shared rate budget (default redis://127.0.0.1:6379/14)
- BENCH_DATABASE: name of the database the bench drops and recreates
  (default mentionsync_bench)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, create_engine, func, make_url, select, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BENCH_DB = os.environ.get("BENCH_DATABASE", "mentionsync_bench")
DATABASE_URL = make_url(ADMIN_URL).set(database=BENCH_DB).render_as_string(hide_password=False)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
MENTIONSAPI_KEY = "lvk_bench_key"
MENTIONLAB_KEY = "ml_bench_key"

# MentionLab projects of the bulk-loaded synthetic archives (scheduler, reports).
PROJECTS = (
    "6f1c1f7e-3d7e-4a53-9a51-0b0f6f4c9a01",
    "0d3b2f5a-8c44-4e0e-b1e9-2c6a1d7e5b02",
    "b7a9e4c2-1f6d-4b8a-9e3c-5d2f8a6c7e03",
)

console = Console()
if not console.is_terminal:
    # Piped to a file or CI log: rich would wrap the table at 80 columns.
    console = Console(width=140)


# --- Database -------------------------------------------------------------------


def fresh_database() -> str:
    """Drop and recreate the bench database, built by the migrations; return its URL."""
    from worker.migrate import upgrade

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    finally:
        admin.dispose()
    upgrade("head", database_url=DATABASE_URL)
    return DATABASE_URL


def flush_redis() -> None:
    """Forget queued messages and rate budgets of an earlier run."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


def register_ids(
    database_url: str, vendor: str, ids: Iterable[str], *, project_id: str = ""
) -> int:
    """Track ids through the product's own registry; return how many were added."""
    from models import Vendor
    from worker.config import Settings
    from worker.db import make_engine
    from worker.registry import label_arguments, register

    settings = Settings.model_validate({"database_url": database_url})
    engine = make_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            result = register(
                session,
                Vendor(vendor),
                label_arguments(ids),
                settings=settings,
                project_id=project_id,
            )
    finally:
        engine.dispose()
    if result.rejected:
        raise RuntimeError(f"registry rejected {len(result.rejected)} ids: {result.rejected[0]}")
    return result.added


# Fates the simulator answers with a 200 on the first fetch (max_pending_polls=0).
ASK_FATES = frozenset({"succeeded", "failed"})
EXECUTION_FATES = frozenset({"success", "retried", "failed"})


def final_ask_ids(seed: int, n: int) -> list[str]:
    """The first n ask ids of the seed that are archived from a 200."""
    from simulator import Dataset

    dataset = Dataset(seed=seed, max_pending_polls=0)
    chosen: list[str] = []
    start = 0
    while len(chosen) < n:
        batch = dataset.ask_ids(1000, start)
        start += len(batch)
        chosen += [i for i in batch if dataset.fate("mentionsapi", i) in ASK_FATES]
    return chosen[:n]


def final_execution_ids(seed: int, n: int) -> list[tuple[str, str]]:
    """The first n (project_id, job_execution_id) pairs archived from a 200."""
    from simulator import Dataset

    dataset = Dataset(seed=seed, max_pending_polls=0)
    chosen: list[tuple[str, str]] = []
    start = 0
    while len(chosen) < n:
        batch = dataset.execution_ids(1000, start)
        start += len(batch)
        chosen += [p for p in batch if dataset.fate("mentionlab", p[1]) in EXECUTION_FATES]
    return chosen[:n]


def register_executions(database_url: str, pairs: Iterable[tuple[str, str]]) -> int:
    """Track (project_id, job_execution_id) pairs, one registration per project."""
    by_project: dict[str, list[str]] = {}
    for project_id, execution_id in pairs:
        by_project.setdefault(project_id, []).append(execution_id)
    return sum(
        register_ids(database_url, "mentionlab", ids, project_id=project_id)
        for project_id, ids in sorted(by_project.items())
    )


def count_by_state(database_url: str) -> dict[str, int]:
    from models import TrackedId

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(TrackedId.state, func.count()).group_by(TrackedId.state)
            ).all()
    finally:
        engine.dispose()
    return {str(getattr(state, "value", state)): int(n) for state, n in rows}


@contextlib.contextmanager
def autocommit(database_url: str) -> Iterator[Connection]:
    """A connection outside any transaction, for VACUUM, ANALYZE and CHECKPOINT."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@contextlib.contextmanager
def in_process_product(database_url: str, **overrides: str) -> Iterator[None]:
    """Point this process's product settings, engine and resources at `database_url`.

    For scenarios that call product functions directly (no Celery): the bench API
    keys are set so no vendor is gated, and the rate budgets are set far above any
    real plan so the claim's capacity (`scheduling.in_flight_capacity`) is
    MAX_IN_FLIGHT, not the budget. Everything is restored (and the process's
    runtime, with its engine, dropped) on exit.
    """
    from worker.resources import close_process_runtime

    env = {
        "DATABASE_URL": database_url,
        "MENTIONSAPI_API_KEY": MENTIONSAPI_KEY,
        "MENTIONLAB_API_KEY": MENTIONLAB_KEY,
        "MENTIONSAPI_RATE_LIMIT": "100000",
        "MENTIONSAPI_RATE_BURST": "100000",
        "MENTIONLAB_RATE_LIMIT": "100000",
        "MENTIONLAB_RATE_BURST": "100000",
        **overrides,
    }
    saved = {name: os.environ.get(name) for name in env}

    def reset() -> None:
        close_process_runtime()

    os.environ.update(env)
    reset()
    try:
        yield
    finally:
        reset()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- Processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_dir(name: str) -> Path:
    """A directory for one run's logs, kept after the run for inspection."""
    return Path(tempfile.mkdtemp(prefix=f"mentionsync-bench-{name}-"))


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes], *, grace: float = 20.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class SimulatorProcess:
    """`python -m simulator` in its own process (so its event loop has its own GIL)."""

    workdir: Path
    seed: int = 0
    rate_limit: float | None = None
    max_pending_polls: int = 2
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    # Per vendor (requests/s per key, and bursts), over rate_limit for that vendor.
    rate_limits: dict[str, float] = field(default_factory=dict)
    rate_bursts: dict[str, float] = field(default_factory=dict)
    # Dates in the answers derive from it: fixed, so every run serves identical bodies.
    anchor: str = "2026-11-23T12:00:00+00:00"
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimulatorProcess:
        self.port = self.port or free_port()
        args = [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--seed",
            str(self.seed),
            "--max-pending-polls",
            str(self.max_pending_polls),
            "--latency-ms",
            str(self.latency_ms),
            "--anchor",
            self.anchor,
            *self.extra_args,
        ]
        if self.rate_limit is not None:
            args += ["--rate-limit", str(self.rate_limit)]
        if self.latency_jitter_ms:
            args += ["--latency-jitter-ms", str(self.latency_jitter_ms)]
        for vendor, rate in sorted(self.rate_limits.items()):
            args += [f"--rate-limit-{vendor}", str(rate)]
        for vendor, burst in sorted(self.rate_bursts.items()):
            args += [f"--rate-burst-{vendor}", str(burst)]
        self._log = (self.workdir / "simulator.log").open("wb")
        self.proc = subprocess.Popen(
            args,
            env=_child_env({}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        proc = self.proc

        def healthy() -> bool:
            if proc.poll() is not None:
                log = (self.workdir / "simulator.log").read_text(errors="replace")
                raise RuntimeError(f"simulator exited with {proc.returncode}:\n{log[-2000:]}")
            try:
                return httpx.get(f"{self.base_url}/_sim/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "the simulator's /_sim/health")
        return self

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/_sim/stats", timeout=5.0)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=5)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def user_env(database_url: str, base_url: str) -> dict[str, str]:
    """What a new user sets: where the database and Redis are, the API keys and
    (here, to reach the simulator) the base URLs. Nothing else: the defaults."""
    return {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": REDIS_URL,
        "REDIS_URL": REDIS_URL,
        "MENTIONSAPI_API_KEY": MENTIONSAPI_KEY,
        "MENTIONLAB_API_KEY": MENTIONLAB_KEY,
        "MENTIONSAPI_BASE_URL": base_url,
        "MENTIONLAB_BASE_URL": base_url,
    }


def worker_env(database_url: str, base_url: str, **overrides: str) -> dict[str, str]:
    """The settings every worker and beat process of a run gets (fast ticks, bench keys)."""
    env = {
        **user_env(database_url, base_url),
        "POLL_TICK_SECONDS": "0.5",
        "POLL_INTERVAL_SECONDS": "1",
        "POLL_MAX_INTERVAL_SECONDS": "5",
        "NOT_FOUND_RECHECK_SECONDS": "1",
        "RETRY_BASE_SECONDS": "0.5",
        "RETRY_MAX_SECONDS": "5",
        "LOG_LEVEL": "INFO",
    }
    env.update(overrides)
    return env


@dataclass
class CeleryCluster:
    """N `celery worker` processes and one `celery beat`, as the README runs them."""

    workdir: Path
    env: dict[str, str]
    workers: int = 1
    concurrency: int = 4
    worker_args: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self._logs.append(log)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.app", *args],
                env=_child_env(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        )

    def start(self) -> CeleryCluster:
        for i in range(self.workers):
            self._spawn(
                f"worker-{i}",
                [
                    "worker",
                    f"--concurrency={self.concurrency}",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-n",
                    f"bench{i}@%h",
                    *self.worker_args,
                ],
            )
        self._spawn(
            "beat", ["beat", "--loglevel=INFO", f"--schedule={self.workdir / 'beat-schedule'}"]
        )
        return self

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"celery process {proc.args!r} exited with {proc.returncode}; "
                    f"see logs in {self.workdir}"
                )

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            _stop(proc)
        for log in self._logs:
            log.close()

    def __enter__(self) -> CeleryCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- Results --------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One figure of a scenario, with its target and the baseline it is compared to.

    `target` is a bound: at least it (higher_is_better) or below it. `baseline` is
    what the ratio divides by; None when no baseline applies.
    """

    scenario: str
    figure: str
    value: float
    unit: str
    target: float | None
    higher_is_better: bool = True
    baseline: float | None = None
    baseline_label: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value < self.target

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:,.1f} {unit}".rstrip()


def print_table(title: str, results: list[Result], out: Console = console) -> None:
    table = Table(title=title, show_lines=False)
    table.add_column("scenario")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("verdict")
    for r in results:
        if r.target is None:
            target = "—"
        else:
            target = ("≥ " if r.higher_is_better else "< ") + _fmt(r.target, r.unit)
        baseline = _fmt(r.baseline, r.unit)
        if r.baseline_label and r.baseline is not None:
            baseline = f"{baseline} ({r.baseline_label})"
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "—"
        verdict = {True: "[green]MET[/]", False: "[red]NOT MET[/]", None: "[dim]info[/]"}[r.met]
        if r.note:
            verdict += f" [dim]{r.note}[/]"
        table.add_row(r.scenario, r.figure, _fmt(r.value, r.unit), target, baseline, ratio, verdict)
    out.print(table)
