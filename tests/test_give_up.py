"""Retryable faults are retried with backoff, then give up visibly in `error`;
`mentionsync retry` puts those ids back and a healthy vendor archives them."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest
from sqlalchemy import select

from models import TrackedId, TrackedState, Vendor
from simulator import Dataset
from tests.helpers import cli
from tests.resources import session_scope

SEED = 21
MAX_ATTEMPTS = 3


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def succeeded_asks(n: int) -> list[str]:
    ds = Dataset(seed=SEED)
    return [a for a in ds.ask_ids(200) if ds.fate("mentionsapi", a) == "succeeded"][:n]


def rows() -> list[TrackedId]:
    with session_scope() as session:
        return list(session.scalars(select(TrackedId).order_by(TrackedId.id)))


# Each fault, how the simulator (or the network) produces it, and what last_error names.
FAULTS: dict[str, tuple[dict[str, object], str]] = {
    "server error": ({"error_rate": 1.0}, "HTTP 500 internal_error"),
    "connection reset": ({"reset_rate": 1.0}, "Connection reset by peer"),
    "read timeout": ({"latency_ms": 1500}, "ReadTimeout"),
}


@pytest.mark.parametrize("fault", [*FAULTS, "connection refused"])
def test_retryable_faults_end_in_error_then_retry_recovers(
    fault: str, sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    asks = succeeded_asks(4)
    configure(MAX_ATTEMPTS=str(MAX_ATTEMPTS), HTTP_READ_TIMEOUT="0.5")
    if fault == "connection refused":
        configure(MENTIONSAPI_BASE_URL=closed_port_url())
        expected = "ConnectError"
    else:
        config, expected = FAULTS[fault]
        sim(seed=SEED, max_pending_polls=0, **config)
    assert cli("track", "mentionsapi", *asks).returncode == 0

    result = cli("sync", "--until-done", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    for row in rows():
        assert row.state is TrackedState.ERROR, (row.external_id, row.last_error)
        assert row.attempts == MAX_ATTEMPTS and row.consecutive_errors == MAX_ATTEMPTS
        assert row.last_error is not None
        assert row.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts")
        assert expected in row.last_error, row.last_error
    report = json.loads(cli("status", "--json").stdout)
    assert report["errors"]["count"] == len(asks)
    assert "gave up after retries (error): 4" in cli("status").stdout

    # The vendor is healthy again: retry puts the ids back, sync archives them.
    sim(seed=SEED, max_pending_polls=0)
    assert cli("retry", "--state", "error", "--vendor", "mentionsapi").returncode == 0
    assert {r.state for r in rows()} == {TrackedState.POLLING}
    assert cli("sync", "--until-done", "--timeout", "60").returncode == 0
    assert {r.state for r in rows()} == {TrackedState.ARCHIVED}


def test_retry_only_touches_the_vendor_and_state_asked_for(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    configure(MAX_ATTEMPTS="1")
    sim(seed=SEED, max_pending_polls=0, error_rate=1.0)
    ds = Dataset(seed=SEED)
    asks = succeeded_asks(2)
    runs = [r for _, r in ds.execution_ids(40) if ds.fate("mentionlab", r) == "success"][:2]
    project = next(p for p, r in ds.execution_ids(40) if r == runs[0])
    runs = [r for p, r in ds.execution_ids(40) if p == project and r in runs]
    assert cli("track", "mentionsapi", *asks).returncode == 0
    assert cli("track", "mentionlab", "--project", project, *runs).returncode == 0
    assert cli("sync", "--until-done", "--timeout", "60").returncode == 0
    assert {r.state for r in rows()} == {TrackedState.ERROR}

    assert cli("retry", "--vendor", "mentionlab").returncode == 0  # --state error by default
    by_vendor = {(r.vendor, r.state) for r in rows()}
    assert by_vendor == {
        (Vendor.MENTIONSAPI, TrackedState.ERROR),
        (Vendor.MENTIONLAB, TrackedState.POLLING),
    }
    assert cli("retry", "--state", "archived").returncode == 0  # nothing archived: no-op
    assert {(r.vendor, r.state) for r in rows()} == by_vendor
