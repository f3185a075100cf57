"""Bad input is refused where it comes in, with a message naming it:

- project ids outside printable ASCII (they travel in the `x-project-id` header)
  and creation times outside the registry's range, at `mentionsync track` and
  `POST /v1/track` alike (worker/registry.py holds the rules);
- auth and signature headers with any bytes at all get a 401, never a 500:
  checked on the real `mentionsync serve` over loopback, with raw non-ASCII
  header bytes.
"""

from __future__ import annotations

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
from sqlalchemy import func, select

from models import TrackedId, Vendor, WebhookDelivery
from simulator import Dataset
from tests.helpers import MENTIONSYNC, cli
from tests.resources import intake_app, session_scope
from worker.config import load_settings
from worker.intake.webhooks import created_in_range
from worker.registry import (
    InvalidId,
    InvalidTimestamp,
    label_arguments,
    register,
    validate_created_at,
    validate_project_id,
)
from worker.vendors.mentionsapi.signatures import sign_hex, sign_v1
from worker.vendors.mentionsapi.webhooks import created_at

TOKEN = f"it_{secrets.token_hex(20)}"
SECRET = f"whsec_{secrets.token_hex(20)}"
RUN = "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(TrackedId)) or 0


# --- the rules (worker/registry.py) -----------------------------------------------------------


@pytest.mark.parametrize("value", ["café", "项目", "\uff50roj", "proj\u00ff", "pr\u0131"])
def test_project_ids_must_be_printable_ascii(value: str) -> None:
    with pytest.raises(
        InvalidId, match=r"project id contains U\+[0-9A-F]{4}; only printable ASCII"
    ):
        validate_project_id(value)


def test_good_project_ids_pass_unchanged() -> None:
    for value in ("proj-1", "5f0c2a9e", "P_1.2~x", "a" * 256):
        assert validate_project_id(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "before 2000-01-01"),
        (datetime(1970, 1, 1, tzinfo=UTC), "before 2000-01-01"),
        (NOW + timedelta(days=1, seconds=1), "more than 24 h in the future"),
        (datetime(2999, 1, 1, tzinfo=UTC), "in the future"),
        (datetime(2026, 11, 22), "timezone offset"),
        # Converting these to UTC leaves datetime's range.
        (datetime.fromisoformat("0001-01-01T00:00:00+01:00"), "out of range"),
        (datetime.fromisoformat("9999-12-31T23:00:00-05:00"), "out of range"),
    ],
)
def test_creation_times_outside_the_range_are_refused(value: datetime, reason: str) -> None:
    with pytest.raises(InvalidTimestamp, match=reason):
        validate_created_at(value, now=NOW)


def test_creation_times_inside_the_range_come_back_in_utc() -> None:
    assert validate_created_at(datetime(2000, 1, 1, tzinfo=UTC), now=NOW) == datetime(
        2000, 1, 1, tzinfo=UTC
    )
    ahead = NOW + timedelta(hours=23)
    assert validate_created_at(ahead, now=NOW) == ahead
    offset = datetime.fromisoformat("2026-11-22T09:00:00-03:00")
    assert validate_created_at(offset, now=NOW) == datetime(2026, 11, 22, 12, tzinfo=UTC)


def test_register_refuses_what_its_callers_should_have_refused() -> None:
    with session_scope() as session, pytest.raises(InvalidTimestamp):
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_1"]),
            settings=load_settings(),
            created_at=datetime(9999, 12, 31, tzinfo=UTC),
        )
    with session_scope() as session, pytest.raises(InvalidId):
        register(
            session,
            Vendor.MENTIONLAB,
            label_arguments([RUN]),
            settings=load_settings(),
            project_id="café",
        )
    assert count() == 0


def _created(doc: dict[str, Any]) -> datetime | None:
    """A delivery's creation time as the intake keeps it."""
    return created_in_range(created_at(doc))


def test_a_webhook_creation_time_out_of_range_is_ignored_not_refused() -> None:
    # It only feeds the archive-lag metric; a signed answer is still archived.
    assert _created({"created_at": "1970-01-01T00:00:00Z"}) is None
    assert _created({"created": 32503680000}) is None  # the year 3000
    assert _created({"created_at": "9999-12-31T23:59:59-05:00"}) is None
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    assert _created({"created": int(recent.timestamp())}) == recent
    assert _created({"created_at": recent.isoformat()}) == recent


