"""Alembic environment: the URL comes from the settings object, never from alembic.ini."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text

from models import metadata
from worker.config import load_settings
from worker.db import make_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.attributes.get("database_url") or load_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url(), poolclass=pool.NullPool)
    is_postgres = engine.dialect.name == "postgresql"
    with engine.connect() as connection:
        if is_postgres:
            # Fail fast rather than queue behind a long transaction, and let only
            # one migrator run at a time when several containers start together.
            connection.execute(text("SET lock_timeout = '10s'"))
            connection.execute(text("SELECT pg_advisory_lock(hashtext('mentionsync-alembic'))"))
            connection.commit()
        else:
            # Batch migrations rebuild a table and rename the copy into place.
            # SQLite >= 3.26 refuses that rename while a view (the analytics
            # views) reads the table; the legacy rename leaves the views alone,
            # and they read the rebuilt table by its name.
            connection.execute(text("PRAGMA legacy_alter_table = ON"))
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                transaction_per_migration=True,
                # SQLite can only ALTER through table copies.
                render_as_batch=not is_postgres,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if is_postgres:
                connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext('mentionsync-alembic'))")
                )
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
