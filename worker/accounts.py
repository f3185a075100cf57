"""The state of each vendor key (`vendor_accounts`): paused by a 429, refused,
or working. One row per vendor and key fingerprint, shared by every worker."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from models import Vendor, VendorAccount
from worker.config import Settings
from worker.outcome import Action, Outcome
from worker.store import dialect_insert

log = logging.getLogger("mentionsync.accounts")

# Outcomes that prove the key itself works, so an earlier auth failure is over.
KEY_WORKS = frozenset(
    {Action.ARCHIVE, Action.POLL_LATER, Action.CONFIRM_NOT_FOUND, Action.EXPIRE, Action.REJECT}
)


def current_account(session: Session, vendor: Vendor, settings: Settings) -> VendorAccount | None:
    """The pause record of the configured key, if it ever had one."""
    return session.get(VendorAccount, (vendor, settings.key_fingerprint(vendor)))


RATE_LIMITED = "rate limited"


def passes_by_itself(reason: str) -> bool:
    """Whether a reason of account_gate ends on its own (a 429's pause) rather
    than waiting for someone to fix a key."""
    return reason.startswith(RATE_LIMITED)


def account_gate(
    session: Session,
    vendor: Vendor,
    settings: Settings,
    now: datetime,
    account: VendorAccount | None = None,
) -> str | None:
    """Why ids of this vendor must not be fetched now, or None if they may be."""
    if settings.api_key(vendor) is None:
        return f"no API key configured for {vendor} (set {vendor.upper()}_API_KEY)"
    account = account or current_account(session, vendor, settings)
    if account is None:
        return None
    if account.paused_until is not None and account.paused_until > now:
        return f"{RATE_LIMITED} by {vendor} until {account.paused_until:%H:%M:%S} UTC"
    if account.auth_failed_at is not None and (
        account.auth_recheck_at is None or account.auth_recheck_at > now
    ):
        return (
            f"{vendor} refused the API key (fingerprint {account.key_fingerprint}): "
            f"{account.auth_error}; polling is paused until the key is fixed"
        )
    return None


def _changes(
    account: VendorAccount | None,
    refused: bool,
    works: bool,
    pause_until: datetime | None,
) -> bool:
    """Whether these outcomes change the key's row (read without a lock; the
    writer reads it again, locked, before it writes)."""
    if account is None:
        return refused or pause_until is not None
    if refused and not works:
        return True
    if works and account.auth_failed_at is not None:
        return True
    return pause_until is not None and _extends(account, pause_until)


def _extends(account: VendorAccount, pause_until: datetime) -> bool:
    return account.paused_until is None or account.paused_until < pause_until


def update_account(
    session: Session,
    vendor: Vendor,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    settings: Settings,
) -> None:
    fingerprint = settings.key_fingerprint(vendor)
    refused = next((o for o in outcomes if o.action is Action.PAUSE_ACCOUNT and o.sent), None)
    # Only a vendor's 429 pauses claiming; a budget slot further away than the
    # batch could wait just reschedules its ids.
    throttled = [
        o.retry_after or 1.0
        for o in outcomes
        if o.action is Action.THROTTLE and o.http_status is not None
    ]
    works = any(o.action in KEY_WORKS and o.http_status is not None for o in outcomes)
    if not (refused or throttled or works):
        return
    # Clamped again here: a pause is only as long as MAX_RETRY_AFTER_SECONDS.
    pause_until = (
        now + timedelta(seconds=min(max(throttled), settings.max_retry_after_seconds))
        if throttled
        else None
    )
    # Read first without a lock: the row changes rarely, and every batch of every
    # process writes through here; locking it each time would make their commits
    # wait on each other.
    seen = session.get(VendorAccount, (vendor, fingerprint))
    if not _changes(seen, refused is not None, works, pause_until):
        return
    account = session.get(
        VendorAccount, (vendor, fingerprint), with_for_update=True, populate_existing=True
    )
    if account is None:
        # Concurrent batches may race to create the row; ON CONFLICT keeps one.
        stmt = dialect_insert(session, VendorAccount.__table__).values(
            vendor=vendor, key_fingerprint=fingerprint, updated_at=now
        )
        session.execute(stmt.on_conflict_do_nothing())
        account = session.get(VendorAccount, (vendor, fingerprint), with_for_update=True)
        assert account is not None
    if refused is not None and not works:
        if account.auth_failed_at is None:
            log.error(
                "%s refused the API key (fingerprint %s): %s; pausing polling for this key",
                vendor,
                fingerprint,
                refused.reason,
                extra={"vendor": vendor.value},
            )
            account.auth_failed_at = now
        account.auth_error = refused.reason
        account.auth_recheck_at = now + timedelta(seconds=settings.auth_recheck_seconds)
    elif works and account.auth_failed_at is not None:
        log.info("%s accepts the API key again; polling resumes", vendor)
        account.auth_failed_at = account.auth_error = account.auth_recheck_at = None
    if pause_until is not None and _extends(account, pause_until):
        account.paused_until = pause_until
    account.updated_at = now
