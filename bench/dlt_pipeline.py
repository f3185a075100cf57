"""The dlt baseline of the throughput scenario: the same ids, the same normalized
tables, loaded by dlt with write_disposition="merge".

Configured as dlt's performance guide suggests (reference/performance): the
requests run in a parallelized transformer (EXTRACT__WORKERS threads), one answer
feeds seven table transformers (dlt forks the item to each), every table gets
explicit column hints and primary keys from our models (so nothing is inferred
and nothing is nested), intermediary files rotate so normalize runs in parallel
processes, and the load uses COPY through the csv loader format. The rows are
the product's own normalizers' output, so only fetching and loading differ.

dlt is a bench extra (`pip install -e ".[bench]"`), never a runtime dependency.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, Numeric, Table
from sqlalchemy.types import TypeDecorator

from bench.naive import Item, fetch_answer, items
from bench.writepath import TABLES

DATASET = "dlt_bench"
# Requests in flight: the same as a mentionsync batch's FETCH_CONCURRENCY x 2 processes.
FETCH_WORKERS = 16


def column_hints(table: Table) -> dict[str, dict[str, Any]]:
    """dlt column schema for one of our tables: same names, types and keys."""
    hints: dict[str, dict[str, Any]] = {}
    for column in table.columns:
        kind = column.type
        if isinstance(kind, TypeDecorator):
            kind = kind.impl_instance  # UTCDateTime is a timestamptz
        hint: dict[str, Any] = {"nullable": bool(column.nullable)}
        if isinstance(kind, JSON):
            hint["data_type"] = "json"
        elif isinstance(kind, Boolean):
            hint["data_type"] = "bool"
        elif isinstance(kind, Integer):
            hint["data_type"] = "bigint"
        elif isinstance(kind, Numeric) and not isinstance(kind, Float):
            hint |= {"data_type": "decimal", "precision": kind.precision, "scale": kind.scale}
        elif isinstance(kind, Float):
            hint["data_type"] = "double"
        elif isinstance(kind, DateTime):
            hint["data_type"] = "timestamp"
        else:
            hint["data_type"] = "text"
        if column.primary_key:
            hint["primary_key"] = True
        hints[column.name] = hint
    return hints


def configure(workdir: str) -> None:
    """dlt reads its settings from the environment (its documented mechanism)."""
    os.environ.update(
        {
            "EXTRACT__WORKERS": str(FETCH_WORKERS),
            "EXTRACT__MAX_PARALLEL_ITEMS": str(FETCH_WORKERS * 4),
            "NORMALIZE__WORKERS": "2",
            "LOAD__WORKERS": "4",
            # Rotate files so normalize and load can work on several at once.
            "DATA_WRITER__FILE_MAX_ITEMS": "20000",
            "DLT_DATA_DIR": workdir,
            "RUNTIME__LOG_LEVEL": "WARNING",
            "RUNTIME__DLTHUB_TELEMETRY": "false",
        }
    )


def archive(
    database_url: str,
    base_url: str,
    asks: Sequence[str],
    executions: Sequence[tuple[str, str]],
) -> float:
    """Run the pipeline over every id; return the seconds it took, end to end."""
    return archive_items(database_url, base_url, items(asks, executions))[0]


def archive_items(
    database_url: str, base_url: str, todo: Sequence[Item], *, deadline: float | None = None
) -> tuple[float, int]:
    """Run the pipeline over the items; with a `deadline` (time.monotonic()), the id
    resource stops handing out ids at it, and what was handed out is fetched,
    normalized and loaded. (Seconds end to end, ids handed out.)"""
    import dlt
    from sqlalchemy import make_url

    from models import metadata

    workdir = tempfile.mkdtemp(prefix="mentionsync-bench-dlt-")
    configure(workdir)
    client = httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=FETCH_WORKERS * 2))

    handed_out = 0

    @dlt.resource(selected=False)
    def ids() -> Iterator[Item]:
        nonlocal handed_out
        for item in todo:
            if deadline is not None and time.monotonic() >= deadline:
                return
            handed_out += 1
            yield item

    @dlt.transformer(data_from=ids, parallelized=True, selected=False)
    def answers(item: tuple[str, str, str]) -> Any:
        return fetch_answer(client, base_url, *item)

    def table_resource(name: str) -> Any:
        table = metadata.tables[name]

        def rows(answer: Any) -> Any:
            if answer.table == name:
                return answer.row
            return answer.children.get(name) or None

        return dlt.transformer(
            rows,
            data_from=answers,
            name=name,
            write_disposition="merge",
            primary_key=[c.name for c in table.primary_key.columns],
            columns=column_hints(table),
            max_table_nesting=0,
        )

    @dlt.source(max_table_nesting=0)
    def archive_source() -> Any:
        return [ids, answers, *(table_resource(n) for n in TABLES)]

    url = make_url(database_url).set(drivername="postgresql")
    if url.password is None:
        url = url.set(password="unused")  # noqa: S106 -- dlt insists on one; trust auth ignores it
    pipeline = dlt.pipeline(
        pipeline_name="mentionsync_bench",
        destination=dlt.destinations.postgres(credentials=url.render_as_string(False)),
        dataset_name=DATASET,
        pipelines_dir=workdir,
    )
    started = time.perf_counter()
    try:
        pipeline.run(archive_source(), loader_file_format="csv")
    finally:
        client.close()
    return time.perf_counter() - started, handed_out
