"""`mentionsync run`, `sync` and `scheduler check`: the worker, the no-Celery
loop, the scheduler's health."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from models import utcnow
from worker.cli._common import EXIT_BLOCKED, EXIT_OK, EXIT_TIMEOUT, err
from worker.config import get_settings

if TYPE_CHECKING:
    from worker.resources import Runtime


# `sync` records ids past their deadline as lost this often (and when it starts).
LOSS_SWEEP_SECONDS = 60.0


@click.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes.")
@click.option("--loglevel", default="INFO")
def run(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker and a Celery beat, and keep both running.

    Either one is restarted when it exits (after a short backoff), and beat also
    when it stops ticking; SIGINT or SIGTERM stops both. In production run
    `celery -A worker.app worker` and `celery -A worker.app beat` separately, as
    many workers as you like.
    """
    from worker.supervise import supervise

    sys.exit(supervise(get_settings(), loglevel=loglevel, concurrency=concurrency))


@click.group()
def scheduler() -> None:
    """The scheduler's health: beat's heartbeat and the dispatch sweeps."""


@scheduler.command("check")
@click.option(
    "--local",
    is_flag=True,
    help="Only the beats of this host, and only their ticks (a beat container's healthcheck).",
)
@click.option(
    "--max-age",
    type=float,
    default=None,
    help="Seconds (default: SCHEDULER_STALL_SECONDS, at least three ticks).",
)
def scheduler_check(local: bool, max_age: float | None) -> None:
    """Exit 0 if the scheduler is alive, 1 (saying why) if not.

    Without --local: a beat ticked and a dispatch sweep ran within the max age
    (the newest of every beat counts). With --local: a beat of this host ticked
    within it, whatever the workers do.
    """
    import socket

    from worker.db import session_scope
    from worker.heartbeat import read_state, stall_after

    settings = get_settings()
    limit = max_age if max_age is not None else stall_after(settings)
    where = f" on {socket.gethostname()}" if local else ""
    try:
        with session_scope() as session:
            state = read_state(session.connection(), host=socket.gethostname() if local else None)
    except Exception as exc:
        click.echo(f"scheduler: cannot read the heartbeats: {type(exc).__name__}")
        sys.exit(1)
    tick = state.age(state.last_tick_at)
    problems = []
    if tick is None:
        problems.append(f"no beat{where} ever recorded a tick")
    elif tick > limit:
        problems.append(f"the newest beat tick{where} is {tick:.1f} s old")
    found = [f"newest tick {tick:.1f} s ago" if tick is not None else "no tick"]
    if not local:
        sweep = state.age(state.last_dispatch_at)
        if sweep is None:
            problems.append("no dispatch sweep was ever recorded")
        elif sweep > limit:
            problems.append(f"the last dispatch sweep ran {sweep:.1f} s ago")
        if sweep is not None:
            found.append(f"last dispatch sweep {sweep:.1f} s ago")
    if problems:
        click.echo(f"scheduler stalled (limit {limit:g} s): {'; '.join(problems)}")
        sys.exit(1)
    click.echo(f"scheduler ok: {', '.join(found)}")


@click.command()
@click.option("--until-done", is_flag=True, help="Keep polling until no id is pending.")
@click.option("--timeout", type=float, default=None, help="Give up after S seconds (exit 2).")
def sync(until_done: bool, timeout: float | None) -> None:
    """Poll due ids in this process, without Celery (cron jobs, backfills, tests).

    Exit codes: 0 nothing pending (or, without --until-done, the due ids were
    polled once); 2 timeout with ids pending; 3 blocked (a key is refused or
    missing, so pending ids cannot progress).
    """
    from worker.resources import Runtime

    try:
        with Runtime.open(get_settings()) as runtime:
            code = _sync(runtime, until_done, timeout)
    except KeyboardInterrupt:
        # Answers already fetched were written batch by batch; ids claimed and
        # not yet fetched are due again when their lease ends.
        err.print("interrupted; ids still pending will be polled by the next run")
        code = 130
    sys.exit(code)


def _sync(runtime: Runtime, until_done: bool, timeout: float | None) -> int:
    import logging

    from sqlalchemy.exc import DBAPIError

    from worker.db import session_scope
    from worker.poller import Claim, passes_by_itself, process_claim, record_losses, sweep
    from worker.resources import release_free_memory
    from worker.status import count_active
    from worker.tracking import active_vendors, next_due

    log = logging.getLogger("mentionsync.sync")
    settings = runtime.settings
    started = time.monotonic()
    polled = 0
    swept_at = -math.inf
    trouble = 0  # consecutive rounds that failed on something outside any one id

    def expired() -> bool:
        return timeout is not None and time.monotonic() - started > timeout

    def process(claim: Claim) -> None:
        nonlocal polled
        polled += process_claim(runtime, claim).processed
        release_free_memory()

    while True:
        try:
            if time.monotonic() - swept_at > LOSS_SWEEP_SECONDS:
                with session_scope() as session:
                    record_losses(session, settings)
                swept_at = time.monotonic()
            # The same claim-and-dispatch step as Celery's, processing in place.
            # A failure that is not one id's fault (each id's own faults are its
            # outcome) gives back what this round holds; we try again shortly.
            round_ = sweep(runtime, process, max_ids=settings.batch_size)
            waiting = round_.waiting
            trouble = 0
            if round_.claims:
                if expired():
                    break
                continue
            with session_scope() as session:
                remaining = count_active(session)
                due_at = next_due(session)
                vendors = active_vendors(session)
        except Exception as exc:
            trouble += 1
            what = "the database is unreachable" if isinstance(exc, DBAPIError) else "error"
            log.error(
                "sync: %s (%s: %s); trying again",
                what,
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if expired():
                break
            time.sleep(min(30.0, 0.5 * 2 ** min(trouble, 6)))
            continue
        if not until_done or remaining == 0:
            break
        blocked = {v for v, reason in waiting.items() if not passes_by_itself(reason)}
        if vendors and vendors <= blocked:
            for vendor in sorted(vendors):
                reason = escape(str(waiting[vendor]))  # may quote the vendor's answer
                err.print(f"[red]blocked[/red] {vendor}: {reason}", highlight=False)
            err.print(f"{remaining} ids pending; polled {polled} times")
            return EXIT_BLOCKED
        if expired():
            break
        wait = settings.poll_tick_seconds
        if due_at is not None:
            wait = min(wait, max(0.05, (due_at - utcnow()).total_seconds()))
        if timeout is not None:
            wait = min(wait, max(0.0, timeout - (time.monotonic() - started)))
        time.sleep(wait)
    try:
        with session_scope() as session:
            remaining = count_active(session)
    except Exception as exc:
        err.print(f"polled {polled} times; cannot count pending ids: {escape(str(exc))[:300]}")
        return EXIT_TIMEOUT if until_done else EXIT_OK
    err.print(f"polled {polled} times; {remaining} ids pending", highlight=False)
    if until_done and remaining:
        return EXIT_TIMEOUT
    return EXIT_OK
