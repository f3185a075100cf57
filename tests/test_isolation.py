"""Faults stay with the id they concern (issue 11).

No exception from one id's request, body, plan or write fails its batch; a
refused MentionLab project stops only its own ids; every write is fenced by the
batch's lease; claims run on the database's clock; and every id that passed its
deadline unarchived is counted as lost. Real Postgres and Redis, the scripted
vendor on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

import worker.pipeline as pipeline
import worker.vendors.mentionsapi.spec as mentionsapi_client
import worker.writing as writing
from models import Ask, JobExecution, TrackedId, TrackedState, Vendor, VendorAccount, utcnow
from tests.fixtures.bodies import ask_body, dumps, run_body, run_id
from tests.helpers import cli
from tests.resources import session_scope, suite_db, suite_runtime
from tests.vendor_stub import Reply, VendorStub
from worker.config import load_settings
from worker.poller import (
    claim_batches,
    fetch_all,
    load_claim,
    process_claim,
    record_losses,
    write_outcomes,
)
from worker.ratelimit import pause_seconds, retry_after_seconds
from worker.registry import label_arguments, register
from worker.tracking import claim_due
from worker.vendors.base import Target

PROJECT_OK = "proj-ok"
PROJECT_BAD = "proj-revoked"
FORBIDDEN = b'{"statusCode":403,"message":"Forbidden resource","error":"Forbidden"}'


def _register(vendor: Vendor, ids: list[str], project: str = "") -> None:
    with session_scope() as session:
        result = register(
            session, vendor, label_arguments(ids), settings=load_settings(), project_id=project
        )
        assert result.added == len(ids), result.rejected


def _row(vendor: Vendor, external_id: str) -> TrackedId:
    with session_scope() as session:
        row = session.scalars(
            select(TrackedId).where(
                TrackedId.vendor == vendor, TrackedId.external_id == external_id
            )
        ).one()
        session.expunge(row)
        return row


def _asks(stub: VendorStub, ids: list[str]) -> None:
    for ask_id in ids:
        stub.script(Vendor.MENTIONSAPI, ask_id, Reply(dumps(ask_body(ask_id))))
    _register(Vendor.MENTIONSAPI, ids)


def _archived_asks() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(Ask.ask_id)))


def _one_round() -> int:
    """Claim what is due and process it in this process, as a worker would."""
    with session_scope() as session:
        claims, _ = claim_batches(session, suite_runtime())
    for claim in claims:
        process_claim(suite_runtime(), claim)
    return sum(len(c.ids) for c in claims)


def _sync(timeout: float = 60) -> Any:
    result = cli("sync", "--until-done", "--timeout", str(timeout), timeout=timeout + 30)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


@pytest.fixture
def fail_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str, str], None]:
    """Make one function of ours raise for one id only: the faults no real body
    produces today, but tomorrow's bug might."""

    def install(module: Any, name: str, external_id: str) -> None:
        original = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            text = repr(args) + repr(kwargs)
            if external_id in text:
                raise ZeroDivisionError(f"injected fault for {external_id}")
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    return install


# --- one id's fault is that id's outcome -------------------------------------------


def test_an_id_no_request_can_carry_is_rejected_alone(stub: VendorStub) -> None:
    good = [f"ask_ok_{i}" for i in range(3)]
    _asks(stub, good)
    for i in range(2):
        stub.script(Vendor.MENTIONLAB, run_id(i), Reply(dumps(run_body(run_id(i)))))
    _register(Vendor.MENTIONLAB, [run_id(0), run_id(1)], PROJECT_OK)
    # Registered before `track` refused such project ids: the header cannot carry it.
    with session_scope() as session:
        session.execute(
            update(TrackedId)
            .where(TrackedId.external_id == run_id(1))
            .values(project_id="projé-ünïcode")
        )

    result = _sync()

    assert result.returncode == 0, result.stderr[-3000:]
    bad = _row(Vendor.MENTIONLAB, run_id(1))
    assert bad.state is TrackedState.INVALID
    assert bad.last_error is not None and "cannot request this id" in bad.last_error
    assert "UnicodeEncodeError" in bad.last_error
    assert _archived_asks() == set(good)
    assert _row(Vendor.MENTIONLAB, run_id(0)).state is TrackedState.ARCHIVED
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(VendorAccount)) == 0


