"""The benchmark cannot rot: its smoke version runs end to end in CI. No timing
is asserted here; the figures belong in docs/benchmarks.md."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_smoke_runs_every_scenario() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "successful req/s" in output and "429 share" in output, output[-4000:]
