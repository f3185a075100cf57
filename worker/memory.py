"""What a long-running process does about glibc's malloc.

Bodies of a few to a few hundred kB are read, parsed and written by several
threads: glibc's malloc keeps what they freed, fragmented across per-thread
arenas, and a worker's RSS creeps up over a long run although Python's own
allocations stay flat. Two arenas, and the free pages handed back at most once a
second between writes, keep it flat (docs/benchmarks.md, memory scenario). Both
are no-ops elsewhere than glibc.
"""

from __future__ import annotations

import ctypes
import functools
import time

# glibc's mallopt parameter (malloc.h) and the cap we set on it.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


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
    """Hand the pages malloc holds free back to the OS; called after each write,
    it trims at most once per `every` seconds (a trim walks the heap, ~1 ms)."""
    global _trimmed_at
    now = time.monotonic()
    if now - _trimmed_at < every:
        return
    _trimmed_at = now
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