# --- mentionsync track ----------------------------------------------------------------------


def test_track_refuses_a_non_ascii_project_id() -> None:
    result = cli("track", "mentionlab", "--project", "café", RUN)
    assert result.returncode == 2, result.stderr
    assert "--project" in result.stderr
    assert "'café': project id contains U+00E9; only printable ASCII is allowed" in result.stderr
    assert count() == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1970-01-01T00:00:00Z", "is before 2000-01-01"),
        ("2999-01-01", "in the future"),
        ("9999-12-31T23:59:59", "in the future"),  # its deadline would overflow
        ("0001-01-01T00:00:00+01:00", "out of range"),
    ],
)
def test_track_refuses_a_creation_time_out_of_range(value: str, reason: str) -> None:
    result = cli("track", "mentionsapi", "ask_1", "--created-at", value)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--created-at" in result.stderr and repr(value) in result.stderr
    assert reason in result.stderr
    assert count() == 0


def test_track_with_a_good_creation_time_still_names_bad_lines() -> None:
    created = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    result = cli(
        "track", "mentionlab", "--project", "p-1", RUN, "nope", "--created-at", created.isoformat()
    )
    assert result.returncode == 1, result.stderr
    assert "argument 2: 'nope': not a UUID" in result.stderr
    with session_scope() as session:
        row = session.scalars(select(TrackedId)).one()
    assert (row.project_id, row.remote_created_at) == ("p-1", created)


# --- POST /v1/track ----------------------------------------------------------------------------


@pytest.fixture
def intake(configure: Callable[..., None]) -> Iterator[str]:
    from simulator import serve_in_thread

    configure(INTAKE_TOKEN=TOKEN, MENTIONSAPI_WEBHOOK_SECRET=SECRET)
    base_url, stop = serve_in_thread(intake_app(), "/healthz")
    yield base_url
    stop()


