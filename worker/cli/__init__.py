"""The `mentionsync` command line: one module per command group, each thin over
the library. Scripts drive these names: keep them stable."""

from __future__ import annotations

import os

import click

from worker.analytics.catalog_cli import COMMANDS as CATALOG_COMMANDS
from worker.analytics.cli import COMMANDS as ANALYTICS_COMMANDS
from worker.cli import db, dev, run, status, track
from worker.cli._common import _Commands
from worker.config import ConfigError, get_settings
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
