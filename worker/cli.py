"""The `mentionsync` command line. Scripts drive these names: keep them stable."""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click
import orjson
from rich.console import Console
from rich.markup import escape

from models import ACTIVE_STATES, TrackedState, Vendor, utcnow
from worker.analytics.catalog_cli import label_options, labels_from
from worker.config import ConfigError, get_settings
from worker.doctor import doctor
from worker.intake import serve

if TYPE_CHECKING:
    from worker.resources import Runtime

err = Console(stderr=True)
out = Console()

EXIT_OK = 0
EXIT_REJECTED = 1  # track: some lines were rejected (the good ones are registered)
EXIT_TIMEOUT = 2  # sync --until-done: ids still pending when the timeout passed
EXIT_BLOCKED = 3  # sync --until-done: nothing can progress (key refused or missing)
# `sync` records ids past their deadline as lost this often (and when it starts).
LOSS_SWEEP_SECONDS = 60.0


def _parse_iso(value: str | None) -> datetime | None:
    """--created-at as UTC, refused (exit 2, naming it) outside the registry's range."""
    from worker.registry import InvalidTimestamp, validate_created_at

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"not an ISO 8601 timestamp: {value!r}", param_hint="--created-at"
        ) from None
    try:
        # Without an offset: UTC. The range check also refuses what UTC cannot hold.
        return validate_created_at(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed)
    except InvalidTimestamp as exc:
        raise click.BadParameter(f"{value!r}: {exc}", param_hint="--created-at") from None


class _Commands(click.Group):
    """Every command ends with a one-line error, never a traceback (unless
    LOG_LEVEL=DEBUG asks for one): bad input gets a clear message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
                raise
            first = str(exc).strip().splitlines()
            detail = first[0][:500] if first else ""
            raise click.ClickException(f"{type(exc).__name__}: {detail}") from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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


# The operations commands live in their own modules: `serve` (worker/intake)
# and `doctor` (worker/doctor.py).
for _command in (serve, doctor):
    main.add_command(_command)


@main.command("metrics")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 in a container.")
@click.option("--port", type=int, default=9800, show_default=True)
def metrics_command(host: str, port: int) -> None:
    """Serve the Prometheus exporter: database gauges (and this machine's worker
    counters when PROMETHEUS_MULTIPROC_DIR is shared with the workers)."""
    from prometheus_client import start_http_server

    from worker.exporter import exporter_registry

    server, thread = start_http_server(port, addr=host, registry=exporter_registry())
    click.echo(f"serving metrics on http://{host}:{port}/metrics", err=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


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
    err.print(f"database at {revision}", markup=False)


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
    labels: dict[str, list[str]] | None = None,
) -> None:
    from worker.analytics.catalog_cli import read_id_file, track_labels
    from worker.analytics.labels import is_label_file
    from worker.db import session_scope
    from worker.registry import label_arguments, read_lines, register

    if not ids and file is None:
        raise click.UsageError("give ids as arguments or with --file PATH (or --file - for stdin)")
    settings = get_settings()
    sources: list[Any] = [label_arguments(ids)]
    rejected: list[Any] = []
    # A .csv file has a header with an `id` column, its other columns labels;
    # a .jsonl file one object per line with an "id" (worker/analytics/labels.py).
    labelled_rows: list[Any] = []
    if file is not None and is_label_file(getattr(file, "name", None)):
        labelled_rows, rejected = read_id_file(file)
        sources.append((row.where, row.external_id) for row in labelled_rows)
    elif file is not None:
        sources.append(read_lines(file))
    added = known = 0
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
    labelled = track_labels(vendor, project_id, ids, labelled_rows, labels or {})
    for bad in rejected[:1000]:
        # The line is the user's text: shown as it is, never read as markup.
        err.print(f"[red]rejected[/red] {escape(str(bad))}", highlight=False, soft_wrap=True)
    if len(rejected) > 1000:
        err.print(f"... and {len(rejected) - 1000} more rejected lines")
    err.print(
        f"{vendor}: {added} registered, {known} already tracked, {len(rejected)} rejected"
        + (f", {labelled} labelled" if labelled else ""),
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
@label_options
def track_mentionsapi(
    ids: tuple[str, ...],
    file: TextIO | None,
    created_at: str | None,
    expect_webhook: bool,
    **label_values: Any,
) -> None:
    """Track MentionsAPI ask ids. A FILE.csv has an `id` column; its other
    columns (prompt, topic, tags, country, persona, any other) are labels."""
    _track(
        Vendor.MENTIONSAPI,
        ids,
        file,
        created_at=_parse_iso(created_at),
        expect_webhook=expect_webhook,
        labels=labels_from(label_values),
    )


@track.command("mentionlab")
@click.argument("ids", nargs=-1)
@click.option("--project", "project", required=True, help="MentionLab project id (x-project-id).")
@click.option(
    "--file", "file", type=click.File("r", encoding="utf-8"), help="One id per line; - for stdin."
)
@click.option("--created-at", help="When the runs were created (ISO 8601); sets the deadline.")
@label_options
def track_mentionlab(
    ids: tuple[str, ...],
    project: str,
    file: TextIO | None,
    created_at: str | None,
    **label_values: Any,
) -> None:
    """Track MentionLab job execution ids (UUIDs) of one project (labels as for mentionsapi)."""
    from worker.registry import InvalidId, validate_project_id

    try:
        project = validate_project_id(project)
    except InvalidId as exc:
        raise click.BadParameter(f"{project!r}: {exc}", param_hint="--project") from None
    _track(
        Vendor.MENTIONLAB,
        ids,
        file,
        project_id=project,
        created_at=_parse_iso(created_at),
        labels=labels_from(label_values),
    )


# --- run / sync -------------------------------------------------------------------


@main.command()
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


@main.group()
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


@main.command()
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
    from worker.db import session_scope
    from worker.tracking import requeue

    with session_scope() as session:
        count = requeue(
            session, [TrackedState(s) for s in states], Vendor(vendor) if vendor else None
        )
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
    err.print(
        f"simulating MentionsAPI and MentionLab on http://{host}:{port} (seed {seed})",
        markup=False,
    )
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
@click.option("--serve", is_flag=True, help="Then serve the archive's dashboard until Ctrl-C.")
@click.option("--port", type=int, default=8000, show_default=True, help="The dashboard's port.")
def demo(
    directory: Path, asks: int, executions: int, timeout: float, serve: bool, port: int
) -> None:
    """Simulator + real Celery worker and beat on SQLite: no server, no key needed."""
    from worker.demo import run_demo

    sys.exit(
        run_demo(
            directory, asks=asks, executions=executions, timeout=timeout, serve=serve, port=port
        )
    )


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
            f"(pip install -e '.\\[bench]'): {escape(str(exc))}"
        )
        sys.exit(EXIT_REJECTED)
    sys.exit(bench_main(list(args)))


# report, export, reprocess: worker/analytics/cli.py; brands, domains, label:
# worker/analytics/catalog_cli.py
from worker.analytics.catalog_cli import COMMANDS as CATALOG_COMMANDS  # noqa: E402
from worker.analytics.cli import COMMANDS as ANALYTICS_COMMANDS  # noqa: E402

for command in (*ANALYTICS_COMMANDS, *CATALOG_COMMANDS):
    main.add_command(command)

if __name__ == "__main__":
    main()