@pytest.mark.parametrize(
    ("vendor", "external_id", "project"),
    [
        (Vendor.MENTIONSAPI, "ask_plain", ""),
        (Vendor.MENTIONSAPI, "ask with spaces/and%25percent~é", ""),
        (Vendor.MENTIONLAB, run_id(3), PROJECT_OK),
        (Vendor.MENTIONLAB, run_id(4), "another-project"),
    ],
)
def test_the_pipeline_sends_the_request_httpx_builds(
    vendor: Vendor, external_id: str, project: str
) -> None:
    """`aget` asks httpx once per header set, not per request: what it sends is
    still what httpx builds and checks, for every id."""
    client = suite_runtime().clients[vendor]
    target = Target(vendor, external_id, project)
    for _ in range(2):  # the first builds through httpx, the second from what it kept
        url, headers = client.async_request(target)
        request = client.request(client.http, target)
        assert str(url) == str(request.url)
        sent = {k.lower(): v for k, v in headers}
        assert sent == {
            k.lower(): v for k, v in request.headers.items() if k.lower() not in ("host",)
        }


def test_a_header_no_request_can_carry_is_refused_every_time() -> None:
    client = suite_runtime().clients[Vendor.MENTIONLAB]
    target = Target(Vendor.MENTIONLAB, run_id(5), "projé-ünïcode")
    for _ in range(2):
        with pytest.raises(UnicodeEncodeError):
            client.async_request(target)


def test_an_unexpected_error_reading_one_body_quarantines_only_that_id(
    stub: VendorStub, fail_for: Callable[[Any, str, str], None]
) -> None:
    ids = ["ask_a", "ask_boom", "ask_b"]
    _asks(stub, ids)
    fail_for(mentionsapi_client, "normalize_ask", "ask_boom")

    _one_round()

    assert _archived_asks() == {"ask_a", "ask_b"}
    row = _row(Vendor.MENTIONSAPI, "ask_boom")
    assert row.state is TrackedState.POLLING and row.invalid_payload_streak == 1
    assert row.last_error is not None and "ZeroDivisionError" in row.last_error


def test_an_unexpected_error_planning_one_id_retries_only_that_id(
    stub: VendorStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["ask_a", "ask_plan", "ask_b"]
    _asks(stub, ids)
    original_plan = writing.plan

    def plan(view: Any, outcome: Any, **kwargs: Any) -> Any:
        if view.external_id == "ask_plan" and outcome.answer is not None:
            raise OverflowError("date value out of range")
        return original_plan(view, outcome, **kwargs)

    monkeypatch.setattr(writing, "plan", plan)
    _one_round()

    assert _archived_asks() == {"ask_a", "ask_b"}
    row = _row(Vendor.MENTIONSAPI, "ask_plan")
    assert row.state is TrackedState.POLLING and row.consecutive_errors == 1
    assert row.lease_token is None
    assert row.last_error is not None and "internal error: OverflowError" in row.last_error


def test_an_unexpected_error_writing_one_answer_quarantines_only_that_id(
    stub: VendorStub, fail_for: Callable[[Any, str, str], None]
) -> None:
    ids = ["ask_a", "ask_write", "ask_b"]
    _asks(stub, ids)
    fail_for(writing, "upsert_answers", "ask_write")

    _one_round()

    assert _archived_asks() == {"ask_a", "ask_b"}
    row = _row(Vendor.MENTIONSAPI, "ask_write")
    assert row.state is TrackedState.POLLING and row.invalid_payload_streak == 1
    assert row.last_error is not None and "cannot be stored: ZeroDivisionError" in row.last_error


# --- bounded waits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1e12", 300.0),
        ("inf", 300.0),
        ("nan", 0.0),
        ("-5", 0.0),
        ("7", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past
        ("Fri, 31 Dec 9999 23:59:59 GMT", 300.0),
        ("soon", None),
    ],
)
def test_retry_after_is_clamped(header: str, expected: float | None) -> None:
    headers = httpx.Headers({"Retry-After": header})
    assert retry_after_seconds(headers, 300.0) == expected
    assert pause_seconds(429, headers, 0.0, 300.0) == (1.0 if expected is None else expected)
    reset = httpx.Headers({"X-RateLimit-Reset": "1e15"})
    assert pause_seconds(429, reset, 1000.0, 300.0) == 300.0


