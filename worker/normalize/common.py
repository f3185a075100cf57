"""Shared pieces of the normalizers: the result type, JSON parsing and checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T")

# orjson reads integers wider than 64 bits as floats, which would round them in
# raw_payload; the standard library keeps them exact. Such bodies are rare, so
# they are spotted cheaply: every digit becomes "0", anything else a space, and a
# run of 20 zeros is a number (or a string) of 20 digits or more.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_WIDE_RUN = b"0" * 20

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


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse a response body into an object, or raise PayloadError."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    if _WIDE_RUN in body.translate(_DIGITS):
        value = json.loads(body)  # valid JSON: orjson just accepted it
    if not isinstance(value, dict):
        raise PayloadError(f"expected a JSON object, got {type(value).__name__}")
    if b"\\u0000" in body and _has_nul(value):
        # Postgres text and jsonb cannot hold U+0000; keep the body in quarantine.
        raise PayloadError("a string contains U+0000, which Postgres cannot store")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


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
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(f"{field_name} is not an ISO 8601 timestamp: {value[:64]!r}") from None
    # A timestamp without an offset is taken as UTC, as both vendors document UTC.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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
