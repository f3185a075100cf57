"""`mentionsync doctor`: what is wrong, and how to fix it, from the real command."""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from email.utils import formatdate

import pytest
from alembic import command
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator import serve_in_thread
from tests.helpers import cli
from tests.resources import session_scope
from tests.test_migrations import scratch_postgres  # noqa: F401 - a fixture
from worker.config import fingerprint
from worker.migrate import alembic_config


@pytest.fixture(autouse=True)
def wide(configure: Callable[..., None]) -> None:
    configure(COLUMNS="250")  # one check per line, whatever the terminal


def lines(output: str, level: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(level)]


def test_a_healthy_deployment(sim: Callable[..., str]) -> None:
    sim(seed=3)

    result = cli("doctor")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert not lines(out, "FAIL"), out
    for name in ("database", "migrations", "broker", "mentionsapi api", "mentionlab api"):
        assert re.search(rf"^ok\s+{name}\s", out, re.MULTILINE), (name, out)
    assert "accepts the key" in out
    assert "clock vs database" in out and "clock vs mentionsapi" in out
    # Unset optional parts are warnings with a fix, not failures.
    assert "→ set INTAKE_TOKEN" in out
    assert "→ set MENTIONSAPI_WEBHOOK_SECRET" in out


def test_refused_keys_are_named_by_fingerprint(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    sim(seed=3)
    key = f"lvk_live_revoked_{secrets.token_hex(12)}"
    configure(MENTIONSAPI_API_KEY=key)

    result = cli("doctor")

    assert result.returncode == 1
    (failed,) = lines(result.stdout, "FAIL")
    assert "mentionsapi api" in failed and "refused the key (HTTP 401)" in failed
    assert fingerprint(key) in result.stdout
    assert key not in result.stdout + result.stderr
    assert key.rsplit("_", 1)[1] not in result.stdout + result.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_database_broker_and_vendor(configure: Callable[..., None]) -> None:
    port = closed_port()
    configure(
        DATABASE_URL=f"postgresql+psycopg://postgres:hunter22@127.0.0.1:{port}/mentionsync",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/0",
        MENTIONSAPI_BASE_URL=f"http://127.0.0.1:{port}",
        MENTIONLAB_BASE_URL=f"http://127.0.0.1:{port}",
    )

    result = cli("doctor")

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    failed = "\n".join(lines(result.stdout, "FAIL"))
    assert "database" in failed and "broker" in failed and "mentionsapi api" in failed
    assert "→ check DATABASE_URL" in result.stdout
    assert "→ check CELERY_BROKER_URL" in result.stdout
    assert "hunter22" not in result.stdout + result.stderr


@pytest.fixture
def old_schema(scratch_postgres: str) -> str:  # noqa: F811 - the imported fixture
    command.upgrade(alembic_config(scratch_postgres), "0002")
    return scratch_postgres


def test_a_database_behind_the_code_says_to_upgrade(
    old_schema: str, configure: Callable[..., None]
) -> None:
    configure(DATABASE_URL=old_schema)

    result = cli("doctor", "--no-vendors")

    assert result.returncode == 1
    (failed,) = lines(result.stdout, "FAIL")
    assert "migrations" in failed and "database at 0002" in failed
    assert "→ run `mentionsync db upgrade`" in result.stdout


def test_clock_skew_against_a_vendor(configure: Callable[..., None]) -> None:
    async def skewed(request: Request) -> Response:
        # The vendor's clock is two minutes ahead of ours.
        date = formatdate(timeval=__import__("time").time() + 120, usegmt=True)
        return JSONResponse(
            {"error": {"code": "not_found"}}, status_code=404, headers={"date": date}
        )

    async def health(request: Request) -> Response:
        return Response("ok")

    app = Starlette(
        routes=[Route("/health", health), Route("/v1/ask/{id}", skewed)],
    )
    base_url, stop = serve_in_thread(app, "/health", date_header=False)
    try:
        configure(MENTIONSAPI_BASE_URL=base_url, MENTIONLAB_API_KEY="")
        result = cli("doctor")
    finally:
        stop()
    assert result.returncode == 1, result.stdout
    skew = next(line for line in lines(result.stdout, "FAIL") if "clock vs mentionsapi" in line)
    found = re.search(r"this host is (-?[\d.]+) s off", skew)
    assert found and -125 < float(found.group(1)) < -115  # about 120 s behind
    assert "run NTP" in result.stdout


def test_a_test_alert(configure: Callable[..., None]) -> None:
    received: list[dict[str, object]] = []

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        return Response("ok")

    async def health(request: Request) -> Response:
        return Response("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/health", health)])
    base_url, stop = serve_in_thread(app, "/health")
    try:
        configure(ALERT_WEBHOOK_URL=f"{base_url}/hook")
        result = cli("doctor", "--no-vendors", "--test-alert")
    finally:
        stop()
    assert any(
        line.startswith("ok") and "test alert" in line for line in result.stdout.splitlines()
    )
    assert received and received[0]["kind"] == "test"


