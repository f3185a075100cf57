"""Issue 11's hostile inputs, served by the simulator's poison mode over loopback,
through the real `mentionsync track` and `mentionsync sync --until-done`.

1,000 ordinary ids (500 asks, 500 job executions) share the run with PER_VENDOR ids
of every poison kind for each vendor (MentionLab only for forbidden_project, whose ids
are tracked under a project the vendor refuses). What each kind must end as:

- nul, wide_int, deep: archived, rows equal to the served payload (U+0000 deleted:
  tests/expected.py).
- ts_min, ts_max: archived exactly (a MentionLab timestamp Python cannot hold may be
  stored NULL), or invalid_payload with a reason naming the field.
- retry_after: archived exactly, after two 429s with `Retry-After: 1e12` (clamped).
- gzip2: invalid_payload, quarantined as too large (or its stacked encoding refused),
  nothing larger than MAX_RESPONSE_BYTES stored.
- key_echo: archived, with the key in no stored column of any table and in no output;
  the rows are the payload with the key replaced by the worker's redaction marker.
- drip: error or invalid_payload.
- forbidden_project: final, with a last error mentioning 403/forbidden, while the other
  projects' ids archive as usual.

Every id must be final within a bounded number of requests (the simulator's request
counts); the ordinary ids exactly as in test_sync_cli (no fetch once final).
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models import (
    FINAL_STATES,
    Ask,
    JobExecution,
    QuarantinedPayload,
    TrackedId,
    TrackedState,
    Vendor,
    metadata,
)
from simulator import Dataset
from simulator.dataset import KEY_PLACEHOLDER, POISON_KINDS, TS_MAX, TS_MIN
from tests.conftest import BASE_ENV
from tests.expected import STATE_OF_FATE, check_ask, check_execution
from tests.helpers import cli
from tests.resources import session_scope, suite_db
from worker.config import load_settings

SEED = 11
PER_VENDOR = 2
DRIP_SECONDS = 0.5
RETRY_AFTER_COUNT = 2
FORBIDDEN_PROJECT = "7e0b5a52-3c1d-4f0e-9a6b-2d8c4e1f3a90"
MA, ML = Vendor.MENTIONSAPI, Vendor.MENTIONLAB
KEYS = (BASE_ENV["MENTIONSAPI_API_KEY"], BASE_ENV["MENTIONLAB_API_KEY"])
WORKER_ENV = {
    "MAX_ATTEMPTS": "3",
    # Per read: a drip (a byte every DRIP_SECONDS) never trips it, which is the point.
    "HTTP_READ_TIMEOUT": "2",
    # The fixes' own settings, small so that the test stays fast.
    "HTTP_REQUEST_DEADLINE": "3",  # whole-request deadline (drip)
    "MAX_RETRY_AFTER_SECONDS": "1",  # clamp on a vendor's Retry-After (retry_after)
    # gzip2's bomb inflates to 4x this: as hostile, and cheap enough for the
    # simulator to build within HTTP_REQUEST_DEADLINE on a loaded machine.
    "MAX_RESPONSE_BYTES": str(4 * 1024 * 1024),
}
BOMB_BYTES = 16 * 1024 * 1024
# All of them; a subset is handy while the fixes land one by one.
KINDS: tuple[str, ...] = POISON_KINDS
ARCHIVED_KINDS = frozenset({"nul", "wide_int", "deep", "retry_after", "key_echo"})
EXTREME_FIELD = {
    (MA, "ts_min"): "createdAt",
    (MA, "ts_max"): "createdAt",
    (ML, "ts_min"): "initiatedAt",
    (ML, "ts_max"): "createdAt",
}

_http = httpx.Client(timeout=30, trust_env=False)


@contextmanager
def deep_json() -> Iterator[None]:
    """Room for the stdlib json (httpx, psycopg) and == on ~1,000-level documents."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def truth(base_url: str, vendor: Vendor, external_id: str) -> dict[str, Any]:
    response = _http.get(f"{base_url}/_sim/truth/{vendor.value}/{external_id}")
    response.raise_for_status()
    return json.loads(response.content)  # exact integers wider than 64 bits


