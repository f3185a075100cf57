"""`mentionsync export` round-trips: the rows read back equal the database's.

Each file is read back with the format's own reader (csv, orjson, pyarrow) and
turned into canonical values with the table's column types; the test compares
the row count and, per column, a checksum of its values.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    Table,
    TypeDecorator,
    select,
)
from sqlalchemy.types import TypeEngine

from models import QuarantinedPayload, TrackedId, Vendor, metadata
from tests.helpers import cli
from tests.resources import session_scope, suite_db
from worker.analytics import parquet
from worker.analytics.export import export, exportable
from worker.analytics.views import VIEWS

NAMES = [
    "mention_facts",
    "citation_facts",
    "answer_facts",
    "asks",
    "ask_citations",
    "job_executions",
    "job_execution_entities",
    "tracked_ids",
    "quarantined_payloads",
]
TABLES: dict[str, Table] = {**VIEWS, **metadata.tables}


def _kind(type_: TypeEngine[Any]) -> type[TypeEngine[Any]] | None:
    base = type_.impl if isinstance(type_, TypeDecorator) else type_
    for kind in (Boolean, Integer, Float, Numeric, DateTime, JSON, LargeBinary):
        if isinstance(base, kind):
            return kind
    return None


def canonical(value: Any, kind: type[TypeEngine[Any]] | None, fmt: str) -> str:
    """One value as text, the same whichever way it was read."""
    if value is None or (value == "" and fmt == "csv"):
        # CSV has no NULL: an empty text and a NULL read back alike. JSON lines
        # and Parquet must keep them apart (a MentionsAPI id's project_id is '').
        return "<null>"
    if kind is Boolean:
        return str(value in (True, "true"))
    if kind is Integer:
        return str(int(value))
    if kind is Float:
        return f"{float(value):.9g}"
    if kind is Numeric:
        return str(Decimal(value).normalize())
    if kind is DateTime:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return parsed.astimezone(UTC).isoformat()
    if kind is JSON:
        parsed = orjson.loads(value) if isinstance(value, str) else value
        return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS).decode()
    if kind is LargeBinary:
        return base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return str(getattr(value, "value", value))  # enums as their value


def checksums(table: Table, rows: list[dict[str, Any]], fmt: str) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": len(rows)}
    for column in table.c:
        kind = _kind(column.type)
        values = sorted(canonical(row[column.name], kind, fmt) for row in rows)
        out[column.name] = hashlib.sha256("\x1f".join(values).encode()).hexdigest()[:16]
    return out


def from_database(table: Table, *conditions: Any) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [dict(r._mapping) for r in session.execute(select(table).where(*conditions))]


def read_back(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if fmt == "jsonl":
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_round_trip(
    archive: str, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One export through the command line; the rest in-process, for speed.
    path = tmp_path / f"mention_facts.{fmt}"
    result = cli("export", "mention_facts", "--format", fmt, "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert "exported 10 rows of mention_facts" in result.stderr
    assert not list(tmp_path.glob("*.partial"))
    # A refused body: bytes that are not UTF-8, which every format must keep.
    with session_scope() as session:
        tracked = session.scalars(select(TrackedId).where(TrackedId.external_id == "ask_a2")).one()
        session.add(
            QuarantinedPayload(
                tracked_id=tracked.id,
                vendor=Vendor.MENTIONSAPI,
                external_id="ask_a2",
                http_status=200,
                reason="invalid payload: not JSON",
                body=b"\xff\xfe{not json\x00",
                body_truncated=False,
                received_at=datetime(2026, 11, 20, 7, tzinfo=UTC),
            )
        )
    # Parquet: a row group per fetched batch, to cover the writer's flushing.
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1)
    for name in NAMES:
        table = TABLES[name]
        path = tmp_path / f"{name}.{fmt}"
        # Small batches: the rows cross several fetches.
        written = export(suite_db(), name, fmt, path, batch_rows=3)
        expected = from_database(table)
        assert expected, f"the fixture leaves {name} empty"
        assert written == len(expected)
        assert checksums(table, read_back(path, fmt), fmt) == checksums(table, expected, fmt), name
        if fmt == "parquet":
            groups = pq.ParquetFile(path).num_row_groups
            assert groups == -(-len(expected) // 3), name  # ceil(rows / 3)


def test_since_and_until(archive: str, tmp_path: Path) -> None:
    # Views select on answered_at: from the 9th, a5g's Initech and L4's Acme.
    path = tmp_path / "m.csv"
    assert (
        cli("export", "mention_facts", "--since", "2026-11-09", "--out", str(path)).returncode == 0
    )
    assert sorted(r["brand"] for r in read_back(path, "csv")) == ["Acme", "Initech"]
    # Child tables select on their answer's fetched_at: only ask_a5 was archived
    # before the 20th.
    path = tmp_path / "b.jsonl"
    result = cli(
        "export",
        "ask_brand_mentions",
        "--format",
        "jsonl",
        "--until",
        "2026-11-19",
        "--out",
        str(path),
    )
    assert result.returncode == 0, result.stderr
    assert [(r["ask_id"], r["brand"]) for r in read_back(path, "jsonl")] == [("ask_a5", "Initech")]


def test_every_table_and_view_takes_since_and_until(archive: str, tmp_path: Path) -> None:
    # Every exportable name has a time to select on, its own or its answer's.
    for name, table in exportable().items():
        path = tmp_path / f"{name}.jsonl"
        since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        written = export(suite_db(), name, "jsonl", path, since=since, until=until)
        everything = from_database(table)
        assert written <= len(everything), name
    # The fixture archived (fetched) nearly everything on the 20th; the window
    # before it leaves out all but ask_a5 and what hangs off it.
    early = export(
        suite_db(), "asks", "jsonl", tmp_path / "a.jsonl", until=datetime(2026, 11, 19, tzinfo=UTC)
    )
    assert early == 1


def test_to_standard_output_and_errors(archive: str) -> None:
    result = cli("export", "answer_facts", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 8  # the fixture's 8 answers
    result = cli("export", "answer_facts", "--format", "parquet")
    assert result.returncode == 2 and "Parquet needs a file" in result.stderr
    result = cli("export", "answers")
    assert result.returncode == 2 and "not a table or view" in result.stderr


def _tracked_rows(start: int, n: int) -> Iterator[dict[str, Any]]:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    for i in range(start, start + n):
        yield {
            "vendor": Vendor.MENTIONSAPI,
            "project_id": "",
            "external_id": f"ask_{i:08d}_" + "x" * 100,
            "state": "archived",
            "registered_at": now,
            "deadline_at": now,
            "next_poll_at": now,
            "last_error": "e" * 200,
        }


def _peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_streams(backend: str, tmp_path: Path) -> None:
    """Memory follows the batch, not the table: 4x the rows, about the same peak."""
    path = tmp_path / "t.jsonl"

    def add_rows(start: int, n: int) -> None:
        with session_scope() as session:
            session.execute(TrackedId.__table__.insert(), list(_tracked_rows(start, n)))

    def export_all() -> None:
        export(suite_db(), "tracked_ids", "jsonl", path, batch_rows=500)

    add_rows(0, 10_000)
    export_all()  # warm up: imports and compiled statements are not the rows' cost
    small = _peak(export_all)
    add_rows(10_000, 30_000)
    large = _peak(export_all)
    assert len(path.read_bytes().splitlines()) == 40_000
    everything = _peak(lambda: from_database(TrackedId.__table__))
    assert large < small * 1.5, (small, large)
    assert large < everything / 4, (large, everything)
