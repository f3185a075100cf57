"""The `mentionsync` command line. Scripts drive these names: keep them stable."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
import orjson
from rich.console import Console

from models import ACTIVE_STATES, TrackedId, TrackedState, Vendor, utcnow
from worker.config import ConfigError, get_settings
from worker.doctor import doctor
from worker.intake import serve
from worker.metrics import metrics_command

err = Console(stderr=True)
out = Console()

EXIT_OK = 0
EXIT_REJECTED = 1  # track: some lines were rejected (the good ones are registered)
EXIT_TIMEOUT = 2  # sync --until-done: ids still pending when the timeout passed
EXIT_BLOCKED = 3  # sync --until-done: nothing can progress (key refused or missing)


def _parse_iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 timestamp: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log line format (default: LOG_FORMAT or text).",
)
@click.option("--log-level", default=None, help="Log level (default: LOG_LEVEL or INFO).")
def main(log_format: str | None, log_level: str | None) -> None:
    """Archive AI-visibility answers from MentionsAPI and MentionLab into your database."""
    from worker.logs import setup_logging

    if log_format:
        os.environ["LOG_FORMAT"] = log_format
    if log_level:
        os.environ["LOG_LEVEL"] = log_level
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ConfigError as exc:
        # What is wrong and where, not a traceback; `doctor` says the same.
        raise click.ClickException(f"{exc}\nfix the variables above (see .env.example)") from None
    setup_logging(settings)


# The operations commands live in their own modules: `serve` (worker/intake),
# `metrics` (worker/metrics.py) and `doctor` (worker/doctor.py).
for _command in (serve, metrics_command, doctor):
    main.add_command(_command)


# --- db -----------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database to REVISION (default: head)."""
    from worker.migrate import upgrade

    upgrade(revision)
    err.print(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' drops everything)."""
    from worker.migrate import downgrade

    downgrade(revision)


@db.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from worker.migrate import current

    current()


# --- track --------------------------------------------------------------------


def _track(
    vendor: Vendor,
    ids: tuple[str, ...],
    file: TextIO | None,
    *,
    project_id: str = "",
    created_at: datetime | None = None,
    expect_webhook: bool = False,
) -> None:
    from worker.db import session_scope
    from worker.registry import label_arguments, read_lines, register

    if not ids and file is None:
        raise click.UsageError("give ids as arguments or with --file PATH (or --file - for stdin)")
    settings = get_settings()
    sources = [label_arguments(ids)]
    if file is not None:
        sources.append(read_lines(file))
    added = known = 0
    rejected = []
    for entries in sources:
        with session_scope() as session:
            result = register(
                session,
                vendor,
                entries,
                settings=settings,
                project_id=project_id,
                created_at=created_at,
                expect_webhook=expect_webhook,
            )
        added += result.added
        known += result.already_tracked
        rejected.extend(result.rejected)
    for bad in rejected[:1000]:
        err.print(f"[red]rejected[/red] {bad}", markup=True, highlight=False, soft_wrap=True)
    if len(rejected) > 1000:
        err.print(f"... and {len(rejected) - 1000} more rejected lines")
    err.print(
        f"{vendor}: {added} registered, {known} already tracked, {len(rejected)} rejected",
        highlight=False,
    )
    if rejected:
        sys.exit(EXIT_REJECTED)


@main.group()
def track() -> None:
    """Register ids to archive. Idempotent: known ids are left as they are."""


@track.command("mentionsapi")
@click.argument("ids", nargs=-1)
@click.option(
    "--file", "file", type=click.File("r", encoding="utf-8"), help="One id per line; - for stdin."
)
@click.option(
    "--created-at", help="When the asks were created (ISO 8601); sets the 30-day deadline."
)
@click.option("--expect-webhook", is_flag=True, help="Wait for a webhook before polling.")
def track_mentionsapi(
    ids: tuple[str, ...], file: TextIO | None, created_at: str | None, expect_webhook: bool
) -> None:
    """Track MentionsAPI ask ids."""
    _track(
        Vendor.MENTIONSAPI,
        ids,
        file,
        created_at=_parse_iso(created_at),
        expect_webhook=expect_webhook,
    )


@track.command("mentionlab")
@click.argument("ids", nargs=-1)
@click.option("--project", "project", required=True, help="MentionLab project id (x-project-id).")
@click.option(
    "--file", "file", type=click.File("r", encoding="utf-8"), help="One id per line; - for stdin."
)
@click.option("--created-at", help="When the runs were created (ISO 8601); sets the deadline.")
def track_mentionlab(
    ids: tuple[str, ...], project: str, file: TextIO | None, created_at: str | None
) -> None:
    """Track MentionLab job execution ids (UUIDs) of one project."""
    from worker.registry import InvalidId, validate_project_id

    try:
        project = validate_project_id(project)
    except InvalidId as exc:
        raise click.BadParameter(str(exc), param_hint="--project") from None
    _track(Vendor.MENTIONLAB, ids, file, project_id=project, created_at=_parse_iso(created_at))


# --- run / sync -------------------------------------------------------------------


@main.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Worker processes.")
@click.option("--loglevel", default="INFO")
def run(concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker with an embedded beat: everything in one process tree.

    In production run `celery -A worker.app worker` and `celery -A worker.app beat`
    separately, as many workers as you like.
    """
    from worker.app import app

    argv = ["worker", "--beat", f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)


def _next_due(session: Any) -> datetime | None:
    from sqlalchemy import func, select

    return session.scalar(
        select(func.min(TrackedId.next_poll_at)).where(TrackedId.state.in_(ACTIVE_STATES))
    )


def _active_vendors(session: Any) -> set[Vendor]:
    from sqlalchemy import select

    return set(
        session.scalars(
            select(TrackedId.vendor).where(TrackedId.state.in_(ACTIVE_STATES)).distinct()
        )
    )


@main.command()
@click.option("--until-done", is_flag=True, help="Keep polling until no id is pending.")
@click.option("--timeout", type=float, default=None, help="Give up after S seconds (exit 2).")
def sync(until_done: bool, timeout: float | None) -> None:
    """Poll due ids in this process, without Celery (cron jobs, backfills, tests).

    Exit codes: 0 nothing pending (or, without --until-done, the due ids were
    polled once); 2 timeout with ids pending; 3 blocked (a key is refused or
    missing, so pending ids cannot progress).
    """
    from worker.db import session_scope
    from worker.poller import claim_batches, process_claim
    from worker.resources import release_free_memory
    from worker.status import count_active

    settings = get_settings()
    started = time.monotonic()
    polled = 0
    while True:
        with session_scope() as session:
            claims, waiting = claim_batches(
                session, settings, now=utcnow(), max_ids=settings.batch_size
            )
        for claim in claims:
            report = process_claim(claim)
            polled += report.processed
            release_free_memory()
        if claims:
            if timeout is not None and time.monotonic() - started > timeout:
                break
            continue
        with session_scope() as session:
            remaining = count_active(session)
            next_due = _next_due(session)
            vendors = _active_vendors(session)
        if not until_done or remaining == 0:
            break
        if vendors and vendors <= set(waiting):
            for vendor in sorted(vendors):
                err.print(f"[red]blocked[/red] {vendor}: {waiting[vendor]}", highlight=False)
            err.print(f"{remaining} ids pending; polled {polled} times")
            sys.exit(EXIT_BLOCKED)
        if timeout is not None and time.monotonic() - started > timeout:
            break
        wait = settings.poll_tick_seconds
        if next_due is not None:
            wait = min(wait, max(0.05, (next_due - utcnow()).total_seconds()))
        if timeout is not None:
            wait = min(wait, max(0.0, timeout - (time.monotonic() - started)))
        time.sleep(wait)
    with session_scope() as session:
        remaining = count_active(session)
    err.print(f"polled {polled} times; {remaining} ids pending", highlight=False)
    if until_done and remaining:
        sys.exit(EXIT_TIMEOUT)


# --- status / retry --------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Counts by vendor and state, oldest pending, deadlines, ids at risk or lost."""
    from worker.db import session_scope
    from worker.status import collect_status, render_status

    with session_scope() as session:
        report = collect_status(session, get_settings(), utcnow())
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        render_status(report, out)


@main.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in TrackedState if s not in ACTIVE_STATES]),
    default=("error",),
    show_default=True,
    help="Which final state to put back in the queue (repeatable).",
)
@click.option("--vendor", type=click.Choice([v.value for v in Vendor]), default=None)
def retry(states: tuple[str, ...], vendor: str | None) -> None:
    """Put ids in a final state (by default `error`) back in the poll queue."""
    from sqlalchemy import update

    from worker.db import session_scope

    now = utcnow()
    stmt = (
        update(TrackedId)
        .where(TrackedId.state.in_([TrackedState(s) for s in states]))
        .values(
            state=TrackedState.POLLING,
            next_poll_at=now,
            lease_token=None,
            consecutive_errors=0,
            not_found_streak=0,
            invalid_payload_streak=0,
            final_at=None,
        )
    )
    if vendor:
        stmt = stmt.where(TrackedId.vendor == Vendor(vendor))
    with session_scope() as session:
        count = session.execute(stmt).rowcount
    err.print(f"{count} ids back in the queue")


