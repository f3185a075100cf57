"""The scheduler's heartbeat in the database (`scheduler_heartbeats`).

Beat records its ticks (worker/beat.py), every dispatch sweep records itself
(`mentionsync.dispatch_due`), and everything that reports on the scheduler reads
the ages from here: `status`, `doctor`, `/readyz`, the metrics, the alerts, the
workers' watchdog, `mentionsync run` and `mentionsync scheduler check`.

An age is the difference of two database timestamps (`now()` and the recorded
one), so a host whose clock is off neither hides a stall nor invents one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

from models import SchedulerHeartbeat
from models.base import UTCDateTime
from worker.config import Settings
from worker.schedule import DISPATCH_QUEUE

TABLE = SchedulerHeartbeat.__table__
SHOWN = 10  # beats listed by `status`, newest tick first
# Rows of beats gone this long are forgotten by housekeeping.
FORGET_AFTER = timedelta(days=1)
# Beat, the watchdog and the supervisor must not wait long on a sick database.
TIMEOUT_SECONDS = 5


def db_now() -> Any:
    """The database's clock, read back as an aware UTC datetime on every dialect."""
    return func.now(type_=UTCDateTime())


def instance_name(pid: int | None = None) -> str:
    """How a beat process is named in the table: `host:pid`."""
    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}"


def stall_after(settings: Settings) -> float:
    """Seconds without a dispatch sweep (or a beat's tick) that make a stall.

    Never less than three ticks of either kind, so a long POLL_TICK_SECONDS does
    not read as a stall between two sweeps.
    """
    return max(
        settings.scheduler_stall_seconds,
        3 * settings.poll_tick_seconds,
        3 * settings.scheduler_heartbeat_seconds,
    )


def side_engine(settings: Settings) -> Engine:
    """An engine for beat, the watchdog and the supervisor: a connection per use
    (no socket is held between uses, so none can leak into a forked child) that
    gives up within seconds when the database does not answer."""
    from worker.db import make_engine

    url = settings.database_url
    if url.startswith("postgresql"):
        return make_engine(
            url,
            poolclass=NullPool,
            pool_pre_ping=False,
            connect_args={
                "connect_timeout": TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={TIMEOUT_SECONDS * 1000}",
            },
        )
    return make_engine(url, poolclass=NullPool, pool_pre_ping=False)


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(TABLE)
    return sqlite.insert(TABLE)


def record_tick(conn: Connection, instance: str, *, first: bool = False) -> None:
    """Beat `instance` is ticking. `first`: the process just started (a container
    restarted under the same `host:pid` gets a new `started_at`)."""
    now = db_now()
    on_conflict: dict[str, Any] = {"last_tick_at": now}
    if first:
        on_conflict["started_at"] = now
    conn.execute(
        _insert(conn)
        .values(instance=instance, started_at=now, last_tick_at=now)
        .on_conflict_do_update(index_elements=[TABLE.c.instance], set_=on_conflict)
    )


def record_dispatch(conn: Connection, instance: str) -> bool:
    """A worker ran a dispatch sweep that beat `instance` sent; False if that beat
    has no row (it could not record its first tick)."""
    result = conn.execute(
        update(TABLE).where(TABLE.c.instance == instance).values(last_dispatch_at=db_now())
    )
    return bool(result.rowcount)


def tick_age(conn: Connection, instance: str) -> float | None:
    """Seconds since beat `instance` last ticked; None if it never recorded a tick."""
    row = conn.execute(
        select(db_now(), TABLE.c.last_tick_at).where(TABLE.c.instance == instance)
    ).first()
    return max(0.0, (row[0] - row[1]).total_seconds()) if row is not None else None


def forget_gone(conn: Connection) -> int:
    """Delete the rows of beats that stopped ticking a day ago."""
    now = conn.scalar(select(db_now()))
    assert now is not None
    cutoff = now - FORGET_AFTER
    return int(conn.execute(delete(TABLE).where(TABLE.c.last_tick_at < cutoff)).rowcount)


@dataclass(frozen=True)
class Beat:
    instance: str
    started_at: datetime
    last_tick_at: datetime
    last_dispatch_at: datetime | None


