"""Per-process resources: the malloc settings that keep a worker's RSS flat."""

from __future__ import annotations

import platform

import psutil
import pytest

from worker.memory import limit_malloc_arenas, release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_malloc_arenas_are_capped_and_free_pages_go_back() -> None:
    assert limit_malloc_arenas() is True
    # Many mid-sized blocks (like response bodies) freed in a scattered order:
    # trimming hands their pages back, so RSS falls.
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 256 MiB
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    del blocks[::2]
    del blocks[: len(blocks) // 2]  # three quarters freed, the last quarter kept
    before = psutil.Process().memory_info().rss
    release_free_memory(every=0)
    after = psutil.Process().memory_info().rss
    assert after < before - 32 * 1024 * 1024, (before, after)
