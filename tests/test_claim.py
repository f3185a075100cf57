"""The scheduler's claim: earliest deadline first, never the same id twice,
whatever the number of concurrent claimers."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from models import TrackedId, TrackedState, Vendor
from tests.resources import session_scope, suite_db, suite_runtime
from worker.config import load_settings
from worker.migrate import upgrade
from worker.poller import Claim, claim_batches, claim_due, grouped, in_flight
from worker.registry import label_arguments, register
from worker.resources import Runtime
from worker.scheduling import in_flight_capacity
from worker.tracking import leased_rows

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def _capacity(runtime: Runtime, vendor: Vendor) -> int:
    """Ids of `vendor` that may be in flight, by this runtime's view of its key."""
    return in_flight_capacity(runtime.settings, runtime.clients[vendor].limiter.budget)


def seed(n: int) -> None:
    with session_scope() as s:
        register(
            s,
            Vendor.MENTIONSAPI,
            label_arguments(f"ask_{i:05d}" for i in range(n)),
            settings=load_settings(),
            now=NOW - timedelta(minutes=1),
        )


def test_earliest_deadline_first_and_only_due_active_ids() -> None:
    seed(10)
    with session_scope() as s:
        # ask_00009 has the earliest deadline; ask_00008 is not due; ask_00007 is final.
        s.execute(
            update(TrackedId)
            .where(TrackedId.external_id == "ask_00009")
            .values(deadline_at=NOW + timedelta(days=1))
        )
        s.execute(
            update(TrackedId)
            .where(TrackedId.external_id == "ask_00008")
            .values(next_poll_at=NOW + timedelta(minutes=5), deadline_at=NOW)
        )
        s.execute(
            update(TrackedId)
            .where(TrackedId.external_id == "ask_00007")
            .values(state=TrackedState.ARCHIVED, deadline_at=NOW)
        )
    with session_scope() as s:
        claim = claim_due(s, Vendor.MENTIONSAPI, 1, now=NOW, settings=load_settings())
    assert claim is not None
    with session_scope() as s:
        first = s.get(TrackedId, claim.ids[0])
        assert first is not None
        assert first.external_id == "ask_00009"
        assert first.lease_token == claim.token
        assert first.next_poll_at == NOW + timedelta(seconds=load_settings().lease_seconds)
        assert in_flight(s, Vendor.MENTIONSAPI, NOW) == 1
        rest = claim_due(s, Vendor.MENTIONSAPI, 100, now=NOW, settings=load_settings())
    assert rest is not None
    assert len(rest.ids) == 7  # 10 - the claimed one - not due - final
    with session_scope() as s:
        assert claim_due(s, Vendor.MENTIONSAPI, 100, now=NOW, settings=load_settings()) is None
        # A lease that expires makes the id due again: a dead batch loses nothing.
        later = NOW + timedelta(seconds=load_settings().lease_seconds + 1)
        again = claim_due(s, Vendor.MENTIONSAPI, 100, now=later, settings=load_settings())
    assert again is not None
    assert len(again.ids) == 9


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_claim_lists_its_ids_earliest_deadline_first(
    backend: str, tmp_path: Path, configure: Callable[..., None]
) -> None:
    """The first batch split off a claim is the most urgent one, on both backends
    (Postgres orders inside the statement, SQLite after it)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'claim.db'}"
        upgrade("head", database_url=url)
        configure(DATABASE_URL=url)
    seed(200)
    deadlines = list(range(200))
    random.Random(7).shuffle(deadlines)
    with session_scope() as s:
        for i, days in enumerate(deadlines):
            s.execute(
                update(TrackedId)
                .where(TrackedId.external_id == f"ask_{i:05d}")
                .values(deadline_at=NOW + timedelta(days=1, minutes=days))
            )
    with session_scope() as s:
        claim = claim_due(s, Vendor.MENTIONSAPI, 150, now=NOW, settings=load_settings())
    assert claim is not None
    with session_scope() as s:
        order = dict(s.execute(select(TrackedId.id, TrackedId.deadline_at)).all())
    claimed = [order[i] for i in claim.ids]
    assert len(claimed) == 150
    assert claimed == sorted(order.values())[:150]


def test_concurrent_claimers_never_take_the_same_id() -> None:
    seed(3000)
    claimed: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def claimer() -> None:
        mine: list[int] = []
        try:
            barrier.wait()
            while True:
                with session_scope() as s:
                    claim = claim_due(s, Vendor.MENTIONSAPI, 37, now=NOW, settings=load_settings())
                if claim is None:
                    break
                mine.extend(claim.ids)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        claimed.append(mine)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    all_ids = [i for mine in claimed for i in mine]
    assert len(all_ids) == len(set(all_ids)) == 3000
    assert sum(1 for mine in claimed if mine) > 1  # the work really was shared


def test_claim_never_scans_the_archive(database: str) -> None:
    seed(2000)
    with session_scope() as s:
        s.execute(update(TrackedId).values(state=TrackedState.ARCHIVED))
        s.execute(update(TrackedId).where(TrackedId.id <= 20).values(state=TrackedState.POLLING))
    with suite_db().engine.connect() as conn:
        conn.execute(text("ANALYZE tracked_ids"))
        plan = "\n".join(
            conn.execute(
                text(
                    "EXPLAIN SELECT id FROM tracked_ids WHERE state IN ('tracked', 'polling') "
                    "AND next_poll_at <= now() AND vendor = 'mentionsapi' "
                    "ORDER BY deadline_at LIMIT 50 FOR UPDATE SKIP LOCKED"
                )
            ).scalars()
        )
    # Either index bounds the scan to active ids (the planner picks by cost at
    # this size); what must never happen is a scan of the whole archive.
    assert "Seq Scan" not in plan, plan
    assert "ix_tracked_ids_due" in plan or "ix_tracked_ids_vendor_state" in plan, plan
    with session_scope() as s:
        assert len(s.scalars(select(TrackedId.id)).all()) == 2000


def test_a_batch_loads_its_ids_by_key_not_through_the_due_index(database: str) -> None:
    # Statistics taken when few ids were active make the due index look cheap;
    # walking it costs every active id. The claimed ids are found by key.
    seed(20_000)
    with session_scope() as s:
        s.execute(update(TrackedId).values(state=TrackedState.ARCHIVED))
    with suite_db().engine.connect() as conn:
        conn.execute(text("ANALYZE tracked_ids"))
    with session_scope() as s:
        s.execute(update(TrackedId).values(state=TrackedState.POLLING))
    statement = leased_rows(Claim(Vendor.MENTIONSAPI, "t", list(range(1, 101))), NOW)
    with suite_db().engine.connect() as conn:
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        plan = "\n".join(conn.execute(text(f"EXPLAIN {compiled}")).scalars())
    assert "tracked_ids_pkey" in plan, plan
    assert "ix_tracked_ids_due" not in plan and "ix_tracked_ids_vendor_state" not in plan, plan


def test_claims_stop_at_what_the_rate_budget_fetches_in_half_a_lease(configure) -> None:  # type: ignore[no-untyped-def]
    # 2 requests/s (97 % of it aimed at) over half of a 300 s lease: 291 ids.
    configure(MENTIONSAPI_RATE_LIMIT="2", MENTIONSAPI_RATE_BURST="2", LEASE_SECONDS="300")
    seed(1000)
    with session_scope() as s:
        claims, waiting = claim_batches(s, suite_runtime(), now=NOW)
    assert waiting == {}
    assert sum(len(c.ids) for c in claims if c.vendor is Vendor.MENTIONSAPI) == 291
    with session_scope() as s:
        assert claim_batches(s, suite_runtime(), now=NOW)[0] == []  # still in flight


def test_a_process_that_does_not_know_the_budget_yet_still_claims_a_batch(
    configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process (a sync worker) holds more ids than the plan's safe default
    # allows in flight; this one has never heard from the key. Were it bound by
    # that default, it would never claim, so never learn the budget: one of the
    # two sync workers of a backfill sat idle so.
    monkeypatch.delenv("MENTIONSAPI_RATE_LIMIT")
    monkeypatch.delenv("MENTIONSAPI_RATE_BURST")
    configure(BATCH_SIZE="50", MAX_IN_FLIGHT="2000")
    seed(1000)
    settings = load_settings()
    with session_scope() as s:
        held = claim_due(s, Vendor.MENTIONSAPI, 600, now=NOW, settings=settings)
        assert held is not None and len(held.ids) == 600
    runtime = suite_runtime()
    assert not runtime.clients[Vendor.MENTIONSAPI].limiter.known
    assert _capacity(runtime, Vendor.MENTIONSAPI) < 600
    with session_scope() as s:
        claims, _ = claim_batches(s, runtime, now=NOW)
    assert sum(len(c.ids) for c in claims if c.vendor is Vendor.MENTIONSAPI) == 50

    # Once the budget is known, its capacity binds again.
    configure(BATCH_SIZE="50", MAX_IN_FLIGHT="2000", MENTIONSAPI_RATE_LIMIT="2")
    runtime = suite_runtime()
    assert runtime.clients[Vendor.MENTIONSAPI].limiter.known
    with session_scope() as s:
        claims, _ = claim_batches(s, runtime, now=NOW)
    assert [c for c in claims if c.vendor is Vendor.MENTIONSAPI] == []


def test_one_claim_per_tick_split_into_batches_earliest_deadline_first(configure) -> None:  # type: ignore[no-untyped-def]
    configure(BATCH_SIZE="40", MAX_IN_FLIGHT="100")
    seed(130)
    with session_scope() as s:
        # Deadlines run the opposite way to registration order: ask_00129 is most urgent.
        s.execute(
            text("UPDATE tracked_ids SET deadline_at = deadline_at - id * interval '1 minute'")
        )
    with session_scope() as s:
        claims, _ = claim_batches(s, suite_runtime(), now=NOW)
    assert [len(c.ids) for c in claims] == [40, 40, 20]  # MAX_IN_FLIGHT, in BATCH_SIZE pieces
    assert len({c.token for c in claims}) == 1
    with session_scope() as s:
        rows = s.execute(select(TrackedId.id, TrackedId.deadline_at, TrackedId.lease_token)).all()
    deadline = {r.id: r.deadline_at for r in rows}
    claimed = [i for c in claims for i in c.ids]
    assert claimed == sorted(claimed, key=lambda i: deadline[i])
    # The 100 most urgent ids, and no other id, carry the lease.
    assert set(claimed) == set(sorted(deadline, key=deadline.__getitem__)[:100])
    assert sum(1 for r in rows if r.lease_token is not None) == 100


def test_a_sweep_sends_every_vendor_in_each_message_in_proportion() -> None:
    # A worker process takes its next message only once it needs more, and cannot
    # choose the vendor: each message carries a share of every vendor's batches.
    ma = [Claim(Vendor.MENTIONSAPI, "t", [i]) for i in range(6)]
    ml = [Claim(Vendor.MENTIONLAB, "t", [100 + i]) for i in range(2)]

    messages = grouped([*ma, *ml])

    assert [[c.vendor for c in m] for m in messages] == [
        [Vendor.MENTIONSAPI, Vendor.MENTIONLAB],
        [Vendor.MENTIONSAPI],
        [Vendor.MENTIONSAPI],
        [Vendor.MENTIONSAPI, Vendor.MENTIONLAB],
        [Vendor.MENTIONSAPI],
        [Vendor.MENTIONSAPI],
    ]
    # Each vendor's batches keep their order (earliest deadline first).
    assert [c for m in messages for c in m if c.vendor is Vendor.MENTIONSAPI] == ma
    assert [c for m in messages for c in m if c.vendor is Vendor.MENTIONLAB] == ml
    assert grouped([]) == []
    # Shifted, a vendor with fewer batches lands anywhere along its stride, in order.
    lone = [Claim(Vendor.MENTIONLAB, "t", [100])]
    where = {
        next(i for i, m in enumerate(grouped([*ma, *lone], shift)) if len(m) == 2)
        for shift in (0.0, 0.2, 0.5, 0.9, 0.999)
    }
    assert where == {0, 1, 3, 5}
    for shift in (0.3, 0.7, 0.999):
        shifted = grouped([*ma, *ml], shift)
        assert [c for m in shifted for c in m if c.vendor is Vendor.MENTIONLAB] == ml
        assert [c for m in shifted for c in m if c.vendor is Vendor.MENTIONSAPI] == ma
        assert all(len(m) >= 1 for m in shifted) and len(shifted) == 6


def test_a_batch_is_a_few_round_trips_of_a_process_places(configure) -> None:  # type: ignore[no-untyped-def]
    # Few large batches cannot be spread evenly over the processes fetching them.
    configure(BATCH_SIZE="100", FETCH_CONCURRENCY="8", MAX_IN_FLIGHT="1000")
    seed(100)
    with session_scope() as s:
        claims, _ = claim_batches(s, suite_runtime(), now=NOW)
    assert [len(c.ids) for c in claims] == [32, 32, 32, 4]


@pytest.mark.parametrize("rate", [1, 5, 20, 60, 500])  # MentionsAPI's documented plans
def test_default_ticks_claim_faster_than_any_plan_can_fetch(
    rate: int, configure: Callable[..., None]
) -> None:
    """Sync speed is the vendor's rate limit, never the scheduler's: with the
    default tick and in-flight cap, one tick per POLL_TICK_SECONDS claims more
    than the key may fetch in that time."""
    configure(
        POLL_TICK_SECONDS="",  # the defaults, not the suite's fast ticks
        MAX_IN_FLIGHT="",
        LEASE_SECONDS="",
        MENTIONSAPI_RATE_LIMIT=str(rate),
        MENTIONSAPI_RATE_BURST=str(rate * 2),
    )
    settings = load_settings()
    assert _capacity(suite_runtime(), Vendor.MENTIONSAPI) / settings.poll_tick_seconds >= rate
