"""Processes a chaos test starts, kills and restarts: a private Redis, Celery
worker nodes and beats. Everything is a real process on loopback."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import redis
from sqlalchemy import create_engine, text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A Redis of the test's own, so it can be killed without touching anyone else's."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        for _ in range(100):
            with suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def crash(self) -> None:
        """SIGKILL: every queued message and rate budget is gone (it keeps nothing on disk)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:  # no procps: read /proc instead
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in out.split()]


class CeleryProcesses:
    """Worker nodes and beats, each logging to its own file."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.beats: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.app", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def start_node(self, name: str, concurrency: int) -> None:
        self.nodes[name] = self._spawn(
            name,
            [
                "worker",
                f"--hostname={name}@chaos",
                f"--concurrency={concurrency}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        """Until the node says it is ready: a pool process killed while Celery is
        still starting its pool takes the whole node down ("Could not start worker
        processes"), which is Celery's start-up behaviour, not what we test."""
        log = next(p for p in reversed(self.logs) if p.name.startswith(f"{name}-"))
        deadline = time.monotonic() + timeout
        while f"{name}@chaos ready.".encode() not in log.read_bytes():
            if self.nodes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker node {name} did not start; see {log}")
            time.sleep(0.1)

    def start_beat(self) -> None:
        n = len(self.beats)
        self.beats.append(
            self._spawn(
                f"beat{n}",
                [
                    "beat",
                    "--loglevel=INFO",
                    f"--schedule={self.workdir / f'beat{n}-schedule'}",
                    f"--pidfile={self.workdir / f'beat{n}.pid'}",
                ],
            )
        )

    def pool_children(self, name: str, wait: float = 10.0) -> list[int]:
        """The node's pool processes; a node that just (re)started may have none yet."""
        deadline = time.monotonic() + wait
        while not (pids := children(self.nodes[name].pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids

    def kill_pool_process(self, rng: random.Random, node: str | None = None) -> str:
        """SIGKILL one pool process, of `node` or of a node picked by `rng`; returns
        which node lost it. A node that has no pool process at that moment (its
        main process may be between reconnects) is passed over for the next one;
        if none has any, the nodes' exit codes and logs say why."""
        names = sorted(self.nodes)
        first = node if node is not None else rng.choice(names)
        for name in [first, *(n for n in names if n != first)]:
            if pids := self.pool_children(name):
                os.kill(rng.choice(pids), signal.SIGKILL)
                return name
        states = ", ".join(f"{n}: exit code {self.nodes[n].poll()}" for n in names)
        raise RuntimeError(f"no worker node has a pool process ({states})\n{self.output()[-6000:]}")

    def kill_node(self, name: str) -> int:
        """SIGKILL a whole node, main process and pool children at once."""
        proc = self.nodes.pop(name)
        pids = [*children(proc.pid), proc.pid]
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        return len(pids) - 1

    def alive(self) -> bool:
        return all(p.poll() is None for p in [*self.nodes.values(), *self.beats])

    def stop(self) -> None:
        procs = [*self.nodes.values(), *self.beats]
        for proc in procs:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                for pid in [*children(proc.pid), proc.pid]:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.wait(10)

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def postgres_outage(admin_url: str, database: str, seconds: float) -> int:
    """What a Postgres restart looks like to its clients: every connection to the
    database is cut, and new ones are refused until it is back."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            cut = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).scalar_one()
            time.sleep(seconds)
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
    finally:
        admin.dispose()
    return int(cut)
