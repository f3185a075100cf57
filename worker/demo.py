"""`mentionsync demo`: the whole pipeline on the embedded defaults, in a minute.

Starts the simulator, tracks a few hundred ids of both vendors in a SQLite
database, runs the real Celery worker and beat (kombu's SQLAlchemy transport, no
Redis) until every id is final, then prints the status and some archived rows,
and ends with the address of the archive's dashboard (served with --serve).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import (
    Ask,
    AskBrandMention,
    JobExecution,
    JobExecutionEntity,
    Vendor,
    utcnow,
)
from worker.config import Settings, load_settings
from worker.db import Database
from worker.vendors.registry import VENDORS

console = Console()


def demo_environment(directory: Path, base_url: str) -> dict[str, str]:
    directory = directory.resolve()
    env = {
        "DATABASE_URL": f"sqlite:///{directory / 'mentionsync.db'}",
        "CELERY_BROKER_URL": f"sqla+sqlite:///{directory / 'broker.db'}",
        # The simulator finishes jobs within a couple of polls; poll it briskly.
        "POLL_TICK_SECONDS": "1",
        "POLL_INTERVAL_SECONDS": "1",
        "NOT_FOUND_RECHECK_SECONDS": "1",
        "BATCH_SIZE": "25",
        # No Redis here: the two worker processes split each budget.
        "RATE_LIMIT_LOCAL_SHARE": "0.5",
    }
    for vendor, spec in VENDORS.items():
        prefix = vendor.upper()
        env[f"{prefix}_BASE_URL"] = base_url
        # The simulator takes any key of the vendor's shape.
        env[f"{prefix}_API_KEY"] = f"{spec.key_prefix}test_demo"
        # The demo simulator plays each vendor's largest plan.
        env[f"{prefix}_RATE_LIMIT"] = f"{spec.top_budget.rate:g}"
        env[f"{prefix}_RATE_BURST"] = f"{spec.top_budget.burst:g}"
    return env


def run_demo(
    directory: Path,
    *,
    asks: int,
    executions: int,
    timeout: float,
    serve: bool = False,
    port: int = 8000,
) -> int:
    from simulator import SimConfig, run_in_thread

    directory.mkdir(parents=True, exist_ok=True)
    for stale in (
        "mentionsync.db",
        "mentionsync.db-wal",
        "mentionsync.db-shm",
        "broker.db",
        "celerybeat-schedule",
    ):
        (directory / stale).unlink(missing_ok=True)

    config = SimConfig(seed=7)
    base_url, stop_simulator = run_in_thread(config)
    console.print(f"simulator of both vendor APIs on {base_url}")
    env = demo_environment(directory, base_url)
    # The children (`mentionsync run`) and upgrade() read the environment too.
    os.environ.update(env)
    settings = load_settings()
    with Database(settings.database_url) as db:
        return _run(
            settings,
            db,
            directory,
            env,
            stop_simulator,
            asks=asks,
            executions=executions,
            timeout=timeout,
            serve=serve,
            port=port,
        )


def _run(
    settings: Settings,
    db: Database,
    directory: Path,
    env: dict[str, str],
    stop_simulator: Callable[[], None],
    *,
    asks: int,
    executions: int,
    timeout: float,
    serve: bool,
    port: int,
) -> int:
    from simulator import Dataset
    from worker.migrate import upgrade
    from worker.registry import label_arguments, register
    from worker.status import collect_status, render_status
    from worker.tracking_reads import count_active

    upgrade()
    dataset = Dataset(seed=7)
    # Asks carry no timestamp: register them over the last four days with
    # --created-at, as a team tracking each day's asks would, so that the
    # analytics have a time axis.
    ask_ids = dataset.ask_ids(asks)
    added = 0
    for days_ago in range(4):
        with db.session() as session:
            added += register(
                session,
                Vendor.MENTIONSAPI,
                label_arguments(ask_ids[days_ago::4]),
                settings=settings,
                created_at=utcnow() - timedelta(days=days_ago, hours=1),
            ).added
    by_project: dict[str, list[str]] = {}
    for project_id, execution_id in dataset.execution_ids(executions):
        by_project.setdefault(project_id, []).append(execution_id)
    for project_id, ids in by_project.items():
        with db.session() as session:
            added += register(
                session,
                Vendor.MENTIONLAB,
                label_arguments(ids),
                settings=settings,
                project_id=project_id,
            ).added
    console.print(f"tracked {added} ids ({asks} MentionsAPI asks, {executions} MentionLab runs)")
    # An analyst's setup (issue 14): a topic per id, and a five-brand catalog.
    from worker.analytics.demo_catalog import import_demo_catalog, label_demo_ids

    with db.session() as session:
        labelled = label_demo_ids(session, directory, ask_ids, by_project)
        catalog = import_demo_catalog(session, directory)
    console.print(
        f"labelled {labelled} ids with a topic; brand catalog of {catalog.brands} brands "
        f"({directory / 'brands.csv'})",
        soft_wrap=True,
    )

    # `mentionsync run`: the real Celery worker with an embedded beat. Its beat
    # schedule file lands in the demo directory, the working directory.
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", "--concurrency=2", "--loglevel=WARNING"],
        env={**os.environ, **env},
        cwd=directory,
    )
    console.print(
        f"started celery worker + beat (pid {worker.pid}); waiting for every id to be final"
    )
    started = time.monotonic()
    pending = -1
    try:
        while time.monotonic() - started < timeout:
            time.sleep(1.0)
            with db.session() as session:
                pending = count_active(session)
            console.print(
                f"  {time.monotonic() - started:5.1f}s  pending: {pending}", highlight=False
            )
            if pending == 0 or worker.poll() is not None:
                break
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        stop_simulator()

    with db.session() as session:
        render_status(collect_status(session, settings, utcnow()), console)
        _show_rows(session)
    charts = write_demo_charts(db, directory)
    console.print(f"\ncharts of the archive: {', '.join(str(c) for c in charts)}", soft_wrap=True)
    console.print(
        f"\nThe archive is {directory / 'mentionsync.db'}. Look around with:\n"
        f"  DATABASE_URL={env['DATABASE_URL']} mentionsync status\n"
        f"  DATABASE_URL={env['DATABASE_URL']} mentionsync report share-of-voice --by day\n"
        f"  DATABASE_URL={env['DATABASE_URL']} mentionsync report visibility --by topic "
        "--own-vs-competitors\n"
        f"  DATABASE_URL={env['DATABASE_URL']} mentionsync report compare --own-vs-competitors",
        soft_wrap=True,
    )
    if pending:
        console.print(f"[red]{pending} ids still pending after {timeout:.0f}s[/red]")
        return 2
    return show_dashboard(env["DATABASE_URL"], serve=serve, port=port)


# --- the dashboard of the demo archive (issue 15) ------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def show_dashboard(database_url: str, *, serve: bool, port: int) -> int:
    """Print the dashboard's address and how to log in; with `serve`, serve it
    on loopback until Ctrl-C."""
    token = os.environ.get("DASHBOARD_TOKEN") or secrets.token_urlsafe(12)
    if not serve:
        command = f"DATABASE_URL={database_url} DASHBOARD_TOKEN={token} mentionsync serve"
        console.print(
            f"\nThe dashboard of this archive: start it with\n  {command} --port {port}\n"
            f"then open http://127.0.0.1:{port}/ and log in with the token {token}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        return 0
    import uvicorn

    from worker.intake.app import create_app

    if not _port_free(port):
        taken, port = port, free_port()
        console.print(f"port {taken} is taken: the dashboard uses {port}", highlight=False)
    settings = load_settings(database_url=database_url, dashboard_token=token)
    console.print(
        f"\n[bold]Dashboard: http://127.0.0.1:{port}/[/bold]  (log in with the token {token}; "
        "Ctrl-C stops it)",
        soft_wrap=True,
        highlight=False,
    )
    # Loopback only: the demo's token is printed on the terminal.
    with Database(database_url) as db:
        uvicorn.run(
            create_app(settings, db),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
    return 0


# The charts docs/analytics.md shows: (report, grouping, file name).
DEMO_CHARTS = (
    ("share-of-voice", "day", "share-of-voice-by-day.png"),
    ("visibility", "provider", "visibility-by-provider.png"),
    ("citations", None, "citations.png"),
)


def write_demo_charts(db: Database, directory: Path) -> list[Path]:
    """Draw the demo archive's standard charts into `directory`."""
    from worker.analytics.charts import write_chart
    from worker.analytics.db import read_session
    from worker.analytics.demo_catalog import write_catalog_charts
    from worker.analytics.reports import Filters, run_report

    paths = []
    with read_session(db) as session:
        for kind, by, name in DEMO_CHARTS:
            write_chart(run_report(session, kind, Filters(), by), directory / name)
            paths.append(directory / name)
        paths += write_catalog_charts(session, directory)
    return paths


def _show_rows(session: Session) -> None:
    table = Table(title="a few archived MentionsAPI brand mentions")
    for col in ("ask_id", "provider", "brand", "rank", "sentiment"):
        table.add_column(col)
    for m in session.scalars(select(AskBrandMention).order_by(AskBrandMention.ask_id).limit(8)):
        table.add_row(m.ask_id, m.provider or "", m.brand or "", str(m.rank), m.sentiment or "")
    console.print(table)
    table = Table(title="a few archived MentionLab entities")
    for col in ("job_execution_id", "display_name", "primary", "sentiment_score"):
        table.add_column(col)
    for e in session.scalars(
        select(JobExecutionEntity).order_by(JobExecutionEntity.job_execution_id).limit(8)
    ):
        table.add_row(
            e.job_execution_id, e.display_name or "", str(e.is_primary), str(e.sentiment_score)
        )
    console.print(table)
    asks = session.scalar(select(func.count()).select_from(Ask))
    runs = session.scalar(select(func.count()).select_from(JobExecution))
    console.print(f"{asks} asks and {runs} job executions archived")
