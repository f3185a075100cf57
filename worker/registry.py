"""Registering ids to archive: validation and idempotent bulk insert."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from models import Vendor, utcnow
from worker.config import Settings
from worker.scheduling import webhook_grace_until
from worker.tracking import insert_new
from worker.vendors.registry import VENDORS

MAX_ID_LENGTH = 256  # the vendors' own limit (longer ids are answered 400)
# Creation times a caller may give (`--created-at`, `created_at` of /v1/track).
# They set the retention deadline: one before the vendors existed or from the
# future is a typo (or a unit mistake), and one near datetime's limits would
# overflow the deadline arithmetic.
EARLIEST_CREATED_AT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CREATED_AHEAD = timedelta(days=1)  # the caller's clock may run ahead of ours
_FORBIDDEN = {"/": "'/'", "?": "'?'", "#": "'#'", "\\": "a backslash", "%": "'%'"}
_CHUNK = 2000


class InvalidId(ValueError):
    pass


class InvalidTimestamp(ValueError):
    pass


@dataclass
class Rejected:
    where: str  # "line 12" or "argument 2"
    value: str
    reason: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        return f"{self.where}: {shown!r}: {self.reason}"


@dataclass
class Registration:
    added: int = 0
    already_tracked: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def validate_external_id(vendor: Vendor, value: str) -> str:
    """Return the id to store, or raise InvalidId with a reason a user can act on."""
    value = _common_checks(value)
    try:
        return VENDORS[vendor].canonical_id(value)
    except ValueError as exc:
        raise InvalidId(str(exc)) from None


def _common_checks(value: str) -> str:
    """What no vendor's id (nor a project id) may be: it goes into a URL path."""
    if value == "":
        raise InvalidId("empty id")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"longer than {MAX_ID_LENGTH} characters ({len(value)})")
    for ch in value:
        if ch.isspace():
            raise InvalidId("contains whitespace")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise InvalidId(f"contains control or invisible character U+{ord(ch):04X}")
        if ch in _FORBIDDEN:
            raise InvalidId(f"contains {_FORBIDDEN[ch]}, which is not allowed in an id")
    if value in (".", ".."):
        raise InvalidId("is a path segment ('.' or '..'), not an id")
    return value


def validate_project_id(value: str) -> str:
    """A project id: it travels in a request header, which httpx encodes as
    ASCII, so anything else would only fail at the first poll."""
    try:
        value = _common_checks(value)
    except InvalidId as exc:
        raise InvalidId(f"project id {exc}") from None
    for ch in value:
        if not "!" <= ch <= "~":
            raise InvalidId(f"project id contains U+{ord(ch):04X}; only printable ASCII is allowed")
    return value


def validate_created_at(value: datetime, *, now: datetime | None = None) -> datetime:
    """A caller's creation time in UTC, or InvalidTimestamp saying which range it misses.

    A naive time is refused: the CLI makes it UTC before calling, the API asks
    for an offset.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidTimestamp("give a timezone offset (e.g. Z)")
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: outside datetime's range
        raise InvalidTimestamp(f"{value.isoformat()} is out of range") from None
    latest = (now or utcnow()) + MAX_CREATED_AHEAD
    if value < EARLIEST_CREATED_AT:
        raise InvalidTimestamp(
            f"{value.isoformat()} is before {EARLIEST_CREATED_AT:%Y-%m-%d}, "
            "the earliest creation time accepted"
        )
    if value > latest:
        raise InvalidTimestamp(
            f"{value.isoformat()} is more than {_hours(MAX_CREATED_AHEAD)} h in the future"
        )
    return value


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}"


def read_lines(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Label each line of an id file. Only the line ending is removed: an id with
    surrounding spaces is reported, not silently changed."""
    for number, line in enumerate(lines, start=1):
        yield f"line {number}", line.rstrip("\r\n")


def label_arguments(values: Iterable[str]) -> Iterator[tuple[str, str]]:
    for number, value in enumerate(values, start=1):
        yield f"argument {number}", value


def register(
    session: Session,
    vendor: Vendor,
    entries: Iterable[tuple[str, str]],
    *,
    settings: Settings,
    project_id: str = "",
    created_at: datetime | None = None,
    expect_webhook: bool = False,
    now: datetime | None = None,
) -> Registration:
    """Insert new ids, skip known ones, and report bad lines without stopping.

    Registering is idempotent: an id already tracked is left exactly as it is.
    """
    now = now or utcnow()
    # The callers validated these already (to name the bad value their own way);
    # checking again here keeps a new caller from storing an unusable one.
    if created_at is not None:
        created_at = validate_created_at(created_at, now=now)
    if project_id:
        project_id = validate_project_id(project_id)
    result = Registration()
    deadline = (created_at or now) + settings.retention
    grace_until = webhook_grace_until(now, deadline, settings) if expect_webhook else None
    pending: dict[str, None] = {}

    def flush() -> None:
        if not pending:
            return
        rows = [
            {
                "vendor": vendor,
                "project_id": project_id,
                "external_id": external_id,
                "state": "tracked",
                "registered_at": now,
                "remote_created_at": created_at,
                "deadline_at": deadline,
                "next_poll_at": grace_until or now,
                "expect_webhook": expect_webhook,
                "webhook_grace_until": grace_until,
            }
            for external_id in pending
        ]
        inserted = insert_new(session, rows)
        result.added += inserted
        result.already_tracked += len(rows) - inserted
        pending.clear()

    for where, raw in entries:
        try:
            external_id = validate_external_id(vendor, raw)
        except InvalidId as exc:
            result.rejected.append(Rejected(where, raw, str(exc)))
            continue
        if external_id in pending:
            result.already_tracked += 1
            continue
        pending[external_id] = None
        if len(pending) >= _CHUNK:
            flush()
    flush()
    return result
