"""Engine and session factory: one engine per process, created on first use."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from worker.config import get_settings
from worker.normalize.common import RawJSON

_engine: Engine | None = None
_engine_pid: int | None = None
_sessionmaker: sessionmaker[Session] | None = None


def dumps_json(value: Any) -> str:
    """JSON for JSON/JSONB columns: orjson, several times faster than the standard
    library on large payloads; the standard library for what orjson refuses
    (integers wider than 64 bits, which raw payloads must keep exact). A RawJSON
    document is stored as it is."""
    if isinstance(value, RawJSON):
        return value  # the vendor's own text, already valid JSON
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def make_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("json_serializer", dumps_json)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    # pre_ping: a restarted Postgres costs one reconnect, not a failed batch.
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 5)
        kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from pysqlite, so BEGIN is ours (see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the worker write while `status` reads; several processes share the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front: a claim cannot be interleaved with
    # another process's claim, which is SQLite's equivalent of SKIP LOCKED.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine() -> Engine:
    """The process's engine; rebuilt after a fork so children never share sockets."""
    global _engine, _engine_pid, _sessionmaker
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        _engine = make_engine(get_settings().database_url)
        _engine_pid = os.getpid()
        _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine() -> None:
    global _engine, _sessionmaker
    if _engine is not None:
        _engine.dispose()
    _engine = None
    _sessionmaker = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit at the end, roll back on any error."""
    get_engine()
    assert _sessionmaker is not None
    with _sessionmaker() as session, session.begin():
        yield session