def _collect(failures: list[str], label: str, check: Callable[[], None]) -> None:
    """Run one id's checks, keeping its failure so every id gets reported."""
    try:
        check()
    except AssertionError as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno} {frame.line}"
        failures.append(f"{label}: {where}: {exc!s:.1500}")


def _check_archived(session: Session, vendor: Vendor, project: str, id_: str, body: Any) -> None:
    if vendor is MA:
        check_ask(session, id_, body)
    else:
        check_execution(session, id_, project, body)


def _check_extreme_run(run_id: str, project: str, body: dict[str, Any], field: str) -> None:
    """An archived run whose `field` is at the end of the calendar: that column holds the
    same instant or NULL, and with it set aside every other value is exact."""
    # Names from this dict only, never from input.
    column = {"initiatedAt": "initiated_at", "createdAt": "created_at"}[field]
    stand_in = "2000-01-01T00:00:00.000Z"
    params = {
        "id": run_id,
        "field": field,
        "value": body[field],
        "stand_in": stand_in,
        "path": f"{{{field}}}",
    }
    with suite_db().engine.connect() as conn:
        trans = conn.begin()
        try:
            # Compared in SQL: psycopg cannot load a BC timestamp into Python.
            same = conn.scalar(
                text(
                    f"SELECT ({column} IS NULL OR {column} = CAST(:value AS timestamptz))"  # noqa: S608
                    " AND raw_payload ->> :field = :value"
                    " FROM job_executions WHERE job_execution_id = CAST(:id AS uuid)"
                ),
                params,
            )
            assert same, f"{column} is neither NULL nor {body[field]}"
            conn.execute(
                text(
                    f"UPDATE job_executions SET {column} = CAST(:stand_in AS timestamptz),"  # noqa: S608
                    " raw_payload = jsonb_set(raw_payload, CAST(:path AS text[]),"
                    " to_jsonb(CAST(:stand_in AS text)))"
                    " WHERE job_execution_id = CAST(:id AS uuid)"
                ),
                params,
            )
            with Session(bind=conn) as session:
                check_execution(session, run_id, project, {**body, field: stand_in})
        finally:
            trans.rollback()


def _redacted(session: Session, vendor: Vendor, id_: str, body: dict[str, Any]) -> Any:
    """The truth with the placeholder replaced by what the worker stored instead of the key."""
    model = Ask if vendor is MA else JobExecution
    row = session.get(model, id_)
    assert row is not None, "not archived"
    field = "authorization" if vendor is MA else "x-api-key"
    template, stored = body["x_debug"][field], row.raw_payload["x_debug"][field]
    before, after = template.split(KEY_PLACEHOLDER)
    assert stored.startswith(before) and stored.endswith(after), stored
    marker = stored[len(before) : len(stored) - len(after)]
    assert not any(key in marker for key in KEYS), marker
    placeholder, replacement = (json.dumps(s)[1:-1] for s in (KEY_PLACEHOLDER, marker))
    return json.loads(json.dumps(body).replace(placeholder, replacement))


def _tables_holding(needle: str) -> list[str]:
    """Tables with a row whose text (every column, jsonb included) contains needle."""
    found = []
    with suite_db().engine.connect() as conn:
        for table in metadata.sorted_tables:  # names from our models, not from input
            n = conn.scalar(
                text(f'SELECT count(*) FROM "{table.name}" AS r WHERE strpos(r::text, :k) > 0'),  # noqa: S608
                {"k": needle},
            )
            if n:
                found.append(table.name)
        # bytea renders as hex in r::text; quarantined bodies are searched as bytes.
        n = conn.scalar(
            text(
                "SELECT count(*) FROM quarantined_payloads"
                " WHERE position(convert_to(:k, 'UTF8') IN body) > 0"
            ),
            {"k": needle},
        )
        if n:
            found.append("quarantined_payloads.body")
    return found