def test_a_huge_retry_after_pauses_the_key_only_up_to_the_cap(
    stub: VendorStub, configure: Callable[..., None]
) -> None:
    configure(MAX_RETRY_AFTER_SECONDS="1")
    throttled = Reply(
        b'{"error": {"code": "rate_limited", "message": "slow down"}}',
        status=429,
        headers=(("Retry-After", "1e12"),),
    )
    stub.script(Vendor.MENTIONSAPI, "ask_429", throttled, Reply(dumps(ask_body("ask_429"))))
    _register(Vendor.MENTIONSAPI, ["ask_429"])
    others = [f"ask_after_{i}" for i in range(3)]

    started = time.monotonic()
    result = _sync(timeout=40)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _archived_asks() == {"ask_429"}
    with session_scope() as session:
        account = session.scalars(select(VendorAccount)).one()
        assert account.paused_until is not None
        assert account.paused_until - account.updated_at <= timedelta(seconds=1)

    # The shared Redis budget was paused by the same capped amount: a new run
    # fetches new ids straight away.
    _asks(stub, others)
    result = _sync(timeout=40)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _archived_asks() == {"ask_429", *others}
    assert time.monotonic() - started < 60


def test_a_dripping_vendor_is_cut_off_at_the_request_deadline(
    stub: VendorStub, configure: Callable[..., None]
) -> None:
    configure(HTTP_REQUEST_DEADLINE="1.5", HTTP_READ_TIMEOUT="2")
    body = dumps(ask_body("ask_drip"))
    stub.script(Vendor.MENTIONSAPI, "ask_drip", Reply(body, drip_seconds=0.2))
    client = suite_runtime().clients[Vendor.MENTIONSAPI]

    started = time.monotonic()
    raw = client.get(Target(Vendor.MENTIONSAPI, "ask_drip"))
    elapsed = time.monotonic() - started

    assert raw.status is None
    assert raw.error is not None and "RequestDeadlineExceeded" in raw.error
    # The deadline plus at most one read: not the body's len(body) * 0.2 s.
    assert elapsed < 1.5 + 2 + 0.5, elapsed
    assert len(body) * 0.2 > 30


# --- errors scoped to what failed --------------------------------------------------


def test_a_refused_mentionlab_project_stops_only_its_own_ids(
    stub: VendorStub, configure: Callable[..., None]
) -> None:
    configure(MAX_ATTEMPTS="3")
    good = [run_id(i) for i in range(4)]
    bad = [run_id(100 + i) for i in range(3)]
    for job in good:
        stub.script(Vendor.MENTIONLAB, job, Reply(dumps(run_body(job))))
    for job in bad:
        stub.script(Vendor.MENTIONLAB, job, Reply(FORBIDDEN, status=403))
    _register(Vendor.MENTIONLAB, bad, PROJECT_BAD)
    _register(Vendor.MENTIONLAB, good, PROJECT_OK)

    result = _sync()

    assert result.returncode == 0, result.stderr[-3000:]
    with session_scope() as session:
        archived = set(session.scalars(select(JobExecution.job_execution_id)))
        # The key was never paused: other projects' ids went on.
        assert session.scalar(select(func.count()).select_from(VendorAccount)) == 0
    assert archived == set(good)
    for job in bad:
        row = _row(Vendor.MENTIONLAB, job)
        assert row.state is TrackedState.ERROR, row.last_error
        assert row.attempts == 3
        assert row.last_error is not None
        assert "Forbidden resource" in row.last_error and PROJECT_BAD in row.last_error
        assert len(stub.requests(Vendor.MENTIONLAB, job)) == 3
    # `status` names the refused project, and only that one.
    report = orjson.loads(cli("status", "--json").stdout)["refused_projects"]
    assert [(p["project_id"], p["ids"], p["states"]) for p in report] == [
        (PROJECT_BAD, 3, {"error": 3})
    ]
    shown = cli("status").stdout
    assert f"mentionlab project {PROJECT_BAD} refused (403): 3 ids (3 error)" in shown
    assert PROJECT_OK not in shown


