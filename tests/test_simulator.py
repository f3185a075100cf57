"""Tests for the vendor API simulator (`simulator/`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

import simulator.app as sim_app
from simulator import Dataset, SimConfig, create_app, run_in_thread
from simulator.dataset import KEY_PLACEHOLDER, POISON_KINDS, TS_MAX

with warnings.catch_warnings():
    # Starlette >= 1.x warns that its TestClient should move to httpx2; httpx is what we have.
    warnings.filterwarnings("ignore", message=".*httpx2", category=UserWarning)
    from starlette.testclient import TestClient

ANCHOR = datetime(2026, 6, 8, 10, 0, tzinfo=UTC)
MA = "mentionsapi"
ML = "mentionlab"
MA_KEY = {"Authorization": "Bearer lvk_test_abc"}
ML_KEY = "ml_live_abc"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def ml_headers(project: str, key: str = ML_KEY) -> dict[str, str]:
    return {"x-api-key": key, "x-project-id": project}


def make_client(**overrides: Any) -> TestClient:
    config = SimConfig(seed=7, anchor=ANCHOR, **overrides)
    return TestClient(create_app(config))


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return Dataset(seed=7, anchor=ANCHOR)


@pytest.fixture(scope="module")
def ma_bodies(ds: Dataset) -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for ask_id in ds.ask_ids(300):
        status, body = ds.final_response(MA, ask_id)
        out.append((ds.fate(MA, ask_id), status, body))
    return out


@pytest.fixture(scope="module")
def ml_bodies(ds: Dataset) -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for project, eid in ds.execution_ids(300):
        status, body = ds.final_response(ML, eid, project)
        out.append((ds.fate(ML, eid), status, body))
    return out


def find(ds: Dataset, vendor: str, fate: str, polls: int | None = None) -> tuple[str, str]:
    """(project_id or "", id) of the first generated id with this fate and poll count."""
    pairs = [("", i) for i in ds.ask_ids(500)] if vendor == MA else ds.execution_ids(500)
    for project, id_ in pairs:
        if ds.fate(vendor, id_) == fate and (
            polls is None or ds.pending_polls(vendor, id_) == polls
        ):
            return project, id_
    raise AssertionError(f"no {fate} id with {polls} polls")


# --------------------------------------------------------------------------- dataset


def test_same_seed_same_data_different_seed_different() -> None:
    a, b, c = (Dataset(seed=s, anchor=ANCHOR) for s in (1, 1, 2))
    assert a.ask_ids(50) == b.ask_ids(50)
    assert a.execution_ids(50) == b.execution_ids(50)
    assert a.projects() == b.projects()
    assert a.ask_ids(50) != c.ask_ids(50)
    assert a.projects() != c.projects()
    for ask_id in a.ask_ids(30):
        assert a.final_bytes(MA, ask_id) == b.final_bytes(MA, ask_id)
        assert a.final_response(MA, ask_id) == b.final_response(MA, ask_id)
    for project, eid in a.execution_ids(30):
        assert a.final_bytes(ML, eid, project) == b.final_bytes(ML, eid, project)
    ask_id = a.ask_ids(1)[0]
    assert a.final_bytes(MA, ask_id) != c.final_bytes(MA, ask_id)
    assert a.ask_ids(5, start=10) == a.ask_ids(15)[10:]


def test_determinism_does_not_depend_on_the_process() -> None:
    # A different PYTHONHASHSEED would change anything derived from hash().
    code = (
        "import hashlib; from datetime import datetime, UTC; from simulator import Dataset;"
        "d = Dataset(seed=3, anchor=datetime(2026, 1, 1, tzinfo=UTC));"
        "b = b''.join(d.final_bytes('mentionsapi', i)[1] for i in d.ask_ids(20));"
        "b += b''.join(d.final_bytes('mentionlab', e, p)[1] for p, e in d.execution_ids(20));"
        "print(hashlib.sha256(b).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    d = Dataset(seed=3, anchor=datetime(2026, 1, 1, tzinfo=UTC))
    blob = b"".join(d.final_bytes(MA, i)[1] for i in d.ask_ids(20))
    blob += b"".join(d.final_bytes(ML, e, p)[1] for p, e in d.execution_ids(20))
    assert out.stdout.strip() == hashlib.sha256(blob).hexdigest()


def test_id_formats(ds: Dataset) -> None:
    for ask_id in ds.ask_ids(100):
        assert re.fullmatch(r"ask_[0-9A-HJKMNP-TV-Z]{26}", ask_id)
    assert len(set(ds.ask_ids(1000))) == 1000
    projects = ds.projects()
    assert len(projects) == len(set(projects)) == 3
    assert all(UUID.match(p) for p in projects)
    pairs = ds.execution_ids(200)
    assert {p for p, _ in pairs} == set(projects)
    for project, eid in pairs:
        assert UUID.match(eid)
        assert ds.project_of(eid) == project
        assert ds.project_of(eid.upper()) == project


def test_fate_distribution(ds: Dataset) -> None:
    ma = Counter(ds.fate(MA, i) for i in ds.ask_ids(2000))
    expected_ma = {"succeeded": 0.80, "failed": 0.08, "expired": 0.05, "unknown": 0.05}
    for fate, share in {**expected_ma, "rejected": 0.02}.items():
        assert abs(ma[fate] / 2000 - share) < 0.03, (fate, ma)
    ml = Counter(ds.fate(ML, e) for _, e in ds.execution_ids(2000))
    expected_ml = {"success": 0.72, "retried": 0.08, "failed": 0.08, "unknown": 0.10}
    for fate, share in {**expected_ml, "rejected": 0.02}.items():
        assert abs(ml[fate] / 2000 - share) < 0.03, (fate, ml)


def test_any_id_gets_a_fate(ds: Dataset) -> None:
    assert ds.fate(MA, "hello world") in {"succeeded", "failed", "expired", "unknown", "rejected"}
    assert ds.fate(MA, "x" * 257) == "rejected"
    assert ds.final_response(MA, "x" * 257)[0] == 400
    assert ds.fate(ML, "not-a-uuid") == "rejected"
    assert ds.final_response(ML, "not-a-uuid")[0] == 400
    eid = "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
    assert ds.fate(ML, eid) == ds.fate(ML, eid.upper())
    with pytest.raises(ValueError, match="vendor"):
        ds.fate("other", "x")


def test_pending_polls_rules() -> None:
    ds = Dataset(seed=7, anchor=ANCHOR, max_pending_polls=3)
    seen = Counter()
    for _, eid in ds.execution_ids(400):
        n, fate = ds.pending_polls(ML, eid), ds.fate(ML, eid)
        assert 0 <= n <= 3
        if fate in ("unknown", "rejected"):
            assert n == 0
        if fate == "retried":
            assert n >= 1
        seen[n] += 1
    assert len(seen) == 4
    flat = Dataset(seed=7, anchor=ANCHOR, max_pending_polls=0)
    assert all(flat.pending_polls(MA, i) == 0 for i in flat.ask_ids(200))
    assert all(flat.pending_polls(ML, e) == 0 for _, e in flat.execution_ids(200))


def test_mentionsapi_bodies_match_docs(ma_bodies: list[tuple[str, int, dict[str, Any]]]) -> None:
    for fate, status, body in ma_bodies:
        assert body["request_id"].startswith("req_")
        if fate == "succeeded":
            assert status == 200
            assert body.get("status", "succeeded") == "succeeded"
            assert isinstance(body["cached"], bool)
            assert body["cache_tier"] in ("miss", "hit", "semantic")
            assert 1 <= len(body["providers"]) <= 4
            for p in body["providers"]:
                assert p["provider"] in ("openai", "anthropic", "google", "perplexity")
                assert isinstance(p["content"], str)
                assert isinstance(p["latency_ms"], int)
                if "tokens" in p:
                    assert isinstance(p["tokens"]["input"], int)
                for c in p["citations"]:
                    assert isinstance(c["url"], str)
                    assert isinstance(c["domain"], str)
            for m in body["brand_mentions"]:
                assert isinstance(m["rank"], int)
                assert m["rank"] >= 0
                assert m["sentiment"] in ("positive", "neutral", "negative")
            urls = {c["url"] for p in body["providers"] for c in p["citations"]}
            assert {c["url"] for c in body["citations"]} == urls
            usage = body["usage"]
            assert isinstance(usage["cost_cents"], int)
            assert isinstance(usage["latency_ms"], int)
            assert usage["cost_breakdown"]["by_provider"] == []
        elif fate == "failed":
            assert (status, body["status"]) == (200, "failed")
            assert "error" not in body or set(body["error"]) == {"code", "message"}
        else:
            code = {"expired": "expired", "unknown": "not_found", "rejected": "invalid_request"}
            assert status == {"expired": 410, "unknown": 404, "rejected": 400}[fate]
            assert body["error"]["code"] == code[fate]
            if fate == "expired":
                assert body["retention_days"] == 30


def test_mentionlab_final_bodies_have_every_documented_field(
    ml_bodies: list[tuple[str, int, dict[str, Any]]],
) -> None:
    required = {
        "jobExecutionId": str,
        "aiResponseId": str,
        "jobId": str,
        "initiatedAt": str,
        "createdAt": str,
        "model": str,
        "status": str,
        "executionNumber": int,
        "hasSources": bool,
        "hasShopping": bool,
        "sources": list,
        "entities": list,
        "country": str,
    }
    checked = 0
    for fate, status, body in ml_bodies:
        if fate in ("unknown", "rejected"):
            assert status == {"unknown": 404, "rejected": 400}[fate]
            assert body["statusCode"] == status
            continue
        checked += 1
        assert status == 200
        for field, kind in required.items():
            assert isinstance(body[field], kind), (field, body)
        for field in ("jobExecutionId", "aiResponseId", "jobId"):
            assert UUID.match(body[field])
        assert ISO_MS.match(body["initiatedAt"])
        assert ISO_MS.match(body["createdAt"])
        assert body["initiatedAt"] <= body["createdAt"] <= "2026-06-08T10:00:00.000Z"
        assert body["initiatedAt"] >= "2026-06-05T09:59:00.000Z"
        assert body["executionNumber"] == (2 if fate == "retried" else 1)
        assert body["hasSources"] == bool(body["sources"])
        for s in body["sources"]:
            assert isinstance(s["domain"], str)
            assert isinstance(s["url"], str)
        for e in body["entities"]:
            assert UUID.match(e["displayKey"])
            assert isinstance(e["displayName"], str)
            assert isinstance(e["isPrimary"], bool)
            if "sentimentScore" in e:
                score = e["sentimentScore"]
                assert isinstance(score, float)
                assert 0 <= score <= 100
                assert round(score, 1) == score
        if fate == "failed":
            assert body["status"] == "failed"
            assert body["sources"] == body["entities"] == []
            assert body["hasSources"] is False
        else:
            assert body["status"] == "success"
    assert checked > 200


def test_payloads_are_messy(
    ma_bodies: list[tuple[str, int, dict[str, Any]]],
    ml_bodies: list[tuple[str, int, dict[str, Any]]],
) -> None:
    found: Counter[str] = Counter()
    for fate, _, body in ma_bodies:
        if fate == "failed":
            found["failed_without_error"] += "error" not in body
            continue
        if fate != "succeeded":
            continue
        found["status_missing"] += "status" not in body
        found["extra_top_level"] += any(k.startswith("x_") for k in body)
        mentions = body["brand_mentions"]
        found["no_mentions"] += not mentions
        brands = [m["brand"] for m in mentions]
        found["non_ascii_brand"] += any(not b.isascii() for b in brands)
        found["emoji_brand"] += any("🚀" in b or "🔥" in b for b in brands)
        found["quoted_brand"] += any('"' in b and "'" in b for b in brands)
        blobs = [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in mentions]
        found["duplicate_mention"] += len(blobs) != len(set(blobs))
        per_provider = Counter((m["brand"], m["provider"]) for m in mentions)
        found["brand_twice_other_rank"] += any(
            len({m["rank"] for m in mentions if (m["brand"], m["provider"]) == k}) > 1
            for k, n in per_provider.items()
            if n > 1
        )
        lists = [body["citations"]] + [p["citations"] for p in body["providers"]]
        found["duplicate_url"] += any(len({c["url"] for c in cl}) != len(cl) for cl in lists)
        cites = [c for cl in lists for c in cl]
        found["missing_title"] += any("title" not in c for c in cites)
        found["www_domain"] += any(c["domain"].startswith("www.") for c in cites)
        found["mixed_case_domain"] += any(c["domain"] != c["domain"].lower() for c in cites)
        found["missing_tokens"] += any("tokens" not in p for p in body["providers"])
        found["long_content"] += any(
            20_000 <= len(p["content"].encode()) <= 60_000 for p in body["providers"]
        )
        items = body["providers"] + mentions + cites
        found["extra_in_items"] += any(k.startswith("x_") for it in items for k in it)
    for fate, _, body in ml_bodies:
        if fate not in ("success", "retried"):
            continue
        found["ml_missing_query"] += "queryId" not in body
        found["ml_missing_language"] += "language" not in body
        found["ml_missing_sentiment"] += any("sentimentScore" not in e for e in body["entities"])
        urls = [s["url"] for s in body["sources"]]
        found["ml_duplicate_url"] += len(urls) != len(set(urls))
        items = body["sources"] + body["entities"]
        found["ml_extra"] += any(k.startswith("x_") for k in body) or any(
            k.startswith("x_") for it in items for k in it
        )
        found["ml_unicode"] += any(not e["displayName"].isascii() for e in body["entities"])
    expected = [
        "failed_without_error",
        "status_missing",
        "extra_top_level",
        "no_mentions",
        "non_ascii_brand",
        "emoji_brand",
        "quoted_brand",
        "duplicate_mention",
        "brand_twice_other_rank",
        "duplicate_url",
        "missing_title",
        "www_domain",
        "mixed_case_domain",
        "missing_tokens",
        "long_content",
        "extra_in_items",
        "ml_missing_query",
        "ml_missing_language",
        "ml_missing_sentiment",
        "ml_duplicate_url",
        "ml_extra",
        "ml_unicode",
    ]
    missing = [name for name in expected if not found[name]]
    assert not missing, (missing, found)


def test_pending_responses(ds: Dataset) -> None:
    _, ask_id = find(ds, MA, "succeeded", 2)
    assert ds.pending_response(MA, ask_id, 1)[1]["status"] == "queued"
    status, body = ds.pending_response(MA, ask_id, 2)
    assert (status, set(body)) == (202, {"request_id", "id", "status"})
    assert body["status"] == "processing"
    _, eid = find(ds, ML, "retried", 2)
    s1, pending = ds.pending_response(ML, eid, 1)
    s2, retrying = ds.pending_response(ML, eid, 2)
    assert (s1, pending["status"], s2, retrying["status"]) == (200, "pending", 200, "retrying")
    assert pending["sources"] == pending["entities"] == []
    assert pending["hasSources"] is False
    assert retrying["aiResponseId"] == ds.final_response(ML, eid)[1]["aiResponseId"]


# --------------------------------------------------------------------------- app


def test_mentionsapi_poll_progression(ds: Dataset) -> None:
    client = make_client()
    _, ask_id = find(ds, MA, "succeeded", 2)
    statuses = []
    for _ in range(3):
        r = client.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
        statuses.append((r.status_code, r.json().get("status", "succeeded")))
    assert statuses == [(202, "queued"), (202, "processing"), (200, "succeeded")]
    assert r.json() == ds.final_response(MA, ask_id)[1]
    truth = client.get(f"/_sim/truth/{MA}/{ask_id}").json()
    assert truth == ds.truth(MA, ask_id)
    assert truth["pending_polls"] == 2


def test_mentionlab_retried_progression(ds: Dataset) -> None:
    client = make_client()
    project, eid = find(ds, ML, "retried", 2)
    seen = []
    for _ in range(3):
        r = client.get(f"/api/v1/job-executions/{eid}", headers=ml_headers(project))
        assert r.status_code == 200
        seen.append((r.json()["status"], r.json()["executionNumber"]))
    assert seen == [("pending", 1), ("retrying", 1), ("success", 2)]


def test_429_and_faults_do_not_advance_the_poll_counter(ds: Dataset) -> None:
    client = make_client(rate_limit=1)
    _, ask_id = find(ds, MA, "succeeded", 2)
    assert client.get(f"/v1/ask/{ask_id}", headers=MA_KEY).json()["status"] == "queued"
    limited = client.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
    assert limited.status_code == 429
    # Buckets are per key: another key continues where the id's polls left off.
    other = {"Authorization": "Bearer lvk_test_other"}
    assert client.get(f"/v1/ask/{ask_id}", headers=other).json()["status"] == "processing"

    failing = make_client(error_rate=1.0)
    r = failing.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    project, eid = find(ds, ML, "success", 1)
    r = failing.get(f"/api/v1/job-executions/{eid}", headers=ml_headers(project))
    assert (r.status_code, r.json()["statusCode"]) == (503, 503)
    sim = failing.app.state.sim
    assert sim.polls == {}
    assert sim.stats()["faults"]["error"] == 2


def test_auth_failures() -> None:
    client = make_client()
    for headers in (
        {},
        {"Authorization": "lvk_test_abc"},
        {"Authorization": "Basic lvk_test_abc"},
        {"Authorization": "Bearer sk_test_abc"},
        {"Authorization": "Bearer lvk_revoked_abc"},
    ):
        r = client.get("/v1/ask/ask_X", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["request_id"].startswith("req_")
        assert "X-RateLimit-Limit" in r.headers
    eid = "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
    for headers in ({}, {"x-api-key": "lvk_test_abc"}, {"x-api-key": "ml_live_revoked"}):
        r = client.get(f"/api/v1/job-executions/{eid}", headers=headers)
        assert r.status_code == 401
        assert r.json() == {
            "statusCode": 401,
            "message": "Invalid API key",
            "error": "Unauthorized",
        }
    assert client.app.state.sim.polls == {}


def test_request_validation(ds: Dataset) -> None:
    client = make_client()
    r = client.get("/v1/ask/" + "a" * 257, headers=MA_KEY)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_request")
    project, eid = ds.execution_ids(1)[0]
    r = client.get(f"/api/v1/job-executions/{eid}", headers={"x-api-key": ML_KEY})
    assert (r.status_code, r.json()["statusCode"]) == (400, 400)
    r = client.get("/api/v1/job-executions/not-a-uuid", headers=ml_headers(project))
    assert (r.status_code, r.json()["error"]) == (400, "Bad Request")
    other = next(p for p in ds.projects() if p != project)
    r = client.get(f"/api/v1/job-executions/{eid}", headers=ml_headers(other))
    assert r.status_code == 404
    assert r.json() == {
        "statusCode": 404,
        "message": "Job execution not found",
        "error": "Not Found",
    }
    assert client.get(f"/_sim/truth/{ML}/{eid}?project_id={other}").json()["status"] == 404


def test_rate_limit_headers_and_429() -> None:
    client = make_client(rate_limit=2)
    ids = client.get("/_sim/dataset", params={"vendor": ML, "n": 3}).json()["ids"]
    headers = ml_headers(ids[0]["project_id"])
    url = f"/api/v1/job-executions/{ids[0]['id']}"
    first, second, third = (client.get(url, headers=headers) for _ in range(3))
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert second.headers["X-RateLimit-Remaining"] == "0"
    assert third.status_code == 429
    assert int(third.headers["Retry-After"]) >= 1
    assert int(third.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert third.json() == {
        "statusCode": 429,
        "message": f"Too many requests. Please retry after {third.headers['Retry-After']} seconds.",
        "error": "Too Many Requests",
    }
    r = client.get("/v1/ask/ask_X", headers=MA_KEY)
    assert r.headers["X-RateLimit-Limit"] == "2"
    r = client.get("/v1/ask/ask_X", headers=MA_KEY)
    r = client.get("/v1/ask/ask_X", headers=MA_KEY)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert "X-RateLimit-Reset" not in r.headers
    assert client.get("/_sim/stats").json()["rate_limited"] == 2

    unlimited = make_client()
    r = unlimited.get("/v1/ask/ask_X", headers=MA_KEY)
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("1000", "999")


def test_storm_answers_429() -> None:
    client = make_client(storm_every=100, storm_seconds=10)
    assert client.get("/v1/ask/ask_X", headers=MA_KEY).status_code != 429
    client.app.state.sim.started -= 100  # jump to the start of the first storm
    r = client.get("/v1/ask/ask_X", headers=MA_KEY)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 10


def test_stats_count_polls_after_final(ds: Dataset) -> None:
    client = make_client(max_pending_polls=0)
    ok_id, gone_id = find(ds, MA, "succeeded")[1], find(ds, MA, "expired")[1]
    for ask_id in (ok_id, ok_id, ok_id, gone_id, gone_id):
        client.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
    stats = client.get("/_sim/stats").json()
    assert stats["requests"] == 5
    assert stats["by_status"] == {"200": 3, "410": 2}
    assert stats["polls_after_final"] == 3
    assert stats["polls_after_final_by_status"] == {"200": 2, "410": 1}
    assert client.post("/_sim/reset").json() == {"ok": True}
    stats = client.get("/_sim/stats").json()
    assert (stats["requests"], stats["polls_after_final"]) == (0, 0)


def test_malformed_and_huge_bodies(ds: Dataset) -> None:
    client = make_client(malformed_rate=1.0, max_pending_polls=0)
    bad = 0
    for ask_id in ds.ask_ids(40):
        if ds.fate(MA, ask_id) != "succeeded":
            continue
        r = client.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
        try:
            body = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        latencies = [body["usage"]["latency_ms"]] + [p["latency_ms"] for p in body["providers"]]
        assert "abc" in latencies
        bad += 1
    assert bad > 20
    # Broken bodies are not counted as served, so a re-fetch is not waste.
    assert client.get("/_sim/stats").json()["polls_after_final"] == 0

    huge = make_client(huge_rate=1.0, max_pending_polls=0)
    _, ask_id = find(ds, MA, "succeeded")
    r = huge.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
    assert len(r.content) > 20_000_000
    assert r.json()["id"] == ask_id


def test_latency_and_reset_under_testclient() -> None:
    client = make_client(latency_ms=60)
    start = time.perf_counter()
    client.get("/v1/ask/ask_X", headers=MA_KEY)
    assert time.perf_counter() - start >= 0.05
    resetting = make_client(reset_rate=1.0)
    with pytest.raises(ConnectionResetError):
        resetting.get("/v1/ask/ask_X", headers=MA_KEY)


def test_introspection_routes() -> None:
    client = make_client()
    assert client.get("/_sim/health").json() == {"ok": True}
    ids = client.get("/_sim/dataset", params={"n": 5, "start": 2}).json()["ids"]
    assert ids == Dataset(seed=7, anchor=ANCHOR).ask_ids(5, start=2)
    assert client.get("/_sim/dataset", params={"vendor": "nope"}).status_code == 400
    assert client.get("/_sim/truth/nope/x").status_code == 404
    assert client.get("/_sim/config").json()["config"]["seed"] == 7


@pytest.fixture
def live_server() -> Iterator[str]:
    base_url, stop = run_in_thread(SimConfig(seed=7, anchor=ANCHOR, max_pending_polls=0))
    try:
        yield base_url
    finally:
        stop()


def test_real_server_round_trip(live_server: str) -> None:
    with httpx.Client(base_url=live_server, trust_env=False, timeout=5) as client:
        ids = client.get("/_sim/dataset", params={"vendor": ML, "n": 5}).json()["ids"]
        for item in ids:
            r = client.get(
                f"/api/v1/job-executions/{item['id']}", headers=ml_headers(item["project_id"])
            )
            truth = client.get(f"/_sim/truth/{ML}/{item['id']}").json()
            assert r.status_code == truth["status"]
            assert r.json() == truth["body"]
            assert "X-RateLimit-Reset" in r.headers


def test_real_server_connection_reset() -> None:
    base_url, stop = run_in_thread(SimConfig(seed=7, reset_rate=1.0))
    try:
        with httpx.Client(base_url=base_url, trust_env=False, timeout=5) as client:
            with pytest.raises(httpx.TransportError):
                client.get("/v1/ask/ask_X", headers=MA_KEY)
            assert client.get("/_sim/stats").json()["faults"]["reset"] == 1
    finally:
        stop()


def test_cli_builds_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[SimConfig, str, int]] = []
    monkeypatch.setattr(sim_app, "serve", lambda c, host, port: calls.append((c, host, port)))
    sim_app.main(["--port", "9911", "--seed", "4", "--rate-limit", "20", "--error-rate", "0.1"])
    config, host, port = calls[0]
    assert (host, port) == ("127.0.0.1", 9911)
    assert (config.seed, config.rate_limit, config.error_rate) == (4, 20.0, 0.1)
    assert config.max_pending_polls == 2


def test_request_log_records_each_fetch_time(ds: Dataset) -> None:
    client = make_client(max_pending_polls=0)
    ask_id = find(ds, MA, "succeeded")[1]
    before = time.time()
    for _ in range(2):
        client.get(f"/v1/ask/{ask_id}", headers=MA_KEY)
    log = client.get("/_sim/requests").json()
    assert list(log[MA]) == [ask_id] and len(log[MA][ask_id]) == 2
    assert before <= log[MA][ask_id][0] <= log[MA][ask_id][1] <= time.time()
    assert log["mentionlab"] == {}


# --------------------------------------------------------------------------- poison mode

FORBIDDEN_PROJECT = "0d1e5c3a-6b7f-4c2d-9e8a-1f2b3c4d5e6f"
DRIP_SECONDS = 0.05


def poison_map(ds: Dataset) -> dict[str, list[str]]:
    """One MentionsAPI and one MentionLab id per kind, plus the forbidden project."""
    kinds = [k for k in POISON_KINDS if k != "forbidden_project"]
    return {
        **{k: ds.poison_ids(MA, k, 1) + ds.poison_ids(ML, k, 1) for k in kinds},
        "forbidden_project": [FORBIDDEN_PROJECT],
    }


@pytest.fixture(scope="module")
def poisoned() -> Iterator[tuple[str, dict[str, list[str]]]]:
    poison = poison_map(Dataset(seed=7, anchor=ANCHOR))
    config = SimConfig(
        seed=7,
        anchor=ANCHOR,
        max_pending_polls=0,
        poison=poison,
        poison_drip_seconds=DRIP_SECONDS,
    )
    base_url, stop = run_in_thread(config)
    try:
        yield base_url, poison
    finally:
        stop()


def get_answer(
    client: httpx.Client, vendor: str, id_: str, key: str | None = None
) -> httpx.Response:
    if vendor == MA:
        return client.get(f"/v1/ask/{id_}", headers={"Authorization": f"Bearer {key or 'lvk_t'}"})
    project = Dataset(seed=7, anchor=ANCHOR).project_of(id_)
    return client.get(f"/api/v1/job-executions/{id_}", headers=ml_headers(project, key or ML_KEY))


def get_answer_stream(
    client: httpx.Client, vendor: str, id_: str
) -> contextlib.AbstractContextManager[httpx.Response]:
    if vendor == MA:
        return client.stream("GET", f"/v1/ask/{id_}", headers=MA_KEY)
    headers = ml_headers(Dataset(seed=7).project_of(id_))
    return client.stream("GET", f"/api/v1/job-executions/{id_}", headers=headers)


def nesting(value: Any) -> int:
    """How deeply containers nest in a parsed JSON value (without recursing)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def clean_body(vendor: str, id_: str) -> dict[str, Any]:
    """The id's answer with no body poison (drip only changes how it is sent)."""
    ds = Dataset(seed=7, anchor=ANCHOR, poison={"drip": [id_]})
    return ds.final_response(vendor, id_)[1]


