"""A scripted vendor on loopback: both vendors' routes on one port, each id
answering from a list of replies. For tests that need exact bytes, headers,
sizes or timing that the simulator does not serve."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from models import Vendor

ML_BASE = "/api/v1/job-executions/"
MA_BASE = "/v1/ask/"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """One scripted response. `pad_to` serves `body` and then `x` bytes up to that
    size, generated as it is sent, so a 64 MiB body costs no memory here."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    chunked: bool = False  # no Content-Length: the client cannot know the size up front
    pad_to: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    drip_seconds: float = 0.0  # send the body one byte at a time, this far apart
    delay_seconds: float = 0.0  # think this long before answering
    hold: threading.Event | None = None  # answer only once this is set

    @property
    def size(self) -> int:
        return max(len(self.body), self.pad_to)

    def head(self, n: int) -> bytes:
        """The first n bytes of the body this reply sends."""
        return (self.body + b"x" * max(0, n - len(self.body)))[:n]

    def chunks(self) -> Iterator[bytes]:
        if self.drip_seconds:
            for i in range(len(self.body)):
                time.sleep(self.drip_seconds)
                yield self.body[i : i + 1]
            return
        for start in range(0, len(self.body), CHUNK):
            yield self.body[start : start + CHUNK]
        left = self.pad_to - len(self.body)
        filler = b"x" * CHUNK
        while left > 0:
            yield filler[: min(CHUNK, left)]
            left -= CHUNK


@dataclass
class Served:
    vendor: Vendor
    external_id: str
    headers: dict[str, str]
    reply: Reply
    sent: int = 0  # body bytes the socket accepted before the client went away
    at: float = field(default_factory=time.monotonic)  # when the request arrived


@dataclass
class VendorStub:
    """Both vendors on one loopback port, answering from a script per id."""

    base_url: str = ""
    scripts: dict[tuple[Vendor, str], list[Reply]] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Requests being answered now, and the most at once, by vendor.
    active: dict[Vendor, int] = field(default_factory=dict)
    peak: dict[Vendor, int] = field(default_factory=dict)
    overlapped: bool = False  # both vendors were answered at the same moment

    def enter(self, vendor: Vendor) -> None:
        with self.lock:
            self.active[vendor] = self.active.get(vendor, 0) + 1
            self.peak[vendor] = max(self.peak.get(vendor, 0), self.active[vendor])
            self.overlapped |= all(self.active.get(v, 0) > 0 for v in Vendor)

    def leave(self, vendor: Vendor) -> None:
        with self.lock:
            self.active[vendor] -= 1

    def script(self, vendor: Vendor, external_id: str, *replies: Reply) -> None:
        self.scripts[(vendor, external_id)] = list(replies)

    def take(self, vendor: Vendor, external_id: str, headers: dict[str, str]) -> Served | None:
        with self.lock:
            replies = self.scripts.get((vendor, external_id))
            if not replies:
                return None
            n = sum(1 for s in self.served if (s.vendor, s.external_id) == (vendor, external_id))
            reply = replies[min(n, len(replies) - 1)]
            record = Served(vendor, external_id, headers, reply)
            self.served.append(record)
            return record

    def requests(self, vendor: Vendor, external_id: str) -> list[Served]:
        with self.lock:
            return [s for s in self.served if (s.vendor, s.external_id) == (vendor, external_id)]


def _handler(stub: VendorStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads `stub.served`, not an access log

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            vendor: Vendor | None = None
            raw_id = ""
            if path.startswith(MA_BASE):
                vendor, raw_id = Vendor.MENTIONSAPI, path[len(MA_BASE) :]
            elif path.startswith(ML_BASE):
                vendor, raw_id = Vendor.MENTIONLAB, path[len(ML_BASE) :]
            # Decoded here, so an id the worker encodes wrongly finds no script.
            record = vendor and self._take(vendor, unquote(raw_id, errors="strict"))
            if not record:
                self._plain(404, b'{"error": {"code": "not_found", "message": "no script"}}')
                return
            stub.enter(record.vendor)
            try:
                if record.reply.hold is not None:
                    record.reply.hold.wait(60)
                time.sleep(record.reply.delay_seconds)
                self._send(record)
            finally:
                stub.leave(record.vendor)

        def _take(self, vendor: Vendor, external_id: str) -> Served | None:
            return stub.take(vendor, external_id, {k.lower(): v for k, v in self.headers.items()})

        def _plain(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send(self, record: Served) -> None:
            reply = record.reply
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers:
                self.send_header(name, value)
            if reply.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(reply.size))
            self.end_headers()
            try:
                for chunk in reply.chunks():
                    if reply.chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        self.wfile.write(chunk)
                    if reply.drip_seconds:
                        self.wfile.flush()
                    record.sent += len(chunk)
                if reply.chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except OSError:
                # The client stopped reading and closed: exactly what a capped read does.
                self.close_connection = True

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-body is the point of some tests, not an error


@contextmanager
def running_stub() -> Iterator[VendorStub]:
    stub = VendorStub()
    server = _QuietServer(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, name="vendor-stub", daemon=True)
    thread.start()
    stub.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
