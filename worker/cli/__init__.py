"""The `mentionsync` command line: one module per command group, each thin over
the library. Scripts drive these names: keep them stable."""

from __future__ import annotations

import click

from worker.analytics.catalog_cli import COMMANDS as CATALOG_COMMANDS
from worker.analytics.cli import COMMANDS as ANALYTICS_COMMANDS
from worker.cli import db, dev, run, status, track
from worker.cli._common import _Commands
from worker.config import ConfigError, load_settings
from worker.doctor import doctor
from worker.intake import serve


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log line format (default: LOG_FORMAT or text).",
)
@click.option("--log-level", default=None, help="Log level (default: LOG_LEVEL or INFO).")
@click.pass_context
def main(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """Archive AI-visibility answers from MentionsAPI and MentionLab into your database."""
    from worker.logs import setup_logging

    # Built once, passed to every command (ctx.obj): the options win over the environment.
    overrides = {"log_format": log_format, "log_level": log_level}
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v})
    except ConfigError as exc:
        # What is wrong and where, not a traceback; `doctor` says the same.
        raise click.ClickException(f"{exc}\nfix the variables above (see .env.example)") from None
    setup_logging(settings)
    ctx.obj = settings


for command in (
    db.db,
    track.track,
    run.run,
    run.scheduler,
    run.sync,
    status.status,
    status.retry,
    status.metrics_command,
    dev.simulate,
    dev.demo,
    dev.bench,
    # The operations commands live beside what they run.
    serve,
    doctor,
    # report, export, reprocess; brands, domains, label.
    *ANALYTICS_COMMANDS,
    *CATALOG_COMMANDS,
):
    main.add_command(command)
