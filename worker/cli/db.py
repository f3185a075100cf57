"""`mentionsync db …`: the schema's migrations."""

from __future__ import annotations

import click

from worker.cli._common import err


@click.group()
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
