"""`mentionsync status`, `retry` and `metrics`: what the archive is doing."""

from __future__ import annotations

import click
import orjson

from models import ACTIVE_STATES, TrackedState, Vendor, utcnow
from worker.cli._common import err, out
from worker.config import Settings
from worker.db import Database, transaction


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Counts by vendor and state, oldest pending, deadlines, ids at risk or lost."""
    from worker.status import collect_status, render_status

    with transaction(settings.database_url) as session:
        report = collect_status(session, settings, utcnow())
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        render_status(report, out)


@click.command()
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
@click.pass_obj
def retry(settings: Settings, states: tuple[str, ...], vendor: str | None) -> None:
    """Put ids in a final state (by default `error`) back in the poll queue."""
    from worker.tracking import requeue

    with transaction(settings.database_url) as session:
        count = requeue(
            session, [TrackedState(s) for s in states], Vendor(vendor) if vendor else None
        )
    err.print(f"{count} ids back in the queue")


@click.command("metrics")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 in a container.")
@click.option("--port", type=int, default=9800, show_default=True)
@click.pass_obj
def metrics_command(settings: Settings, host: str, port: int) -> None:
    """Serve the Prometheus exporter: database gauges (and this machine's worker
    counters when PROMETHEUS_MULTIPROC_DIR is shared with the workers)."""
    from prometheus_client import start_http_server

    from worker.exporter import exporter_registry

    db = Database(settings.database_url)
    registry = exporter_registry(settings, db)
    server, thread = start_http_server(port, addr=host, registry=registry)
    click.echo(f"serving metrics on http://{host}:{port}/metrics", err=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
    finally:
        db.dispose()
