"""Per-process resources: one pooled HTTP client, the vendor clients, a fetch pool.

Created on first use in each process (and again after a fork), closed at
worker shutdown, so every Celery child has its own connections.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from models import Vendor
from worker.clients import MentionLabClient, MentionsAPIClient, VendorClient
from worker.clients.base import build_http_client
from worker.config import Settings, get_settings
from worker.ratelimit import build_limiter


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


def get_resources() -> Resources:
    global _resources
    with _lock:
        if _resources is None or _resources.pid != os.getpid():
            settings = get_settings()
            http = build_http_client(settings)
            _resources = Resources(
                settings=settings,
                http=http,
                clients={
                    Vendor.MENTIONSAPI: MentionsAPIClient(
                        http, settings, build_limiter(settings, Vendor.MENTIONSAPI)
                    ),
                    Vendor.MENTIONLAB: MentionLabClient(
                        http, settings, build_limiter(settings, Vendor.MENTIONLAB)
                    ),
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
