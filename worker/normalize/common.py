"""Shared pieces of the normalizers: the result type, JSON parsing and checks."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.common import parse_iso_utc

T = TypeVar("T")

# orjson reads integers wider than 64 bits as floats, which would round them in
# raw_payload; the standard library keeps them exact. Such bodies are rare, so
# they are spotted cheaply: every digit becomes "0", anything else a space, and a
# run of 20 zeros is a number (or a string) of 20 digits or more.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_WIDE_RUN = b"0" * 20

# Vendor timestamps outside these years are wrong data, not dates to compute
# deadlines with (a year-9999 creation plus 30 days overflows).
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(2100, 1, 1, tzinfo=UTC)

# Postgres `integer`; larger values are a wrong type, not a silent overflow.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class PayloadError(ValueError):
    """The body cannot be archived as it is; the message says why."""


class VendorModel(BaseModel):
    # Strict: "yes" is not a bool and "12" is not an int. Unknown fields are
    # ignored here because the raw payload keeps them.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


@dataclass(frozen=True, slots=True)
class Normalized:
    """Rows for one archived answer: the parent row and its child rows by table."""

    table: str
    key: str
    row: dict[str, Any]
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def key_value(self) -> Any:
        return self.row[self.key]

    @property
    def rows(self) -> int:
        """Rows this answer writes: its own and its children's."""
        return 1 + sum(len(rows) for rows in self.children.values())


class RawJSON(str):
    """A JSON document already serialized: stored as it is, never encoded again.

    Archiving the body's own text keeps what re-encoding could not: integers of
    any width, nesting deeper than an encoder's recursion limit, number spelling.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed body and the JSON text to store for it."""

    payload: dict[str, Any]
    text: RawJSON
    # True when `text` is not the body as received (U+0000 removed).
    altered: bool = False


# A JSON string escape for U+0000: "\u0000" after an even number of backslashes
# (an odd run would make the first backslash an escaped backslash).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def strip_nul(body: bytes) -> bytes:
    """The body with every U+0000 escape removed from its strings.

    Postgres text and jsonb cannot hold U+0000; removing the character keeps the
    rest of the text as the vendor wrote it (a brand "Ac\\u0000me" reads "Acme").
    """
    return _NUL_ESCAPE.sub(rb"\1", body)


def parse_document(body: bytes) -> Document:
    """Parse a response body into an object and its storable text, or raise PayloadError."""
    altered = False
    if b"\\u0000" in body:
        cleaned = strip_nul(body)
        altered = cleaned != body
        body = cleaned
    try:
        value = orjson.loads(body)
        if _WIDE_RUN in body.translate(_DIGITS):
            value = json.loads(body)  # valid JSON: orjson just accepted it
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("JSON nested too deeply to read") from None
    if not isinstance(value, dict):
        raise PayloadError(f"expected a JSON object, got {type(value).__name__}")
    return Document(value, RawJSON(body.decode()), altered)


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse a response body into an object, or raise PayloadError."""
    return parse_document(body).payload


def validate(model: type[VendorModel], payload: dict[str, Any]) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PayloadError(f"wrong type at {where}: {first['msg']}{more}") from None


def parse_timestamp(value: str | None, field_name: str) -> datetime | None:
    if value is None:
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(f"{field_name} is not an ISO 8601 timestamp: {value[:64]!r}") from None
    try:
        # A timestamp without an offset is taken as UTC, as both vendors document UTC.
        parsed = parse_iso_utc(value)
    except ValueError:  # "0001-01-01T00:00:00+01:00" is before year 1 in UTC
        parsed = EARLIEST_TIMESTAMP - timedelta(days=1)
    if not EARLIEST_TIMESTAMP <= parsed < LATEST_TIMESTAMP:
        raise PayloadError(
            f"{field_name} is out of range ({EARLIEST_TIMESTAMP:%Y} to {LATEST_TIMESTAMP:%Y}):"
            f" {value[:64]!r}"
        )
    return parsed


def parse_uuid(value: str | None, field_name: str) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PayloadError(f"{field_name} is not a UUID: {value[:64]!r}") from None


def unique_by(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """Drop later items whose key was already seen, keeping the first's position."""
    seen: set[Hashable] = set()
    out: list[T] = []
    for item in items:
        k = key(item)
        if k in seen:
            continue
        seen.add(k)
        out.append(item)
    return out


def identity(model: BaseModel) -> Hashable:
    """Key for exact-duplicate detection of a list entry."""
    return orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
