"""Connections for long reads (reports, exports) that never stall the worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from worker.db import Database


@contextmanager
def read_engine(db: Database) -> Iterator[Engine]:
    """The database's engine on Postgres; on SQLite, a plain one for this read.

    The worker's SQLite engine begins every transaction IMMEDIATE, which would
    hold the write lock for the whole report or export and stall a running
    worker. A plain connection reads each statement from its own snapshot, and
    WAL (which the worker's engine turns on for the file) lets writers carry on.
    """
    url = db.url
    if not url.startswith("sqlite"):
        yield db.engine
        return
    engine = create_engine(url, connect_args={"timeout": 60}, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def read_session(db: Database) -> Iterator[Session]:
    with read_engine(db) as engine, Session(engine) as session:
        yield session
