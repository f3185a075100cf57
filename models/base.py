"""Declarative base, naming convention and column types shared by every model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import JSON, DateTime, MetaData, String, Table, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator, TypeEngine

# Mirrors Postgres' own default constraint names, so names are stable across
# dialects and migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_N_label)s",
        "uq": "%(table_name)s_%(column_0_N_name)s_key",
        "ck": "%(table_name)s_%(constraint_name)s_check",
        "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
        "pk": "%(table_name)s_pkey",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that always comes back in UTC.

    Postgres stores ``timestamptz``; SQLite has no timezone support, so values are
    stored as naive UTC and made aware again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on Postgres (indexable, compact), plain JSON text on SQLite. A missing
# document (None) is SQL NULL, not the JSON value null: `IS NULL` is what analysts
# write, and what every other loader (dlt, COPY of a CSV) produces.
JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

# Native ``uuid`` on Postgres; the canonical 36-character text on SQLite, so the
# ids look the same as in the vendor's dashboard on both.
UUIDText = Uuid(as_uuid=False).with_variant(String(36), "sqlite")


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}

    if TYPE_CHECKING:
        # Every model here maps one Table (DeclarativeBase says FromClause).
        __table__: ClassVar[Table]


def utcnow() -> datetime:
    return datetime.now(UTC)


def base_type(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """The type a column stores as: a TypeDecorator's underlying type."""
    if isinstance(type_, TypeDecorator):
        # An instance once the decorator is built (TypeDecorator.__init__).
        impl: TypeEngine[Any] = type_.impl  # type: ignore[assignment]  # impl is an instance by now
        return impl
    return type_