# --- simulator / demo -----------------------------------------------------------------


@main.command()
@click.option("--port", type=int, default=8800, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--error-rate", type=float, default=0.0, show_default=True)
@click.option("--rate-limit", type=float, default=None, help="Requests/s per key (default: none).")
@click.option("--max-pending-polls", type=int, default=2, show_default=True)
def simulate(
    port: int,
    host: str,
    seed: int,
    latency_ms: float,
    error_rate: float,
    rate_limit: float | None,
    max_pending_polls: int,
) -> None:
    """Serve a simulator of both vendor APIs on loopback (for tests and demos)."""
    from simulator import SimConfig, serve

    config = SimConfig(
        seed=seed,
        latency_ms=latency_ms,
        error_rate=error_rate,
        rate_limit=rate_limit,
        max_pending_polls=max_pending_polls,
    )
    err.print(f"simulating MentionsAPI and MentionLab on http://{host}:{port} (seed {seed})")
    serve(config, host=host, port=port)


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("mentionsync-demo"),
    show_default=True,
)
@click.option("--asks", type=int, default=200, show_default=True)
@click.option("--executions", type=int, default=200, show_default=True)
@click.option("--timeout", type=float, default=300.0, show_default=True)
def demo(directory: Path, asks: int, executions: int, timeout: float) -> None:
    """Simulator + real Celery worker and beat on SQLite: no server, no key needed."""
    from worker.demo import run_demo

    sys.exit(run_demo(directory, asks=asks, executions=executions, timeout=timeout))


@main.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks (same as `python -m bench`; `mentionsync bench --help`)."""
    try:
        from bench.__main__ import main as bench_main
    except ImportError as exc:
        err.print(
            f"[red]mentionsync bench needs a source checkout with the bench extra[/] "
            f"(pip install -e '.[bench]'): {exc}"
        )
        sys.exit(EXIT_REJECTED)
    sys.exit(bench_main(list(args)))


# report, export, reprocess: worker/analytics/cli.py
from worker.analytics.cli import COMMANDS as ANALYTICS_COMMANDS  # noqa: E402

for command in ANALYTICS_COMMANDS:
    main.add_command(command)

if __name__ == "__main__":
    main()