@pytest.mark.parametrize(
    ("group", "error"),
    [
        (
            {"vendor": "mentionlab", "project_id": "café", "ids": [RUN]},
            "[0].project_id: project id contains U+00E9; only printable ASCII is allowed",
        ),
        (
            {"vendor": "mentionsapi", "ids": ["ask_1"], "created_at": "1970-01-01T00:00:00Z"},
            "[0].created_at: 1970-01-01T00:00:00+00:00 is before 2000-01-01, the earliest "
            "creation time accepted",
        ),
        (
            {"vendor": "mentionsapi", "ids": ["ask_1"], "created_at": "2999-01-01T00:00:00Z"},
            "[0].created_at: 2999-01-01T00:00:00+00:00 is more than 24 h in the future",
        ),
        (
            # Accepted before, then its deadline overflowed: a 500.
            {"vendor": "mentionsapi", "ids": ["ask_1"], "created_at": "9999-12-31T23:59:59Z"},
            "[0].created_at: 9999-12-31T23:59:59+00:00 is more than 24 h in the future",
        ),
        (
            {"vendor": "mentionsapi", "ids": ["ask_1"], "created_at": "2026-11-22T09:00:00"},
            "[0].created_at: give a timezone offset (e.g. Z)",
        ),
    ],
)
def test_api_refuses_what_track_refuses(intake: str, group: dict[str, object], error: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=30, trust_env=False) as http:
        response = http.post(f"{intake}/v1/track", json=group, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json() == {"error": error}
        # With a good group in front: the request is refused whole.
        both = [{"vendor": "mentionsapi", "ids": ["ask_ok"]}, group]
        response = http.post(f"{intake}/v1/track", json=both, headers=auth)
        assert response.status_code == 422, response.text
        assert response.json()["error"].startswith("[1].")
    assert count() == 0


# --- any bytes in auth and signature headers: the real server ------------------------------


@pytest.fixture
def server(configure: Callable[..., None]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`mentionsync serve` as deployed (uvicorn, httptools), on a loopback port."""
    configure(INTAKE_TOKEN=TOKEN, MENTIONSAPI_WEBHOOK_SECRET=SECRET)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [MENTIONSYNC, "serve", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1, trust_env=False) as http:
            while True:
                try:
                    if http.get(f"{base_url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield base_url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    return stderr


BEARERS = [
    b"Bearer \xff\xfe\xfd",
    b"Bearer " + TOKEN.encode() + b"\xe9",
    "Bearer tökén".encode(),
    b"\xc3\xa9 " + TOKEN.encode(),
    b"Bearer \x80" + TOKEN.encode()[1:],
]


def test_non_ascii_bearer_tokens_are_401(server: tuple[str, subprocess.Popen[str]]) -> None:
    base_url, process = server
    body = orjson.dumps({"vendor": "mentionsapi", "ids": ["ask_1"]})
    with httpx.Client(timeout=30, trust_env=False) as http:
        for value in BEARERS:
            response = http.post(
                f"{base_url}/v1/track",
                content=body,
                headers=[(b"Authorization", value), (b"Content-Type", b"application/json")],
            )
            assert response.status_code == 401, (value, response.text)
            assert response.json() == {"error": "missing or wrong bearer token"}
        ok = http.post(
            f"{base_url}/v1/track", content=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 200, ok.text
    stderr = _stop(process)
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    assert count() == 1


def _delivery() -> bytes:
    ask_id = next(
        i
        for i in Dataset(seed=11).ask_ids(50)
        if Dataset(seed=11).fate("mentionsapi", i) == "succeeded"
    )
    _, data = Dataset(seed=11).final_response("mentionsapi", ask_id)
    return orjson.dumps(
        {"id": f"evt_{secrets.token_hex(8)}", "type": "ask.completed", "data": data}
    )


def test_non_ascii_signature_headers_are_401(server: tuple[str, subprocess.Popen[str]]) -> None:
    base_url, process = server
    body = _delivery()
    now = str(int(time.time()))
    good_v1 = sign_v1(SECRET, body, int(now)).encode()
    good_hex = sign_hex(SECRET, body).encode()
    cases: list[list[tuple[bytes, bytes]]] = [
        [(b"MentionsAPI-Signature", b"t=" + now.encode() + b",v1=\xff\xfe")],
        [(b"MentionsAPI-Signature", good_v1[:-1] + b"\xe9")],
        [(b"MentionsAPI-Signature", good_v1 + b",v1=" + "é".encode() * 32)],
        # Latin-1 superscript digits: str.isdigit() says yes, float() says no.
        [(b"MentionsAPI-Signature", b"t=\xb2\xb3,v1=" + b"a" * 64)],
        [
            (b"x-mentionsapi-signature", good_hex[:-2] + b"\xc3\xa9"),
            (b"x-mentionsapi-timestamp", now.encode()),
        ],
        [(b"x-mentionsapi-signature", good_hex), (b"x-mentionsapi-timestamp", b"\xb9\xb2\xb3")],
        [
            (b"x-mentionsapi-signature", b"sha256=" + b"\xff" * 64),
            (b"x-mentionsapi-timestamp", now.encode()),
        ],
    ]
    with httpx.Client(timeout=30, trust_env=False) as http:
        for headers in cases:
            response = http.post(
                f"{base_url}/webhooks/mentionsapi",
                content=body,
                headers=[*headers, (b"Content-Type", b"application/json")],
            )
            assert response.status_code == 401, (headers, response.text)
            assert "error" in response.json()
        # A "nan" timestamp passed every freshness check: refused as malformed.
        response = http.post(
            f"{base_url}/webhooks/mentionsapi",
            content=body,
            headers={
                "x-mentionsapi-signature": good_hex.decode(),
                "x-mentionsapi-timestamp": "nan",
            },
        )
        assert response.status_code == 400, response.text
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        # Id headers carrying any bytes are not ids: the delivery still counts, once.
        headers = [
            (b"MentionsAPI-Signature", good_v1),
            (b"MentionsAPI-Event-Id", b"evt_\xff\xfe"),
            (b"x-mentionsapi-delivery-id", b"dlv_\xe9"),
        ]
        response = http.post(f"{base_url}/webhooks/mentionsapi", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "archived"
    stderr = _stop(process)
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    with session_scope() as session:
        (delivery,) = session.scalars(select(WebhookDelivery)).all()
        assert delivery.event_id == orjson.loads(body)["id"] and delivery.delivery_id is None


def test_an_unforeseen_error_is_one_line_unless_log_level_debug_asks(configure) -> None:  # type: ignore[no-untyped-def]
    configure(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:9/nowhere", LOG_LEVEL="INFO")
    result = cli("status")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Error: OperationalError: " in result.stderr and "port 9" in result.stderr
    # The option wins over the environment, as for every other setting.
    result = cli("--log-level", "DEBUG", "status")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "OperationalError" in result.stderr