def test_a_refused_key_is_rechecked_with_different_ids(
    stub: VendorStub, configure: Callable[..., None]
) -> None:
    configure(AUTH_RECHECK_SECONDS="0.05")
    refused = Reply(b'{"error": {"code": "unauthorized", "message": "bad key"}}', status=401)
    ids = [f"ask_{i}" for i in range(5)]
    for ask_id in ids:
        stub.script(Vendor.MENTIONSAPI, ask_id, refused)
    _register(Vendor.MENTIONSAPI, ids)

    for _ in range(8):
        _one_round()
        time.sleep(0.1)

    asked = {s.external_id for s in stub.served}
    # The first batch sends one request and pauses; every re-check after it
    # tries the id polled longest ago, not the earliest deadline over and over.
    assert len(asked) >= 4, asked
    assert all(_row(Vendor.MENTIONSAPI, i).attempts == 0 for i in ids)


# --- every write fenced by the lease ------------------------------------------------


def test_a_batch_that_lost_its_lease_writes_nothing(stub: VendorStub) -> None:
    ids = ["ask_kept", "ask_taken", "ask_lapsed"]
    _asks(stub, ids)
    settings = load_settings()
    with session_scope() as session:
        (claim,) = claim_batches(session, suite_runtime())[0]
        views, _, _ = load_claim(session, claim)
    outcomes = fetch_all(suite_runtime(), Vendor.MENTIONSAPI, views, send_within=10)

    # While the answers were in flight: one id was claimed again by another
    # batch (or taken over by a webhook delivery), another one's lease ran out.
    with session_scope() as session:
        session.execute(
            update(TrackedId)
            .where(TrackedId.external_id == "ask_taken")
            .values(lease_token="another-batch")
        )
        session.execute(
            update(TrackedId)
            .where(TrackedId.external_id == "ask_lapsed")
            .values(next_poll_at=func.now() - timedelta(seconds=1))
        )

    write_outcomes(suite_db(), settings, claim, views, outcomes)

    assert _archived_asks() == {"ask_kept"}
    taken = _row(Vendor.MENTIONSAPI, "ask_taken")
    assert taken.lease_token == "another-batch" and taken.attempts == 0
    lapsed = _row(Vendor.MENTIONSAPI, "ask_lapsed")
    assert lapsed.lease_token == claim.token and lapsed.attempts == 0


def test_batches_written_together_each_keep_to_their_own_leases(stub: VendorStub) -> None:
    """The writer puts the answers of several batches in one transaction: each
    id is still fenced by its own batch's lease, not by any lease of the write."""
    ids = ["ask_a1", "ask_a2", "ask_b1", "ask_b2"]
    _asks(stub, ids)
    settings = load_settings()
    with session_scope() as session:
        first = claim_due(session, Vendor.MENTIONSAPI, 2, settings=settings)
        second = claim_due(session, Vendor.MENTIONSAPI, 2, settings=settings)
    assert first is not None and second is not None
    parts = []
    with session_scope() as session:
        for claim in (first, second):
            views, _, _ = load_claim(session, claim)
            outcomes = fetch_all(suite_runtime(), Vendor.MENTIONSAPI, views, send_within=10)
            parts.append(writing.Part(claim, views, outcomes))
    # One id of the first batch was claimed again meanwhile, by the second batch's
    # claim: the lease held is one the write knows, but not this id's batch's.
    moved = parts[0].views[1]
    with session_scope() as session:
        session.execute(
            update(TrackedId).where(TrackedId.id == moved.id).values(lease_token=second.token)
        )

    with session_scope() as session:
        counts = writing.apply_parts(session, settings, parts)

    kept = {v.external_id for part in parts for v in part.views} - {moved.external_id}
    assert _archived_asks() == kept
    assert counts[0] > 0 and counts[1] > 0
    with session_scope() as session:
        rows = {r.external_id: r for r in session.scalars(select(TrackedId))}
    assert rows[moved.external_id].lease_token == second.token
    assert rows[moved.external_id].state is TrackedState.TRACKED
    assert all(rows[i].state is TrackedState.ARCHIVED for i in kept)


