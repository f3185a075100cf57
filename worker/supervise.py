"""`mentionsync run`: a Celery worker and a Celery beat, kept running.

Both are child processes (`celery -A worker.app worker` and `... beat`), so one
dying does not take the other with it. The supervisor:

- restarts a child that exits unexpectedly, after a backoff (1 s, doubling to
  30 s while it keeps failing within a minute of its start), logging each restart;
- restarts beat when its heartbeat (`scheduler_heartbeats`, database clock) is
  older than SCHEDULER_STALL_SECONDS: a hung beat is as useless as a dead one;
- on SIGINT or SIGTERM stops both (SIGTERM: the worker finishes its batches),
  kills what is still running after a grace period, and exits 0. A second
  signal kills at once.

The children run in a session of their own, so a terminal's Ctrl-C reaches them
once, through the supervisor; on Linux they also get SIGTERM if the supervisor
itself is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy import Engine

from worker.config import Settings
from worker.heartbeat import instance_name, side_engine, stall_after, tick_age

log = logging.getLogger("mentionsync.run")

MIN_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# A child that ran this long before exiting starts again after MIN_BACKOFF.
STABLE_SECONDS = 60.0
LOOP_SECONDS = 0.2
# How long a child may take to stop on SIGTERM before it is killed.
GRACE_SECONDS = {"worker": 60.0, "beat": 10.0}


def celery_argv(command: str, loglevel: str, concurrency: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", command, f"--loglevel={loglevel}"]
    if command == "worker":
        argv += ["--without-gossip", "--without-mingle"]
        if concurrency:
            argv.append(f"--concurrency={concurrency}")
    return argv


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGTERM when the supervisor dies,
    # even by SIGKILL, so no worker or beat is left behind.
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        # Best effort: SIGINT/SIGTERM to the supervisor stop them anyway.
        with contextlib.suppress(AttributeError, OSError):
            ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic
    restart_at: float = 0.0  # monotonic; when `process` is None
    backoff: float = MIN_BACKOFF
    restarts: int = 0
    env: dict[str, str] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        loglevel: str = "INFO",
        concurrency: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.children = [
            Child("worker", celery_argv("worker", loglevel, concurrency), env=env),
            Child("beat", celery_argv("beat", loglevel), env=env),
        ]
        self.stopping = False
        self.signals = 0
        self._engine: Engine | None = None
        self._next_check = 0.0
        self._db_failing = False

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping:
                self.step(time.monotonic())
                time.sleep(LOOP_SECONDS)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._engine is not None:
                self._engine.dispose()
        return 0

    def step(self, now: float) -> None:
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                self._exited(child, now)
            if child.process is None and now >= child.restart_at and not self.stopping:
                self._start(child)
        if now >= self._next_check:
            self._next_check = now + self.check_interval
            self._check_beat(now)

    @property
    def check_interval(self) -> float:
        return max(1.0, min(10.0, stall_after(self.settings) / 4))

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        if not self.stopping:
            log.info("%s: stopping the worker and beat", signal.Signals(signum).name)
        self.stopping = True
        if self.signals > 1:
            # Asked twice: do not wait for batches to finish.
            for child in self.children:
                if child.running():
                    assert child.process is not None
                    child.process.kill()

    # --- children -------------------------------------------------------------------------

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=child.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # safe: the supervisor runs no threads
        )
        child.started = time.monotonic()
        log.info(
            "started celery %s (pid %d)", child.name, child.process.pid, extra={"pid": child.pid}
        )

    def _exited(self, child: Child, now: float) -> None:
        assert child.process is not None
        code = child.process.returncode
        pid = child.process.pid
        child.process = None
        if self.stopping:
            return
        if now - child.started >= STABLE_SECONDS:
            child.backoff = MIN_BACKOFF
        delay = child.backoff
        child.backoff = min(MAX_BACKOFF, child.backoff * 2)
        child.restart_at = now + delay
        child.restarts += 1
        log.error(
            "celery %s (pid %d) exited with %s after %.0f s; restarting it in %g s",
            child.name,
            pid,
            _describe_exit(code),
            now - child.started,
            delay,
            extra={"pid": pid, "restarts": child.restarts},
        )

    def _check_beat(self, now: float) -> None:
        """Restart beat when its heartbeat is stale: alive but not ticking."""
        beat = next(c for c in self.children if c.name == "beat")
        threshold = stall_after(self.settings)
        if not beat.running() or now - beat.started < threshold:
            return
        assert beat.process is not None
        instance = instance_name(beat.process.pid)
        try:
            if self._engine is None:
                self._engine = side_engine(self.settings)
            with self._engine.connect() as conn:
                age = tick_age(conn, instance)
        except Exception as exc:
            # Not beat's fault: it is left alone until its heartbeat can be read.
            if not self._db_failing:
                log.warning("cannot read beat's heartbeat: %s", type(exc).__name__)
                self._db_failing = True
            return
        self._db_failing = False
        if age is not None and age <= threshold:
            return
        ticked = f"has not ticked for {age:.0f} s" if age is not None else "never ticked"
        log.error(
            "celery beat (pid %d) %s (stall after %g s): hung; killing and restarting it",
            beat.process.pid,
            ticked,
            threshold,
            extra={"pid": beat.process.pid},
        )
        # SIGKILL: a hung main thread would never run a SIGTERM handler. Beat's
        # schedule file is rebuilt if the kill left it corrupt.
        beat.process.kill()
        beat.process.wait()
        beat.process = None
        beat.restarts += 1
        beat.restart_at = now  # a hang is not a crash loop: no backoff

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.running()]
        for child in running:
            assert child.process is not None
            child.process.terminate()
        deadline = {c.name: time.monotonic() + GRACE_SECONDS[c.name] for c in running}
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.0, deadline[child.name] - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("celery %s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
        log.info("stopped")


def child_environment(settings: Settings) -> dict[str, str]:
    """The worker's and beat's environment: ours, with the log format and level
    as this command resolved them (`--log-format`/`--log-level` win over the
    environment), since the children read their settings from it."""
    return {**os.environ, "LOG_FORMAT": settings.log_format, "LOG_LEVEL": settings.log_level}


def supervise(settings: Settings, *, loglevel: str, concurrency: int | None) -> int:
    return Supervisor(
        settings, loglevel=loglevel, concurrency=concurrency, env=child_environment(settings)
    ).run()
