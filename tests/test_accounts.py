"""A refused key pauses polling for that account, burns no attempt, shows in
status, and never leaks; fixing the key resumes polling."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
from sqlalchemy import select, text

from models import TrackedId, TrackedState, Vendor, VendorAccount, utcnow
from simulator import Dataset
from tests.helpers import cli
from tests.resources import session_scope
from worker.accounts import update_account
from worker.config import fingerprint, load_settings
from worker.outcome import Action, Outcome

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


def test_the_key_row_is_written_only_when_the_keys_state_changes() -> None:
    """Every batch's write passes through update_account; a working key's row
    is left alone (no lock, no write), and a pause or a refusal still lands."""
    settings = load_settings()
    vendor = Vendor.MENTIONSAPI
    t0 = utcnow().replace(microsecond=0)
    works = [Outcome(Action.ARCHIVE, 200)]

    def apply(outcomes: list[Outcome], at: timedelta) -> VendorAccount | None:
        with session_scope() as session:
            update_account(session, vendor, outcomes, now=t0 + at, settings=settings)
        with session_scope() as session:
            account = session.get(VendorAccount, (vendor, settings.key_fingerprint(vendor)))
            if account is not None:
                session.expunge(account)
            return account

    assert apply(works, timedelta(0)) is None  # nothing to record for a working key
    paused = apply([Outcome(Action.THROTTLE, 429, retry_after=5.0)], timedelta(seconds=1))
    assert paused is not None and paused.paused_until == t0 + timedelta(seconds=6)
    same = apply(works, timedelta(seconds=2))
    assert same is not None and same.updated_at == t0 + timedelta(seconds=1)
    shorter = apply([Outcome(Action.THROTTLE, 429, retry_after=1.0)], timedelta(seconds=3))
    assert shorter is not None and shorter.paused_until == t0 + timedelta(seconds=6)
    assert shorter.updated_at == t0 + timedelta(seconds=1)

    refused = apply([Outcome(Action.PAUSE_ACCOUNT, 401, reason="bad key")], timedelta(seconds=4))
    assert refused is not None and refused.auth_failed_at == t0 + timedelta(seconds=4)
    back = apply(works, timedelta(seconds=5))
    assert back is not None and back.auth_failed_at is None and back.auth_error is None
    assert back.updated_at == t0 + timedelta(seconds=5)