def test_claims_and_leases_use_the_database_clock(
    stub: VendorStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    _asks(stub, ["ask_soon"])
    with session_scope() as session:
        session.execute(update(TrackedId).values(next_poll_at=func.now() + timedelta(minutes=2)))
    # This host's clock runs five minutes ahead of the database's.
    ahead = utcnow() + timedelta(minutes=5)
    monkeypatch.setattr(pipeline, "utcnow", lambda: ahead)
    settings = load_settings()

    with session_scope() as session:
        assert claim_batches(session, suite_runtime())[0] == []
        session.execute(update(TrackedId).values(next_poll_at=func.now()))
    with session_scope() as session:
        claims, _ = claim_batches(session, suite_runtime())
        db_now = session.scalar(select(func.now()))
    assert [len(c.ids) for c in claims] == [1]
    lease = _row(Vendor.MENTIONSAPI, "ask_soon").next_poll_at
    assert abs((lease - db_now).total_seconds() - settings.lease_seconds) < 5


# --- every loss counted --------------------------------------------------------------


def test_ids_past_their_deadline_are_recorded_lost_whatever_their_state(
    stub: VendorStub,
) -> None:
    settings = load_settings()
    grace = settings.loss_grace_seconds
    cases = {
        "ask_error": (TrackedState.ERROR, timedelta(minutes=-1), True),
        "ask_invalid": (TrackedState.INVALID_PAYLOAD, timedelta(minutes=-1), True),
        "ask_stuck": (
            TrackedState.POLLING,
            -timedelta(seconds=grace + 60),
            True,
        ),
        "ask_just_late": (TrackedState.POLLING, timedelta(minutes=-1), False),
        "ask_fine": (TrackedState.ERROR, timedelta(days=1), False),
        "ask_archived": (TrackedState.ARCHIVED, timedelta(days=-2), False),
    }
    _register(Vendor.MENTIONSAPI, list(cases))
    with session_scope() as session:
        for ask_id, (state, offset, _) in cases.items():
            session.execute(
                update(TrackedId)
                .where(TrackedId.external_id == ask_id)
                .values(state=state, deadline_at=func.now() + offset, last_error="HTTP 500")
            )
    with session_scope() as session:
        assert record_losses(session, settings) == 3

    for ask_id, (state, _, lost) in cases.items():
        row = _row(Vendor.MENTIONSAPI, ask_id)
        if lost:
            assert row.state is TrackedState.EXPIRED, ask_id
            assert row.final_at is not None
            assert row.last_error == f"lost: the deadline passed while {state.value}: HTTP 500"
        else:
            assert row.state is state, ask_id


def test_a_404_past_the_deadline_is_a_loss(stub: VendorStub) -> None:
    stub.script(
        Vendor.MENTIONSAPI,
        "ask_gone",
        Reply(b'{"error": {"code": "not_found", "message": "no such id"}}', status=404),
    )
    _register(Vendor.MENTIONSAPI, ["ask_gone"])  # no --created-at: deadline from registration
    with session_scope() as session:
        session.execute(update(TrackedId).values(deadline_at=func.now() - timedelta(minutes=5)))

    _one_round()

    row = _row(Vendor.MENTIONSAPI, "ask_gone")
    assert row.state is TrackedState.EXPIRED
    assert len(stub.requests(Vendor.MENTIONSAPI, "ask_gone")) == 1
