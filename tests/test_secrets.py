"""API keys never leak: not in logs (text or JSON, at DEBUG), not in any column
of any table, not in error messages, not in `status`. The logging filter scrubs
header values whatever logged them, and TLS verification stays on.

The keys are random per run, so no fixture value can hide a leak, and a leak is
looked for by the key's random tail too, which catches a truncated key.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from models import Ask, QuarantinedPayload, TrackedId, TrackedState, Vendor
from simulator import Dataset
from tests.helpers import cli
from tests.resources import session_scope, suite_db
from worker.config import Settings, fingerprint, load_settings
from worker.logs import JSONFormatter, RedactingFilter, TextFormatter, install_filter, setup_logging
from worker.registry import label_arguments, register
from worker.vendors.client import build_http_client

MA_KEY = f"lvk_live_{secrets.token_hex(16)}"
ML_KEY = f"ml_live_{secrets.token_hex(16)}"
# The simulator refuses any key containing "revoked" (simulator/app.py).
MA_REVOKED = f"lvk_live_revoked_{secrets.token_hex(16)}"
ML_REVOKED = f"ml_live_revoked_{secrets.token_hex(16)}"
ALL_KEYS = (MA_KEY, ML_KEY, MA_REVOKED, ML_REVOKED)
FINGERPRINT = re.compile(r"^[0-9a-f]{12}$")
SEED = 7


def leaks(haystack: str | bytes, keys: tuple[str, ...] = ALL_KEYS) -> list[str]:
    """Keys found in haystack, whole or by the first 16 characters of their random tail."""
    found = []
    for key in keys:
        tail = key.rsplit("_", 1)[1][:16]
        for needle in (key, tail):
            hit = needle.encode() in haystack if isinstance(haystack, bytes) else needle in haystack
            if hit:
                found.append(key)
                break
    return found


def columns_containing(needle: str | bytes) -> list[str]:
    """Every `table.column` of the schema with a value containing needle.

    Text is searched in every column cast to text (text, varchar, json, jsonb and
    the rest); bytes columns are searched as bytes, not as their hex rendering.
    """
    raw = needle if isinstance(needle, bytes) else needle.encode()
    hits = []
    with suite_db().engine.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
            )
        ).all()
        assert {"tracked_ids", "vendor_accounts", "quarantined_payloads", "asks"} <= {
            c.table_name for c in columns
        }
        for table, column, data_type in columns:
            if data_type == "bytea":
                where, param = f'position(:needle in "{column}") > 0', raw
            elif isinstance(needle, str):
                where, param = f'strpos("{column}"::text, :needle) > 0', needle
            else:
                continue
            # Names come from information_schema, not from input.
            count = conn.execute(
                text(f'SELECT count(*) FROM "{table}" WHERE {where}'),  # noqa: S608
                {"needle": param},
            ).scalar()
            if count:
                hits.append(f"{table}.{column}")
    return hits


def assert_database_clean() -> None:
    for key in ALL_KEYS:
        tail = key.rsplit("_", 1)[1][:16]
        assert columns_containing(key) == [], key
        assert columns_containing(tail) == [], key
        assert columns_containing(key.encode()) == [], key


def track_some(asks: int = 10, runs: int = 10) -> None:
    dataset = Dataset(seed=SEED)
    settings = load_settings()
    with session_scope() as session:
        register(
            session, Vendor.MENTIONSAPI, label_arguments(dataset.ask_ids(asks)), settings=settings
        )
        for project, run in dataset.execution_ids(runs):
            register(
                session,
                Vendor.MENTIONLAB,
                label_arguments([run]),
                settings=settings,
                project_id=project,
            )


def status_outputs() -> tuple[str, dict[str, Any]]:
    human, machine = cli("status"), cli("status", "--json")
    assert human.returncode == 0 and machine.returncode == 0, human.stderr + machine.stderr
    return human.stdout + human.stderr, json.loads(machine.stdout)


TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def log_records(stderr: str, fmt: str) -> list[str]:
    """The log lines of a run (messages, for JSON), all of them in the requested format."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    text_records = [line for line in lines if TEXT_RECORD.match(line)]
    json_records = [json.loads(line)["message"] for line in lines if line.startswith('{"ts"')]
    if fmt == "json":
        assert json_records and not text_records, stderr[-2000:]
        return json_records
    assert text_records and not json_records, stderr[-2000:]
    return text_records


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- end to end: logs, database, status ------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_debug_logs_and_database_never_show_a_key(
    sim: Callable[..., str], configure: Callable[..., None], fmt: str
) -> None:
    # Faults make the worker log warnings, quarantine bodies and record errors.
    sim(seed=SEED, max_pending_polls=1, error_rate=0.3, malformed_rate=0.5)
    configure(MENTIONSAPI_API_KEY=MA_KEY, MENTIONLAB_API_KEY=ML_KEY, LOG_LEVEL="DEBUG")
    configure(LOG_FORMAT=fmt)
    track_some()

    result = cli("sync", "--until-done", "--timeout", "60")

    assert result.returncode == 0, result.stderr[-3000:]
    messages = log_records(result.stderr, fmt)
    assert any("batch mentionsapi" in m for m in messages)
    assert any("batch mentionlab" in m for m in messages)
    assert leaks(result.stdout + result.stderr) == []
    with session_scope() as session:
        assert session.scalar(select(QuarantinedPayload.id).limit(1)) is not None
    assert_database_clean()


