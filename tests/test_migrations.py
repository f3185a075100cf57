"""Migrations go up to head and back down to base, and match the models exactly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, func, inspect, make_url, select, text

from models import metadata
from tests.conftest import ADMIN_URL
from worker.analytics.views import VIEWS
from worker.migrate import alembic_config, script_location

ANALYTICS_VIEWS = set(VIEWS)


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
    assert set(inspect(engine).get_view_names()) == ANALYTICS_VIEWS
    # No drift between models and migrations (what `alembic check` does); the
    # views are not in the metadata and autogenerate leaves them alone.
    command.check(config)

    command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert inspect(engine).get_view_names() == []
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


def test_large_values_are_compressed_with_lz4_and_back(scratch_postgres: str) -> None:
    """0011 sets lz4 on the large columns (the test server has lz4); new values
    are stored with it; its downgrade puts the server's default back."""
    config = alembic_config(scratch_postgres)
    command.upgrade(config, "head")
    engine = create_engine(scratch_postgres)
    compression = text(
        "SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute"
        " WHERE attname IN ('raw_payload', 'raw_body', 'content', 'body') AND attnum > 0"
        " AND attrelid::regclass::text IN"
        " ('asks', 'job_executions', 'ask_provider_responses', 'quarantined_payloads')"
    )
    large = '{"text": "' + "".join(f"word{i} " for i in range(3000)) + '"}'
    with engine.begin() as conn:
        assert {row[2] for row in conn.execute(compression)} == {"l"}
        assert len(conn.execute(compression).all()) == 6
        conn.execute(
            text(
                "INSERT INTO asks (ask_id, status, raw_payload, fetched_at)"
                " VALUES ('ask_a', 'succeeded', CAST(:payload AS jsonb), now())"
            ),
            {"payload": large},
        )
        stored = conn.scalar(text("SELECT pg_column_compression(raw_payload) FROM asks"))
    assert stored == "lz4"
    command.downgrade(config, "0010")
    with engine.connect() as conn:
        assert {row[2] for row in conn.execute(compression)} == {""}
        # What was stored stays readable.
        assert conn.scalar(text("SELECT raw_payload->>'text' FROM asks"))[:6] == "word0 "
    engine.dispose()


LATER_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "later"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tracked_ids", recreate="always") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("tracked_ids", recreate="always") as batch:
        batch.drop_column("note")
"""


def test_a_later_batch_migration_on_sqlite_keeps_the_views(
    scratch_sqlite: str, tmp_path: Path
) -> None:
    """SQLite alters a table by rebuilding it; the views that read it must survive."""
    scripts = tmp_path / "alembic"
    shutil.copytree(script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    config = alembic_config(scratch_sqlite)
    config.set_main_option("script_location", str(scripts))
    head = ScriptDirectory.from_config(config).get_current_head()
    (scripts / "versions" / "later_rebuild_tracked_ids.py").write_text(
        LATER_REVISION.format(head=head)
    )
    command.upgrade(config, "head")
    command.downgrade(config, "-1")
    engine = create_engine(scratch_sqlite)
    with engine.connect() as conn:
        for view in VIEWS.values():
            conn.execute(select(func.count()).select_from(view)).scalar_one()
    engine.dispose()
