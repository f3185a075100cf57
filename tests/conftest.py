"""Test fixtures: a real Postgres database built by the migrations, real Redis,
the simulator on loopback. Nothing of ours is mocked.

Environment (all optional):
- TEST_POSTGRES_URL: server to create the test database on
  (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
- TEST_REDIS_URL: Redis for broker tests (default redis://127.0.0.1:6379/15; under
  pytest-xdist, worker gwN uses database 13 - N of that server: tests flush theirs)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _redis_url() -> str:
    url = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    if worker:  # each test process flushes its own database only
        url = url._replace(path=f"/{13 - int(worker.removeprefix('gw'))}")
    return urlunsplit(url)


REDIS_URL = _redis_url()
ROOT = Path(__file__).resolve().parent.parent

# Every test process gets its own database, so parallel runs never collide.
TEST_DB = f"mentionsync_test_{os.getpid()}"
TEST_DATABASE_URL = make_url(ADMIN_URL).set(database=TEST_DB).render_as_string(hide_password=False)

BASE_ENV = {
    "DATABASE_URL": TEST_DATABASE_URL,
    "CELERY_BROKER_URL": REDIS_URL,
    "MENTIONSAPI_API_KEY": "lvk_test_suite_key",
    "MENTIONLAB_API_KEY": "ml_test_suite_key",
    "MENTIONSAPI_BASE_URL": "http://127.0.0.1:9",  # set per test to the simulator
    "MENTIONLAB_BASE_URL": "http://127.0.0.1:9",
    "POLL_TICK_SECONDS": "0.5",
    "POLL_INTERVAL_SECONDS": "0.2",
    "POLL_MAX_INTERVAL_SECONDS": "1",
    "NOT_FOUND_RECHECK_SECONDS": "0.1",
    "RETRY_BASE_SECONDS": "0.1",
    "RETRY_MAX_SECONDS": "1",
    "LOG_LEVEL": "INFO",
    # The simulator only limits when a test asks it to; keep our budget out of the way.
    "MENTIONSAPI_RATE_LIMIT": "5000",
    "MENTIONSAPI_RATE_BURST": "5000",
    "MENTIONLAB_RATE_LIMIT": "5000",
    "MENTIONLAB_RATE_BURST": "5000",
}
os.environ.update(BASE_ENV)
_PRISTINE_ENV = dict(os.environ)

from models import metadata  # noqa: E402
from tests import resources  # noqa: E402
from tests.vendor_stub import VendorStub, running_stub  # noqa: E402


def _admin_engine() -> Engine:
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh database for the run, built by `alembic upgrade head`."""
    from worker.migrate import upgrade

    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{TEST_DB}"'))
    upgrade("head", database_url=TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    resources.release_all()
    resources.dispose_db()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)'))
    admin.dispose()


def apply_env(**overrides: str) -> None:
    """Set environment variables; the test's resources follow (tests/resources.py)."""
    os.environ.update(overrides)
    resources.reconfigured()


@pytest.fixture(autouse=True)
def clean_state(database: str) -> Iterator[None]:
    """Each test starts with empty tables and the base environment."""
    # Whatever an earlier test configured is forgotten, not only the base keys.
    os.environ.clear()
    os.environ.update(_PRISTINE_ENV)
    apply_env()
    engine = resources.suite_db().engine
    names = ", ".join(f'"{t.name}"' for t in reversed(metadata.sorted_tables))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    # Rate budgets and queued messages of an earlier test must not leak into this one.
    redis.Redis.from_url(REDIS_URL).flushdb()
    yield
    resources.release_all()


@pytest.fixture
def configure() -> Callable[..., None]:
    return apply_env


@pytest.fixture
def sim() -> Iterator[Callable[..., str]]:
    """Start simulators on loopback; point both vendor base URLs at the last one."""
    from simulator import SimConfig, run_in_thread

    stops: list[Callable[[], None]] = []

    def start(**config: object) -> str:
        base_url, stop = run_in_thread(SimConfig(**config))  # type: ignore[arg-type]
        stops.append(stop)
        apply_env(MENTIONSAPI_BASE_URL=base_url, MENTIONLAB_BASE_URL=base_url)
        return base_url

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def stub() -> Iterator[VendorStub]:
    """A scripted vendor on loopback (tests/vendor_stub.py); both base URLs point at it."""
    with running_stub() as stub:
        apply_env(MENTIONSAPI_BASE_URL=stub.base_url, MENTIONLAB_BASE_URL=stub.base_url)
        yield stub


@pytest.fixture
def unique_name() -> str:
    return uuid.uuid4().hex[:8]
