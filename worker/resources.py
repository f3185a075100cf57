"""The runtime: settings, the database, the HTTP client, the vendor clients and
the fetch pipeline, built once where work starts and passed to the functions
that need it.

`mentionsync sync` and `doctor` open their own (`Runtime.open`) and close it when
they end. A Celery process builds one when it starts (`process_runtime`, again
after a fork, so every child has its own connections); its tasks, the edge,
hand it down.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import httpx

from models import Vendor
from worker.config import Settings, load_settings
from worker.db import Database
from worker.memory import limit_malloc_arenas
from worker.pipeline import Pipeline
from worker.ratelimit import build_limiter
from worker.vendors.client import VendorClient, build_http_client
from worker.vendors.registry import VENDORS


@dataclass
class Runtime:
    settings: Settings
    db: Database
    http: httpx.Client
    clients: dict[Vendor, VendorClient]
    pipeline: Pipeline
    pid: int

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        limit_malloc_arenas()
        http = build_http_client(settings)
        clients = {
            vendor: VendorClient(spec, http, settings, build_limiter(settings, spec))
            for vendor, spec in VENDORS.items()
        }
        db = Database(settings.database_url)
        return cls(
            settings=settings,
            db=db,
            http=http,
            clients=clients,
            pipeline=Pipeline(settings, db, clients),
            pid=os.getpid(),
        )

    def close(self) -> None:
        """Stop the pipeline (what is in flight is written, what waits given back)."""
        self.pipeline.close()
        self.http.close()
        self.db.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_lock = threading.Lock()
_process_runtime: Runtime | None = None


def process_runtime() -> Runtime:
    """This Celery process's runtime (built at its start; after a fork, anew)."""
    global _process_runtime
    with _lock:
        if _process_runtime is None or _process_runtime.pid != os.getpid():
            if _process_runtime is not None:
                # Inherited through a fork: forget the parent's connections, unclosed.
                _process_runtime.db.dispose(close=False)
            _process_runtime = Runtime.open(load_settings())
        return _process_runtime


def close_process_runtime() -> None:
    global _process_runtime
    with _lock:
        if _process_runtime is not None:
            if _process_runtime.pid == os.getpid():
                _process_runtime.close()
            else:
                # Inherited through a fork: forget the parent's connections, unclosed.
                _process_runtime.db.dispose(close=False)
        _process_runtime = None