def test_a_refused_key_is_shown_only_by_its_fingerprint(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    sim(seed=SEED)
    configure(MENTIONSAPI_API_KEY=MA_REVOKED, MENTIONLAB_API_KEY=ML_REVOKED, LOG_LEVEL="DEBUG")
    track_some(asks=5, runs=5)

    result = cli("--log-format", "json", "sync", "--until-done", "--timeout", "30")

    assert result.returncode == 3, result.stderr[-3000:]  # blocked: both keys refused
    assert leaks(result.stdout + result.stderr) == []
    messages = log_records(result.stderr, "json")
    human, machine = status_outputs()
    assert leaks(human) == [] and leaks(json.dumps(machine)) == []
    for vendor, key in (("mentionsapi", MA_REVOKED), ("mentionlab", ML_REVOKED)):
        mark = fingerprint(key)
        assert FINGERPRINT.match(mark)
        # The key is identified, by its fingerprint, wherever someone must act on it.
        assert any("refused the API key" in m and mark in m for m in messages)
        assert machine["accounts"][vendor]["key_fingerprint"] == mark
        assert mark in machine["accounts"][vendor]["paused"]
        assert mark in human
        assert columns_containing(mark) == ["vendor_accounts.key_fingerprint"]
    assert_database_clean()


def test_transport_errors_never_show_a_key(configure: Callable[..., None]) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}"
    configure(MENTIONSAPI_API_KEY=MA_KEY, MENTIONLAB_API_KEY=ML_KEY, LOG_LEVEL="DEBUG")
    configure(MENTIONSAPI_BASE_URL=base_url, MENTIONLAB_BASE_URL=base_url, MAX_ATTEMPTS="2")
    track_some(asks=3, runs=3)

    result = cli("sync", "--until-done", "--timeout", "30")

    assert result.returncode == 0, result.stderr[-3000:]  # every id gave up: `error`
    assert leaks(result.stdout + result.stderr) == []
    with session_scope() as session:
        rows = session.scalars(select(TrackedId)).all()
        assert {r.state for r in rows} == {TrackedState.ERROR}
        for row in rows:
            assert row.last_error is not None and "ConnectError" in row.last_error
            assert leaks(row.last_error) == []
    assert_database_clean()
    human, machine = status_outputs()
    assert machine["errors"]["count"] == 6
    assert all("ConnectError" in item["last_error"] for item in machine["errors"]["ids"])
    assert leaks(human) == [] and leaks(json.dumps(machine)) == []