def test_an_invalid_setting_is_named_not_a_traceback(configure: Callable[..., None]) -> None:
    configure(BATCH_SIZE="fifty", MENTIONSAPI_RATE_LIMIT="-1")
    for args in (["doctor"], ["status"]):
        result = cli(*args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert "invalid configuration" in result.stderr
        assert "BATCH_SIZE: Input should be a valid integer" in result.stderr
        assert "MENTIONSAPI_RATE_LIMIT: Input should be greater than 0" in result.stderr
        assert "fifty" not in result.stderr  # values are never echoed: some are secrets
    # The Celery entry points say the same.
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "ping"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode != 0 and "Traceback" not in worker.stderr
    assert "BATCH_SIZE: Input should be a valid integer" in worker.stderr


def test_a_403_for_a_made_up_project_is_no_verdict_on_the_key(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    """With no MentionLab id tracked, the probe can only name a made-up project,
    and a 403 may mean just "not your project": a warning, not a refused key.
    Once a real project is tracked, a 403 for it is the key's fault."""
    seen_projects: list[str] = []

    async def forbidden(request: Request) -> Response:
        seen_projects.append(request.headers.get("x-project-id", ""))
        return JSONResponse({"statusCode": 403, "message": "Forbidden"}, status_code=403)

    async def health(request: Request) -> Response:
        return Response("ok")

    app = Starlette(
        routes=[Route("/health", health), Route("/api/v1/job-executions/{id}", forbidden)]
    )
    sim(seed=3)
    base_url, stop = serve_in_thread(app, "/health")
    try:
        configure(MENTIONLAB_BASE_URL=base_url)
        first = cli("doctor")
        project = "5f0c2c1e-8d47-4a8e-9a55-3c1d2e4f6a7b"
        tracked = cli("track", "mentionlab", "--project", project, str(uuid.uuid4()))
        assert tracked.returncode == 0, tracked.stderr
        second = cli("doctor")
    finally:
        stop()
    (warned,) = [line for line in lines(first.stdout, "warn") if "mentionlab api" in line]
    assert "403 for a made-up project" in warned and not lines(first.stdout, "FAIL")
    (failed,) = lines(second.stdout, "FAIL")
    assert "mentionlab api" in failed and "refused the key (HTTP 403)" in failed
    assert seen_projects == ["00000000-0000-4000-8000-000000000000", project]


def beat_row(name: str, tick_ago: float, dispatch_ago: float | None) -> None:
    """A beat's heartbeat row, aged by the database's own clock."""
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO scheduler_heartbeats VALUES (:name,"
                " now() - make_interval(secs => 900), now() - make_interval(secs => :t),"
                " now() - make_interval(secs => :d))"
            ),
            {"name": name, "t": tick_ago, "d": dispatch_ago},
        )


def test_the_scheduler_s_age(configure: Callable[..., None]) -> None:
    # No beat ever: a warning that says what to start.
    result = cli("doctor", "--no-vendors")
    (line,) = [x for x in lines(result.stdout, "warn") if "scheduler" in x]
    assert "no beat is ticking (none ever)" in line
    assert "→ start one beat: `celery -A worker.app beat`" in result.stdout

    # Beat died 100 s ago: a failure, with its age, and exit 1.
    beat_row("beat-host:1", tick_ago=100, dispatch_ago=100)
    result = cli("doctor", "--no-vendors")
    assert result.returncode == 1
    (failed,) = lines(result.stdout, "FAIL")
    assert "scheduler" in failed and "no dispatch sweep for 10" in failed
    assert "beat is stopped or hung" in failed

    # A live beat: ok, with the age of the last sweep.
    beat_row("beat-host:2", tick_ago=0.3, dispatch_ago=0.6)
    result = cli("doctor", "--no-vendors")
    assert re.search(
        r"^ok\s+scheduler\s+last dispatch sweep \d\.\d s ago, 1 beat ticking",
        result.stdout,
        re.MULTILINE,
    ), result.stdout

    # Two live beats: safe, but said.
    beat_row("beat-host:3", tick_ago=0.2, dispatch_ago=0.4)
    result = cli("doctor", "--no-vendors")
    (line,) = [x for x in lines(result.stdout, "warn") if "scheduler" in x]
    assert "2 beats ticking" in line and "beat-host:2" in line and "beat-host:3" in line
