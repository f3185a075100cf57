"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from models import (
    ACTIVE_STATES,
    Ask,
    AskBrandMention,
    AskCitation,
    AskProviderResponse,
    JobExecution,
    JobExecutionEntity,
    JobExecutionSource,
    TrackedId,
    Vendor,
)
from simulator import Dataset
from tests.resources import session_scope
from worker.config import load_settings
from worker.registry import label_arguments, register

MENTIONSYNC = str(Path(sys.executable).parent / "mentionsync")
ARCHIVE_MODELS = (
    Ask,
    AskProviderResponse,
    AskCitation,
    AskBrandMention,
    JobExecution,
    JobExecutionSource,
    JobExecutionEntity,
)


def cli(
    *args: str, input: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `mentionsync` console script with the current environment."""
    return subprocess.run(
        [MENTIONSYNC, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


def archive_snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every archived row, ordered, for before/after comparisons."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with session_scope() as session:
        for model in ARCHIVE_MODELS:
            table = model.__table__
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def tracked_snapshot() -> list[tuple[Any, ...]]:
    with session_scope() as session:
        rows = session.execute(
            select(
                TrackedId.vendor,
                TrackedId.project_id,
                TrackedId.external_id,
                TrackedId.state,
                TrackedId.archived_at,
                TrackedId.final_at,
            ).order_by(TrackedId.id)
        ).all()
    return [tuple(r) for r in rows]


def wasted_polls(stats: dict[str, Any]) -> int:
    """Fetches of ids whose answer was already final, from the simulator's stats.

    Repeated 404s are not waste: the worker confirms a 404 a few times on purpose,
    because a fresh id can lag.
    """
    by_status = stats["polls_after_final_by_status"]
    return sum(n for status, n in by_status.items() if status != "404")


def register_dataset(dataset: Dataset, asks: int, executions: int) -> None:
    """Track the simulator's first `asks` ask ids and `executions` job executions."""
    settings = load_settings()
    with session_scope() as session:
        register(
            session, Vendor.MENTIONSAPI, label_arguments(dataset.ask_ids(asks)), settings=settings
        )
    by_project: dict[str, list[str]] = {}
    for project, run in dataset.execution_ids(executions):
        by_project.setdefault(project, []).append(run)
    for project, ids in by_project.items():
        with session_scope() as session:
            register(
                session,
                Vendor.MENTIONLAB,
                label_arguments(ids),
                settings=settings,
                project_id=project,
            )


def pending() -> int:
    """Tracked ids not final yet."""
    with session_scope() as session:
        return session.scalar(select(func.count()).where(TrackedId.state.in_(ACTIVE_STATES))) or 0


@contextmanager
def celery_worker_with_beat(
    tmp_path: Path, env: dict[str, str] | None = None, concurrency: int = 2
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker with an embedded beat, in tmp_path, writing to
    tmp_path/celery.log; stopped with SIGTERM (then SIGKILL) on the way out."""
    with (tmp_path / "celery.log").open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "--beat",
                f"--concurrency={concurrency}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                f"--schedule={tmp_path / 'beat-schedule'}",
            ],
            env=env if env is not None else dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            yield worker
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
