"""A beat that records its ticks, and the workers' watchdog that notices when it stops.

- `HeartbeatScheduler` (app.conf.beat_scheduler) is Celery's persistent
  scheduler that upserts its row of `scheduler_heartbeats` at most every
  SCHEDULER_HEARTBEAT_SECONDS, and names itself in the dispatch sweeps it sends
  so that each sweep records, on that row, that it ran.
- `Watchdog` runs in every Celery worker's main process (started on
  worker_ready): a beat cannot report its own death, so the workers do. It logs
  an error and sends the `scheduler_stalled` alert when no sweep ran for
  SCHEDULER_STALL_SECONDS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from worker.common import short_error
from worker.config import Settings, load_settings
from worker.heartbeat import (
    instance_name,
    read_state,
    record_tick,
    side_engine,
    stall_after,
    stall_reason,
)
from worker.schedule import DISPATCH_TASK

log = logging.getLogger("mentionsync.beat")


# --- beat -------------------------------------------------------------------------------


class TickWriter:
    """Upserts this beat's heartbeat, at most every SCHEDULER_HEARTBEAT_SECONDS.

    Never raises: a database outage must not stop beat (the sweeps it sends fail
    on their own and say so). It is logged once per outage.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._next = 0.0
        self._first = True
        self._failing = False

    @property
    def instance(self) -> str:
        return instance_name()

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.settings.scheduler_heartbeat_seconds
        try:
            if self._engine is None or self._pid != os.getpid():
                # An embedded beat is a forked child: its own engine, its own row.
                self._engine = side_engine(self.settings)
                self._pid = os.getpid()
                self._first = True
            with self._engine.begin() as conn:
                record_tick(conn, self.instance, first=self._first)
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "beat %s cannot record its heartbeat (%s); it keeps scheduling",
                    self.instance,
                    short_error(exc),
                )
                self._failing = True
            return
        if self._first:
            log.info("beat %s records its heartbeat", self.instance)
        elif self._failing:
            log.info("beat %s records its heartbeat again", self.instance)
        self._first = False
        self._failing = False

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class HeartbeatScheduler(PersistentScheduler):
    """Celery's PersistentScheduler, plus the heartbeat (see the module's docstring)."""

    _writer: TickWriter | None = None

    @property
    def writer(self) -> TickWriter:
        # Created on first use: `celery beat` also builds schedulers lazily for
        # introspection, which must not write anything.
        if self._writer is None:
            # Celery builds this class itself: the beat process's settings are read here.
            self._writer = TickWriter(load_settings())
        return self._writer

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self.writer.tick()
        return float(super().tick(*args, **kwargs))

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        if entry.task == DISPATCH_TASK:
            # A copy: the entry in the schedule stays as configured.
            entry = entry.__class__(
                **dict(entry, kwargs={**entry.kwargs, "scheduler": self.writer.instance})
            )
        return super().apply_async(entry, producer, advance, **kwargs)

    def close(self) -> None:
        super().close()
        if self._writer is not None:
            self._writer.close()


# --- the workers' watchdog ------------------------------------------------------------------

# Held while the watchdog has a database connection open, and taken before every
# fork of this process (the prefork pool's children): a child never inherits a
# socket of the watchdog's, so nothing a child does can close it under the parent.
_FORK_LOCK = threading.Lock()
_fork_guard_installed = False


def _install_fork_guard() -> None:
    global _fork_guard_installed
    if not _fork_guard_installed:
        os.register_at_fork(
            before=_FORK_LOCK.acquire,
            after_in_parent=_FORK_LOCK.release,
            after_in_child=_FORK_LOCK.release,
        )
        _fork_guard_installed = True


class Watchdog(threading.Thread):
    """Checks the scheduler's heartbeat every few seconds, from a worker's main process.

    Uses an engine of its own (a connection per check, closed before any fork)
    and never the process's shared one, which the pool's children reset.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="mentionsync-watchdog", daemon=True)
        self.settings = settings
        self.stopping = threading.Event()
        self._engine: Engine | None = None
        self._since: datetime | None = None  # database clock at the first check
        self._stalled = False
        self._logged_at = 0.0
        self._db_failing = False

    @property
    def interval(self) -> float:
        # A stall is reported at most a quarter of its threshold late.
        return max(0.5, min(10.0, stall_after(self.settings) / 4))

    def start(self) -> None:
        _install_fork_guard()
        super().start()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        log.info(
            "watchdog: checking the scheduler every %g s (stall after %g s)",
            self.interval,
            stall_after(self.settings),
        )
        while True:
            try:
                self.check()
            except Exception:  # the watchdog must outlive any one bad check
                log.exception("watchdog: check failed")
            if self.stopping.wait(self.interval):
                break
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def scope(self) -> Iterator[Session]:
        with _FORK_LOCK:
            if self._engine is None:
                self._engine = side_engine(self.settings)
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session

    def check(self) -> str | None:
        """One check: log and alert a stall; return its reason (None: sweeps run)."""
        from worker.alerts import STALLED, check_alerts

        try:
            with self.scope() as session:
                state = read_state(session.connection())
        except Exception as exc:
            if not self._db_failing:
                log.warning("watchdog: cannot read the scheduler heartbeat: %s", short_error(exc))
                self._db_failing = True
            return None
        self._db_failing = False
        if self._since is None:
            self._since = state.now
        reason = stall_reason(state, self.settings, since=self._since)
        age = state.dispatch_age(self._since)
        if reason is None:
            if self._stalled:
                log.info(
                    "scheduler recovered: the last dispatch sweep ran %.0f s ago",
                    age or 0.0,
                    extra={"age_s": round(age or 0.0, 1)},
                )
            self._stalled = False
        elif not self._stalled or time.monotonic() - self._logged_at >= stall_after(self.settings):
            # Once when it starts, then once per threshold while it lasts.
            log.error("scheduler stalled: %s", reason, extra={"age_s": round(age or 0.0, 1)})
            self._stalled = True
            self._logged_at = time.monotonic()
        if self.settings.alert_webhook_url is not None:
            check_alerts(self.scope, self.settings, kinds={STALLED}, since=self._since)
        return reason


_watchdog: Watchdog | None = None


def start_watchdog(settings: Settings) -> Watchdog:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = Watchdog(settings)
        _watchdog.start()
    return _watchdog


def stop_watchdog() -> None:
    if _watchdog is not None:
        _watchdog.stop()
