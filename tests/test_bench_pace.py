"""The parts of the pace and backfill scenarios that decide their verdicts: the
steady-window rate, the baselines' id order, and the exactness check (which must
catch a row that differs from the simulator's payload)."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from bench.naive import interleaved
from bench.vendorpace import (
    MENTIONLAB,
    MENTIONSAPI,
    Sample,
    check_exact,
    split,
    truth_rows,
    vendor_figures,
)

ANCHOR = "2026-11-23T12:00:00+00:00"
SEED = 5


def sample(t: float, ok_ma: int, ok_ml: int, limited: int = 0) -> Sample:
    return Sample(
        t=t,
        ok={MENTIONSAPI: ok_ma, MENTIONLAB: ok_ml},
        answered={MENTIONSAPI: ok_ma + limited, MENTIONLAB: ok_ml},
        limited={MENTIONSAPI: limited, MENTIONLAB: 0},
        in_flight=0,
        max_in_flight=0,
        rss_mb={},
    )


def test_steady_window_leaves_out_both_edges() -> None:
    # MentionsAPI: a slow start (10/s for 2 s), then 100/s from t=2 to t=12, drained at 12.
    samples = [sample(0.0, 0, 0)]
    samples += [sample(float(t), 10 * t, 0) for t in (1, 2)]
    samples += [sample(float(t), 20 + 100 * (t - 2), 0) for t in range(3, 13)]
    samples += [sample(13.0, 1020, 0, limited=10)]
    f = vendor_figures(samples, MENTIONSAPI, end=13.0, drained_at=12.0)
    # First answer at t=1 (sampled), drained at 12: the window is 2.1-10.9 s.
    assert f.window == (1 + 0.1 * 11, 12 - 0.1 * 11)
    assert abs(f.ok_per_second - 100.0) < 1e-6
    assert (f.limited, f.answered) == (10, 1030)
    assert abs(f.share_429 - 100 * 10 / 1030) < 1e-9
    # A vendor never answered: zero, not an error.
    assert vendor_figures(samples, MENTIONLAB, end=13.0, drained_at=None).ok_per_second == 0.0


def test_split_and_interleave_follow_the_limits() -> None:
    assert split(36_000) == (30_000, 6_000) and split(100_000) == (83_333, 16_667)
    order = interleaved([f"a{i}" for i in range(10)], [("p", f"e{i}") for i in range(2)])
    vendors = [v for v, _, _ in order]
    assert len(order) == 12 and vendors.count(MENTIONLAB) == 2
    # Both vendors early on, not all asks first.
    assert MENTIONLAB in vendors[:6]


def test_exactness_check_catches_a_row_that_differs(database: str) -> None:
    from bench.harness import final_ask_ids, final_execution_ids
    from bench.vendorpace import register
    from tests.resources import session_scope
    from worker.store import upsert_answers

    register(database, SEED, 6, 3)
    asks = final_ask_ids(SEED, 6)
    executions = final_execution_ids(SEED, 3)
    answers = list(truth_rows(SEED, ANCHOR, asks, executions))
    with session_scope() as session:
        upsert_answers(session, answers)
    engine = create_engine(database)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE tracked_ids SET state = 'archived'"))
        assert check_exact(database, SEED, ANCHOR).differing == []
        assert check_exact(database, SEED, ANCHOR).ids == 9
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE asks SET raw_payload = raw_payload || '{\"x\": 1}'::jsonb "
                    "WHERE ask_id = :id"
                ),
                {"id": asks[0]},
            )
        differing = check_exact(database, SEED, ANCHOR).differing
        assert len(differing) == 1 and differing[0].startswith("asks:")
    finally:
        engine.dispose()