def test_the_database_scan_finds_what_is_there(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    """The scanner above, proven able to find text, JSON and bytes."""
    sim(seed=SEED, max_pending_polls=0, malformed_rate=0.5)
    configure(MENTIONSAPI_API_KEY=MA_KEY, MENTIONLAB_API_KEY=ML_KEY)
    dataset = Dataset(seed=SEED)
    asks = [a for a in dataset.ask_ids(60) if dataset.fate("mentionsapi", a) == "succeeded"][:16]
    with session_scope() as session:
        register(session, Vendor.MENTIONSAPI, label_arguments(asks), settings=load_settings())
    assert cli("sync", "--until-done", "--timeout", "30").returncode == 0
    with session_scope() as session:
        body = session.scalars(select(QuarantinedPayload.body)).first()
        request_id = session.scalars(select(Ask.request_id)).first()
    assert body and request_id, "half the bodies were broken, half archived"

    assert "tracked_ids.external_id" in columns_containing(asks[0])
    assert {"asks.request_id", "asks.raw_payload"} <= set(columns_containing(request_id))
    assert "quarantined_payloads.body" in columns_containing(body[:24])
    assert columns_containing(f"absent-{secrets.token_hex(8)}") == []


# --- a vendor that repeats the key back ---------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """A vendor whose 401 repeats the key it was sent, as some APIs' error pages do."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/v1/ask/"):
            key = self.headers.get("authorization", "").removeprefix("Bearer ")
            doc: dict[str, Any] = {
                "error": {"code": "invalid_api_key", "message": f"API key {key} is revoked."},
                "request_id": "req_echo",
            }
        else:
            key = self.headers.get("x-api-key", "")
            doc = {"statusCode": 401, "message": f"Invalid API key {key}", "error": "Unauthorized"}
        body = json.dumps(doc).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_vendor(configure: Callable[..., None]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    configure(MENTIONSAPI_BASE_URL=base_url, MENTIONLAB_BASE_URL=base_url)
    yield base_url
    server.shutdown()
    server.server_close()


def test_a_key_echoed_by_the_vendor_is_scrubbed_from_log_lines(
    echo_vendor: str, configure: Callable[..., None]
) -> None:
    configure(MENTIONSAPI_API_KEY=MA_KEY, MENTIONLAB_API_KEY=ML_KEY, LOG_LEVEL="DEBUG")
    track_some(asks=2, runs=2)

    result = cli("sync", "--until-done", "--timeout", "20")

    assert result.returncode == 3, result.stderr[-3000:]
    records = log_records(result.stderr, "text")
    # One pause per vendor; a batch another sync process claimed before the pause
    # landed is skipped with the same reason, so that line may appear too.
    pauses = [r for r in records if "pausing polling for this key" in r]
    assert len(pauses) == 2, pauses
    refusals = [r for r in records if "refused the API key" in r]
    assert all("[REDACTED]" in r for r in refusals), refusals
    assert leaks("\n".join(records)) == []


def test_a_key_echoed_by_the_vendor_is_not_stored_or_shown(
    echo_vendor: str, configure: Callable[..., None]
) -> None:
    configure(MENTIONSAPI_API_KEY=MA_KEY, MENTIONLAB_API_KEY=ML_KEY)
    track_some(asks=2, runs=2)

    result = cli("sync", "--until-done", "--timeout", "20")

    assert result.returncode == 3, result.stderr[-3000:]
    assert leaks(result.stdout + result.stderr) == []
    assert_database_clean()
    human, machine = status_outputs()
    assert leaks(human) == [] and leaks(json.dumps(machine)) == []


# --- the logging filter, on its own ---------------------------------------------------

# Not configured anywhere: only the header patterns can catch these.
OTHER_BEARER = f"lvk_live_{secrets.token_hex(16)}"
OTHER_API_KEY = f"ml_live_{secrets.token_hex(16)}"
LOG_KEYS = (MA_KEY, ML_KEY, OTHER_BEARER, OTHER_API_KEY)


@pytest.fixture(params=["text", "json"])
def httpx_log(request: pytest.FixtureRequest) -> Iterator[Callable[[], list[str]]]:
    """The `httpx` logger at DEBUG, into a handler set up as the worker sets up its own.

    Yields a function returning the messages logged so far (exception text included).
    """
    settings = Settings(mentionsapi_api_key=MA_KEY, mentionlab_api_key=ML_KEY)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter() if request.param == "json" else TextFormatter())
    install_filter(handler, settings)
    logger = logging.getLogger("httpx")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def output() -> list[str]:
        lines = stream.getvalue()
        if request.param == "text":
            return [lines]
        return [json.dumps(json.loads(line)) for line in lines.splitlines()]

    yield output
    logger.handlers[:], logger.level, logger.propagate = saved


HEADER_TEXTS = {
    "dict repr": f"request headers: {{'Authorization': 'Bearer {OTHER_BEARER}', "
    f"'x-api-key': '{OTHER_API_KEY}'}}",
    "raw HTTP": f"GET /v1/ask/a HTTP/1.1\r\nAuthorization: Bearer {OTHER_BEARER}\r\n"
    f"X-Api-Key: {OTHER_API_KEY}\r\n",
    "JSON": json.dumps({"authorization": f"Bearer {OTHER_BEARER}", "x-api-key": OTHER_API_KEY}),
    "upper case": f"AUTHORIZATION: BEARER {OTHER_BEARER} X-API-KEY={OTHER_API_KEY}",
    "configured keys": f"keys {MA_KEY} and {ML_KEY} in plain text",
}


@pytest.mark.parametrize("name", list(HEADER_TEXTS))
def test_log_filter_scrubs_header_values(name: str, httpx_log: Callable[[], list[str]]) -> None:
    logging.getLogger("httpx").debug("sent %s", HEADER_TEXTS[name])

    (line,) = httpx_log()
    assert leaks(line, LOG_KEYS) == [], line
    assert "[REDACTED]" in line and "sent " in line  # scrubbed, not dropped


def test_log_filter_scrubs_arguments_extras_and_tracebacks(
    httpx_log: Callable[[], list[str]],
) -> None:
    log = logging.getLogger("httpx")
    log.warning("retrying with %s", f"x-api-key: {OTHER_API_KEY}")
    log.warning("request", extra={"sent_headers": f"Authorization: Bearer {OTHER_BEARER}"})
    log.warning("bytes %r", MA_KEY.encode())
    try:
        # What an HTTP library's error message can carry.
        raise httpx.ProtocolError(f"bad response to headers Authorization: Bearer {OTHER_BEARER}")
    except httpx.ProtocolError:
        log.exception("request failed with %s", ML_KEY)

    output = "\n".join(httpx_log())
    assert leaks(output, LOG_KEYS) == [], output
    assert output.count("[REDACTED]") >= 5
    assert "ProtocolError" in output and "Traceback" in output


def test_log_filter_scrubs_structured_extras(httpx_log: Callable[[], list[str]]) -> None:
    logging.getLogger("httpx").warning(
        "request", extra={"request_headers": {"x-api-key": ML_KEY}, "keys": [MA_KEY]}
    )

    output = "\n".join(httpx_log())
    assert leaks(output, LOG_KEYS) == [], output


def test_log_filter_scrubs_header_tuples(httpx_log: Callable[[], list[str]]) -> None:
    # How httpcore and h11 hold headers: (name, value) pairs of bytes.
    raw = [
        (b"authorization", f"Bearer {OTHER_BEARER}".encode()),
        (b"x-api-key", OTHER_API_KEY.encode()),
    ]
    logging.getLogger("httpx").debug("raw headers %s", raw)

    output = "\n".join(httpx_log())
    assert leaks(output, LOG_KEYS) == [], output


def test_log_filter_scrubs_other_authorization_schemes(
    httpx_log: Callable[[], list[str]],
) -> None:
    logging.getLogger("httpx").debug("proxy said Authorization: Basic %s", OTHER_API_KEY)

    output = "\n".join(httpx_log())
    assert leaks(output, LOG_KEYS) == [], output


def test_setup_logging_installs_the_filter_on_the_root_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    settings = Settings(mentionsapi_api_key=MA_KEY, mentionlab_api_key=ML_KEY, log_format="json")
    try:
        setup_logging(settings, level="DEBUG")
        assert any(isinstance(f, RedactingFilter) for f in root.handlers[0].filters)
        logging.getLogger("mentionsync.test").debug(
            "headers %s", {"Authorization": f"Bearer {MA_KEY}", "x-api-key": OTHER_API_KEY}
        )
        logging.getLogger("celery.worker").warning("key %s", ML_KEY)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["logger"] for line in lines] == ["mentionsync.test", "celery.worker"]
    assert leaks(json.dumps(lines), LOG_KEYS) == []


