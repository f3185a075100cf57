"""Per-process resources: one pooled HTTP client, the vendor clients, a fetch pool.

Created on first use in each process (and again after a fork), closed at
worker shutdown, so every Celery child has its own connections.
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
class Resources:
    settings: Settings
    http: httpx.Client
    clients: dict[Vendor, VendorClient]
    pool: ThreadPoolExecutor
    pid: int

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()


_lock = threading.Lock()
_resources: Resources | None = None

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


def get_resources() -> Resources:
    global _resources
    with _lock:
        if _resources is None or _resources.pid != os.getpid():
            limit_malloc_arenas()
            settings = get_settings()
            http = build_http_client(settings)
            _resources = Resources(
                settings=settings,
                http=http,
                clients={
                    vendor: VendorClient(spec, http, settings, build_limiter(settings, spec))
                    for vendor, spec in VENDORS.items()
                },
                pool=ThreadPoolExecutor(settings.fetch_concurrency, thread_name_prefix="fetch"),
                pid=os.getpid(),
            )
        return _resources


def close_resources() -> None:
    global _resources
    with _lock:
        if _resources is not None and _resources.pid == os.getpid():
            _resources.close()
        _resources = None
