"""Parquet output of `mentionsync export`."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    Table,
)
from sqlalchemy.types import TypeEngine

from models.base import base_type

# Readers want large row groups; memory wants a bound that holds for raw
# payloads of a few hundred kB as well as for narrow view rows: bytes, not rows.
ROW_GROUP_BYTES = 64 * 1024 * 1024


def arrow_type(type_: TypeEngine[Any]) -> pa.DataType:
    base = base_type(type_)
    if isinstance(base, Boolean):
        return pa.bool_()
    if isinstance(base, Integer | BigInteger):
        return pa.int64()
    if isinstance(base, Float):  # before Numeric: Float is a Numeric
        return pa.float64()
    if isinstance(base, Numeric):
        return pa.decimal128(base.precision or 38, base.scale or 0)
    if isinstance(base, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(base, LargeBinary):
        return pa.binary()
    return pa.string()  # text, ids, enums, and JSON documents as JSON text


def _arrow_value(type_: TypeEngine[Any]) -> Callable[[Any], Any]:
    # JSON documents arrive as their text (export.exported_columns): kept as is.
    if arrow_type(type_) == pa.string():
        return lambda v: None if v is None else (v.value if isinstance(v, enum.Enum) else str(v))
    return lambda v: v


def write_parquet(table: Table, batches: Iterator[Sequence[Any]], path: Path) -> int:
    """Write the fetched batches as row groups of up to ROW_GROUP_BYTES each."""
    schema = pa.schema([pa.field(c.name, arrow_type(c.type)) for c in table.c])
    converters = [_arrow_value(c.type) for c in table.c]
    rows = 0
    pending: list[pa.RecordBatch] = []
    with pq.ParquetWriter(path, schema) as writer:
        for batch in batches:
            arrays = [
                pa.array([convert(row[i]) for row in batch], type=field.type)
                for i, (convert, field) in enumerate(zip(converters, schema, strict=True))
            ]
            pending.append(pa.record_batch(arrays, schema=schema))
            rows += len(batch)
            if sum(b.nbytes for b in pending) >= ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(pending))
                pending.clear()
        if pending:
            writer.write_table(pa.Table.from_batches(pending))
    return rows
