"""The tracking repository: every read and write of `tracked_ids` the worker,
the intake and the CLI make goes through a named function here.

Transactions belong to the caller: each function runs in the session it is
given and never commits. What operators read of the table (counts, ages,
samples for status, alerts, gauges and the dashboard) is its other half,
worker/tracking_reads.py; nothing else issues SQL against tracked_ids.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnClause,
    CursorResult,
    Row,
    Select,
    and_,
    bindparam,
    column,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from models import ACTIVE_STATES, TrackedId, TrackedState, Vendor, utcnow
from worker.config import Settings
from worker.outcome import TrackedView
from worker.scheduling import lease_until
from worker.store import array_params, dialect_insert, execute_arrays, unnest_arrays

log = logging.getLogger("mentionsync.tracking")

# What a batch (and a webhook delivery) needs to know of a tracked id.
VIEW_COLUMNS = (
    TrackedId.id,
    TrackedId.vendor,
    TrackedId.project_id,
    TrackedId.external_id,
    TrackedId.deadline_at,
    TrackedId.attempts,
    TrackedId.consecutive_errors,
    TrackedId.not_found_streak,
    TrackedId.invalid_payload_streak,
    TrackedId.remote_created_at,
    TrackedId.registered_at,
    TrackedId.last_polled_at,
)


@dataclass(frozen=True, slots=True)
class Claim:
    vendor: Vendor
    token: str
    ids: list[int]

    def split(self, size: int) -> list[Claim]:
        """Batches of at most `size` ids, in claim order, under the same lease."""
        return [
            Claim(self.vendor, self.token, self.ids[i : i + size])
            for i in range(0, len(self.ids), size)
        ]


def db_now(session: Session) -> datetime:
    """The database's clock: every host's claims and leases agree on it, however
    far their own clocks drift. (SQLite lives on one host: its clock is ours.)"""
    if session.connection().dialect.name == "postgresql":
        value: datetime | None = session.scalar(select(func.now()))
        assert value is not None
        return value.astimezone(UTC)
    return utcnow()


def in_flight(session: Session, vendor: Vendor, now: datetime) -> int:
    stmt = select(func.count()).where(
        TrackedId.state.in_(ACTIVE_STATES),
        TrackedId.vendor == vendor,
        TrackedId.lease_token.is_not(None),
        TrackedId.next_poll_at > now,
    )
    return session.scalar(stmt) or 0


def claim_due(
    session: Session,
    vendor: Vendor,
    limit: int,
    *,
    now: datetime | None = None,
    settings: Settings,
    stalest_first: bool = False,
) -> Claim | None:
    """Lease up to `limit` due ids of one vendor, earliest deadline first.

    `FOR UPDATE SKIP LOCKED` lets any number of schedulers claim at once without
    taking the same id twice (SQLite serializes writers instead). The lease is
    next_poll_at itself: if the batch dies, the id is simply due again later.
    `now` is the database's clock unless a caller (a test) sets it.
    `stalest_first` takes the least recently polled ids instead: a refused key's
    re-check then tries a different id each time, not the same bad one.
    """
    if limit <= 0:
        return None
    if now is None:
        now = db_now(session)
    token = uuid.uuid4().hex
    table = TrackedId.__table__
    order = (
        (table.c.last_polled_at.asc().nulls_first(), table.c.id)
        if stalest_first
        else (table.c.deadline_at,)
    )
    due = (
        select(table.c.id)
        .where(
            table.c.state.in_(ACTIVE_STATES),
            table.c.next_poll_at <= now,
            table.c.vendor == vendor,
        )
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(table)
        .where(table.c.id.in_(due.scalar_subquery()))
        .values(lease_token=token, next_poll_at=lease_until(now, settings))
        .returning(table.c.id, table.c.deadline_at)
    )
    # RETURNING has no order of its own: restore earliest deadline first, so the
    # first batch split off this claim is the most urgent one. Postgres sorts in
    # the statement (thousands of rows, no timestamps to convert in Python);
    # SQLite cannot put an UPDATE in a CTE, and its claims are small.
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        claimed = claim.cte("claimed")
        ordered = select(claimed.c.id).order_by(claimed.c.deadline_at, claimed.c.id)
        ids = list(conn.execute(ordered).scalars())
    else:
        ids = [r.id for r in sorted(conn.execute(claim).all(), key=lambda r: (r[1], r[0]))]
    return Claim(vendor, token, ids) if ids else None


def load_claim(
    session: Session, claim: Claim
) -> tuple[list[TrackedView], datetime | None, datetime]:
    """The claimed ids this batch still owns (a redelivered task may own none),
    when the earliest of their leases expires, and the database's time now."""
    now = db_now(session)
    rows = [row for row in session.execute(leased_rows(claim, now)) if row.state in ACTIVE_STATES]
    lease_expires = min((row.next_poll_at for row in rows), default=None)
    return [_view(row) for row in rows], lease_expires, now


