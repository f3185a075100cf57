"""`mentionsync simulate` serves both vendor APIs on loopback."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx

from tests.helpers import MENTIONSYNC


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_simulate_command_serves_both_apis() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [MENTIONSYNC, "simulate", "--port", str(port), "--seed", "3", "--rate-limit", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/_sim/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        ask = httpx.get(f"{base}/_sim/dataset", params={"vendor": "mentionsapi", "n": 1}).json()
        r = httpx.get(
            f"{base}/v1/ask/{ask['ids'][0]}", headers={"Authorization": "Bearer lvk_test_x"}
        )
        assert r.status_code in (200, 202, 400, 404, 410)
        assert r.headers["X-RateLimit-Limit"] == "50"
        runs = httpx.get(f"{base}/_sim/dataset", params={"vendor": "mentionlab", "n": 1}).json()
        run = runs["ids"][0]
        r = httpx.get(
            f"{base}/api/v1/job-executions/{run['id']}",
            headers={"x-api-key": "ml_test_x", "x-project-id": run["project_id"]},
        )
        assert r.status_code in (200, 400, 404)
        assert "X-RateLimit-Reset" in r.headers
        assert (
            httpx.get(f"{base}/v1/ask/x", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
    finally:
        proc.terminate()
        proc.wait(10)
