"""Small helpers every layer uses; this module imports nothing of ours."""

from __future__ import annotations

from datetime import UTC, datetime

# Exit codes the commands share (the library returns them, the CLI exits with them).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TIMEOUT = 2  # sync --until-done: ids still pending when the timeout passed
EXIT_BLOCKED = 3  # sync --until-done: nothing can progress (key refused or missing)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


def parse_iso_utc(value: str) -> datetime:
    """An ISO 8601 timestamp in UTC; one without an offset is taken as UTC.

    ValueError when it is not one, or cannot be expressed in UTC (year 1 with a
    positive offset)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range in UTC") from None


def short_error(exc: BaseException) -> str:
    """The first line of an exception (a database error's driver message), for
    logs and stored reasons."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def is_redis_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("redis://", "rediss://"))
