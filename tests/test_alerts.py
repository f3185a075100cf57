"""Alerts before answers expire, and when the scheduler stalls: sent to a real HTTP
receiver on loopback, rate-limited across processes through the database, retried
when sending failed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import delete, select, text, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models import (
    AlertState,
    SchedulerHeartbeat,
    TrackedId,
    TrackedState,
    Vendor,
    WebhookDelivery,
)
from simulator import serve_in_thread
from tests.resources import session_scope
from worker.alerts import check_alerts, prune_deliveries
from worker.config import load_settings
from worker.logs import RedactingFilter, secrets_of
from worker.registry import label_arguments, register
from worker.schedule import HOUSEKEEPING_TASK, beat_schedule
from worker.status import collect_status, gauge_values, render_status

HOOK_TOKEN = "T000/B000/alert-token-5b1f9c"


@dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def receiver(configure: Callable[..., None]) -> Iterator[Receiver]:
    state = Receiver(url="")

    async def hook(request: Request) -> Response:
        if request.path_params["token"] != HOOK_TOKEN.replace("/", "-"):
            return Response(status_code=404)
        if state.status == 200:
            state.received.append(await request.json())
        return JSONResponse({}, status_code=state.status)

    async def health(request: Request) -> Response:
        return Response("ok")

    app = Starlette(
        routes=[
            Route("/hook/{token}", hook, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    base_url, stop = serve_in_thread(app, "/health")
    state.url = f"{base_url}/hook/{HOOK_TOKEN.replace('/', '-')}"
    configure(ALERT_WEBHOOK_URL=state.url, ALERT_INTERVAL_SECONDS="3600", AT_RISK_HOURS="48")
    yield state
    stop()


NOW = datetime.now(UTC).replace(microsecond=0)


def track(*ids: str, created_at: datetime | None = None) -> None:
    with session_scope() as session:
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(ids),
            settings=load_settings(),
            created_at=created_at,
            now=NOW,
        )


def expire(*ids: str) -> None:
    with session_scope() as session:
        session.execute(
            update(TrackedId)
            .where(TrackedId.external_id.in_(ids))
            .values(state=TrackedState.EXPIRED, final_at=NOW, last_http_status=410)
        )


def test_ids_at_risk_alert_once_per_interval(receiver: Receiver) -> None:
    track("ask_risky", created_at=NOW - timedelta(days=29))
    track("ask_fine")
    settings = load_settings()

    sent = check_alerts(session_scope, settings, now=NOW)

    assert [a["kind"] for a in sent] == ["at_risk"]
    (alert,) = receiver.received
    assert alert["source"] == "mentionsync" and alert["count"] == 1
    assert [i["external_id"] for i in alert["ids"]] == ["ask_risky"]
    assert "within 48 h" in alert["text"]  # chat webhooks show `text`

    # Not every tick: nothing until the interval has passed, then again.
    for minutes in (1, 10, 59):
        assert check_alerts(session_scope, settings, now=NOW + timedelta(minutes=minutes)) == []
    assert len(receiver.received) == 1
    assert [
        a["kind"] for a in check_alerts(session_scope, settings, now=NOW + timedelta(minutes=61))
    ] == ["at_risk"]
    assert len(receiver.received) == 2


def test_only_new_losses_alert(receiver: Receiver) -> None:
    track("ask_a", "ask_b", "ask_c")
    settings = load_settings()
    assert check_alerts(session_scope, settings, now=NOW) == []  # nothing lost, nothing at risk

    expire("ask_a")
    (alert,) = check_alerts(session_scope, settings, now=NOW + timedelta(minutes=1))
    assert (alert["kind"], alert["severity"], alert["count"], alert["new"]) == (
        "lost_to_expiry",
        "critical",
        1,
        1,
    )
    assert alert["ids"][0]["external_id"] == "ask_a"

    # The same loss is not news, however long it stays.
    assert check_alerts(session_scope, settings, now=NOW + timedelta(hours=5)) == []

    # A new loss inside the interval waits for it; then it is reported with its count.
    expire("ask_b")
    assert check_alerts(session_scope, settings, now=NOW + timedelta(minutes=30)) == []
    (later,) = check_alerts(session_scope, settings, now=NOW + timedelta(minutes=62))
    assert (later["count"], later["new"]) == (2, 1)
    assert len(receiver.received) == 2


def test_a_failed_send_is_tried_again_at_the_next_check(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    track("ask_risky", created_at=NOW - timedelta(days=29))
    settings = load_settings()
    receiver.status = 500
    with caplog.at_level(logging.ERROR, logger="mentionsync.alerts"):
        assert check_alerts(session_scope, settings, now=NOW) == []
    assert "could not send the at_risk alert: HTTP 500" in caplog.text

    receiver.status = 200
    assert len(check_alerts(session_scope, settings, now=NOW + timedelta(minutes=1))) == 1
    assert len(receiver.received) == 1


def test_two_beats_checking_at_once_send_one_alert(receiver: Receiver) -> None:
    track("ask_risky", created_at=NOW - timedelta(days=29))
    settings = load_settings()
    results: list[int] = []
    start = threading.Barrier(4)

    def beat() -> None:
        start.wait()
        results.append(len(check_alerts(session_scope, settings, now=NOW)))

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 0, 0, 1]
    assert len(receiver.received) == 1


def test_without_a_url_nothing_is_sent(configure: Callable[..., None]) -> None:
    track("ask_risky", created_at=NOW - timedelta(days=29))
    assert check_alerts(session_scope, load_settings(), now=NOW) == []


def test_the_alert_url_is_a_secret_in_logs(receiver: Receiver) -> None:
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP Request: POST %s 500", (receiver.url,), None
    )
    RedactingFilter(secrets_of(load_settings())).filter(record)
    assert HOOK_TOKEN.replace("/", "-") not in record.getMessage()
    assert "[REDACTED]" in record.getMessage()


def test_beat_runs_housekeeping_which_forgets_old_webhook_events() -> None:
    schedule = beat_schedule(load_settings())
    assert schedule["housekeeping"]["task"] == HOUSEKEEPING_TASK
    from worker.tasks import app, housekeeping

    assert app.tasks[HOUSEKEEPING_TASK].name == housekeeping.name == HOUSEKEEPING_TASK

    with session_scope() as session:
        for event, age in (("evt_old", 31), ("evt_new", 29)):
            session.add(
                WebhookDelivery(
                    vendor="mentionsapi",
                    event_id=event,
                    scheme="v1",
                    outcome="archived",
                    received_at=NOW - timedelta(days=age),
                )
            )
    assert prune_deliveries(session_scope, load_settings(), now=NOW) == 1
    with session_scope() as session:
        assert session.scalars(select(WebhookDelivery.event_id)).all() == ["evt_new"]


def test_at_risk_counts_what_can_still_be_saved(receiver: Receiver) -> None:
    """Near its deadline, an id polling gave up on (error, invalid_payload) is at
    risk too: `mentionsync retry` can still save it. Archived, expired and
    not_found ids are not, and neither is an id far from its deadline."""
    states = {
        "ask_polling": TrackedState.POLLING,
        "ask_error": TrackedState.ERROR,
        "ask_invalid_payload": TrackedState.INVALID_PAYLOAD,
        "ask_archived": TrackedState.ARCHIVED,
        "ask_expired": TrackedState.EXPIRED,
        "ask_not_found": TrackedState.NOT_FOUND,
    }
    track(*states, created_at=NOW - timedelta(days=29))
    track("ask_far_error")
    with session_scope() as session:
        for external_id, state in [*states.items(), ("ask_far_error", TrackedState.ERROR)]:
            session.execute(
                update(TrackedId).where(TrackedId.external_id == external_id).values(state=state)
            )
    settings = load_settings()
    at_risk = {"ask_polling", "ask_error", "ask_invalid_payload"}

    with session_scope() as session:
        report = collect_status(session, settings, NOW)
        gauges = gauge_values(session, settings, NOW)
    assert report["at_risk"]["count"] == 3
    assert {i["external_id"] for i in report["at_risk"]["ids"]} == at_risk
    assert {labels["vendor"]: n for labels, n in gauges["at_risk_ids"]} == {
        "mentionsapi": 3,
        "mentionlab": 0,
    }
    out = Console(width=200, record=True)
    render_status(report, out)
    shown = out.export_text()
    assert "at risk (deadline within 48 h, not archived): 3" in shown
    assert "ask_error deadline" in shown and "(error: retry it)" in shown

    alert = next(
        a for a in check_alerts(session_scope, settings, now=NOW) if a["kind"] == "at_risk"
    )
    assert alert["count"] == 3
    assert {i["external_id"] for i in alert["ids"]} == at_risk


def stale_beat(dispatch_ago: float | None, tick_ago: float = 1.0) -> None:
    """One beat's heartbeat row, aged by the database's own clock."""
    with session_scope() as session:
        session.execute(delete(SchedulerHeartbeat))
        session.execute(
            text(
                "INSERT INTO scheduler_heartbeats VALUES ('beat-host:7',"
                " now() - make_interval(secs => :t + 600), now() - make_interval(secs => :t),"
                " now() - make_interval(secs => :d))"
            ),
            {"t": tick_ago, "d": dispatch_ago},
        )


def test_a_stalled_scheduler_alerts_once_until_it_recovers(
    receiver: Receiver, configure: Callable[..., None]
) -> None:
    configure(SCHEDULER_STALL_SECONDS="45")
    settings = load_settings()
    stale_beat(dispatch_ago=100)

    (alert,) = check_alerts(session_scope, settings, now=NOW)
    assert (alert["kind"], alert["severity"], alert["count"], alert["ids"]) == (
        "scheduler_stalled",
        "warning",  # beat ticks: its sweeps wait for a worker
        0,
        [],
    )
    assert 100 <= alert["age_seconds"] < 110 and alert["stall_seconds"] == 45
    assert "no dispatch sweep for 10" in alert["text"]
    # Beat ticks, so the text points at the workers, not at beat.
    assert "beat ticked 1 s ago but its sweeps do not run" in alert["text"]
    # While it lasts: once per interval, however many checks (or watchdogs) run.
    assert check_alerts(session_scope, settings, now=NOW + timedelta(minutes=10)) == []
    assert (
        check_alerts(
            session_scope, settings, now=NOW + timedelta(minutes=10), kinds={"scheduler_stalled"}
        )
        == []
    )

    # A worker that just started does not count this stall yet, but must not
    # take it for a recovery either.
    with session_scope() as session:
        just_now = session.scalar(text("SELECT now()"))
    young = check_alerts(
        session_scope,
        settings,
        now=NOW + timedelta(minutes=10),
        kinds={"scheduler_stalled"},
        since=just_now,
    )
    assert young == []
    with session_scope() as session:
        assert session.get(AlertState, "scheduler_stalled").last_sent_at is not None

    # Sweeps run again: one recovery notice, and the slot is free again...
    stale_beat(dispatch_ago=0.5)
    (recovered,) = check_alerts(session_scope, settings, now=NOW + timedelta(minutes=11))
    assert recovered["kind"] == "scheduler_recovered" and recovered["severity"] == "info"
    assert "after a stall of at least 10" in recovered["text"]
    assert check_alerts(session_scope, settings, now=NOW + timedelta(minutes=12)) == []
    # ...so the next stall alerts at once, not an interval after the first.
    stale_beat(dispatch_ago=60, tick_ago=60)
    (again,) = check_alerts(session_scope, settings, now=NOW + timedelta(minutes=13))
    assert again["kind"] == "scheduler_stalled" and "beat is stopped or hung" in again["text"]
    assert again["severity"] == "critical"
    assert [a["kind"] for a in receiver.received] == [
        "scheduler_stalled",
        "scheduler_recovered",
        "scheduler_stalled",
    ]


def test_two_watchdogs_send_one_stall_alert(receiver: Receiver) -> None:
    stale_beat(dispatch_ago=300)
    settings = load_settings()
    results: list[int] = []
    start = threading.Barrier(4)

    def watchdog() -> None:
        start.wait()
        results.append(
            len(check_alerts(session_scope, settings, now=NOW, kinds={"scheduler_stalled"}))
        )

    threads = [threading.Thread(target=watchdog) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 0, 0, 1]
    assert [a["kind"] for a in receiver.received] == ["scheduler_stalled"]


def test_no_heartbeat_is_no_stall_unless_someone_watched_long_enough(
    receiver: Receiver,
) -> None:
    settings = load_settings()
    # Housekeeping comes from a beat, so an empty table says nothing yet.
    assert check_alerts(session_scope, settings, now=NOW, kinds={"scheduler_stalled"}) == []
    # A watchdog that has watched for longer than the stall time says it.
    with session_scope() as session:
        db_now = session.scalar(text("SELECT now()"))
    (alert,) = check_alerts(
        session_scope,
        settings,
        now=NOW,
        kinds={"scheduler_stalled"},
        since=db_now - timedelta(seconds=settings.scheduler_stall_seconds + 5),
    )
    assert "no dispatch sweep recorded in" in alert["text"]
    assert "no beat has recorded a tick" in alert["text"]
    # And not before: a worker starting after a pause gives beat its time.
    stale_beat(dispatch_ago=3600)
    with session_scope() as session:
        session.execute(update(AlertState).values(last_sent_at=None))
    assert (
        check_alerts(session_scope, settings, now=NOW, kinds={"scheduler_stalled"}, since=db_now)
        == []
    )


def test_housekeeping_forgets_beats_gone_for_a_day() -> None:
    stale_beat(dispatch_ago=None, tick_ago=2 * 86400)
    with session_scope() as session:
        session.execute(
            text("INSERT INTO scheduler_heartbeats VALUES ('beat-host:8', now(), now(), NULL)")
        )
    from worker.tasks import housekeeping

    housekeeping()
    with session_scope() as session:
        assert session.scalars(select(SchedulerHeartbeat.instance)).all() == ["beat-host:8"]
