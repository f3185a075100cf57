"""The intake service (`mentionsync serve`): track ids over HTTP, receive webhooks."""

from __future__ import annotations

import click

from worker.config import Settings


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 in a container.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.pass_obj
def serve(settings: Settings, host: str, port: int) -> None:
    """Serve POST /v1/track, POST /webhooks/<vendor>, /healthz, /readyz, /metrics
    and, with DASHBOARD_TOKEN, the read-only dashboard at /."""
    import uvicorn

    from worker.db import Database
    from worker.intake.app import create_app

    token = settings.dashboard_token
    if token is not None and token.get_secret_value():
        click.echo(f"dashboard on http://{host}:{port}/ (log in with DASHBOARD_TOKEN)", err=True)
    else:
        click.echo("dashboard off: set DASHBOARD_TOKEN to serve it at /", err=True)
    # log_config=None keeps our handlers (JSON lines, redaction) for uvicorn's
    # own loggers too; request lines come from the handlers, with vendor,
    # count and duration, so uvicorn's access log is off.
    with Database(settings.database_url) as db:
        uvicorn.run(
            create_app(settings, db),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
