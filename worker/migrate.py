"""Run the Alembic migrations from code (`mentionsync db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).resolve().parent


def script_location() -> Path:
    # In a wheel the migrations ship as worker/_migrations; in a checkout they are
    # the repo's alembic/ directory.
    for candidate in (_HERE / "_migrations", _HERE.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("cannot find the Alembic migrations (alembic/env.py)")


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["configure_logging"] = False
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(revision: str = "head", database_url: str | None = None) -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(revision: str, database_url: str | None = None) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str | None = None) -> None:
    command.current(alembic_config(database_url), verbose=False)
