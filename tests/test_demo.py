"""The embedded path: `mentionsync demo` on SQLite and kombu's SQLAlchemy broker,
with a real Celery worker and beat, end to end."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from tests.helpers import MENTIONSYNC


def test_demo_runs_end_to_end_on_sqlite(tmp_path: Path) -> None:
    # A user's shell: none of the test suite's servers or keys.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "MENTION"))
    }
    result = subprocess.run(
        [
            MENTIONSYNC,
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--asks",
            "60",
            "--executions",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pending: 0" in result.stdout
    assert "lost to expiry (410):" in result.stdout
    database = tmp_path / "demo" / "mentionsync.db"
    with sqlite3.connect(database) as db:
        states = dict(
            db.execute("SELECT state, count(*) FROM tracked_ids GROUP BY state").fetchall()
        )
        asks = db.execute("SELECT count(*) FROM asks").fetchone()[0]
        runs = db.execute("SELECT count(*) FROM job_executions").fetchone()[0]
        mentions = db.execute("SELECT count(*) FROM ask_brand_mentions").fetchone()[0]
    assert sum(states.values()) == 120
    assert "tracked" not in states and "polling" not in states
    assert asks == states.get("archived_mentionsapi", asks) and asks > 30
    assert runs > 30 and mentions > 30
    assert asks + runs == states["archived"] + states.get("failed", 0)
    # The analytics charts of the demo archive (docs/analytics.md shows them).
    # Issue 14: ids registered with topics, a five-brand catalog, and the charts of
    # visibility by topic (own vs competitors) and of the per-vendor comparison.
    with sqlite3.connect(database) as db:
        topics = db.execute("SELECT count(DISTINCT value) FROM label_facts WHERE key = 'topic'")
        assert topics.fetchone()[0] == 3
        own = db.execute("SELECT name FROM catalog_brands WHERE own").fetchall()
        assert own == [("Supabase",)]
        assert db.execute("SELECT count(*) FROM catalog_brands").fetchone()[0] == 5
    for name in (
        "share-of-voice-by-day.png",
        "visibility-by-provider.png",
        "citations.png",
        "visibility-by-topic-own-vs-competitors.png",
        "compare-visibility-per-vendor.png",
    ):
        chart = tmp_path / "demo" / name
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert chart.stat().st_size > 15_000, name
