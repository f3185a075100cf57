"""The dashboard under a real browser: Debian's Chromium driven by Playwright,
against the real `mentionsync serve` on a loopback port.

`scripts/services.sh` installs Chromium (`apt-get install chromium`) when
/usr/bin/chromium is missing; Playwright's own browser download is not used.
Screenshots are kept in tests/artifacts/dashboard/ (git-ignored), or in
$DASHBOARD_ARTIFACTS.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import MENTIONSYNC
from worker.demo import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TOKEN = "dashboard-test-token-0123456789"
ARTIFACTS = Path(os.environ.get("DASHBOARD_ARTIFACTS", ROOT / "tests" / "artifacts" / "dashboard"))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/services.sh (it installs chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; any script error fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """`mentionsync serve` on a free loopback port until the block ends."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [MENTIONSYNC, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/healthz", timeout=1, trust_env=False).is_success:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., Any]:
    """serve(**env) -> a context manager yielding the base URL of `mentionsync
    serve` with the current environment plus `env`."""
    counter = iter(range(1000))

    def start(**env: str) -> Any:
        return serving({**os.environ, **env}, tmp_path / f"serve-{next(counter)}.log")

    return start


def log_in(page: Any, base: str, token: str = TOKEN) -> None:
    page.goto(f"{base}/")
    assert "/login" in page.url
    page.fill("input[name=token]", token)
    page.click("form button[type=submit]")
    page.wait_for_load_state()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def register_over_days(asks: list[str], days: int) -> None:
    """Track ask ids spread over the last `days` days: asks carry no time of
    their own, and --created-at gives them one, as `mentionsync demo` does."""
    from models import Vendor, utcnow
    from tests.resources import session_scope
    from worker.config import load_settings
    from worker.registry import label_arguments, register

    for day in range(days):
        with session_scope() as session:
            register(
                session,
                Vendor.MENTIONSAPI,
                label_arguments(asks[day::days]),
                settings=load_settings(),
                created_at=utcnow() - timedelta(days=day, hours=1),
            )
