"""Webhook-miss recovery: ids registered with expect_webhook are left unpolled for
the grace period; after it, polling archives those whose delivery never came, and
`status` and the metrics count them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from models import TrackedId, TrackedState, Vendor, utcnow
from simulator import Dataset
from tests.helpers import cli
from tests.resources import session_scope, suite_db, suite_runtime
from worker.config import load_settings
from worker.exporter import database_registry
from worker.intake.webhooks import apply_delivery, parse_envelope
from worker.poller import claim_batches, process_claim
from worker.registry import label_arguments, register
from worker.vendors.mentionsapi.spec import MENTIONSAPI

SEED = 13
DATASET = Dataset(seed=SEED)
GRACE = 6.0


def succeeded(n: int) -> list[str]:
    return [i for i in DATASET.ask_ids(200) if DATASET.fate("mentionsapi", i) == "succeeded"][:n]


def deliver_in_process(ask_id: str) -> str:
    _, data = DATASET.final_response("mentionsapi", ask_id)
    body = orjson.dumps({"id": f"evt_{ask_id}", "type": "ask.completed", "data": data})
    envelope = parse_envelope(MENTIONSAPI, body, {})
    assert envelope is not None
    with session_scope() as session:
        result = apply_delivery(
            session,
            MENTIONSAPI,
            envelope,
            body,
            scheme="v1",
            settings=load_settings(),
            now=utcnow(),
        )
    return result.result


def status_json() -> dict[str, Any]:
    result = cli("status", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def rows() -> dict[str, TrackedId]:
    with session_scope() as session:
        return {r.external_id: r for r in session.scalars(select(TrackedId))}


def test_expect_webhook_ids_are_polled_only_after_the_grace_period(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    base_url = sim(seed=SEED, max_pending_polls=0)
    configure(WEBHOOK_GRACE_SECONDS=str(GRACE))
    delivered, missed_1, missed_2, plain = succeeded(4)
    registered = utcnow()
    with session_scope() as session:
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments([delivered, missed_1, missed_2]),
            settings=load_settings(),
            expect_webhook=True,
        )
        register(session, Vendor.MENTIONSAPI, label_arguments([plain]), settings=load_settings())

    # Inside the grace period only the plain id is due.
    with session_scope() as session:
        claims, _ = claim_batches(session, suite_runtime(), now=utcnow())
    assert [len(c.ids) for c in claims] == [1]
    for claim in claims:
        process_claim(suite_runtime(), claim)
    status = status_json()
    assert status["webhooks"]["waiting"] == 3
    assert status["webhooks"]["recovered_by_poll"] == 0

    # One delivery comes in time.
    assert deliver_in_process(delivered) == "archived"
    assert (time.time() - registered.timestamp()) < GRACE, "the machine is too slow for GRACE"

    # Past the grace period, polling recovers the two whose delivery never came.
    grace_until = rows()[missed_1].webhook_grace_until
    assert grace_until is not None
    time.sleep(max(0.0, (grace_until - utcnow()).total_seconds()) + 0.2)
    result = cli("sync", "--until-done", "--timeout", "30")
    assert result.returncode == 0, result.stderr[-2000:]

    final = rows()
    assert {k: v.state for k, v in final.items()} == dict.fromkeys(
        (delivered, missed_1, missed_2, plain), TrackedState.ARCHIVED
    )
    assert final[delivered].webhook_archived_at is not None
    assert final[missed_1].webhook_archived_at is None
    requests = httpx.get(f"{base_url}/_sim/requests", timeout=10).json()["mentionsapi"]
    assert delivered not in requests  # the webhook settled it: never fetched
    for missed in (missed_1, missed_2):
        first_poll = min(requests[missed])
        assert first_poll >= grace_until.timestamp(), "polled inside the grace period"

    status = status_json()
    assert status["webhooks"]["waiting"] == 0
    assert status["webhooks"]["archived_by_webhook"] == 1
    assert status["webhooks"]["recovered_by_poll"] == 2
    assert sorted(i["external_id"] for i in status["webhooks"]["recovered_ids"]) == sorted(
        [missed_1, missed_2]
    )
    human = cli("status").stdout
    assert "2 recovered by polling" in human

    recovered = database_registry(load_settings(), suite_db()).get_sample_value(
        "mentionsync_webhook_recovered_by_poll_ids", {"vendor": "mentionsapi"}
    )
    assert recovered == 2


def test_the_grace_period_never_reaches_into_the_at_risk_window(
    configure: Callable[..., None],
) -> None:
    configure(WEBHOOK_GRACE_SECONDS="900", AT_RISK_HOURS="48")
    now = datetime.now(UTC)
    with session_scope() as session:
        settings = load_settings()
        # Created 29 days ago: one day left, already at risk: poll now.
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_old"]),
            settings=settings,
            created_at=now - timedelta(days=29),
            expect_webhook=True,
            now=now,
        )
        # 48 h and 5 min left: the grace is cut to 5 min.
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_close"]),
            settings=settings,
            created_at=now - timedelta(days=28, minutes=-5),
            expect_webhook=True,
            now=now,
        )
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_new"]),
            settings=settings,
            expect_webhook=True,
            now=now,
        )
    found = rows()
    assert found["ask_old"].next_poll_at == now
    assert found["ask_close"].next_poll_at == now + timedelta(minutes=5)
    assert found["ask_new"].next_poll_at == now + timedelta(seconds=900)
    assert found["ask_new"].webhook_grace_until == found["ask_new"].next_poll_at