def leased_rows(claim: Claim, now: datetime) -> Select[*tuple[Any, ...]]:
    """The claim's ids still leased to it at `now`, with their state.

    The state is checked by the caller, not in SQL: with it in the WHERE clause
    the planner may walk the due index (every active id) instead of looking the
    claimed ids up by key."""
    return select(*VIEW_COLUMNS, TrackedId.next_poll_at, TrackedId.state).where(
        TrackedId.id.in_(claim.ids),
        TrackedId.lease_token == claim.token,
        TrackedId.next_poll_at > now,
    )


def _view(row: Row[Any] | Any) -> TrackedView:
    return TrackedView(*(row[: len(VIEW_COLUMNS)]))


def lock_leased(
    session: Session, token: str, ids: Sequence[int], *, live_at: datetime | None = None
) -> set[int]:
    """Which of `ids` are still leased to `token`, locked until the transaction
    ends; with `live_at`, only leases that have not expired by then."""
    return {id_ for id_, _ in lock_leases(session, [(id_, token) for id_ in ids], live_at=live_at)}


def lock_leases(
    session: Session, leases: Sequence[tuple[int, str]], *, live_at: datetime | None = None
) -> set[tuple[int, str]]:
    """Which (id, lease token) pairs still hold, locked until the transaction
    ends; with `live_at`, only leases that have not expired by then.

    Every write of a batch goes through this fence: a batch whose lease expired
    or was taken over (a newer claim, a webhook delivery) writes nothing. One
    statement for the batches of a write; only rows leased to one of them are
    locked.
    """
    if not leases:
        return set()
    ids = sorted({id_ for id_, _ in leases})
    tokens = sorted({token for _, token in leases})
    stmt = select(TrackedId.id, TrackedId.lease_token).where(
        TrackedId.id.in_(ids), TrackedId.lease_token.in_(tokens)
    )
    if live_at is not None:
        stmt = stmt.where(TrackedId.next_poll_at > live_at)
    wanted = set(leases)
    rows = session.execute(stmt.with_for_update())
    return {(id_, token) for id_, token in rows if token is not None and (id_, token) in wanted}


# Not archived, and no poll is going to archive them any more once the vendor
# has deleted the answer. Active ids get a grace period past their deadline (a
# poll may still be on its way, and the vendor's clock is not ours); the others
# are lost at the deadline.
_LOSABLE_STATES = (
    TrackedState.TRACKED,
    TrackedState.POLLING,
    TrackedState.ERROR,
    TrackedState.INVALID_PAYLOAD,
)


def record_losses(session: Session, settings: Settings, *, now: datetime | None = None) -> int:
    """Record as `expired` (lost) every id whose deadline passed before its
    answer was archived, whatever state it was left in; returns how many."""
    now = now or db_now(session)
    grace = now - timedelta(seconds=settings.loss_grace_seconds)
    lost = 0
    for state in _LOSABLE_STATES:
        cutoff = grace if state in ACTIVE_STATES else now
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]  # an UPDATE
            update(TrackedId)
            .where(
                TrackedId.state == state,
                TrackedId.deadline_at < cutoff,
                # Named, so the active ids are found through ix_tracked_ids_due.
                TrackedId.vendor.in_(tuple(Vendor)),
                # A batch still holding the id decides for itself.
                or_(TrackedId.lease_token.is_(None), TrackedId.next_poll_at <= now),
            )
            .values(
                state=TrackedState.EXPIRED,
                final_at=now,
                next_poll_at=now,
                lease_token=None,
                last_error=func.substr(
                    literal(f"lost: the deadline passed while {state.value}")
                    + func.coalesce(literal(": ") + TrackedId.last_error, literal("")),
                    1,
                    2000,
                ),
            )
            .execution_options(synchronize_session=False)
        )
        lost += result.rowcount or 0
    if lost:
        log.warning(
            "%d ids passed their deadline unarchived and are recorded as lost (expired)",
            lost,
            extra={"count": lost},
        )
    return lost