def test_poison_config_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown poison kind"):
        Dataset(seed=7, poison={"nope": ["ask_x"]})
    with pytest.raises(ValueError, match="poisoned twice"):
        Dataset(seed=7, poison={"nul": ["ask_x"], "deep": ["ask_x"]})
    with pytest.raises(ValueError, match="collection of ids"):
        Dataset(seed=7, poison={"nul": "ask_x"})
    with pytest.raises(ValueError, match="poison_depth"):
        Dataset(seed=7, poison_depth=1025)
    ds = Dataset(seed=7, anchor=ANCHOR)
    ids = ds.poison_ids(MA, "nul", 50) + ds.poison_ids(ML, "nul", 50)
    assert len(set(ids)) == 100
    assert not set(ids) & (set(ds.ask_ids(2000)) | {e for _, e in ds.execution_ids(2000)})
    assert ds.poison_ids(MA, "nul", 3) != ds.poison_ids(MA, "deep", 3)
    assert all(UUID.match(i) for i in ds.poison_ids(ML, "deep", 5))
    assert ds.poison_ids(MA, "nul", 2, start=1) == ds.poison_ids(MA, "nul", 3)[1:]


def test_poisoned_ids_succeed_deterministically() -> None:
    plain = Dataset(seed=7, anchor=ANCHOR)
    poison = poison_map(plain)
    a, b = (Dataset(seed=7, anchor=ANCHOR, poison=poison) for _ in range(2))
    for kind, ids in poison.items():
        if kind == "forbidden_project":
            continue
        for vendor, id_ in zip((MA, ML), ids, strict=True):
            assert a.fate(vendor, id_) == ("succeeded" if vendor == MA else "success")
            assert a.poison_kind(vendor, id_) == kind
            assert a.final_bytes(vendor, id_) == b.final_bytes(vendor, id_)
            assert a.truth(vendor, id_)["poison"] == kind
    upper = poison["nul"][1].upper()
    assert a.poison_kind(ML, upper) == "nul"
    # Unlisted ids, and every id without poison, are served as before.
    for ask_id in plain.ask_ids(30):
        assert a.final_bytes(MA, ask_id) == plain.final_bytes(MA, ask_id)
    assert plain.truth(MA, poison["nul"][0])["poison"] is None


