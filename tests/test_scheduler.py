"""A scheduler that cannot die quietly: real `celery beat`, `celery worker` and
`mentionsync run` processes on Redis and Postgres.

Beat records its ticks by the database's clock; a SIGKILLed or hung beat under
`mentionsync run` is restarted and ids are archived again; with no beat at all,
a worker's watchdog logs the stall and sends the alert; two beats by mistake are
two rows and the newest counts; status and /readyz show the age, and /readyz
tells an unauthenticated caller nothing but ok or not.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text

from models import AlertState, SchedulerHeartbeat, TrackedId, TrackedState, Vendor
from simulator import Dataset, serve_in_thread
from tests.helpers import MENTIONSYNC, cli, pending, register_dataset, wasted_polls
from tests.resources import intake_app, session_scope
from tests.test_alerts import Receiver, receiver  # noqa: F401 - a fixture
from tests.vendor_stub import Reply, VendorStub
from worker.beat import TickWriter
from worker.config import load_settings
from worker.registry import label_arguments, register

SEED = 23
DATASET = Dataset(seed=SEED)
STALL = 4.0  # SCHEDULER_STALL_SECONDS in these tests
HOST = socket.gethostname()


@pytest.fixture(autouse=True)
def fast(configure: Callable[..., None]) -> None:
    configure(
        SCHEDULER_HEARTBEAT_SECONDS="0.5",
        SCHEDULER_STALL_SECONDS=str(STALL),
        POLL_TICK_SECONDS="0.5",
        COLUMNS="250",
    )


@contextmanager
def started(argv: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process logging to `log`; SIGTERM (then SIGKILL) on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT, cwd=cwd
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def celery(command: str, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        command,
        "--loglevel=INFO",
        *options,
    ]


def worker_argv(*options: str) -> list[str]:
    return celery("worker", "--concurrency=1", "--without-gossip", "--without-mingle", *options)


def beat_argv(tmp_path: Path, name: str) -> list[str]:
    return celery("beat", f"--schedule={tmp_path / f'{name}-schedule'}")


def heartbeats() -> dict[str, SchedulerHeartbeat]:
    with session_scope() as session:
        return {h.instance: h for h in session.scalars(select(SchedulerHeartbeat))}


def db_now() -> Any:
    with session_scope() as session:
        return session.scalar(text("SELECT now()"))


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, log: Path | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tail}")


def parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Running (a zombie, killed but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def track_one(skip: int = 0) -> str:
    """Register a simulator ask that ends archived; its id."""
    ask = [i for i in DATASET.ask_ids(200) if DATASET.fate("mentionsapi", i) == "succeeded"][skip]
    with session_scope() as session:
        register(session, Vendor.MENTIONSAPI, label_arguments([ask]), settings=load_settings())
    return ask


def archived(ask: str) -> bool:
    with session_scope() as session:
        state = session.scalar(select(TrackedId.state).where(TrackedId.external_id == ask))
    return state is TrackedState.ARCHIVED


# --- beat's heartbeat ----------------------------------------------------------------------

SKEWED_CLOCK = """
import datetime as _dt
import time as _time

# This host's clock is a day behind: whatever beat records must not show it.
_real = _time.time
_time.time = lambda: _real() - 86400

import models
import models.base


def _skewed():
    return _dt.datetime.now(_dt.UTC) - _dt.timedelta(days=1)


