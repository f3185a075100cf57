"""Polling without Celery: `mentionsync sync` (cron jobs, backfills, tests).

`poll` is the loop of one process: the shared claim-and-dispatch step
(`poller.sweep`) hands batches to the process's fetch pipeline as long as it has
room, and waits while it is full or nothing is due.

`poll_once` runs it in this process until what was due has been polled.
`poll_until_done` starts one worker process per core, each running `poll` with a
pipeline of its own, and watches them from here: it shows progress (ids final of
those pending at the start, requests/s and ETA, by vendor), restarts a worker
that died, and stops them all when no id is pending, when a refused or missing
key blocks every vendor with pending ids, at the timeout, or on Ctrl-C. A worker
told to stop writes the answers in flight, gives back the ids still waiting for
a slot and exits.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, TextIO

from sqlalchemy.exc import DBAPIError

from models import Vendor, utcnow
from worker.accounts import account_gate, passes_by_itself
from worker.common import (
    EXIT_BLOCKED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    short_error,
)
from worker.config import Settings
from worker.db import Database
from worker.pipeline import Pipeline
from worker.poller import Claim, record_losses, sweep
from worker.resources import Runtime
from worker.tracking import db_now, next_due, pending_by_vendor

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger("mentionsync.sync")

# Ids past their deadline are recorded as lost this often (and at the start).
LOSS_SWEEP_SECONDS = 60.0
# The watcher reads the database this often; without a terminal it prints a
# progress line at most every PLAIN_PROGRESS_SECONDS.
WATCH_SECONDS = 1.0
PLAIN_PROGRESS_SECONDS = 10.0
# A worker that died is started again, up to this many times in all.
MAX_RESTARTS = 5
# How long a stopping worker may take: requests in flight, the last writes.
STOP_SECONDS = 60.0

VENDORS = list(Vendor)


# A process claims again once this fraction of its share is free (and at least a
# batch): with three quarters of its share still held it has seconds of work, and
# each claim's statements (a count of the key's ids in flight, the claim itself)
# cost about as much for 250 ids as for 100.
CLAIM_FRACTION = 0.25


def room(runtime: Runtime, processes: int) -> dict[Vendor, int]:
    """Ids of each vendor this process may still take in: its share of
    MAX_IN_FLIGHT (which bounds how far ahead of its budget a key is claimed),
    at least a batch; nothing while less than CLAIM_FRACTION of it (or a batch)
    is free and some of the vendor's ids are still in flight, so that claims
    come in a few large steps."""
    settings = runtime.settings
    share = max(settings.batch_size, settings.max_in_flight // max(1, processes))
    step = max(settings.batch_size, int(share * CLAIM_FRACTION))
    space = {}
    for vendor in runtime.clients:
        held = runtime.pipeline.in_flight(vendor)
        free = max(0, share - held)
        space[vendor] = free if free >= step or not held else 0
    return space


def poll(
    runtime: Runtime,
    stop: Callable[[], bool],
    *,
    processes: int = 1,
    once: bool = False,
    tick: Callable[[], None] | None = None,
) -> int:
    """Claim and fetch until `stop()` (or, `once`, until nothing due is left and
    the pipeline is idle); returns the ids handed to the pipeline. A failure that
    is not one id's fault (each id's own faults are its outcome) is logged, what
    the round held given back, and the loop tries again shortly."""
    settings = runtime.settings
    pipeline = runtime.pipeline
    swept_at = -math.inf
    trouble = 0
    sent = 0
    # Vendors a sweep found nothing to claim for (none due, a gate, the key's
    # ids in flight at their cap) are left out of the sweeps until this
    # monotonic time, a tick later, while this process has work in flight: the
    # sweeps for the other vendor then cost no statements for them.
    quiet: dict[Vendor, float] = {}
    while not stop():
        if tick is not None:
            tick()
        try:
            if time.monotonic() - swept_at > LOSS_SWEEP_SECONDS:
                with runtime.db.session() as session:
                    record_losses(session, settings)
                swept_at = time.monotonic()
            space = room(runtime, processes)
            if pipeline.in_flight():
                now = time.monotonic()
                space = {v: 0 if quiet.get(v, 0.0) > now else n for v, n in space.items()}
            else:
                quiet.clear()  # idle: every vendor is looked at
            claimed = 0
            if any(space.values()):
                swept = sweep(runtime, _submit_to(pipeline), max_ids=space)
                claimed = swept.sent
                sent += claimed
                found = {claim.vendor for claim in swept.claims}
                for vendor, n in space.items():
                    if n and vendor not in found:
                        quiet[vendor] = time.monotonic() + settings.poll_tick_seconds
            due_at = None
            if not claimed and not pipeline.in_flight():
                with runtime.db.session() as session:
                    due_at = next_due(session)
            trouble = 0
        except Exception as exc:
            trouble += 1
            what = "the database is unreachable" if isinstance(exc, DBAPIError) else "error"
            log.error(
                "sync: %s (%s: %s); trying again",
                what,
                type(exc).__name__,
                short_error(exc),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            _sleep_unless(stop, min(30.0, 0.5 * 2 ** min(trouble, 6)))
            continue
        if claimed:
            continue  # claim on while there is room
        if pipeline.in_flight():
            pipeline.wait_idle(timeout=0.1)  # answers arriving make room
            continue
        if once:
            break
        wait = settings.poll_tick_seconds
        if due_at is not None:
            wait = min(wait, max(0.05, (due_at - utcnow()).total_seconds()))
        _sleep_unless(stop, wait)
    return sent


def _submit_to(pipeline: Pipeline) -> Callable[[list[Claim]], object]:
    """`sweep`'s send for this process's own pipeline: it takes what it claimed."""
    return lambda claims: [pipeline.submit(claim) for claim in claims]


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> None:
    until = time.monotonic() + seconds
    while not stop() and time.monotonic() < until:
        time.sleep(min(0.1, max(0.0, until - time.monotonic())))


# --- once, in this process -------------------------------------------------------


def poll_once(settings: Settings, timeout: float | None) -> tuple[int, int]:
    """Poll what is due now, in this process: (ids polled, ids still pending)."""
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    with Runtime.open(settings) as runtime:
        sent = poll(runtime, lambda: time.monotonic() > deadline, once=True)
        with runtime.db.session() as session:
            pending = sum(pending_by_vendor(session).values())
    return sent, pending


# --- until done, one worker process per core ---------------------------------------


def _worker(settings: Settings, index: int, stop: Event, sent: SynchronizedArray[int]) -> None:
    """A worker process of `poll_until_done`: Ctrl-C is the watcher's to handle."""
    from worker.logs import setup_logging

    # Started with SIGINT blocked (see `poll_until_done`): ignored from here on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    setup_logging(settings)
    processes = len(sent) // len(VENDORS)
    watcher = os.getppid()

    def stopped() -> bool:
        # A watcher killed outright cannot say stop: its workers must not poll on alone.
        return stop.is_set() or os.getppid() != watcher

    with Runtime.open(settings) as runtime:

        def publish() -> None:
            for j, vendor in enumerate(VENDORS):
                sent[index * len(VENDORS) + j] = runtime.pipeline.sent[vendor]

        poll(runtime, stopped, processes=processes, tick=publish)
        runtime.pipeline.close()  # write what is in flight before the last count
        publish()


