"""End to end through the real CLI: track 1,000 + 1,000 ids, sync until done,
compare every row with the simulator's payloads, then prove a rerun changes nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx

from models import Vendor
from simulator import Dataset
from tests.expected import STATE_OF_FATE, check_everything, truth
from tests.helpers import archive_snapshot, cli, tracked_snapshot, wasted_polls
from tests.resources import session_scope

SEED = 11


def test_track_sync_until_done_archives_every_payload(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base_url = sim(seed=SEED, max_pending_polls=2)
    dataset = Dataset(seed=SEED)
    asks = dataset.ask_ids(1000)
    runs = dataset.execution_ids(1000)

    ask_file = tmp_path / "asks.txt"
    ask_file.write_text("\n".join(asks) + "\n")
    result = cli(
        "track", "mentionsapi", "--file", str(ask_file), "--created-at", "2026-11-20T00:00:00Z"
    )
    assert result.returncode == 0, result.stderr
    assert "1000 registered" in result.stderr
    by_project: dict[str, list[str]] = {}
    for project, run in runs:
        by_project.setdefault(project, []).append(run)
    for project, ids in by_project.items():
        result = cli(
            "track", "mentionlab", "--project", project, "--file", "-", input="\n".join(ids)
        )
        assert result.returncode == 0, result.stderr

    result = cli("sync", "--until-done", "--timeout", "240")
    assert result.returncode == 0, result.stderr[-3000:]

    with session_scope() as session:
        states = check_everything(session, base_url)
    expected = Counter(
        STATE_OF_FATE[truth(base_url, Vendor.MENTIONSAPI, a)["fate"]].value for a in asks
    ) + Counter(STATE_OF_FATE[truth(base_url, Vendor.MENTIONLAB, r)["fate"]].value for _, r in runs)
    assert states == dict(expected)
    assert states["archived"] > 1400  # the dataset is mostly answers, not errors

    stats = httpx.get(f"{base_url}/_sim/stats").json()
    assert wasted_polls(stats) == 0  # no id was fetched again once final

    # Running everything again changes nothing.
    archive_before, tracked_before = archive_snapshot(), tracked_snapshot()
    result = cli("track", "mentionsapi", "--file", str(ask_file))
    assert "0 registered, 1000 already tracked" in result.stderr
    assert cli("sync", "--until-done", "--timeout", "30").returncode == 0
    assert archive_snapshot() == archive_before
    assert tracked_snapshot() == tracked_before
    assert httpx.get(f"{base_url}/_sim/stats").json()["requests"] == stats["requests"]

    # And status tells the truth about all of it.
    status = json.loads(cli("status", "--json").stdout)
    assert status["total"] == 2000 and status["pending"] == 0
    assert {k: v for k, v in status["totals"].items() if v} == dict(expected)
    assert status["lost_to_expiry"]["count"] == expected["expired"]
    assert status["oldest_pending"] is None and status["at_risk"]["count"] == 0
    text = cli("status").stdout
    assert f"lost to expiry (410): {expected['expired']}" in text
