"""Connections for long reads (reports, exports) that never stall the worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from worker.config import get_settings
from worker.db import get_engine


@contextmanager
def read_engine() -> Iterator[Engine]:
    """The process's engine on Postgres; on SQLite, a plain one for this read.

    The worker's SQLite engine begins every transaction IMMEDIATE, which would
    hold the write lock for the whole report or export and stall a running
    worker. A plain connection reads each statement from its own snapshot, and
    WAL (which the worker's engine turns on for the file) lets writers carry on.
    """
    url = get_settings().database_url
    if not url.startswith("sqlite"):
        yield get_engine()
        return
    engine = create_engine(url, connect_args={"timeout": 60}, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def read_session() -> Iterator[Session]:
    with read_engine() as engine, Session(engine) as session:
        yield session
