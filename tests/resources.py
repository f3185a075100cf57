"""The resources a test's own code uses, built by the suite rather than fetched
from the product: the database the test's environment names, a runtime built
from the current settings, and intake apps that follow `configure(...)`.

Tests change their environment with `configure(...)` (tests/conftest.py), which
calls `reconfigured()`: the runtime is rebuilt on next use, the database follows
DATABASE_URL, and a running intake app takes the new settings, as a restarted
service would.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from sqlalchemy.orm import Session
from starlette.applications import Starlette

from worker.analytics.db import read_session as _read_session
from worker.config import load_settings
from worker.db import Database
from worker.intake.app import create_app
from worker.resources import Runtime

_db: Database | None = None
_runtime: Runtime | None = None
_apps: list[Starlette] = []


def suite_db() -> Database:
    """The database DATABASE_URL names now: the suite's, or one a test configured."""
    global _db
    url = os.environ["DATABASE_URL"]
    if _db is None or _db.url != url:
        if _db is not None:
            _db.dispose()
        _db = Database(url)
    return _db


def session_scope() -> AbstractContextManager[Session]:
    """One transaction on the test's database."""
    return suite_db().session()


def read_session() -> AbstractContextManager[Session]:
    """A read-only session as the reports use (worker.analytics.db)."""
    return _read_session(suite_db())


def suite_runtime() -> Runtime:
    """A runtime built from the current settings, the same until `configure(...)`."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.open(load_settings())
    return _runtime


def intake_app() -> Starlette:
    """The intake app on the current settings; it follows later `configure(...)` calls."""
    app = create_app(load_settings(), suite_db())
    _apps.append(app)
    return app


def reconfigured() -> None:
    """The environment changed: drop the runtime, hand running apps the new settings."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
        _runtime = None
    if _apps:
        settings = load_settings()
        for app in _apps:
            app.state.settings = settings
            app.state.db = suite_db()


def release_all() -> None:
    """At the end of a test: close the runtime and forget the apps."""
    reconfigured()
    _apps.clear()


def dispose_db() -> None:
    global _db
    if _db is not None:
        _db.dispose()
        _db = None