models.utcnow = models.base.utcnow = _skewed
"""


def test_beat_records_its_ticks_by_the_database_clock(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEWED_CLOCK)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")])
    )
    log = tmp_path / "beat.log"
    with started(beat_argv(tmp_path, "beat"), log, tmp_path) as beat:
        name = f"{HOST}:{beat.pid}"
        first = wait_for(lambda: heartbeats().get(name), 20, "beat's first heartbeat", log)
        time.sleep(1.5)
        later = heartbeats()[name]
        now = db_now()
    del os.environ["PYTHONPATH"]
    assert list(heartbeats()) == [name]  # one row, named host:pid
    # By the database's clock, not the skewed host's: a day off would show here.
    assert abs((now - later.last_tick_at).total_seconds()) < 2
    assert abs((now - first.started_at).total_seconds()) < 5
    assert later.started_at == first.started_at
    assert later.last_tick_at > first.last_tick_at  # every SCHEDULER_HEARTBEAT_SECONDS
    assert later.last_dispatch_at is None  # no worker ran its sweeps
    assert "records its heartbeat" in log.read_text()


def test_a_database_outage_does_not_stop_beat(
    configure: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    configure(DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/x")
    writer = TickWriter(load_settings())
    with caplog.at_level("INFO", logger="mentionsync.beat"):
        for _ in range(3):
            writer._next = 0.0  # due at once, as if the interval had passed
            writer.tick()  # never raises
    warnings = [r for r in caplog.records if "cannot record its heartbeat" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage, not per tick


def test_two_beats_by_mistake_one_row_each_and_the_newest_counts(
    sim: Callable[..., str], tmp_path: Path
) -> None:
    base_url = sim(seed=SEED, max_pending_polls=1)
    register_dataset(DATASET, asks=40, executions=40)
    log = tmp_path / "celery.log"
    with ExitStack() as stack:
        stack.enter_context(started(worker_argv(), log, tmp_path))
        one = stack.enter_context(started(beat_argv(tmp_path, "one"), log, tmp_path))
        two = stack.enter_context(started(beat_argv(tmp_path, "two"), log, tmp_path))
        names = {f"{HOST}:{one.pid}", f"{HOST}:{two.pid}"}

        def both_dispatched() -> bool:
            rows = heartbeats()
            return set(rows) == names and all(r.last_dispatch_at for r in rows.values())

        wait_for(both_dispatched, 30, "sweeps of both beats", log)
        wait_for(lambda: pending() == 0, 40, "every id final", log)
        # Both beats swept; the claim took no id twice.
        assert wasted_polls(httpx.get(f"{base_url}/_sim/stats", timeout=10).json()) == 0
        status = orjson.loads(cli("status", "--json").stdout)["scheduler"]
        assert status["beats_ticking"] == 2 and not status["stalled"]
        assert "2 beats are running" in cli("status").stdout

        one.kill()
        one.wait()
        time.sleep(STALL + 1)
        # The newest heartbeat counts: one live beat is enough.
        check = cli("scheduler", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        status = orjson.loads(cli("status", "--json").stdout)["scheduler"]
        assert status["beats_ticking"] == 1 and not status["stalled"]
        assert status["last_dispatch_age_seconds"] < 2
        dead = heartbeats()[f"{HOST}:{one.pid}"]
        assert (db_now() - dead.last_tick_at).total_seconds() > STALL

        two.kill()
        two.wait()
        time.sleep(STALL + 1)
        for argv in (["scheduler", "check"], ["scheduler", "check", "--local"]):
            check = cli(*argv)
            assert check.returncode == 1, check.stdout
            assert "newest beat tick" in check.stdout and "s old" in check.stdout


# --- mentionsync run --------------------------------------------------------------------------


def beat_of(run: subprocess.Popen[bytes], exclude: Collection[str] = ()) -> str | None:
    """The heartbeat row of a beat started by `run` that has dispatched, if any."""
    for name, row in heartbeats().items():
        pid = int(name.rsplit(":", 1)[1])
        if name in exclude or row.last_dispatch_at is None or not alive(pid):
            continue
        if parent_of(pid) == run.pid:
            return name
    return None


def test_run_restarts_a_killed_beat_and_dispatches_resume(
    sim: Callable[..., str], tmp_path: Path
) -> None:
    sim(seed=SEED, max_pending_polls=0)
    log = tmp_path / "run.log"
    with started([MENTIONSYNC, "run", "-c", "1"], log, tmp_path) as run:
        first = wait_for(lambda: beat_of(run), 30, "a beat of `run` that dispatched", log)
        beat_pid = int(first.rsplit(":", 1)[1])
        os.kill(beat_pid, signal.SIGKILL)
        killed_at = db_now()
        ask = track_one()

        second = wait_for(lambda: beat_of(run, {first}), 30, "the restarted beat's sweep", log)
        wait_for(lambda: archived(ask), 30, f"{ask} archived after the kill", log)
        assert heartbeats()[second].last_dispatch_at > killed_at
        assert not alive(beat_pid)

        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
    output = log.read_text()
    assert f"celery beat (pid {beat_pid}) exited with signal SIGKILL" in output
    assert "restarting it in 1 s" in output
    # Stopped cleanly: neither the worker nor the new beat is left behind.
    assert not alive(int(second.rsplit(":", 1)[1]))
    assert "stopped" in output


def test_run_restarts_a_hung_beat(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with started([MENTIONSYNC, "run", "-c", "1"], log, tmp_path) as run:
        first = wait_for(lambda: beat_of(run), 30, "a beat of `run` that dispatched", log)
        beat_pid = int(first.rsplit(":", 1)[1])
        os.kill(beat_pid, signal.SIGSTOP)  # alive, but not ticking
        second = wait_for(lambda: beat_of(run, {first}), 40, "a new beat after the hang", log)
        assert not alive(beat_pid)
        output = log.read_text()
        assert f"celery beat (pid {beat_pid}) has not ticked for" in output
        assert "hung; killing and restarting it" in output

        # The supervisor itself killed: its children do not outlive it.
        (worker_pid,) = map(int, re.findall(r"started celery worker \(pid (\d+)\)", output))
        run.kill()
        run.wait()
        children = (worker_pid, int(second.rsplit(":", 1)[1]))
        wait_for(lambda: not any(map(alive, children)), 30, "the orphans to stop", log)


# --- the workers' watchdog ------------------------------------------------------------------------


def test_a_worker_reports_a_stopped_scheduler_within_the_stall_time(
    receiver: Receiver,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    log = tmp_path / "celery.log"
    # Pool processes are replaced after every few tasks: forks happen while the
    # watchdog checks, and must neither break its connection nor theirs.
    with started(worker_argv("--max-tasks-per-child=2"), log, tmp_path):
        ready = wait_for(lambda: "ready." in log.read_text(), 30, "the worker", log)
        started_at = time.monotonic()
        assert ready
        alert = wait_for(
            lambda: next((a for a in receiver.received if a["kind"] == "scheduler_stalled"), None),
            STALL + 10,
            "the stall alert",
            log,
        )
        took = time.monotonic() - started_at
        # Stall time plus one check interval (a quarter of it), plus slack.
        assert took < STALL * 1.25 + 3, took
        assert alert["severity"] == "critical"
        assert "no dispatch sweep recorded in" in alert["text"]
        assert "no beat has recorded a tick" in alert["text"]
        output = log.read_text()
        assert "ERROR" in output and "scheduler stalled: no dispatch sweep recorded in" in output
        with session_scope() as session:
            state = session.get(AlertState, "scheduler_stalled")
            assert state is not None and state.last_sent_at is not None

        # A beat comes: its sweeps run in the (recycled) pool processes, and the
        # watchdog says the scheduler recovered, once.
        with started(beat_argv(tmp_path, "beat"), log, tmp_path):
            wait_for(
                lambda: any(a["kind"] == "scheduler_recovered" for a in receiver.received),
                STALL + 10,
                "the recovery notice",
                log,
            )
            time.sleep(3)
            # Once each, while the beat runs.
            kinds = [a["kind"] for a in receiver.received]
            assert kinds == ["scheduler_stalled", "scheduler_recovered"]
            with session_scope() as session:
                state = session.get(AlertState, "scheduler_stalled")
                assert state is not None and state.last_sent_at is None  # next stall: at once
    output = log.read_text()
    assert "scheduler recovered" in output
    assert "watchdog: check failed" not in output
    assert "Traceback" not in output


# --- status and /readyz --------------------------------------------------------------------------


def beat_row(tick_ago: float, dispatch_ago: float | None, name: str = "beat-host:42") -> None:
    """A heartbeat row aged by the database's own clock."""
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO scheduler_heartbeats VALUES (:name, now() - make_interval(secs => :s),"
                " now() - make_interval(secs => :t), now() - make_interval(secs => :d))"
            ),
            {"name": name, "s": tick_ago + 60, "t": tick_ago, "d": dispatch_ago},
        )


