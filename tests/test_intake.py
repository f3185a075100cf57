"""The intake service on a real uvicorn server over loopback: POST /v1/track with
its bearer token, signed (and tampered) MentionsAPI deliveries under both
documented schemes, /healthz and /readyz."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from models import (
    Ask,
    QuarantinedPayload,
    TrackedId,
    TrackedState,
    Vendor,
    WebhookDelivery,
)
from simulator import Dataset, serve_in_thread
from tests.expected import check_ask
from tests.helpers import MENTIONSYNC, archive_snapshot, cli
from tests.resources import intake_app, session_scope
from worker.vendors.mentionsapi.signatures import sign_hex, sign_v1

TOKEN = f"it_{secrets.token_hex(20)}"
SECRET = f"whsec_{secrets.token_hex(20)}"
SEED = 11
DATASET = Dataset(seed=SEED)


def ask_with_fate(fate: str, skip: int = 0) -> str:
    """The first simulator ask id (after `skip` of them) with the given fate."""
    found = [i for i in DATASET.ask_ids(400) if DATASET.fate("mentionsapi", i) == fate]
    return found[skip]


@pytest.fixture
def intake(configure: Callable[..., None]) -> Iterator[str]:
    configure(INTAKE_TOKEN=TOKEN, MENTIONSAPI_WEBHOOK_SECRET=SECRET)
    base_url, stop = serve_in_thread(intake_app(), "/healthz")
    yield base_url
    stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


def envelope_v1(ask_id: str, event_id: str | None = None) -> bytes:
    """Documentation version A: {id: evt_…, type, created_at, account_id, api_version, data}."""
    _, data = DATASET.final_response("mentionsapi", ask_id)
    return orjson.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(8)}",
            "type": "ask.completed",
            "created_at": datetime.now(UTC).isoformat(),
            "account_id": "acct_test",
            "api_version": "v1",
            "data": data,
        }
    )


def envelope_hex(ask_id: str, event_id: str | None = None) -> bytes:
    """Documentation version B: {id, type, created (unix), data}."""
    _, data = DATASET.final_response("mentionsapi", ask_id)
    return orjson.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(8)}",
            "type": "ask.completed",
            "created": int(time.time()),
            "data": data,
        }
    )


def headers_v1(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    event_id = orjson.loads(body).get("id", "")
    return {
        "MentionsAPI-Signature": sign_v1(secret, body, int(at if at is not None else time.time())),
        "MentionsAPI-Event-Id": event_id,
        "Content-Type": "application/json",
    }


def headers_hex(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return {
        "x-mentionsapi-signature": sign_hex(secret, body),
        "x-mentionsapi-timestamp": str(int(at if at is not None else time.time())),
        "x-mentionsapi-event": "ask.completed",
        # A new delivery id per attempt; the event id in the body stays the same.
        "x-mentionsapi-delivery-id": f"dlv_{secrets.token_hex(8)}",
        "Content-Type": "application/json",
    }


SCHEMES: dict[str, tuple[Callable[..., bytes], Callable[..., dict[str, str]]]] = {
    "v1": (envelope_v1, headers_v1),
    "hex": (envelope_hex, headers_hex),
}


def deliver(http: httpx.Client, base_url: str, body: bytes, headers: dict[str, str]) -> Any:
    return http.post(f"{base_url}/webhooks/mentionsapi", content=body, headers=headers)


def tracked(ask_id: str) -> TrackedId | None:
    with session_scope() as session:
        return session.scalar(select(TrackedId).where(TrackedId.external_id == ask_id))


def deliveries() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0


# --- health ---------------------------------------------------------------------------------


def test_healthz_and_readyz(
    intake: str, http: httpx.Client, configure: Callable[..., None]
) -> None:
    # The details are for the intake token's holder; anybody gets ok or not
    # (tests/test_scheduler.py checks that nothing else leaks).
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http.get(f"{intake}/healthz").json() == {"status": "ok"}
    assert http.get(f"{intake}/readyz").json() == {"ok": True}
    ready = http.get(f"{intake}/readyz", headers=auth)
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"] and checks["migrations"]["ok"]

    # The broker goes away: not ready, and the answer says which part failed.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    configure(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed}/0", INTAKE_TOKEN=TOKEN)
    assert http.get(f"{intake}/readyz").json() == {"ok": False}
    not_ready = http.get(f"{intake}/readyz", headers=auth)
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["checks"]["database"]["ok"] and not body["checks"]["broker"]["ok"]
    assert http.get(f"{intake}/healthz").status_code == 200  # liveness does not care

    # The database goes away too: both are named, and the password is not.
    configure(DATABASE_URL=f"postgresql+psycopg://postgres:hunter22@127.0.0.1:{closed}/x")
    not_ready = http.get(f"{intake}/readyz", headers=auth)
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert not body["checks"]["database"]["ok"] and not body["checks"]["broker"]["ok"]
    assert "hunter22" not in not_ready.text
    assert http.get(f"{intake}/healthz").status_code == 200


# --- POST /v1/track -------------------------------------------------------------------------


def test_track_needs_the_bearer_token(
    intake: str, http: httpx.Client, configure: Callable[..., None]
) -> None:
    body = {"vendor": "mentionsapi", "ids": ["ask_1"]}
    assert http.post(f"{intake}/v1/track", json=body).status_code == 401
    wrong = http.post(f"{intake}/v1/track", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    basic = http.post(f"{intake}/v1/track", json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert tracked("ask_1") is None

    ok = http.post(f"{intake}/v1/track", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["registered"] == 1

    configure(INTAKE_TOKEN="")  # an empty token is no token: refuse everything
    off = http.post(f"{intake}/v1/track", json=body, headers={"Authorization": "Bearer x"})
    assert off.status_code == 503 and "INTAKE_TOKEN" in off.json()["error"]


def test_track_validates_like_the_cli(intake: str, http: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    run = "3F1A7B2C-9D4E-4F6A-8B1C-2E5F7A9D0C11"
    body = [
        {"vendor": "mentionsapi", "ids": ["ask_a", "ask b", "", "ask/../x", "ask_a", "ask_c"]},
        {"vendor": "mentionlab", "project_id": "p1", "ids": [run, "not-a-uuid"]},
    ]
    response = http.post(f"{intake}/v1/track", json=body, headers=auth)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["registered"], report["already_tracked"], report["rejected"]) == (3, 1, 4)
    ma, ml = report["results"]
    assert [(r["where"], r["reason"]) for r in ma["rejected"]] == [
        ("ids[1]", "contains whitespace"),
        ("ids[2]", "empty id"),
        ("ids[3]", "contains '/', which is not allowed in an id"),
    ]
    assert ml["rejected"][0]["where"] == "ids[1]" and "not a UUID" in ml["rejected"][0]["reason"]
    with session_scope() as session:
        rows = session.execute(
            select(TrackedId.vendor, TrackedId.project_id, TrackedId.external_id).order_by(
                TrackedId.id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (Vendor.MENTIONSAPI, "", "ask_a"),
        (Vendor.MENTIONSAPI, "", "ask_c"),
        (Vendor.MENTIONLAB, "p1", run.lower()),  # canonical, as the CLI stores it
    ]

    # Idempotent, like `track`.
    again = http.post(f"{intake}/v1/track", json=body, headers=auth).json()
    assert (again["registered"], again["already_tracked"]) == (0, 4)

    # Request-level mistakes are 422 and register nothing.
    for bad, where in [
        ({"vendor": "mentionlab", "ids": [run]}, "project_id"),
        ({"vendor": "mentionsapi", "ids": ["ask_z"], "expect_webhooks": True}, "expect_webhooks"),
        ({"vendor": "nope", "ids": ["ask_z"]}, "vendor"),
        ({"vendor": "mentionsapi", "ids": ["ask_z"], "created_at": "tuesday"}, "created_at"),
        ({"vendor": "mentionsapi", "ids": [1]}, "ids[0]"),
        ({"vendor": "mentionsapi", "ids": []}, "ids"),
        (
            {"vendor": "mentionlab", "project_id": "p/1", "ids": [run]},
            "project id contains '/'",
        ),
    ]:
        refused = http.post(f"{intake}/v1/track", json=bad, headers=auth)
        assert refused.status_code == 422, (bad, refused.text)
        assert where in refused.json()["error"], refused.json()
    assert tracked("ask_z") is None


def test_track_sets_deadlines_and_the_webhook_grace(
    intake: str, http: httpx.Client, configure: Callable[..., None]
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = "2026-11-20T09:00:00Z"
    body = {"vendor": "mentionsapi", "ids": ["ask_w"], "expect_webhook": True}
    before = datetime.now(UTC)
    assert http.post(f"{intake}/v1/track", json=body, headers=auth).status_code == 200
    http.post(
        f"{intake}/v1/track",
        json={"vendor": "mentionsapi", "ids": ["ask_d"], "created_at": created},
        headers=auth,
    )
    row = tracked("ask_w")
    assert row is not None and row.expect_webhook and row.webhook_grace_until is not None
    assert row.next_poll_at == row.webhook_grace_until
    assert timedelta(seconds=899) < row.webhook_grace_until - before < timedelta(seconds=905)
    dated = tracked("ask_d")
    assert dated is not None and not dated.expect_webhook
    assert dated.deadline_at == datetime(2026, 12, 20, 9, tzinfo=UTC)


def test_track_refuses_a_body_over_the_cap(
    configure: Callable[..., None], http: httpx.Client
) -> None:
    configure(INTAKE_TOKEN=TOKEN, INTAKE_MAX_BODY_BYTES="2048")
    base_url, stop = serve_in_thread(intake_app(), "/healthz")
    try:
        body = {"vendor": "mentionsapi", "ids": [f"ask_{i:05d}" for i in range(500)]}
        response = http.post(
            f"{base_url}/v1/track", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 413
    finally:
        stop()
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(TrackedId)) == 0


# --- POST /webhooks/mentionsapi ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["v1", "hex"])
def test_a_signed_delivery_registers_and_archives_an_unknown_id(
    intake: str, http: httpx.Client, scheme: str
) -> None:
    build, sign = SCHEMES[scheme]
    ask_id = ask_with_fate("succeeded")
    body = build(ask_id)
    labels = {"vendor": "mentionsapi", "via": "webhook"}
    before = {name: sample(name, labels) for name in WEBHOOK_SERIES}

    response = deliver(http, intake, body, sign(body))

    assert response.status_code == 200, response.text
    assert response.json()["result"] == "archived" and response.json()["registered"] is True
    row = tracked(ask_id)
    assert row is not None and row.state is TrackedState.ARCHIVED
    assert row.expect_webhook and row.webhook_archived_at is not None
    assert row.last_http_status is None  # nothing was fetched
    with session_scope() as session:
        # The same rows polling would write, checked against the vendor's docs.
        check_ask(session, ask_id, orjson.loads(body)["data"])
        delivery = session.scalar(select(WebhookDelivery))
        assert delivery is not None
        assert (delivery.scheme, delivery.external_id, delivery.outcome) == (
            scheme,
            ask_id,
            "archived",
        )
    # The intake serves in this process: its counters are this registry's.
    delta = {name: sample(name, labels) - before[name] for name in WEBHOOK_SERIES}
    assert delta["mentionsync_archived_answers_total"] == 1
    assert delta["mentionsync_archive_lag_seconds_count"] == 1
    # Lag from the event's creation (just now, in whole seconds) to its archiving.
    assert 0 <= delta["mentionsync_archive_lag_seconds_sum"] < 5


WEBHOOK_SERIES = (
    "mentionsync_archived_answers_total",
    "mentionsync_archive_lag_seconds_count",
    "mentionsync_archive_lag_seconds_sum",
)


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("scheme", ["v1", "hex"])
def test_redeliveries_of_an_event_are_no_ops(intake: str, http: httpx.Client, scheme: str) -> None:
    build, sign = SCHEMES[scheme]
    ask_id = ask_with_fate("succeeded")
    body = build(ask_id, event_id="evt_same")
    assert deliver(http, intake, body, sign(body)).json()["result"] == "archived"
    archived = archive_snapshot()

    for _ in range(3):
        # Freshly signed, new delivery id: the same event all the same.
        again = deliver(http, intake, body, sign(body))
        assert again.status_code == 200 and again.json()["result"] == "duplicate"
    if scheme == "hex":
        # The plain scheme does not sign its timestamp: a captured delivery
        # replayed with a moved timestamp header still verifies. Its event id
        # is what makes it harmless.
        replay = sign(body)
        replay["x-mentionsapi-timestamp"] = str(int(time.time()) + 120)
        again = deliver(http, intake, body, replay)
        assert again.status_code == 200 and again.json()["result"] == "duplicate"
    assert archive_snapshot() == archived
    assert deliveries() == 1


def test_a_new_event_for_an_archived_id_is_a_no_op(
    intake: str, http: httpx.Client, sim: Callable[..., str]
) -> None:
    ask_id = ask_with_fate("succeeded")
    first = envelope_v1(ask_id)
    assert deliver(http, intake, first, headers_v1(first)).json()["result"] == "archived"
    archived = archive_snapshot()
    with session_scope() as session:
        fetched_at = session.scalar(select(Ask.fetched_at).where(Ask.ask_id == ask_id))

    # A second event (the vendor's own retry under a new id, or a replay of an
    # old one within the tolerance) changes nothing, not even fetched_at.
    second = envelope_hex(ask_id)
    response = deliver(http, intake, second, headers_hex(second))
    assert response.json()["result"] == "already_archived"
    assert archive_snapshot() == archived
    with session_scope() as session:
        assert session.scalar(select(Ask.fetched_at).where(Ask.ask_id == ask_id)) == fetched_at


@pytest.mark.parametrize(
    "given_up", [TrackedState.NOT_FOUND, TrackedState.ERROR, TrackedState.EXPIRED]
)
def test_a_delivery_archives_an_id_polling_gave_up_on(
    intake: str, http: httpx.Client, given_up: TrackedState
) -> None:
    ask_id = ask_with_fate("succeeded")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    track = {"vendor": "mentionsapi", "ids": [ask_id]}
    assert http.post(f"{intake}/v1/track", json=track, headers=auth).status_code == 200
    with session_scope() as session:
        session.execute(
            update(TrackedId)
            .where(TrackedId.external_id == ask_id)
            .values(state=given_up, final_at=datetime.now(UTC), last_error="given up")
        )

    body = envelope_hex(ask_id)
    response = deliver(http, intake, body, headers_hex(body))

    assert response.json()["result"] == "archived"
    row = tracked(ask_id)
    assert row is not None and row.state is TrackedState.ARCHIVED and row.last_error is None
    with session_scope() as session:
        check_ask(session, ask_id, orjson.loads(body)["data"])


def test_a_delivery_for_a_tracked_id_archives_it_and_it_is_never_polled(
    intake: str, http: httpx.Client, sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    base_url = sim(seed=SEED)
    ask_id, failed_id = ask_with_fate("succeeded"), ask_with_fate("failed")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    track = {"vendor": "mentionsapi", "ids": [ask_id, failed_id], "expect_webhook": True}
    assert http.post(f"{intake}/v1/track", json=track, headers=auth).json()["registered"] == 2

    for external_id in (ask_id, failed_id):
        body = envelope_v1(external_id)
        result = deliver(http, intake, body, headers_v1(body)).json()
        assert result["id"] == external_id and "registered" not in result

    ok, failed = tracked(ask_id), tracked(failed_id)
    assert ok is not None and ok.state is TrackedState.ARCHIVED
    assert failed is not None and failed.state is TrackedState.FAILED
    assert failed.last_error is not None and "vendor job failed" in failed.last_error
    # Polling finds nothing left to do: no request ever reaches the vendor.
    assert cli("sync", "--until-done", "--timeout", "20").returncode == 0
    assert http.get(f"{base_url}/_sim/requests").json() == {"mentionsapi": {}, "mentionlab": {}}


@pytest.mark.parametrize(
    "tamper",
    [
        "body_changed",
        "wrong_secret",
        "stale",
        "from_the_future",
        "unsigned",
        "hex_without_timestamp",
        "hex_body_changed",
        "malformed_header",
    ],
)
def test_tampered_or_stale_deliveries_are_refused(
    intake: str, http: httpx.Client, tamper: str
) -> None:
    ask_id = ask_with_fate("succeeded")
    body = envelope_v1(ask_id)
    now = time.time()
    expected = 401
    match tamper:
        case "body_changed":
            headers = headers_v1(body)
            body = body.replace(b'"succeeded"', b'"failed"', 1) if b'"succeeded"' in body else body
            body = body.replace(b'"acct_test"', b'"acct_evil"')
        case "wrong_secret":
            headers = headers_v1(body, secret="whsec_not_ours")
        case "stale":
            headers = headers_v1(body, at=now - 301)
        case "from_the_future":
            headers = headers_hex(body, at=now + 301)
        case "unsigned":
            headers = {"Content-Type": "application/json"}
        case "hex_without_timestamp":
            headers = headers_hex(body)
            del headers["x-mentionsapi-timestamp"]
        case "hex_body_changed":
            # The plain scheme signs the body alone: any change to it fails.
            headers = headers_hex(body)
            body = body.replace(b'"acct_test"', b'"acct_evil"')
        case "malformed_header":
            headers = {"MentionsAPI-Signature": "v1=abc", "Content-Type": "application/json"}
            expected = 400

    response = deliver(http, intake, body, headers)

    assert response.status_code == expected, response.text
    assert "error" in response.json()
    assert tracked(ask_id) is None
    assert deliveries() == 0


def test_either_scheme_accepts_a_rotated_secret(
    configure: Callable[..., None], http: httpx.Client
) -> None:
    configure(MENTIONSAPI_WEBHOOK_SECRET=f"whsec_new_{SECRET[6:]}, {SECRET}")
    base_url, stop = serve_in_thread(intake_app(), "/healthz")
    try:
        one, two = ask_with_fate("succeeded"), ask_with_fate("succeeded", skip=1)
        body = envelope_v1(one)
        assert deliver(http, base_url, body, headers_v1(body)).status_code == 200
        body = envelope_hex(two)
        headers = headers_hex(body, secret=f"whsec_new_{SECRET[6:]}")
        assert deliver(http, base_url, body, headers).status_code == 200
    finally:
        stop()
    assert deliveries() == 2


def test_without_a_secret_deliveries_are_refused(
    configure: Callable[..., None], http: httpx.Client
) -> None:
    configure(INTAKE_TOKEN=TOKEN)
    base_url, stop = serve_in_thread(intake_app(), "/healthz")
    try:
        body = envelope_v1(ask_with_fate("succeeded"))
        response = deliver(http, base_url, body, headers_v1(body))
    finally:
        stop()
    assert response.status_code == 503 and deliveries() == 0


def test_an_unarchivable_body_is_quarantined_and_left_to_polling(
    intake: str, http: httpx.Client
) -> None:
    ask_id = ask_with_fate("succeeded")
    doc = orjson.loads(envelope_v1(ask_id))
    doc["data"]["usage"] = {"latency_ms": "fast"}  # a wrong type: never guessed at
    body = orjson.dumps(doc)

    response = deliver(http, intake, body, headers_v1(body))

    assert response.status_code == 200 and response.json()["result"] == "quarantined"
    row = tracked(ask_id)
    assert row is not None and row.state is TrackedState.POLLING
    assert row.lease_token is None and row.webhook_archived_at is None
    with session_scope() as session:
        kept = session.scalar(select(QuarantinedPayload))
        assert kept is not None and kept.body == body and "latency_ms" in kept.reason
        assert session.scalar(select(func.count()).select_from(Ask)) == 0


def test_a_registered_delivery_takes_its_deadline_from_the_event(
    intake: str, http: httpx.Client
) -> None:
    # The vendor's 30 days run from the request: an event delivered late (or a
    # body left to polling) must not get 30 fresh days from our receipt.
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    ask_id = ask_with_fate("succeeded")
    doc = orjson.loads(envelope_v1(ask_id))
    doc["created_at"] = created.isoformat()
    doc["data"]["usage"] = {"latency_ms": "fast"}  # quarantined: left to polling
    body = orjson.dumps(doc)

    response = deliver(http, intake, body, headers_v1(body))

    assert response.status_code == 200 and response.json()["registered"] is True
    row = tracked(ask_id)
    assert row is not None and row.state is TrackedState.POLLING
    assert row.remote_created_at == created
    assert row.deadline_at == created + timedelta(days=30)


def test_unreadable_envelopes_and_other_events(intake: str, http: httpx.Client) -> None:
    for doc, status in [
        ({"id": "evt_1", "type": "ask.completed"}, 400),  # no data
        ({"id": "evt_2", "type": "ask.completed", "data": {"status": "succeeded"}}, 400),
        ({"id": "evt_3", "type": "ask.completed", "data": {"id": "ask/../x"}}, 400),
        ({"id": "evt_4", "type": "ask.created", "data": {"id": "ask_1"}}, 200),  # ignored
    ]:
        body = orjson.dumps(doc)
        response = deliver(http, intake, body, headers_v1(body))
        assert response.status_code == status, (doc, response.text)
    body = b"[not json"
    assert deliver(http, intake, body, headers_hex(body)).status_code == 400
    assert deliveries() == 0
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(TrackedId)) == 0


# --- the real command -------------------------------------------------------------------------


def test_mentionsync_serve_logs_json_lines_without_secrets(
    configure: Callable[..., None], http: httpx.Client
) -> None:
    configure(INTAKE_TOKEN=TOKEN, MENTIONSAPI_WEBHOOK_SECRET=SECRET, LOG_LEVEL="DEBUG")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [MENTIONSYNC, "--log-format", "json", "serve", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http.get(f"{base_url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        track = {"vendor": "mentionsapi", "ids": ["ask_1", "ask_2"]}
        assert http.post(f"{base_url}/v1/track", json=track, headers=auth).status_code == 200
        body = envelope_v1(ask_with_fate("succeeded"))
        assert deliver(http, base_url, body, headers_v1(body)).status_code == 200
        bad = deliver(http, base_url, body, headers_v1(body, secret=TOKEN))
        assert bad.status_code == 401
        metrics = http.get(f"{base_url}/metrics").text
        assert 'mentionsync_webhook_requests_total{result="archived",vendor="mentionsapi"} 1.0' in (
            metrics
        )
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert records, stderr
    lines = {r["message"].split(":")[0]: r for r in records if r["logger"] == "mentionsync.intake"}
    track_line = lines["track mentionsapi"]
    assert (track_line["vendor"], track_line["count"]) == ("mentionsapi", 2)
    assert isinstance(track_line["duration_s"], float)
    webhook_lines = [r for r in records if r["message"].startswith("webhook mentionsapi")]
    assert len(webhook_lines) == 2
    assert all({"vendor", "count", "duration_s"} <= set(r) for r in webhook_lines)
    assert TOKEN not in stderr and SECRET not in stderr
    assert TOKEN[3:20] not in stderr and SECRET[6:22] not in stderr
