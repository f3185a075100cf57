"""Migrations go up to head and back down to base, and match the models exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, inspect, make_url, text

from models import metadata
from tests.conftest import ADMIN_URL
from worker.migrate import alembic_config


@pytest.fixture
def scratch_postgres(unique_name: str) -> Iterator[str]:
    name = f"mentionsync_migrations_{unique_name}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def scratch_sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrations.db'}"


@pytest.mark.parametrize("backend", ["scratch_postgres", "scratch_sqlite"])
def test_upgrade_head_then_downgrade_base(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(backend)
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    # No drift between models and migrations (what `alembic check` does).
    command.check(config)

    command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    # And up again: downgrades leave nothing behind that blocks a re-upgrade.
    command.upgrade(config, "head")
    engine.dispose()


def test_check_detects_drift(scratch_postgres: str) -> None:
    config = alembic_config(scratch_postgres)
    command.upgrade(config, "head")
    engine = create_engine(scratch_postgres)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_tracked_ids_vendor_state"))
    engine.dispose()
    with pytest.raises(CommandError, match="New upgrade operations detected"):
        command.check(config)


def test_claim_index_is_partial_on_active_states(database: str) -> None:
    engine = create_engine(database)
    with engine.connect() as conn:
        definition = conn.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_tracked_ids_due'")
        )
    engine.dispose()
    assert definition is not None
    assert "(vendor, deadline_at)" in definition and "WHERE" in definition


def test_tracked_ids_leave_room_for_hot_updates(database: str) -> None:
    engine = create_engine(database)
    with engine.connect() as conn:
        options = conn.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'tracked_ids'"))
    engine.dispose()
    assert options == ["fillfactor=70"]


def test_json_null_documents_become_sql_null(scratch_postgres: str) -> None:
    config = alembic_config(scratch_postgres)
    command.upgrade(config, "0003")
    engine = create_engine(scratch_postgres)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO asks (ask_id, status, cost_breakdown, raw_payload, fetched_at) VALUES "
                "('ask_a', 'succeeded', 'null'::jsonb, '{}'::jsonb, now()), "
                "('ask_b', 'succeeded', '{\"x\": 1}'::jsonb, '{}'::jsonb, now())"
            )
        )
    command.upgrade(config, "head")
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT ask_id, cost_breakdown IS NULL FROM asks")).all())
    engine.dispose()
    assert rows == {"ask_a": True, "ask_b": False}
