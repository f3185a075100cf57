"""`mentionsync run`, `sync` and `scheduler check`: the worker, the no-Celery
loop, the scheduler's health."""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from worker.cli._common import EXIT_OK, err
from worker.common import EXIT_INTERRUPTED
from worker.config import Settings


@click.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes.")
@click.option("--loglevel", default="INFO")
@click.pass_obj
def run(settings: Settings, concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker and a Celery beat, and keep both running.

    Either one is restarted when it exits (after a short backoff), and beat also
    when it stops ticking; SIGINT or SIGTERM stops both. In production run
    `celery -A worker.app worker` and `celery -A worker.app beat` separately, as
    many workers as you like.
    """
    from worker.supervise import supervise

    sys.exit(supervise(settings, loglevel=loglevel, concurrency=concurrency))


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
@click.pass_obj
def scheduler_check(settings: Settings, local: bool, max_age: float | None) -> None:
    """Exit 0 if the scheduler is alive, 1 (saying why) if not.

    Without --local: a beat ticked and a dispatch sweep ran within the max age
    (the newest of every beat counts). With --local: a beat of this host ticked
    within it, whatever the workers do.
    """
    import socket

    from worker.db import transaction
    from worker.heartbeat import read_state, stall_after

    limit = max_age if max_age is not None else stall_after(settings)
    where = f" on {socket.gethostname()}" if local else ""
    try:
        with transaction(settings.database_url) as session:
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
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes with --until-done (default: one per core).",
)
@click.pass_obj
def sync(
    settings: Settings, until_done: bool, timeout: float | None, processes: int | None
) -> None:
    """Poll due ids without Celery (cron jobs, backfills, tests).

    Without --until-done, polls what is due now in this process. With it, runs one
    worker process per core until no id is pending, with a progress bar on a
    terminal (a progress line every few seconds elsewhere); Ctrl-C stops them
    after the answers in flight are written, giving back the ids still waiting.

    Exit codes: 0 nothing pending (or, without --until-done, the due ids were
    polled once); 2 timeout with ids pending; 3 blocked (a key is refused or
    missing, so pending ids cannot progress); 130 interrupted.
    """
    from worker import sync as polling

    if not until_done:
        try:
            polled, pending = polling.poll_once(settings, timeout)
        except KeyboardInterrupt:
            err.print("interrupted; answers in flight were written, the rest is due again")
            sys.exit(EXIT_INTERRUPTED)
        err.print(f"polled {polled} times; {pending} ids pending", highlight=False)
        sys.exit(EXIT_OK)
    result = polling.poll_until_done(settings, processes=processes, timeout=timeout)
    for vendor, reason in sorted(result.blocked.items()):
        err.print(f"[red]blocked[/red] {vendor}: {escape(reason)}", highlight=False)
    if result.message:
        err.print(escape(result.message), highlight=False)
    left = "an unknown number of" if result.pending is None else str(result.pending)
    err.print(f"polled {result.polled} times; {left} ids pending", highlight=False)
    sys.exit(result.code)