@dataclass(frozen=True)
class SchedulerState:
    """What the table says, with the database's clock at the time of reading."""

    now: datetime
    beats: tuple[Beat, ...]  # the SHOWN newest ticks, newest first
    last_dispatch_at: datetime | None  # the newest over every beat

    @property
    def last_tick_at(self) -> datetime | None:
        return self.beats[0].last_tick_at if self.beats else None

    def age(self, at: datetime | None) -> float | None:
        return None if at is None else max(0.0, (self.now - at).total_seconds())

    def dispatch_age(self, since: datetime | None = None) -> float | None:
        """Seconds a stall is counted over: since the last dispatch sweep, or when
        none was recorded, since the oldest beat listed started. `since`: when the
        caller began watching; nothing before it counts (a worker starting after a
        pause does not report a stall its beat had no time to end)."""
        last = self.last_dispatch_at
        if last is None and self.beats:
            last = min(b.started_at for b in self.beats)
        if since is not None:
            last = since if last is None else max(last, since)
        return self.age(last)

    def ticking(self, within: float) -> list[Beat]:
        return [b for b in self.beats if (self.age(b.last_tick_at) or 0.0) <= within]


def read_state(conn: Connection, *, host: str | None = None) -> SchedulerState:
    """The scheduler's state; with `host`, only the beats of that host."""
    where = [TABLE.c.instance.startswith(f"{host}:", autoescape=True)] if host else []
    now, last_dispatch = conn.execute(
        select(db_now(), func.max(TABLE.c.last_dispatch_at)).where(*where)
    ).one()
    rows = conn.execute(
        select(TABLE).where(*where).order_by(TABLE.c.last_tick_at.desc()).limit(SHOWN)
    ).all()
    beats = tuple(Beat(r.instance, r.started_at, r.last_tick_at, r.last_dispatch_at) for r in rows)
    return SchedulerState(now=now, beats=beats, last_dispatch_at=last_dispatch)


def stall_reason(
    state: SchedulerState, settings: Settings, *, since: datetime | None = None
) -> str | None:
    """Why the scheduler counts as stalled (no dispatch sweep for too long), or None."""
    threshold = stall_after(settings)
    age = state.dispatch_age(since)
    if age is None or age <= threshold:
        return None
    if state.last_dispatch_at is None:
        head = f"no dispatch sweep recorded in {age:.0f} s"
    else:
        head = f"no dispatch sweep for {state.age(state.last_dispatch_at):.0f} s"
    tick_age = state.age(state.last_tick_at)
    if tick_age is None:
        why = "no beat has recorded a tick: is `celery beat` (or `mentionsync run`) running?"
    elif tick_age > threshold:
        why = f"the newest beat tick is {tick_age:.0f} s old: beat is stopped or hung"
    else:
        why = (
            f"beat ticked {tick_age:.0f} s ago but its sweeps do not run: is a worker "
            f"consuming the {DISPATCH_QUEUE} queue (none running, or all busy)?"
        )
    return f"{head} (stall after {threshold:g} s); {why}"


def describe(state: SchedulerState, settings: Settings) -> dict[str, Any]:
    """The scheduler part of `status --json` (and of `/readyz` for a token holder)."""
    threshold = stall_after(settings)

    def when(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    def age(at: datetime | None) -> float | None:
        value = state.age(at)
        return round(value, 1) if value is not None else None

    return {
        "stall_seconds": threshold,
        "stalled": stall_reason(state, settings) is not None,
        "reason": stall_reason(state, settings),
        "last_dispatch_at": when(state.last_dispatch_at),
        "last_dispatch_age_seconds": age(state.last_dispatch_at),
        "last_tick_at": when(state.last_tick_at),
        "last_tick_age_seconds": age(state.last_tick_at),
        "beats_ticking": len(state.ticking(threshold)),
        "beats": [
            {
                "instance": b.instance,
                "started_at": when(b.started_at),
                "last_tick_at": when(b.last_tick_at),
                "last_tick_age_seconds": age(b.last_tick_at),
                "last_dispatch_at": when(b.last_dispatch_at),
                "last_dispatch_age_seconds": age(b.last_dispatch_at),
            }
            for b in state.beats
        ],
    }
