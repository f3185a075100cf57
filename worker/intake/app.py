"""The intake service: `mentionsync serve` (Starlette under uvicorn).

- `POST /v1/track`: register ids, with the CLI's validation, behind a bearer token.
- `POST /webhooks/<vendor>`, for each vendor that sends webhooks: signed deliveries
  of finished answers, archived at once.
- `GET /healthz` (the process answers), `GET /readyz` (database, schema and broker:
  ok or not; the details and the scheduler's ages only with the intake token).
- `GET /metrics`: this process's counters (webhook requests).
- `GET /` and below: the read-only dashboard when DASHBOARD_TOKEN is set (worker/dashboard).

Handlers read the body on the event loop and do database work in Starlette's
thread pool, one transaction per request. The settings and the database are the
app's (`create_app(settings, db)`, kept in `app.state`), built by `serve`.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models import Vendor, utcnow
from worker.analytics.db import read_session
from worker.analytics.labels import InvalidLabel, ids_with, mapping_labels, store_labels
from worker.config import Settings
from worker.dashboard.app import routes as dashboard_routes
from worker.db import Database
from worker.intake.webhooks import BadDelivery, apply_delivery, observe, parse_envelope
from worker.metrics import WEBHOOK_REQUESTS, process_registry
from worker.registry import (
    InvalidId,
    InvalidTimestamp,
    register,
    validate_created_at,
    validate_project_id,
)
from worker.vendors.base import SignatureError, VendorSpec
from worker.vendors.registry import VENDORS

log = logging.getLogger("mentionsync.intake")


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    declared = request.headers.get("content-length")
    # isascii: "²".isdigit() is True but int("²") fails.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# --- POST /v1/track -----------------------------------------------------------------


class TrackRequest(BaseModel):
    """One group of ids of one vendor (and, for a vendor with projects, one project)."""

    # Strict, and unknown fields refused: a typo such as "expect_webhooks" must not
    # silently register ids that are then polled at once.
    model_config = ConfigDict(extra="forbid", strict=True)

    vendor: Vendor
    ids: list[str] = Field(min_length=1)
    project_id: str | None = None
    created_at: datetime | None = None
    expect_webhook: bool = False
    # Labels of every id of the group: prompt, topic, tags, country, persona or any
    # key (worker/analytics/labels.py); a list for several tags.
    labels: dict[str, str | list[str]] | None = None


_TRACK_GROUPS = TypeAdapter(list[TrackRequest])


def parse_track_request(body: bytes) -> list[TrackRequest]:
    """One group (an object) or several (an array), validated; ValueError says why."""
    try:
        if body.lstrip()[:1] == b"[":
            parsed: list[TrackRequest] | TrackRequest = _TRACK_GROUPS.validate_json(body)
        else:
            parsed = TrackRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise ValueError(f"{where.lstrip('.') or '(body)'}: {first['msg']}") from None
    groups = parsed if isinstance(parsed, list) else [parsed]
    if not groups:
        raise ValueError("(body): no groups of ids")
    for i, group in enumerate(groups):
        spec = VENDORS[group.vendor]
        if group.expect_webhook and not spec.sends_webhooks:
            raise ValueError(f"[{i}].expect_webhook: {spec.title} sends no webhooks")
        if spec.needs_project:
            if not group.project_id:
                raise ValueError(f"[{i}].project_id: required for {group.vendor}")
            try:
                group.project_id = validate_project_id(group.project_id)
            except InvalidId as exc:
                raise ValueError(f"[{i}].project_id: {exc}") from None
        elif group.project_id:
            only = ", ".join(v for v, other in VENDORS.items() if other.needs_project)
            raise ValueError(f"[{i}].project_id: only for {only}")
        if group.labels:
            try:
                mapping_labels(group.labels)
            except InvalidLabel as exc:
                raise ValueError(f"[{i}].labels: {exc}") from None
        if group.created_at is not None:
            # The registry's range, as `track --created-at`: it sets the deadline.
            try:
                group.created_at = validate_created_at(group.created_at)
            except InvalidTimestamp as exc:
                raise ValueError(f"[{i}].created_at: {exc}") from None
    return groups


def track_groups(groups: list[TrackRequest], settings: Settings, db: Database) -> dict[str, Any]:
    """Register every group in one transaction; report counts and rejected ids."""
    results: list[dict[str, Any]] = []
    with db.session() as session:
        for group in groups:
            outcome = register(
                session,
                group.vendor,
                ((f"ids[{i}]", value) for i, value in enumerate(group.ids)),
                settings=settings,
                project_id=group.project_id or "",
                created_at=group.created_at,
                expect_webhook=group.expect_webhook,
            )
            if group.labels:
                store_labels(
                    session,
                    group.vendor,
                    ids_with(((f"ids[{i}]", v) for i, v in enumerate(group.ids)), {}),
                    project_id=group.project_id or "",
                    common=mapping_labels(group.labels),
                )
            results.append(
                {
                    "vendor": group.vendor.value,
                    "project_id": group.project_id,
                    "registered": outcome.added,
                    "already_tracked": outcome.already_tracked,
                    "rejected": [
                        {"where": r.where, "value": r.value[:300], "reason": r.reason}
                        for r in outcome.rejected
                    ],
                }
            )
    return {
        "registered": sum(r["registered"] for r in results),
        "already_tracked": sum(r["already_tracked"] for r in results),
        "rejected": sum(len(r["rejected"]) for r in results),
        "results": results,
    }


def raw_header(request: Request, name: bytes) -> bytes | None:
    """The first `name` header's value as sent: bytes, whatever they are."""
    for key, value in request.headers.raw:
        if key.lower() == name:
            return value
    return None


