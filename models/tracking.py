"""The poll queue and registry of every id a team asked us to archive."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Vendor(enum.StrEnum):
    MENTIONSAPI = "mentionsapi"
    MENTIONLAB = "mentionlab"


class TrackedState(enum.StrEnum):
    TRACKED = "tracked"  # registered, never fetched
    POLLING = "polling"  # fetched at least once, the vendor is still working on it
    ARCHIVED = "archived"  # final answer stored
    FAILED = "failed"  # the vendor's job failed; the failure is stored
    EXPIRED = "expired"  # lost: past the vendor's retention window (410)
    NOT_FOUND = "not_found"  # the vendor does not know the id (404, confirmed)
    INVALID = "invalid"  # the vendor rejected the id (400)
    ERROR = "error"  # ran out of attempts on retryable errors; `mentionsync retry`
    INVALID_PAYLOAD = "invalid_payload"  # quarantined: the body could not be archived


ACTIVE_STATES: tuple[TrackedState, ...] = (TrackedState.TRACKED, TrackedState.POLLING)
FINAL_STATES: tuple[TrackedState, ...] = tuple(s for s in TrackedState if s not in ACTIVE_STATES)
# Not archived, and still savable before the deadline: polling will fetch the
# active ones, `mentionsync retry` the others. What "at risk" counts.
SAVABLE_STATES: tuple[TrackedState, ...] = (
    *ACTIVE_STATES,
    TrackedState.ERROR,
    TrackedState.INVALID_PAYLOAD,
)

# Kept as a literal so the partial index predicate renders the same on every dialect
# and in the migration.
ACTIVE_PREDICATE = "state IN ('tracked', 'polling')"
# Out of polling but not final for good: `record_losses` finds those past their
# deadline; partial, so it holds only the few ids that ran out of attempts.
STRANDED_PREDICATE = "state IN ('error', 'invalid_payload')"
# Archived (or failed) by polling although a webhook was expected: a missed delivery.
RECOVERED_PREDICATE = "expect_webhook AND archived_at IS NOT NULL AND webhook_archived_at IS NULL"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # VARCHAR plus a named CHECK constraint: portable, and adding a value is a
    # small reviewed migration rather than an ALTER TYPE.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class TrackedId(Base):
    __tablename__ = "tracked_ids"
    __table_args__ = (
        UniqueConstraint("vendor", "project_id", "external_id"),
        # The scheduler's claim: one vendor's active ids, earliest deadline first,
        # filtered on next_poll_at. Partial, so archived rows never enter it however
        # large the archive grows. next_poll_at stays out of every index so that
        # leases are HOT updates (migration 0003 also sets fillfactor 70).
        Index(
            "ix_tracked_ids_due",
            "vendor",
            "deadline_at",
            postgresql_where=text(ACTIVE_PREDICATE),
            sqlite_where=text(ACTIVE_PREDICATE),
        ),
        Index(
            "ix_tracked_ids_stranded",
            "deadline_at",
            postgresql_where=text(STRANDED_PREDICATE),
            sqlite_where=text(STRANDED_PREDICATE),
        ),
        # `status` counts by vendor and state.
        Index("ix_tracked_ids_vendor_state", "vendor", "state"),
        # `status` and every metrics scrape count the ids polling had to recover
        # because their webhook never came; partial, so it stays small.
        Index(
            "ix_tracked_ids_recovered_by_poll",
            "vendor",
            postgresql_where=text(RECOVERED_PREDICATE),
            sqlite_where=text(RECOVERED_PREDICATE),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    vendor: Mapped[Vendor] = mapped_column(_enum(Vendor, "vendor"))
    # '' for MentionsAPI: a NULL would make the unique constraint useless.
    project_id: Mapped[str] = mapped_column(String(256), server_default="")
    external_id: Mapped[str] = mapped_column(String(256))
    state: Mapped[TrackedState] = mapped_column(
        _enum(TrackedState, "tracked_state"), server_default=TrackedState.TRACKED.value
    )
    registered_at: Mapped[datetime]
    remote_created_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime]
    next_poll_at: Mapped[datetime]
    # Set while a batch holds the id; next_poll_at is then the lease expiry.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    consecutive_errors: Mapped[int] = mapped_column(Integer, server_default="0")
    not_found_streak: Mapped[int] = mapped_column(Integer, server_default="0")
    invalid_payload_streak: Mapped[int] = mapped_column(Integer, server_default="0")
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_polled_at: Mapped[datetime | None]
    final_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    expect_webhook: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # expect_webhook ids are not polled before this (next_poll_at starts here).
    webhook_grace_until: Mapped[datetime | None]
    # Set when a signed delivery archived the id; NULL when polling did.
    webhook_archived_at: Mapped[datetime | None]


class VendorAccount(Base):
    """Per vendor and API key: why polling for that key is paused, if it is.

    Keyed by a fingerprint of the key, never the key itself. A new key has a new
    fingerprint, so fixing the key resumes polling at once.
    """

    __tablename__ = "vendor_accounts"

    vendor: Mapped[Vendor] = mapped_column(_enum(Vendor, "vendor"), primary_key=True)
    key_fingerprint: Mapped[str] = mapped_column(String(16), primary_key=True)
    auth_failed_at: Mapped[datetime | None]
    auth_error: Mapped[str | None] = mapped_column(Text)
    # Re-check a rejected key this often, in case it was re-enabled at the vendor.
    auth_recheck_at: Mapped[datetime | None]
    # A 429's Retry-After pauses the whole key.
    paused_until: Mapped[datetime | None]
    updated_at: Mapped[datetime]
