"""A refused key pauses polling for that account, burns no attempt, shows in
status, and never leaks; fixing the key resumes polling."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select, text

from models import TrackedId, TrackedState, Vendor
from simulator import Dataset
from tests.helpers import cli
from tests.resources import session_scope
from worker.config import fingerprint

BAD_KEY = "lvk_live_revoked_0123456789abcdef"


def test_refused_key_pauses_without_burning_attempts_then_resumes(sim, configure) -> None:  # type: ignore[no-untyped-def]
    base_url = sim(seed=2, max_pending_polls=0)
    configure(MENTIONSAPI_API_KEY=BAD_KEY)
    asks = Dataset(seed=2).ask_ids(40)
    assert cli("track", "mentionsapi", *asks).returncode == 0

    result = cli("sync", "--until-done", "--timeout", "20")
    assert result.returncode == 3, result.stderr
    assert "refused the API key" in result.stderr
    assert BAD_KEY not in result.stderr + result.stdout

    requests = httpx.get(f"{base_url}/_sim/stats").json()["requests"]
    assert requests <= 10  # the batch stopped sending after the first 401s
    with session_scope() as session:
        rows = session.scalars(select(TrackedId)).all()
        assert {(r.state, r.attempts, r.consecutive_errors) for r in rows} <= {
            (TrackedState.TRACKED, 0, 0)
        }
        # The key is nowhere in the database, in any column of any table.
        dump = session.execute(
            text("SELECT string_agg(t::text, ' ') FROM vendor_accounts t")
        ).scalar()
        assert dump is not None and fingerprint(BAD_KEY) in dump and BAD_KEY not in dump
        tracked_dump = session.execute(
            text("SELECT string_agg(t::text, ' ') FROM tracked_ids t")
        ).scalar()
        assert BAD_KEY not in tracked_dump

    status = cli("status", "--json")
    report = json.loads(status.stdout)
    assert "refused the API key" in report["accounts"]["mentionsapi"]["paused"]
    assert report["accounts"]["mentionlab"]["paused"] is None
    human = cli("status").stdout
    assert "refused the API key" in human and BAD_KEY not in human
    assert fingerprint(BAD_KEY) in human

    # A new key has a new fingerprint: polling resumes at once.
    configure(MENTIONSAPI_API_KEY="lvk_live_fixed_key")
    assert cli("sync", "--until-done", "--timeout", "60").returncode == 0
    with session_scope() as session:
        states = set(session.scalars(select(TrackedId.state)))
    assert TrackedState.TRACKED not in states and TrackedState.POLLING not in states
    assert json.loads(cli("status", "--json").stdout)["accounts"]["mentionsapi"]["paused"] is None


def test_missing_key_is_reported_not_polled(sim, configure) -> None:  # type: ignore[no-untyped-def]
    base_url = sim(seed=2)
    configure(MENTIONLAB_API_KEY="")
    import os

    del os.environ["MENTIONLAB_API_KEY"]
    configure()
    project, run = Dataset(seed=2).execution_ids(1)[0]
    assert cli("track", "mentionlab", "--project", project, run).returncode == 0
    result = cli("sync", "--until-done", "--timeout", "10")
    assert result.returncode == 3
    assert "no API key configured for mentionlab" in result.stderr
    assert httpx.get(f"{base_url}/_sim/stats").json()["requests"] == 0
    report = json.loads(cli("status", "--json").stdout)
    assert report["accounts"][Vendor.MENTIONLAB.value]["configured"] is False
