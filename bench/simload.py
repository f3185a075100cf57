"""`python -m bench.simload`: how many requests/s the simulator serves with many
slow requests in flight (a check of the bench's own vendor, not of mentionsync).

A closed loop: CONCURRENCY tasks on one event loop, each with its own keep-alive
connection, send GETs back to back, MentionsAPI and MentionLab ids 5:1 (the vendor-pace mix),
to a simulator started as its own process with the given latency. Prints
answers/s by status over the window and the simulator's most requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.harness import MENTIONLAB_KEY, MENTIONSAPI_KEY, SimulatorProcess, run_dir

SEED = 3


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, headers: str
) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; the status code."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: sim\r\n{headers}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def load(
    base_url: str, concurrency: int, seconds: float, ids: int
) -> tuple[Counter[int], float]:
    """A raw asyncio client (one connection per task): httpx's pool costs more CPU per
    request with hundreds of connections than the simulator does (measured: 158/s at
    200 connections against 592/s at 20, with no latency), and would measure itself."""
    from simulator import Dataset

    dataset = Dataset(seed=SEED, max_pending_polls=0)
    asks = dataset.ask_ids(ids)
    executions = dataset.execution_ids(max(1, ids // 5))
    statuses: Counter[int] = Counter()
    url = httpx.URL(base_url)
    deadline = time.monotonic() + seconds
    ma_headers = f"Authorization: Bearer {MENTIONSAPI_KEY}\r\n"

    async def worker(n: int) -> None:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        i = n
        try:
            while time.monotonic() < deadline:
                if i % 6 == 5:
                    project, eid = executions[i % len(executions)]
                    path = f"/api/v1/job-executions/{eid}"
                    headers = f"x-api-key: {MENTIONLAB_KEY}\r\nx-project-id: {project}\r\n"
                else:
                    path, headers = f"/v1/ask/{asks[i % len(asks)]}", ma_headers
                statuses[await _get(reader, writer, path, headers)] += 1
                i += concurrency
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return statuses, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simload", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=150.0)
    parser.add_argument("--ids", type=int, default=6000)
    parser.add_argument("--sim-arg", action="append", default=[], help="extra simulator flag")
    args = parser.parse_args(argv)
    workdir: Path = run_dir("simload")
    sim = SimulatorProcess(
        workdir,
        seed=SEED,
        max_pending_polls=0,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        extra_args=list(args.sim_arg),
    )
    with sim:
        statuses, seconds = asyncio.run(
            load(sim.base_url, args.concurrency, args.seconds, args.ids)
        )
        stats = sim.stats()
    total = sum(statuses.values())
    print(
        f"{total:,} answers in {seconds:.1f}s = {total / seconds:,.0f}/s with {args.concurrency} "
        f"in flight at {args.latency_ms:g}+-{args.latency_jitter_ms:g} ms "
        f"(ideal {args.concurrency / max(args.latency_ms, 1e-9) * 1000:,.0f}/s); by status "
        f"{dict(sorted(statuses.items()))}; simulator's max in flight {stats['max_in_flight']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
