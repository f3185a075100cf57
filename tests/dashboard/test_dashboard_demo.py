"""`mentionsync demo --serve` (what scripts/demo.sh runs) ends with a dashboard
a person can open: its address and token are printed, and they work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.dashboard.conftest import log_in, screenshot
from tests.helpers import MENTIONSYNC
from worker.demo import free_port


def test_the_demo_ends_with_a_dashboard_to_open(page: Any, tmp_path: Path) -> None:
    # A user's shell: none of the test suite's servers or keys.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_", "MENTION"))
    }
    port = free_port()
    output = tmp_path / "demo.out"
    with output.open("w") as out:
        demo = subprocess.Popen(
            [
                *(MENTIONSYNC, "demo", "--dir", str(tmp_path / "demo")),
                *("--asks", "40", "--executions", "40", "--serve", "--port", str(port)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        # Inside pytest-timeout's 300 s, so that a demo that hangs shows its output.
        deadline = time.monotonic() + 240
        found = None
        while found is None:
            assert demo.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, output.read_text()[-3000:]
            time.sleep(0.5)
            found = re.search(
                r"Dashboard: (http://127\.0\.0\.1:\d+/)\s+\(log in with the token (\S+);",
                output.read_text(),
            )
        base, token = found.group(1).rstrip("/"), found.group(2)
        assert base == f"http://127.0.0.1:{port}"
        # uvicorn starts listening just after the line is printed.
        for _ in range(50):
            try:
                page.goto(f"{base}/")
                break
            except Exception:
                time.sleep(0.2)
        log_in(page, base, token)
        assert page.inner_text("#total") == "80"
        assert page.inner_text("#pending") == "0"
        page.click("header nav >> text=Visibility")
        assert page.locator("#table-share-of-voice tbody tr td[data-col=brand]").count() > 0
        screenshot(page, "demo-visibility.png")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
    assert demo.returncode == 0, output.read_text()[-3000:]