def test_poison_nul_is_escaped_json_and_truth_is_what_was_served(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    ask_id, run_id = poison["nul"]
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        r = get_answer(client, MA, ask_id)
        assert r.status_code == 200 and b"\\u0000" in r.content and b"\x00" not in r.content
        body = r.json()
        assert body == client.get(f"/_sim/truth/{MA}/{ask_id}").json()["body"]
        assert "\x00" in body["providers"][0]["content"]
        assert "\x00" in body["brand_mentions"][0]["brand"]
        titles = [c.get("title") or "" for c in body["citations"]]
        assert any("\x00" in t for t in titles)
        assert body.get("status", "succeeded") == "succeeded"

        r = get_answer(client, ML, run_id)
        assert r.status_code == 200 and b"\\u0000" in r.content
        run = r.json()
        assert run == client.get(f"/_sim/truth/{ML}/{run_id}").json()["body"]
        assert run["status"] == "success" and run["model"].endswith("\x00")
        assert "\x00" in run["entities"][0]["displayName"]
        assert UUID.match(run["entities"][0]["displayKey"])
    # Apart from the NUL characters (and an item added where none existed), the usual answer.
    for vendor, id_, served in ((MA, ask_id, body), (ML, run_id, run)):
        clean = clean_body(vendor, id_)
        stripped = orjson.loads(orjson.dumps(served).replace(b"\\u0000", b""))
        assert set(stripped) == set(clean)
        for key in set(clean) - {"brand_mentions", "citations", "providers", "entities"}:
            assert stripped[key] == clean[key], key


def test_poison_wide_int_and_deep_keep_the_body_valid(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        for vendor, id_ in zip((MA, ML), poison["wide_int"], strict=True):
            r = get_answer(client, vendor, id_)
            assert r.status_code == 200
            assert b"18446744073709551616" in r.content
            body = json.loads(r.content)  # exact integers, unlike orjson
            assert body.pop("x_snowflake") == 2**64
            assert body.pop("x_counters") == [-(2**63) - 1, 10**30]
            assert body == clean_body(vendor, id_)
            truth = json.loads(client.get(f"/_sim/truth/{vendor}/{id_}").content)
            assert truth["body"]["x_snowflake"] == 2**64
        for vendor, id_ in zip((MA, ML), poison["deep"], strict=True):
            r = get_answer(client, vendor, id_)
            assert r.status_code == 200
            body = orjson.loads(r.content)
            assert nesting(body) == 1000
            tree = body.pop("x_tree")
            assert list(tree) == ["a"] and nesting(tree) == 999
            assert body == clean_body(vendor, id_)
            truth = client.get(f"/_sim/truth/{vendor}/{id_}").content
            assert truth.endswith(b',"body":' + r.content + b"}")


def test_poison_timestamps_at_the_ends_of_the_calendar(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        for kind, value in (("ts_min", "0001-01-01T00:00:00+01:00"), ("ts_max", TS_MAX)):
            ask_id, run_id = poison[kind]
            body = get_answer(client, MA, ask_id).json()
            assert body.pop("createdAt") == value
            assert body == clean_body(MA, ask_id)
            run = get_answer(client, ML, run_id).json()
            field = "initiatedAt" if kind == "ts_min" else "createdAt"
            assert run[field] == value
            clean = clean_body(ML, run_id)
            assert {k: v for k, v in run.items() if k != field} == {
                k: v for k, v in clean.items() if k != field
            }
    assert value == "9999-12-31T23:59:59Z"


def test_poison_key_echo_carries_the_callers_key(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    ask_id, run_id = poison["key_echo"]
    ma_key, ml_key = "lvk_live_s3cret", "ml_live_s3cret"
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        body = get_answer(client, MA, ask_id, ma_key).json()
        assert f"Bearer {ma_key}" in body["providers"][0]["content"]
        assert body["x_debug"] == {"authorization": f"Bearer {ma_key}"}
        run = get_answer(client, ML, run_id, ml_key).json()
        assert run["sources"][-1]["url"].endswith(f"?x-api-key={ml_key}")
        assert run["hasSources"] is True and run["x_debug"] == {"x-api-key": ml_key}
        # The truth holds a placeholder, or the key asked for.
        truth = client.get(f"/_sim/truth/{ML}/{run_id}").json()["body"]
        assert truth["x_debug"] == {"x-api-key": KEY_PLACEHOLDER}
        filled = client.get(f"/_sim/truth/{ML}/{run_id}", params={"api_key": ml_key})
        assert filled.json()["body"] == run
        # The echo is of whichever key asked.
        other = get_answer(client, MA, ask_id, "lvk_other").json()
        assert other["x_debug"] == {"authorization": "Bearer lvk_other"}


def test_poison_retry_after_answers_429_first_and_polls_are_not_counted() -> None:
    ds = Dataset(seed=7, anchor=ANCHOR, max_pending_polls=2)
    ask_id = next(i for i in ds.poison_ids(MA, "retry_after", 20) if ds.pending_polls(MA, i) == 2)
    run_id = ds.poison_ids(ML, "retry_after", 1)[0]
    config = SimConfig(
        seed=7,
        anchor=ANCHOR,
        max_pending_polls=2,
        poison={"retry_after": [ask_id, run_id]},
        poison_retry_after_count=2,
    )
    base_url, stop = run_in_thread(config)
    try:
        with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
            seen = []
            for _ in range(5):
                r = get_answer(client, MA, ask_id)
                seen.append((r.status_code, r.headers.get("Retry-After")))
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "rate_limited"
                    assert "1e12" in r.json()["error"]["message"]
            assert seen == [(429, "1e12"), (429, "1e12"), (202, None), (202, None), (200, None)]
            assert r.json() == client.get(f"/_sim/truth/{MA}/{ask_id}").json()["body"]
            r = get_answer(client, ML, run_id)
            assert (r.status_code, r.headers["Retry-After"]) == (429, "1e12")
            assert r.json() == {
                "statusCode": 429,
                "message": "Too many requests. Please retry after 1e12 seconds.",
                "error": "Too Many Requests",
            }
            counts = client.get("/_sim/requests/counts").json()
            assert counts[MA][ask_id] == {
                "requests": 5,
                "by_status": {"200": 1, "202": 2, "429": 2},
            }
            assert counts[ML][run_id] == {"requests": 1, "by_status": {"429": 1}}
            assert client.get("/_sim/stats").json()["poison"]["retry_after"] == 3
    finally:
        stop()


def _inflate(data: bytes, piece: int = 1 << 16) -> Iterator[bytes]:
    """Decode one gzip layer a bounded piece at a time: the output may be huge."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for start in range(0, len(data), piece):
        pending = data[start : start + piece]
        while pending:
            out = inflater.decompress(pending, 1 << 22)
            yield out
            pending = inflater.unconsumed_tail
    yield inflater.flush()
    assert inflater.eof


def test_poison_gzip2_is_a_decompression_bomb(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    pad = SimConfig().poison_bomb_bytes
    assert pad >= 256 * 1024 * 1024
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as client:
        for vendor, id_ in zip((MA, ML), poison["gzip2"], strict=True):
            answer = client.get(f"/_sim/truth/{vendor}/{id_}").json()["body"]
            expected_head = orjson.dumps(answer)[:-1] + b',"x_padding":"0'
            with get_answer_stream(client, vendor, id_) as r:
                assert r.status_code == 200
                assert r.headers["Content-Encoding"] == "gzip, gzip"
                wire = b"".join(r.iter_raw())
            assert int(r.headers["Content-Length"]) == len(wire) < 64 * 1024
            inner = zlib.decompress(wire, 16 + zlib.MAX_WBITS)
            assert inner[:2] == b"\x1f\x8b" and len(inner) < 2 * 1024 * 1024
            size, head, tail = 0, b"", b""
            for chunk in _inflate(inner):
                size += len(chunk)
                if len(head) < len(expected_head):
                    head += chunk[: len(expected_head)]
                tail = (tail + chunk)[-16:]
            assert size == len(expected_head) - 1 + pad + 2
            assert size > 1000 * len(wire)
            assert head[: len(expected_head)] == expected_head
            assert tail == b"0" * 14 + b'"}'


def test_poison_drip_sends_one_byte_at_a_time(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    for vendor, id_ in zip((MA, ML), poison["drip"], strict=True):
        expected = Dataset(seed=7, anchor=ANCHOR, poison=poison).final_bytes(vendor, id_)[1]
        # A read timeout far above the interval never fires: each byte comes in time.
        timeout = httpx.Timeout(5.0, read=DRIP_SECONDS * 10)
        with httpx.Client(base_url=base_url, trust_env=False, timeout=timeout) as client:
            r = get_answer_stream(client, vendor, id_)
            with r as response:
                assert response.status_code == 200
                length = int(response.headers["Content-Length"])
                received, stamps = b"", []
                for chunk in response.iter_raw():
                    received += chunk
                    stamps.append(time.monotonic())
                    if len(received) >= 8:
                        break
        assert length == len(expected) and received == expected[: len(received)]
        # 8 bytes take at least 7 intervals; and the whole body at the default interval
        # would take longer than any sane request deadline.
        assert stamps[-1] - stamps[0] >= 7 * DRIP_SECONDS * 0.8
        assert length * SimConfig().poison_drip_seconds > 600
    # The server is fine after the client walked away.
    with httpx.Client(base_url=base_url, trust_env=False, timeout=5) as client:
        assert client.get("/_sim/health").json() == {"ok": True}
        counts = client.get("/_sim/requests/counts").json()
    assert counts[MA][poison["drip"][0]]["by_status"] == {"200": 1}


def test_poison_forbidden_project_answers_403_for_every_id(
    poisoned: tuple[str, dict[str, list[str]]],
) -> None:
    base_url, poison = poisoned
    project, run_id = find(Dataset(seed=7, anchor=ANCHOR), ML, "success")
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        for id_ in (run_id, poison["nul"][1], "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"):
            r = client.get(
                f"/api/v1/job-executions/{id_}", headers=ml_headers(FORBIDDEN_PROJECT.upper())
            )
            assert r.status_code == 403
            assert r.json() == {
                "statusCode": 403,
                "message": "Forbidden resource",
                "error": "Forbidden",
            }
        truth = client.get(
            f"/_sim/truth/{ML}/{run_id}", params={"project_id": FORBIDDEN_PROJECT}
        ).json()
        assert (truth["fate"], truth["status"], truth["poison"]) == (
            "forbidden",
            403,
            "forbidden_project",
        )
        # Other projects are served as usual, and 403s are not polls.
        r = client.get(f"/api/v1/job-executions/{run_id}", headers=ml_headers(project))
        assert r.status_code == 200
        assert r.json() == client.get(f"/_sim/truth/{ML}/{run_id}").json()["body"]
        counts = client.get("/_sim/requests/counts").json()[ML][run_id]
        assert counts == {"requests": 2, "by_status": {"200": 1, "403": 1}}
        config = client.get("/_sim/config").json()["config"]
        assert config["poison"]["forbidden_project"] == [FORBIDDEN_PROJECT]


def test_cli_builds_poison_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[SimConfig] = []
    monkeypatch.setattr(sim_app, "serve", lambda c, host, port: calls.append(c))
    sim_app.main(
        [
            *("--poison", "nul=ask_a,ask_b", "--poison", "nul=ask_c", "--poison", "drip=ask_d"),
            *("--poison-drip-seconds", "0.2", "--poison-retry-after-count", "3"),
        ]
    )
    config = calls[0]
    assert config.poison == {"nul": ["ask_a", "ask_b", "ask_c"], "drip": ["ask_d"]}
    assert (config.poison_drip_seconds, config.poison_retry_after_count) == (0.2, 3)
    with pytest.raises(SystemExit):
        sim_app.main(["--poison", "nope=ask_a"])


def test_latency_jitter_stays_within_bounds_and_never_below_zero() -> None:
    sim = make_client(latency_ms=250, latency_jitter_ms=150).app.state.sim
    draws = [sim.latency_ms() for _ in range(2000)]
    assert all(100 <= d <= 400 for d in draws)
    assert min(draws) < 110 and max(draws) > 390  # uniform over the whole range
    assert 240 < sum(draws) / len(draws) < 260
    sim = make_client(latency_ms=20, latency_jitter_ms=100).app.state.sim
    draws = [sim.latency_ms() for _ in range(500)]
    assert all(0 <= d <= 120 for d in draws) and draws.count(0.0) > 100
    assert make_client(latency_ms=30).app.state.sim.latency_ms() == 30


def test_per_vendor_rate_limits_and_headers() -> None:
    client = make_client(rate_limits={MA: 500, ML: 100}, max_pending_polls=0)
    ids = client.get("/_sim/dataset", params={"vendor": ML, "n": 1}).json()["ids"]
    r = client.get(
        f"/api/v1/job-executions/{ids[0]['id']}", headers=ml_headers(ids[0]["project_id"])
    )
    # MentionLab: the limit per second, and a Reset as a unix timestamp.
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("100", "99")
    assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())
    # MentionsAPI at the Enterprise rate announces the Enterprise burst, 1000.
    r = client.get("/v1/ask/ask_X", headers=MA_KEY)
    assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("1000", "999")
    assert "X-RateLimit-Reset" not in r.headers
    stats = client.get("/_sim/stats").json()["by_vendor"]
    assert stats[MA]["rate_limit"] == 500 and stats[MA]["burst"] == 1000
    assert stats[ML]["rate_limit"] == 100 and stats[ML]["burst"] == 100
    assert stats[MA]["answered"] == 1 and stats[ML]["answered"] == 1


def test_per_vendor_limit_falls_back_to_rate_limit_and_limits_each_vendor_alone() -> None:
    client = make_client(rate_limit=2, rate_limits={ML: 3}, rate_bursts={MA: 1})
    eid = "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
    project = client.get("/_sim/dataset", params={"vendor": ML, "n": 1}).json()["ids"][0]
    ml = [
        client.get(f"/api/v1/job-executions/{eid}", headers=ml_headers(project["project_id"]))
        for _ in range(4)
    ]
    assert [r.headers["X-RateLimit-Limit"] for r in ml] == ["3"] * 4
    assert [r.status_code == 429 for r in ml] == [False, False, False, True]
    assert int(ml[3].headers["Retry-After"]) >= 1
    ma = [client.get("/v1/ask/ask_X", headers=MA_KEY) for _ in range(2)]
    # The burst given for MentionsAPI (1), its rate from rate_limit (2/s).
    assert [r.headers["X-RateLimit-Limit"] for r in ma] == ["1", "1"]
    assert [r.status_code for r in ma][1] == 429
    assert ma[1].json()["error"]["code"] == "rate_limited"
    stats = client.get("/_sim/stats").json()
    assert stats["rate_limited"] == 2
    assert stats["by_vendor"][MA]["rate_limited"] == 1
    assert stats["by_vendor"][ML]["rate_limited"] == 1
    assert stats["by_vendor"][MA]["rate_limit"] == 2


def test_cli_builds_per_vendor_limits_and_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[SimConfig] = []
    monkeypatch.setattr(sim_app, "serve", lambda c, host, port: calls.append(c))
    sim_app.main(
        [
            "--latency-ms",
            "250",
            "--latency-jitter-ms",
            "150",
            "--rate-limit",
            "7",
            "--rate-limit-mentionsapi",
            "500",
            "--rate-limit-mentionlab",
            "100",
            "--rate-burst-mentionlab",
            "20",
        ]
    )
    config = calls[0]
    assert (config.latency_ms, config.latency_jitter_ms, config.rate_limit) == (250, 150, 7)
    assert config.rate_limits == {MA: 500, ML: 100} and config.rate_bursts == {ML: 20}
    with pytest.raises(SystemExit):
        sim_app.main(["--rate-limit-mentionlab", "0"])


def test_in_flight_counts_concurrent_slow_requests() -> None:
    base_url, stop = run_in_thread(SimConfig(seed=7, latency_ms=300, latency_jitter_ms=50))
    try:
        import asyncio
        import concurrent.futures

        async def burst() -> list[int]:
            async with httpx.AsyncClient(
                base_url=base_url,
                trust_env=False,
                timeout=10,
                limits=httpx.Limits(max_connections=50),
            ) as client:
                responses = await asyncio.gather(
                    *(client.get(f"/v1/ask/ask_{i}", headers=MA_KEY) for i in range(50))
                )
            return [r.status_code for r in responses]

        started = time.monotonic()
        # A thread of its own: a browser test earlier in the session may leave an
        # event loop running in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            statuses = pool.submit(lambda: asyncio.run(burst())).result()
        elapsed = time.monotonic() - started
        assert len(statuses) == 50
        # 50 requests of 250-350 ms each, served concurrently, not one after another.
        assert elapsed < 3.0, elapsed
        stats = httpx.get(f"{base_url}/_sim/stats", trust_env=False).json()
        assert stats["max_in_flight"] >= 20 and stats["in_flight"] == 0
    finally:
        stop()
