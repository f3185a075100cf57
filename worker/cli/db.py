"""`mentionsync db …`: the schema's migrations."""

from __future__ import annotations

import click

from worker.cli._common import err
from worker.config import Settings


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Migrate the database to REVISION (default: head)."""
    from worker.migrate import upgrade

    upgrade(revision, database_url=settings.database_url)
    err.print(f"database at {revision}", markup=False)


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
def db_downgrade(settings: Settings, revision: str) -> None:
    """Migrate the database down to REVISION ('base' drops everything)."""
    from worker.migrate import downgrade

    downgrade(revision, database_url=settings.database_url)


@db.command("current")
@click.pass_obj
def db_current(settings: Settings) -> None:
    """Print the database's current revision."""
    from worker.migrate import current

    current(database_url=settings.database_url)