@dataclass
class VendorProgress:
    total: int  # pending at the start, and any registered since
    pending: int
    requests: int = 0
    rate: float = 0.0  # requests/s, smoothed
    done_rate: float = 0.0  # ids final/s, smoothed

    @property
    def final(self) -> int:
        return max(0, self.total - self.pending)

    def eta(self) -> float | None:
        if not self.pending:
            return 0.0
        return self.pending / self.done_rate if self.done_rate > 0 else None


@dataclass
class Watch:
    """What the watcher knows; `progress` is printed from it."""

    vendors: dict[Vendor, VendorProgress] = field(default_factory=dict)

    def update(
        self, pending: Mapping[Vendor, int], requests: Mapping[Vendor, int], dt: float
    ) -> None:
        for vendor in set(pending) | set(self.vendors):
            now_pending = pending.get(vendor, 0)
            p = self.vendors.setdefault(vendor, VendorProgress(now_pending, now_pending))
            before_final, before_requests = p.final, p.requests
            p.total = max(p.total, p.final + now_pending)
            p.pending = now_pending
            p.requests = requests.get(vendor, p.requests)
            if dt > 0:
                weight = min(1.0, dt / 5.0)  # about a five-second average
                p.rate += weight * ((p.requests - before_requests) / dt - p.rate)
                p.done_rate += weight * ((p.final - before_final) / dt - p.done_rate)

    def line(self, vendor: Vendor) -> str:
        p = self.vendors[vendor]
        eta = p.eta()
        eta_text = "?" if eta is None else _duration(eta)
        return f"{vendor}: {p.final:,}/{p.total:,} final, {p.rate:,.0f} req/s, ETA {eta_text}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _Display:
    """A live bar per vendor on a terminal; a plain line now and then elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.printed_at = -math.inf
        self._progress: Progress | None = None
        self._tasks: dict[Vendor, TaskID] = {}
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[line]}"),
                console=Console(file=stream),
                transient=False,
            )
            self._progress.start()

    def show(self, watch: Watch) -> None:
        if self._progress is not None:
            for vendor in sorted(watch.vendors):
                p = watch.vendors[vendor]
                if vendor not in self._tasks:
                    self._tasks[vendor] = self._progress.add_task(str(vendor), line="")
                self._progress.update(
                    self._tasks[vendor],
                    total=max(1, p.total),
                    completed=p.final,
                    line=watch.line(vendor).split(": ", 1)[1],
                )
            return
        if time.monotonic() - self.printed_at < PLAIN_PROGRESS_SECONDS:
            return
        self.printed_at = time.monotonic()
        for vendor in sorted(watch.vendors):
            log.info("sync progress: %s", watch.line(vendor), extra={"vendor": vendor.value})

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@dataclass
class Result:
    code: int
    polled: int
    pending: int | None
    blocked: dict[Vendor, str] = field(default_factory=dict)
    message: str = ""


def poll_until_done(
    settings: Settings,
    *,
    processes: int | None = None,
    timeout: float | None = None,
    stream: TextIO | None = None,
) -> Result:
    """Poll until no id is pending, with one worker process per core."""
    n = processes or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    sent = ctx.Array("q", n * len(VENDORS))
    workers: list[SpawnProcess] = []
    restarts = 0

    def start(index: int) -> SpawnProcess:
        process = ctx.Process(
            target=_worker, args=(settings, index, stop, sent), name=f"sync-{index}", daemon=False
        )
        # A Ctrl-C reaches the whole process group: a worker still starting must not
        # die of it, so it starts with SIGINT blocked and then ignores it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return process

    def terminated(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminated)
    display = _Display(stream or sys.stderr)
    db = Database(settings.database_url)
    watch = Watch()
    result = Result(EXIT_TIMEOUT, 0, None)
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    try:
        workers = [start(i) for i in range(n)]
        seen_at = time.monotonic()
        while True:
            for i, process in enumerate(workers):
                if process.exitcode is not None:
                    if restarts >= MAX_RESTARTS:
                        result = Result(
                            EXIT_FAILED,
                            0,
                            None,
                            message=(
                                f"sync worker {i} exited with code {process.exitcode};"
                                f" gave up after {restarts} restarts"
                            ),
                        )
                        return result
                    restarts += 1
                    log.error(
                        "sync worker %d exited with code %s; starting it again (the ids it"
                        " held are due again when their lease ends)",
                        i,
                        process.exitcode,
                    )
                    workers[i] = start(i)
            try:
                with db.session() as session:
                    pending = pending_by_vendor(session)
                    now = db_now(session)
                    gates = {v: account_gate(session, v, settings, now) for v in pending}
            except Exception as exc:
                log.error("sync: cannot read progress (%s); the workers go on", short_error(exc))
                pending, gates = None, {}
            elapsed = time.monotonic() - seen_at
            seen_at = time.monotonic()
            requests = {
                vendor: sum(sent[i * len(VENDORS) + j] for i in range(n))
                for j, vendor in enumerate(VENDORS)
            }
            if pending is not None:
                watch.update(pending, requests, elapsed)
                display.show(watch)
                result.pending = sum(pending.values())
                if not result.pending:
                    result.code = EXIT_OK
                    break
                blocked = {v: r for v, r in gates.items() if r and not passes_by_itself(r)}
                if blocked and set(pending) <= set(blocked):
                    result.code = EXIT_BLOCKED
                    result.blocked = blocked
                    break
            if time.monotonic() > deadline:
                result.code = EXIT_TIMEOUT
                break
            time.sleep(WATCH_SECONDS)
    except KeyboardInterrupt:
        result.code = EXIT_INTERRUPTED
        result.message = "interrupted: answers in flight written, ids still waiting given back"
    finally:
        stop.set()
        _stop_workers(workers)
        display.close()
        db.dispose()
        signal.signal(signal.SIGTERM, previous)
        result.polled = sum(sent[:])
    return result


def _stop_workers(workers: list[SpawnProcess]) -> None:
    deadline = time.monotonic() + STOP_SECONDS
    for process in workers:
        while True:
            try:
                process.join(timeout=max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
                deadline = 0.0
        if process.exitcode is None:
            log.error("sync worker %s did not stop in time; terminating it", process.name)
            process.terminate()
            process.join(5)