def test_status_shows_the_age_of_the_last_dispatch() -> None:
    beat_row(tick_ago=90, dispatch_ago=100)
    report = orjson.loads(cli("status", "--json").stdout)["scheduler"]
    assert 100 <= report["last_dispatch_age_seconds"] < 110
    assert 90 <= report["last_tick_age_seconds"] < 100
    assert report["stalled"] and report["stall_seconds"] == STALL
    assert report["beats_ticking"] == 0
    assert report["beats"][0]["instance"] == "beat-host:42"
    shown = cli("status").stdout
    assert "scheduler: STALLED: no dispatch sweep for 10" in shown
    assert "beat is stopped or hung" in shown

    # Recent: inside the stall time. The row is written afresh before each call, so one
    # CLI start (seconds on a loaded CI box) sits between it and the read, not two.
    recent_beat()
    report = orjson.loads(cli("status", "--json").stdout)["scheduler"]
    assert not report["stalled"] and report["last_dispatch_age_seconds"] < STALL
    recent_beat()
    assert "scheduler: last dispatch sweep" in cli("status").stdout


def recent_beat() -> None:
    with session_scope() as session:
        session.execute(text("TRUNCATE scheduler_heartbeats"))
    beat_row(tick_ago=0.1, dispatch_ago=0.1)