# --- TLS ------------------------------------------------------------------------------


@dataclass
class TLSServer:
    url: str
    cert: Path
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TLSServer]:
    """An HTTPS server on loopback with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    requests: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            requests.append(dict(self.headers.items()))
            body = b'{"status": "succeeded"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # refused handshakes are what the tests provoke

    server = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield TLSServer(f"https://127.0.0.1:{server.server_address[1]}", cert, requests)
    server.shutdown()
    server.server_close()


def test_the_worker_client_refuses_a_self_signed_certificate(tls_server: TLSServer) -> None:
    client = build_http_client(load_settings())
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(f"{tls_server.url}/v1/ask/a", headers={"Authorization": f"Bearer {MA_KEY}"})
    client.close()
    assert tls_server.requests == []  # the key was never sent

    # The server itself is fine: a client that trusts this certificate gets through.
    trusting = ssl.create_default_context(cafile=str(tls_server.cert))
    with httpx.Client(verify=trusting) as control:
        assert control.get(f"{tls_server.url}/v1/ask/a").status_code == 200
    assert len(tls_server.requests) == 1


def test_sync_against_a_self_signed_certificate_fails_without_sending_a_key(
    tls_server: TLSServer, configure: Callable[..., None]
) -> None:
    configure(MENTIONSAPI_BASE_URL=tls_server.url, MENTIONLAB_BASE_URL=tls_server.url)
    configure(MENTIONSAPI_API_KEY=MA_KEY, MENTIONLAB_API_KEY=ML_KEY, MAX_ATTEMPTS="1")
    track_some(asks=1, runs=1)

    result = cli("sync", "--until-done", "--timeout", "20")

    assert result.returncode == 0, result.stderr[-3000:]
    with session_scope() as session:
        rows = session.scalars(select(TrackedId)).all()
    assert len(rows) == 2 and {r.state for r in rows} == {TrackedState.ERROR}
    assert all("CERTIFICATE_VERIFY_FAILED" in (r.last_error or "") for r in rows)
    assert tls_server.requests == []
    assert leaks(result.stdout + result.stderr) == []