def _authorized(request: Request, settings: Settings) -> bool:
    assert settings.intake_token is not None
    # Bytes on both sides: hmac.compare_digest raises TypeError on str with
    # non-ASCII characters, and a header may carry any byte.
    scheme, _, token = (raw_header(request, b"authorization") or b"").partition(b" ")
    expected = settings.intake_token.get_secret_value().encode()
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected)


def _state(request: Request) -> tuple[Settings, Database]:
    return request.app.state.settings, request.app.state.db


async def track(request: Request) -> Response:
    settings, db = _state(request)
    started = time.monotonic()
    if settings.intake_token is None or not settings.intake_token.get_secret_value():
        return _error(503, "POST /v1/track is disabled: set INTAKE_TOKEN")
    if not _authorized(request, settings):
        return JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="mentionsync"'},
        )
    try:
        body = await read_body(request, settings.intake_max_body_bytes)
    except TooLarge:
        return _error(413, f"body larger than {settings.intake_max_body_bytes} bytes")
    try:
        groups = parse_track_request(body)
    except ValueError as exc:
        return _error(422, str(exc))
    report = await run_in_threadpool(track_groups, groups, settings, db)
    for group in report["results"]:
        log.info(
            "track %s: %d registered, %d already tracked, %d rejected",
            group["vendor"],
            group["registered"],
            group["already_tracked"],
            len(group["rejected"]),
            extra={
                "vendor": group["vendor"],
                "count": group["registered"] + group["already_tracked"] + len(group["rejected"]),
                "duration_s": round(time.monotonic() - started, 3),
            },
        )
    return JSONResponse(report)


# --- POST /webhooks/<vendor> -------------------------------------------------------------


def webhook_endpoint(spec: VendorSpec) -> Any:
    """The handler of one vendor's deliveries: how they are signed and read is the
    vendor's (its spec), what is done with them is the same for every vendor."""
    vendor = spec.vendor.value

    async def receive(request: Request) -> Response:
        settings, db = _state(request)
        started = time.monotonic()

        def refuse(status: int, reason: str, result: str) -> Response:
            WEBHOOK_REQUESTS.labels(vendor, result).inc()
            log.warning(
                "webhook %s refused (%d): %s",
                vendor,
                status,
                reason,
                extra={
                    "vendor": vendor,
                    "count": 0,
                    "duration_s": round(time.monotonic() - started, 3),
                },
            )
            return _error(status, reason)

        secrets = settings.webhook_secrets(spec.vendor)
        if not secrets:
            return refuse(
                503, f"webhooks are disabled: set {vendor.upper()}_WEBHOOK_SECRET", "disabled"
            )
        try:
            body = await read_body(request, settings.intake_max_body_bytes)
        except TooLarge:
            return refuse(
                413, f"body larger than {settings.intake_max_body_bytes} bytes", "too_large"
            )
        try:
            verified = spec.verify_delivery(
                request.headers,
                body,
                secrets,
                now=time.time(),
                tolerance=settings.webhook_tolerance_seconds,
            )
        except SignatureError as exc:
            result = "stale" if exc.reason.startswith("stale") else "bad_signature"
            return refuse(exc.status, exc.reason, result)
        try:
            envelope = parse_envelope(spec, body, request.headers)
        except BadDelivery as exc:
            return refuse(400, str(exc), "bad_payload")
        if envelope is None:
            WEBHOOK_REQUESTS.labels(vendor, "ignored").inc()
            return JSONResponse({"result": "ignored", "detail": spec.webhook_ignored_detail})

        def work() -> Any:
            now = utcnow()
            with db.session() as session:
                outcome = apply_delivery(
                    session,
                    spec,
                    envelope,
                    body,
                    scheme=verified.scheme,
                    settings=settings,
                    now=now,
                )
            observe(spec, outcome, envelope, now)
            return outcome

        outcome = await run_in_threadpool(work)
        WEBHOOK_REQUESTS.labels(vendor, outcome.result).inc()
        log.info(
            "webhook %s %s: %s %s%s",
            vendor,
            envelope.event_id,
            outcome.result,
            envelope.external_id,
            " (newly registered)" if outcome.registered else "",
            extra={
                "vendor": vendor,
                "count": 1,
                "duration_s": round(time.monotonic() - started, 3),
                "scheme": verified.scheme,
            },
        )
        return JSONResponse(outcome.as_json())

    return receive


# --- health, readiness, metrics ---------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 `{"ok": true}` or 503 `{"ok": false}`: all a caller without the intake
    token gets. With it, also which check failed and the scheduler's ages. No URL
    or host name for anybody: `mentionsync doctor` has them.
    """
    from worker.doctor import readiness

    settings, db = _state(request)
    report = await run_in_threadpool(readiness, settings, db)
    status = 200 if report["ok"] else 503
    token = settings.intake_token
    if token is None or not token.get_secret_value() or not _authorized(request, settings):
        return JSONResponse({"ok": report["ok"]}, status_code=status)
    return JSONResponse(report, status_code=status)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(process_registry()), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, db: Database) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/track", track, methods=["POST"]),
            *(
                Route(f"/webhooks/{spec.vendor.value}", webhook_endpoint(spec), methods=["POST"])
                for spec in VENDORS.values()
                if spec.sends_webhooks
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            # The read-only dashboard (`/`, behind DASHBOARD_TOKEN): worker/dashboard.
            *dashboard_routes(settings, lambda: read_session(app.state.db)),
        ]
    )
    app.state.settings = settings
    app.state.db = db
    return app
