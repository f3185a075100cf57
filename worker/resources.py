"""The runtime: settings, one pooled HTTP client, the vendor clients and a fetch
pool, built once where work starts and passed to the functions that need it.

`mentionsync sync` and `doctor` open their own (`Runtime.open`) and close it when
they end. A Celery process builds one when it starts (`process_runtime`, again
after a fork, so every child has its own connections); its tasks, the edge,
hand it down. The database engine is still per process (worker/db.py).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from models import Vendor
from worker.config import Settings, get_settings
from worker.ratelimit import build_limiter
from worker.vendors.client import VendorClient, build_http_client
from worker.vendors.registry import VENDORS


@dataclass
class Runtime:
    settings: Settings
    http: httpx.Client
    clients: dict[Vendor, VendorClient]
    pool: ThreadPoolExecutor
    pid: int

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        limit_malloc_arenas()
        http = build_http_client(settings)
        return cls(
            settings=settings,
            http=http,
            clients={
                vendor: VendorClient(spec, http, settings, build_limiter(settings, spec))
                for vendor, spec in VENDORS.items()
            },
            pool=ThreadPoolExecutor(settings.fetch_concurrency, thread_name_prefix="fetch"),
            pid=os.getpid(),
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_lock = threading.Lock()
_process_runtime: Runtime | None = None

# glibc's mallopt parameter (malloc.h) and the cap we set on it.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


# Bodies of a few to a few hundred kB are parsed by several fetch threads at once:
# glibc's malloc keeps what they freed, fragmented across per-thread arenas, and
# a worker's RSS creeps up over a long run although Python's own allocations stay
# flat. Two arenas, and the free pages handed back at most once a second between
# batches, keep it flat (docs/benchmarks.md, memory scenario). Both are no-ops
# elsewhere than glibc.


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_malloc_arenas() -> bool:
    """MALLOC_ARENA_MAX=2, set before the fetch threads start; True if set."""
    libc = _libc()
    return bool(libc and hasattr(libc, "mallopt") and libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


_trimmed_at = 0.0


def release_free_memory(every: float = 1.0) -> None:
    """Hand the pages malloc holds free back to the OS; called after each batch,
    it trims at most once per `every` seconds (a trim walks the heap, ~1 ms)."""
    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at < every:
        return
    _trimmed_at = now
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def process_runtime() -> Runtime:
    """This Celery process's runtime (built at its start; after a fork, anew)."""
    global _process_runtime
    with _lock:
        if _process_runtime is None or _process_runtime.pid != os.getpid():
            _process_runtime = Runtime.open(get_settings())
        return _process_runtime


def close_process_runtime() -> None:
    global _process_runtime
    with _lock:
        if _process_runtime is not None and _process_runtime.pid == os.getpid():
            _process_runtime.close()
        _process_runtime = None