def write_states(session: Session, planned: Iterable[tuple[int, str, Mapping[str, Any]]]) -> None:
    """Each id's planned column values, for (id, lease token) pairs that still
    hold; one statement per set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for id_, token, values in planned:
        row = {**values, "b_id": id_, "b_token": token}
        groups.setdefault(tuple(sorted(values)), []).append(row)
    table = TrackedId.__table__
    dialect = session.get_bind().dialect
    for keys, rows in groups.items():
        if dialect.name == "postgresql":
            # One array per column (store.unnest_arrays): a statement per row costs
            # Postgres more than the rows, and the text stays the same for any count.
            params = array_params(session, _fenced(keys), rows)
            execute_arrays(session, _update_statement(keys, dialect), params)
            continue
        stmt = (
            update(table)
            .where(
                and_(table.c.id == bindparam("b_id"), table.c.lease_token == bindparam("b_token"))
            )
            .values({k: bindparam(k) for k in keys})
        )
        session.connection().execute(stmt, rows)


def _fenced(keys: tuple[str, ...]) -> tuple[ColumnClause[Any], ...]:
    """The columns of a state write: the fence (id and lease token, as b_id and
    b_token, since the write may set lease_token too), then the planned ones."""
    table = TrackedId.__table__
    fence = (column("b_id", table.c.id.type), column("b_token", table.c.lease_token.type))
    return (*fence, *(table.c[k] for k in keys))


@functools.cache
def _update_statement(keys: tuple[str, ...], dialect: Dialect) -> str:
    table = TrackedId.__table__
    quote = dialect.identifier_preparer.quote
    columns = _fenced(keys)  # the table's own columns only
    names = ", ".join(quote(name) for name in ("b_id", "b_token", *keys))
    assignments = ", ".join(f"{quote(k)} = planned.{quote(k)}" for k in keys)
    # Built from the table's own column names and types, never from input.
    return (
        f"UPDATE {table.name} SET {assignments}"  # noqa: S608
        f" FROM {unnest_arrays(dialect, columns)} AS planned({names})"
        f" WHERE {table.name}.id = planned.b_id AND {table.name}.lease_token = planned.b_token"
    )


def release(session: Session, token: str, ids: Sequence[int], *, due_at: datetime) -> None:
    """Give leased ids back unfetched, due again at `due_at`."""
    session.execute(
        update(TrackedId)
        .where(TrackedId.id.in_(ids), TrackedId.lease_token == token)
        .values(lease_token=None, next_poll_at=due_at)
        .execution_options(synchronize_session=False)
    )


def insert_new(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert ids not tracked yet (an id already tracked is left exactly as it
    is); returns how many were new."""
    if not rows:
        return 0
    table = TrackedId.__table__
    stmt = dialect_insert(session, table).on_conflict_do_nothing(
        index_elements=["vendor", "project_id", "external_id"]
    )
    return len(session.execute(stmt.returning(table.c.id), rows).all())


def take_over(
    session: Session,
    vendor: Vendor,
    external_id: str,
    *,
    unless: Sequence[TrackedState],
) -> tuple[str, TrackedView] | None:
    """Lease an id to the caller whatever batch holds it (that batch then finds
    its lease gone and writes nothing), unless it is in one of `unless`."""
    token = uuid.uuid4().hex
    row = session.execute(
        update(TrackedId)
        .where(
            TrackedId.vendor == vendor,
            TrackedId.project_id == "",
            TrackedId.external_id == external_id,
            TrackedId.state.not_in(unless),
        )
        .values(lease_token=token)
        .returning(*VIEW_COLUMNS)
        .execution_options(synchronize_session=False)
    ).first()
    return None if row is None else (token, _view(row))


def mark_webhook_archived(session: Session, id_: int, *, now: datetime) -> None:
    session.execute(update(TrackedId).where(TrackedId.id == id_).values(webhook_archived_at=now))


def requeue(session: Session, states: Sequence[TrackedState], vendor: Vendor | None) -> int:
    """Put ids in final `states` back in the poll queue, due now, counters reset."""
    stmt = (
        update(TrackedId)
        .where(TrackedId.state.in_(states))
        .values(
            state=TrackedState.POLLING,
            next_poll_at=utcnow(),
            lease_token=None,
            consecutive_errors=0,
            not_found_streak=0,
            invalid_payload_streak=0,
            final_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if vendor is not None:
        stmt = stmt.where(TrackedId.vendor == vendor)
    result: CursorResult[Any] = session.execute(stmt)  # type: ignore[assignment]  # an UPDATE
    return result.rowcount or 0


def next_due(session: Session) -> datetime | None:
    """When the next active id is due (or its lease ends)."""
    return session.scalar(
        select(func.min(TrackedId.next_poll_at)).where(TrackedId.state.in_(ACTIVE_STATES))
    )


def pending_by_vendor(session: Session) -> dict[Vendor, int]:
    """Ids not yet final, by vendor (vendors with none left out)."""
    rows = session.execute(
        select(TrackedId.vendor, func.count())
        .where(TrackedId.state.in_(ACTIVE_STATES))
        .group_by(TrackedId.vendor)
    )
    return dict(rows.tuples().all())


def active_vendors(session: Session) -> set[Vendor]:
    return set(
        session.scalars(
            select(TrackedId.vendor).where(TrackedId.state.in_(ACTIVE_STATES)).distinct()
        )
    )


def any_project(session: Session, vendor: Vendor) -> str | None:
    """A project this deployment tracks for `vendor`, if any."""
    project = session.scalar(
        select(TrackedId.project_id).where(TrackedId.vendor == vendor).limit(1)
    )
    return project or None
