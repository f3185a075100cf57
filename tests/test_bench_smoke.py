"""The benchmark cannot rot: its smoke version runs end to end in CI. No timing
is asserted here; the figures belong in docs/benchmarks.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from tests.conftest import REDIS_URL, ROOT, _admin_engine

BENCH_DB = f"mentionsync_bench_smoke_{os.getpid()}"


def test_bench_smoke_runs_every_scenario(tmp_path: Path) -> None:
    chart = tmp_path / "scaling.png"
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "bench", "--smoke", "--chart", str(chart)],
        cwd=ROOT,
        # Its own database and the suite's Redis, so parallel runs never collide.
        env={**os.environ, "BENCH_DATABASE": BENCH_DB, "BENCH_REDIS_URL": REDIS_URL},
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    scenarios = ("throughput", "latency", "ratelimit", "scheduler", "writepath", "memory")
    for scenario in (*scenarios, "pace", "backfill"):
        assert f"│ {scenario}" in output, (scenario, output[-4000:])
    # Issue 13's rows: the sync row of throughput, and pace's and backfill's
    # archives checked against the simulator's payloads.
    assert "sync --until-done" in output, output[-4000:]
    assert output.count("exactness") == 2, output[-4000:]
    # A PNG, not an empty file: the signature and a plausible size.
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def teardown_module() -> None:
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
    admin.dispose()
