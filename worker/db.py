"""The database: an engine and its session factory, built where work starts
(`Runtime.open`, a CLI command) and passed to what needs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from worker.normalize.common import RawJSON


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


class Database:
    """One database: its engine (a connection pool) and session factory.

    Whoever builds one disposes of it (`with Database(url) as db:`); a forked
    child builds its own rather than share its parent's sockets. The engine is
    created on first use, so a bad URL fails where the database is first needed
    (inside `doctor`'s checks, say), not where the runtime is assembled.
    """

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self._engine_kwargs = engine_kwargs

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.url, **self._engine_kwargs)

    @cached_property
    def _sessions(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commit at the end, roll back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self, *, close: bool = True) -> None:
        """Close the pool's connections; `close=False` in a forked child only
        forgets its parent's, leaving them to the parent."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=close)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_: object) -> None:
        self.dispose()


@contextmanager
def transaction(url: str) -> Iterator[Session]:
    """One transaction on a database of its own, disposed of after it: for a
    command that needs the database once."""
    with Database(url) as db, db.session() as session:
        yield session