def test_readyz_tells_strangers_only_ok_or_not(configure: Callable[..., None]) -> None:
    token = f"it_{secrets.token_hex(20)}"
    configure(INTAKE_TOKEN=token)
    beat_row(tick_ago=1, dispatch_ago=100)
    base_url, stop = serve_in_thread(intake_app(), "/healthz")
    try:
        with httpx.Client(timeout=30, trust_env=False) as http:
            anonymous = http.get(f"{base_url}/readyz")
            wrong = http.get(f"{base_url}/readyz", headers={"Authorization": "Bearer nope"})
            known = http.get(f"{base_url}/readyz", headers={"Authorization": f"Bearer {token}"})
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                closed = sock.getsockname()[1]
            configure(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed}/0", INTAKE_TOKEN=token)
            down = http.get(f"{base_url}/readyz")
            down_known = http.get(
                f"{base_url}/readyz", headers={"Authorization": f"Bearer {token}"}
            )
    finally:
        stop()
    assert (anonymous.status_code, anonymous.json()) == (200, {"ok": True})
    assert wrong.json() == {"ok": True}
    assert (down.status_code, down.json()) == (503, {"ok": False})
    for response in (anonymous, wrong, known, down, down_known):
        for leak in ("postgresql", "redis://", "127.0.0.1", "beat-host", "mentionsync_test"):
            assert leak not in response.text, (leak, response.text)
    body = known.json()
    assert body["ok"] and all(c["ok"] for c in body["checks"].values())
    assert set(body["checks"]) == {"database", "migrations", "broker"}
    # The scheduler is reported, and does not make the intake unready.
    assert body["scheduler"]["stalled"] is True
    assert 100 <= body["scheduler"]["last_dispatch_age_seconds"] < 110
    assert down_known.status_code == 503
    assert not down_known.json()["checks"]["broker"]["ok"]


# --- task time limits ------------------------------------------------------------------------


def test_a_batch_past_its_time_limit_gives_its_ids_back(
    stub: VendorStub, configure: Callable[..., None], tmp_path: Path
) -> None:
    from tests.fixtures.bodies import ask_body, dumps
    from worker.tasks import dispatch_due

    # The soft limit (the lease) comes long before the request's own deadline.
    configure(LEASE_SECONDS="2", HTTP_REQUEST_DEADLINE="40", HTTP_READ_TIMEOUT="5")
    body = dumps(ask_body("ask_slow"))
    stub.script(Vendor.MENTIONSAPI, "ask_slow", Reply(body, drip_seconds=0.1), Reply(body))
    with session_scope() as session:
        register(
            session, Vendor.MENTIONSAPI, label_arguments(["ask_slow"]), settings=load_settings()
        )
    log = tmp_path / "celery.log"
    with started(worker_argv(), log, tmp_path):
        wait_for(lambda: "ready." in log.read_text(), 30, "the worker", log)
        dispatch_due.delay()
        wait_for(lambda: "ran past its time limit" in log.read_text(), 30, "the soft limit", log)
        # The ids were given back at once, not left leased until the lease expires.
        with session_scope() as session:
            row = session.scalars(
                select(TrackedId).where(TrackedId.external_id == "ask_slow")
            ).one()
            assert row.lease_token is None and row.state is TrackedState.TRACKED
        # The next sweep, once the id is due again (a tick later), archives it
        # from the same pool process: nothing was killed.
        time.sleep(1)
        dispatch_due.delay()
        wait_for(lambda: archived("ask_slow"), 30, "ask_slow archived", log)
    output = log.read_text()
    assert "Hard time limit" not in output and "Traceback" not in output
    assert len(stub.requests(Vendor.MENTIONSAPI, "ask_slow")) == 2