def test_poisoned_ids_end_final_and_the_rest_archive_exactly(
    sim: Callable[..., str], configure: Callable[..., None], tmp_path: Path
) -> None:
    ds = Dataset(seed=SEED)
    poisoned = {
        (vendor, kind): ds.poison_ids(vendor.value, kind, PER_VENDOR)
        for kind in KINDS
        if kind != "forbidden_project"
        for vendor in (MA, ML)
    }
    forbidden_runs: list[str] = []
    poison: dict[str, list[str]] = {}
    if "forbidden_project" in KINDS:
        forbidden_runs = ds.poison_ids(ML.value, "forbidden_project", 2 * PER_VENDOR)
        poison["forbidden_project"] = [FORBIDDEN_PROJECT]
    for (_, kind), ids in poisoned.items():
        poison.setdefault(kind, []).extend(ids)
    base_url = sim(
        seed=SEED,
        max_pending_polls=2,
        poison=poison,
        poison_drip_seconds=DRIP_SECONDS,
        poison_retry_after_count=RETRY_AFTER_COUNT,
        poison_bomb_bytes=BOMB_BYTES,
    )
    configure(**WORKER_ENV)
    settings = load_settings()

    # Poisoned ids spread among the ordinary ones, so they share batches.
    asks = ds.ask_ids(500)
    runs = ds.execution_ids(500)
    bad_asks = [i for (v, _), ids in poisoned.items() if v is MA for i in ids]
    bad_runs = [i for (v, _), ids in poisoned.items() if v is ML for i in ids]
    step = len(asks) // max(1, len(bad_asks))
    ask_order = asks[:]
    for n, bad in enumerate(bad_asks):
        ask_order.insert(n * (step + 1), bad)
    by_project: dict[str, list[str]] = {}
    for project, run in runs:
        by_project.setdefault(project, []).append(run)
    for n, run in enumerate(bad_runs):
        ids = by_project[ds.project_of(run)]
        ids.insert((n * 37) % len(ids), run)
    if forbidden_runs:
        by_project[FORBIDDEN_PROJECT] = forbidden_runs

    ask_file = tmp_path / "asks.txt"
    ask_file.write_text("\n".join(ask_order) + "\n")
    result = cli("track", "mentionsapi", "--file", str(ask_file))
    assert result.returncode == 0, result.stderr
    for project, ids in by_project.items():
        result = cli(
            "track", "mentionlab", "--project", project, "--file", "-", input="\n".join(ids)
        )
        assert result.returncode == 0, result.stderr

    # A hang shows up as the subprocess timeout: the run is meant to take well under it.
    result = cli("sync", "--until-done", "--timeout", "240", timeout=150)
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in output, result.stderr[-5000:]
    for key in KEYS:
        assert key not in output, f"{key} in the output"

    counts = _http.get(f"{base_url}/_sim/requests/counts").json()

    def requests(vendor: Vendor, id_: str) -> dict[str, Any]:
        return counts[vendor.value].get(id_.lower() if vendor is ML else id_) or {
            "requests": 0,
            "by_status": {},
        }

    failures: list[str] = []
    archived: dict[Vendor, set[str]] = {MA: set(), ML: set()}
    with deep_json(), session_scope() as session:
        tracked = {(t.vendor, t.external_id): t for t in session.scalars(select(TrackedId))}
        assert not [t for t in tracked.values() if t.state not in FINAL_STATES]

        def ordinary(vendor: Vendor, project: str, id_: str) -> None:
            t = truth(base_url, vendor, id_)
            row = tracked[(vendor, id_)]
            expected = STATE_OF_FATE[t["fate"]]
            assert row.state is expected, (row.state, t["fate"], row.last_error)
            if expected in (TrackedState.ARCHIVED, TrackedState.FAILED):
                _check_archived(session, vendor, project, id_, t["body"])
                archived[vendor].add(id_)
            n = requests(vendor, id_)["requests"]
            most = (
                settings.not_found_confirmations
                if t["fate"] == "unknown"
                else t["pending_polls"] + 1
            )
            assert n <= most, f"{n} requests, at most {most} expected"

        for id_ in asks:
            _collect(failures, id_, partial(ordinary, MA, "", id_))
        for project, id_ in runs:
            _collect(failures, id_, partial(ordinary, ML, project, id_))

        def poisoned_id(vendor: Vendor, kind: str, id_: str) -> None:
            t = truth(base_url, vendor, id_)
            assert t["poison"] == kind and t["status"] == 200
            row = tracked[(vendor, id_)]
            project = row.project_id
            state, error = row.state, row.last_error or ""
            seen = requests(vendor, id_)
            extra = {
                "retry_after": 1 + RETRY_AFTER_COUNT,
                "ts_min": settings.invalid_payload_attempts,
                "ts_max": settings.invalid_payload_attempts,
                "gzip2": settings.invalid_payload_attempts,
                "drip": max(settings.max_attempts, settings.invalid_payload_attempts),
            }.get(kind, 1)
            most = t["pending_polls"] + extra
            assert seen["requests"] <= most, f"{seen} requests, at most {most} expected"
            if kind in ARCHIVED_KINDS:
                assert state is TrackedState.ARCHIVED, (state, error)
                body = (
                    _redacted(session, vendor, id_, t["body"]) if kind == "key_echo" else t["body"]
                )
                _check_archived(session, vendor, project, id_, body)
                archived[vendor].add(id_)
                if kind == "retry_after":
                    assert seen["by_status"].get("429") == RETRY_AFTER_COUNT, seen
            elif kind in ("ts_min", "ts_max"):
                field = EXTREME_FIELD[(vendor, kind)]
                assert t["body"][field] == (TS_MIN if kind == "ts_min" else TS_MAX)
                if state is TrackedState.INVALID_PAYLOAD:
                    assert field in error, f"the reason does not name {field}: {error!r}"
                    return
                assert state is TrackedState.ARCHIVED, (state, error)
                if vendor is MA:
                    check_ask(session, id_, t["body"])
                else:
                    _check_extreme_run(id_, project, t["body"], field)
                archived[vendor].add(id_)
            elif kind == "gzip2":
                assert state is TrackedState.INVALID_PAYLOAD, (state, error)
                # Too large once decoded, or a stacked encoding refused before decoding.
                assert re.search(r"larger than|too large|content-encoding", error, re.I), error
                stored = session.scalars(
                    select(QuarantinedPayload).where(QuarantinedPayload.tracked_id == row.id)
                ).all()
                assert stored, "nothing quarantined"
                assert all(len(q.body) <= settings.max_response_bytes for q in stored)
            else:
                assert kind == "drip"
                assert state in (TrackedState.ERROR, TrackedState.INVALID_PAYLOAD), (state, error)
                assert error, "no reason recorded"

        for (vendor, kind), ids in poisoned.items():
            for id_ in ids:
                _collect(
                    failures,
                    f"{kind} {vendor.value} {id_}",
                    partial(poisoned_id, vendor, kind, id_),
                )

        def forbidden(id_: str) -> None:
            row = tracked[(ML, id_)]
            assert row.project_id == FORBIDDEN_PROJECT
            assert row.state in FINAL_STATES and row.state is not TrackedState.ARCHIVED
            assert re.search(r"403|forbidden", row.last_error or "", re.IGNORECASE), row.last_error
            n = requests(ML, id_)["requests"]
            assert 1 <= n <= settings.max_attempts, f"{n} requests"

        for id_ in forbidden_runs:
            _collect(failures, f"forbidden_project {id_}", partial(forbidden, id_))

        # Nothing archived that should not be.
        if not failures:
            assert set(session.scalars(select(Ask.ask_id))) == archived[MA]
            assert set(session.scalars(select(JobExecution.job_execution_id))) == archived[ML]
    assert not failures, "\n".join(failures)

    for key in KEYS:
        assert not _tables_holding(key), f"{key} stored in {_tables_holding(key)}"
