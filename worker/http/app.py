"""The ASGI app of ``nurture serve`` (FastAPI, served by uvicorn).

Routes (see docs/http.md): ``POST /events`` and the CRM adapters ``POST
/events/hubspot`` / ``POST /events/pipedrive``; ``POST /webhooks/sendgrid``; ``GET`` and
``POST /unsubscribe/{token}``; ``/healthz``, ``/readyz``, ``/metrics``; the OpenAPI
document at ``/openapi.json``.

The process only validates and queues: every Redis call runs in the threadpool, so a
slow Redis never blocks the event loop, and no email is sent from here. Request bodies
are read by hand, capped at 1 MiB while streaming, because signatures cover the raw
bytes and must be checked before anything is parsed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from typing import Any, Literal

import redis
from fastapi import FastAPI, Header, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.crm.mapping import Mapping, MappingError
from worker.errors import CatalogError, EventError, SettingsError, StoreUnavailableError
from worker.events import Event, decode_events, validate_event
from worker.http import pages
from worker.http.adapters import (
    WORKFLOW_NAME,
    Notification,
    PayloadError,
    hubspot_notifications,
    pipedrive_notifications,
    translate,
)
from worker.http.metrics import CONTENT_TYPE, HttpMetrics
from worker.http.sendgrid_events import MAX_EVENTS, SendgridResult, process_batch
from worker.http.signatures import (
    HUBSPOT_SIGNATURE_HEADER,
    HUBSPOT_TIMESTAMP_HEADER,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    hubspot_uri,
    load_sendgrid_key,
    verify,
    verify_basic_auth,
    verify_hubspot_v3,
    verify_sendgrid,
)
from worker.ingest import IngestResult, ingest
from worker.runtime import Runtime
from worker.suppression import unsubscribe_lead
from worker.tokens import read_token

log = logging.getLogger("worker.http")

MAX_BODY = 1024 * 1024  # the contract: bodies over 1 MiB get 413
MAX_UNSUBSCRIBE_BODY = 4096  # a one-click body is 26 bytes; a form a little more
MAX_DEPTH = 32  # events are shallow; deeper JSON is an attack or a mistake
RETRY_AFTER = "5"
JSON_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nurture_request_id", default=None
)


# -- response models (they make the OpenAPI document exact) ---------------------------


class Problem(BaseModel):
    """One bad event in a batch."""

    index: int = Field(description="0-based position in the batch (line for JSON Lines)")
    reason: str = Field(description="which field is wrong and why")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="machine-readable code, e.g. signature_expired")
    message: str = Field(description="what is wrong and how to fix it")
    errors: list[Problem] | None = Field(
        default=None, description="each bad event (error invalid_events only)"
    )


class Accepted(BaseModel):
    """202: the events are durably queued."""

    accepted: int = Field(description="events queued now")
    duplicates: int = Field(description="events already received earlier (same id)")


class AdapterAccepted(Accepted):
    """202 from a CRM adapter."""

    ignored: int = Field(description="CRM notifications no mapping rule turns into an event")
    refused: list[Problem] = Field(
        default_factory=list,
        description="notifications that could not be read (kept as dead letters)",
    )


class SendgridAccepted(BaseModel):
    """200: the batch is handled."""

    processed: int
    duplicates: int
    ignored: int
    invalid: int


class Status(BaseModel):
    """Health answers."""

    status: str
    message: str | None = None


class UnsubscribeResult(BaseModel):
    """JSON answer of the unsubscribe routes (when the client asks for JSON)."""

    status: Literal["unsubscribed", "subscribed"]
    lead_known: bool


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "bad body or bad events; nothing was queued",
        401: "signature missing, malformed, expired or wrong",
        404: "unknown or forged token",
        413: "body over the size limit",
        415: "wrong content type",
        503: "Redis unreachable: retry later",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


# -- errors ---------------------------------------------------------------------------


class ApiError(Exception):
    """A clear 4xx/5xx JSON answer."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = ErrorBody(error=self.code, message=self.message, errors=self.errors)
        return JSONResponse(
            body.model_dump(exclude_none=True), status_code=self.status, headers=self.headers
        )


def _unavailable(exc: Exception) -> ApiError:
    log.warning("Redis unavailable: %s", exc)
    return ApiError(
        503,
        "unavailable",
        "the queue (Redis) is unreachable; nothing was accepted, retry later",
        headers={"Retry-After": RETRY_AFTER},
    )


# -- body reading and JSON -------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request, allowed: frozenset[str] = JSON_TYPES) -> None:
    """Refuse a body that is not declared as JSON (415)."""
    media = _media_type(request)
    if media not in allowed and not media.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json (or application/x-ndjson for JSON "
            f"Lines); got {media or 'none'}",
        )


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes.

    A declared Content-Length over the limit is refused before reading anything; a
    body without one (chunked) is counted while it streams, so nothing unbounded is
    ever held in memory.
    """
    declared = request.headers.get("content-length")
    too_large = ApiError(413, "payload_too_large", f"body over {limit} bytes; send smaller batches")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """True when decoded JSON nests arrays/objects deeper than ``limit``.

    Iterative and early-exiting. Nesting far deeper than any limit never gets this
    far: ``json`` raises RecursionError at about 1000 levels, which is caught too.
    (A regex pre-scan of the raw bytes was tried and dropped: unterminated strings
    made it quadratic.)
    """
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_deep_error() -> ApiError:
    return ApiError(400, "too_deep", f"JSON nested deeper than {MAX_DEPTH} levels; flatten it")


def load_json(body: bytes) -> Any:
    """Decode one JSON document, with a clear 400 for every way it can be bad."""
    try:
        text = body.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise ApiError(400, "empty_body", "body is empty; send JSON")
    try:
        decoded = json.loads(text)
    except RecursionError:
        raise _too_deep_error() from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except ValueError as exc:  # e.g. a 5000-digit number
        raise ApiError(400, "invalid_json", f"invalid JSON: {exc}") from None
    if isinstance(decoded, dict | list) and too_deep(decoded):
        raise _too_deep_error()
    return decoded


def parse_lead_events(body: bytes) -> list[Event]:
    """Decode and validate a ``POST /events`` body (object, array or JSON Lines).

    Raises:
        ApiError: 400 with each bad event's index and reason; nothing is kept.
    """
    try:
        items = decode_events(body)
    except EventError as exc:
        code = "invalid_utf8" if "UTF-8" in exc.reason else "invalid_json"
        if exc.reason.startswith("body is empty"):
            code = "empty_body"
        elif "nested too deeply" in exc.reason:
            raise _too_deep_error() from None
        raise ApiError(400, code, exc.reason) from None
    except RecursionError:
        raise _too_deep_error() from None
    except ValueError as exc:  # e.g. a 5000-digit number, which json refuses to convert
        raise ApiError(400, "invalid_json", f"invalid JSON: {exc}") from None
    if any(isinstance(item, dict | list) and too_deep(item) for item in items):
        raise _too_deep_error()
    events: list[Event] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        try:
            events.append(validate_event(item, index))
        except EventError as exc:
            problems.append(Problem(index=exc.index, reason=exc.reason))
    if problems:
        raise ApiError(
            400,
            "invalid_events",
            f"{len(problems)} of {len(items)} event(s) are invalid; nothing was queued",
            errors=problems,
        )
    return events


def wants_json(request: Request) -> bool:
    """True when the client prefers JSON over HTML (scripts, not browsers)."""
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


# -- request context: request ids, access log, request metrics ------------------------


_factory_installed = False


def _install_record_factory() -> None:
    """Stamp every log record made during a request with its request id (JSON logs)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


class RequestContext:
    """Pure ASGI middleware: X-Request-Id in and out, one access-log line, metrics."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)["X-Request-Id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The route template, never the raw path: paths carry unsubscribe tokens.
            template = getattr(route, "path", None) or "unmatched"
            # Client-chosen methods must not become metric labels without bound.
            method = scope.get("method", "")
            method = method if method in _METHODS else "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.duration.labels(template).observe(elapsed)
            log.info(
                "%s %s %d %.1fms",
                method,
                template,
                status,
                elapsed * 1000,
                extra={
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )
            REQUEST_ID.reset(token)


# -- the app --------------------------------------------------------------------------


def create_app(runtime: Runtime) -> FastAPI:
    """Build the HTTP service around a runtime (the CLI's ``nurture serve`` serves it).

    Raises:
        SettingsError: When NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY is set but not a key.
    """
    settings = runtime.settings
    sendgrid_key = None
    if settings.sendgrid_webhook_public_key:
        try:
            sendgrid_key = load_sendgrid_key(settings.sendgrid_webhook_public_key)
        except ValueError as exc:
            raise SettingsError(f"NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY {exc}") from None
    webhook_secrets = [secret.get_secret_value() for secret in settings.webhook_secrets]
    # Optional CRM-native auth (NURTURE_HUBSPOT_CLIENT_SECRET, NURTURE_PIPEDRIVE_WEBHOOK_AUTH).
    hubspot_secret = (
        settings.hubspot_client_secret.get_secret_value()
        if settings.hubspot_client_secret
        else None
    )
    pipedrive_auth = (
        settings.pipedrive_webhook_auth.get_secret_value()
        if settings.pipedrive_webhook_auth
        else None
    )
    metrics = HttpMetrics(runtime)
    _install_record_factory()

    app = FastAPI(
        title="nurture-worker",
        version="1",
        description=(
            "CRM lead events in, SendGrid feedback, one-click unsubscribe. Event routes "
            f"need the `{SIGNATURE_HEADER}` header: `t=<unix>,v1=<hex HMAC-SHA256 of "
            '"<t>.<raw body>">`. See docs/http.md.'
        ),
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.add_middleware(RequestContext, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return ApiError(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=dict(exc.headers or {}),
        ).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return ApiError(500, "internal", "internal error; see the service log").response()

    def now() -> float:
        return runtime.clock.now().timestamp()

    # -- events -------------------------------------------------------------------

    def refused(source: str, exc: ApiError) -> ApiError:
        metrics.events_refused.labels(source, exc.code).inc()
        log.info("%s refused: %s", source, exc.message, extra={"reason": exc.code})
        return exc

    def signature_error(exc: SignatureError) -> ApiError:
        return ApiError(401, exc.code, exc.message, headers={"WWW-Authenticate": "Signature"})

    def do_ingest(events: list[Event]) -> IngestResult:
        try:
            return ingest(runtime, events)
        except (StoreUnavailableError, redis.RedisError) as exc:
            raise _unavailable(exc) from None

    event_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {
                            "type": "array",
                            "maxItems": 10_000,
                            "items": {"$ref": "#/components/schemas/Event"},
                        },
                    ]
                }
            }
        },
    }

    @app.post(
        "/events",
        status_code=202,
        response_model=Accepted,
        responses=_responses(400, 401, 413, 415, 503),
        summary="Lead events from the CRM (one object, an array, or JSON Lines)",
        openapi_extra={"requestBody": event_body},
        tags=["events"],
    )
    async def post_events(
        request: Request,
        x_nurture_signature: str | None = Header(
            default=None,
            alias=SIGNATURE_HEADER,
            description="t=<unix seconds>,v1=<hex HMAC-SHA256 over '<t>.<raw body>'>",
        ),
    ) -> JSONResponse:
        try:
            require_json(request)
            body = await read_body(request)
            try:
                verify(x_nurture_signature, body, webhook_secrets, now())
            except SignatureError as exc:
                raise signature_error(exc) from None
            events = await run_in_threadpool(parse_lead_events, body)
            result = await run_in_threadpool(do_ingest, events)
        except ApiError as exc:
            raise refused("native", exc) from None
        metrics.events_accepted.labels("native").inc(result.accepted)
        metrics.events_duplicate.labels("native").inc(result.duplicates)
        answer = Accepted(accepted=result.accepted, duplicates=result.duplicates)
        return JSONResponse(answer.model_dump(), status_code=202)

    def verify_adapter(request: Request, body: bytes, crm: str) -> None:
        """Our signature always works; the CRM's own scheme when configured."""
        try:
            if request.headers.get(SIGNATURE_HEADER):
                verify(request.headers[SIGNATURE_HEADER], body, webhook_secrets, now())
            elif (
                crm == "hubspot"
                and hubspot_secret
                and request.headers.get(HUBSPOT_SIGNATURE_HEADER)
            ):
                verify_hubspot_v3(
                    request.headers.get(HUBSPOT_SIGNATURE_HEADER),
                    request.headers.get(HUBSPOT_TIMESTAMP_HEADER),
                    method=request.method,
                    uri=hubspot_uri(settings.public_url, request.url.path, request.url.query),
                    body=body,
                    client_secret=hubspot_secret,
                    now=now(),
                )
            elif crm == "pipedrive" and pipedrive_auth and request.headers.get("authorization"):
                verify_basic_auth(request.headers.get("authorization"), pipedrive_auth)
            else:
                verify(None, body, webhook_secrets, now())
        except SignatureError as exc:
            raise signature_error(exc) from None

    def accept_translated(
        crm: str, good: list[tuple[int, Event]], bad: list[Problem]
    ) -> IngestResult:
        try:
            for problem in bad:
                runtime.store.dead_letter(
                    f"crm:{crm}", f"notification {problem.index}: {problem.reason}", {}
                )
            return ingest(runtime, [event for _, event in good])
        except (StoreUnavailableError, redis.RedisError) as exc:
            raise _unavailable(exc) from None

    def read_crm_body(
        crm: str, body: bytes, workflow: str | None, mapping: Mapping
    ) -> tuple[int, list[tuple[int, Event]], list[Problem]]:
        """Parse, translate and validate a CRM body (CPU work: runs in the threadpool).

        Returns:
            How many notifications were ignored, the good events with their CRM index,
            and the problems of the notifications that could not be read.
        """
        payload = load_json(body)
        notes: list[Notification]
        try:
            if crm == "hubspot":
                notes = hubspot_notifications(payload, workflow, mapping)
            else:
                notes = pipedrive_notifications(payload)
        except PayloadError as exc:
            raise ApiError(400, "invalid_payload", str(exc)) from None
        translation = translate(mapping, notes)
        good: list[tuple[int, Event]] = []
        bad = [Problem(index=i, reason=r) for i, r in translation.errors]
        for index, doc in translation.events:
            try:
                good.append((index, validate_event(doc, index)))
            except EventError as exc:
                bad.append(Problem(index=index, reason=exc.reason))
        bad.sort(key=lambda p: p.index)
        if bad and not good:
            raise ApiError(
                400,
                "invalid_events",
                f"no notification could be turned into a valid event (check crm/{crm}.yaml); "
                "nothing was queued",
                errors=bad,
            )
        return len(translation.ignored), good, bad

    async def handle_adapter(
        request: Request, crm: Literal["hubspot", "pipedrive"], workflow: str | None
    ) -> JSONResponse:
        try:
            require_json(request)
            body = await read_body(request)
            verify_adapter(request, body, crm)
            try:
                # The catalog (loaded on first use here) reloads edited mappings.
                mapping = await run_in_threadpool(lambda: runtime.catalog.mapping(crm))
            except (MappingError, CatalogError) as exc:
                raise ApiError(
                    503,
                    "adapter_not_configured",
                    f"the {crm} adapter has no valid mapping: {exc}",
                    headers={"Retry-After": "60"},
                ) from None
            if workflow is not None and not WORKFLOW_NAME.match(workflow):
                raise ApiError(
                    400, "bad_workflow", "workflow must be letters, digits, - or _ (max 64)"
                )
            ignored, good, bad = await run_in_threadpool(
                read_crm_body, crm, body, workflow, mapping
            )
            result = await run_in_threadpool(accept_translated, crm, good, bad)
        except ApiError as exc:
            raise refused(crm, exc) from None
        metrics.events_accepted.labels(crm).inc(result.accepted)
        metrics.events_duplicate.labels(crm).inc(result.duplicates)
        metrics.events_ignored.labels(crm).inc(ignored)
        if bad:
            metrics.events_refused.labels(crm, "invalid_notification").inc(len(bad))
        answer = AdapterAccepted(
            accepted=result.accepted,
            duplicates=result.duplicates,
            ignored=ignored,
            refused=bad,
        )
        return JSONResponse(answer.model_dump(), status_code=202)

    free_json_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object"},
                        {"type": "array", "items": {"type": "object"}},
                    ]
                }
            }
        },
    }

    @app.post(
        "/events/hubspot",
        status_code=202,
        response_model=AdapterAccepted,
        responses=_responses(400, 401, 413, 415, 503),
        summary="HubSpot webhooks (Webhooks API batches or workflow webhooks), mapped "
        "through crm/hubspot.yaml",
        openapi_extra={"requestBody": free_json_body},
        tags=["events"],
    )
    async def post_hubspot(
        request: Request,
        workflow: str | None = None,
        x_nurture_signature: str | None = Header(default=None, alias=SIGNATURE_HEADER),
    ) -> JSONResponse:
        return await handle_adapter(request, "hubspot", workflow)

    @app.post(
        "/events/pipedrive",
        status_code=202,
        response_model=AdapterAccepted,
        responses=_responses(400, 401, 413, 415, 503),
        summary="Pipedrive webhooks (v2, or v1), mapped through crm/pipedrive.yaml",
        openapi_extra={"requestBody": free_json_body},
        tags=["events"],
    )
    async def post_pipedrive(
        request: Request,
        x_nurture_signature: str | None = Header(default=None, alias=SIGNATURE_HEADER),
    ) -> JSONResponse:
        return await handle_adapter(request, "pipedrive", None)

    # -- SendGrid ---------------------------------------------------------------------

    def handle_sendgrid(items: list[Any]) -> SendgridResult:
        try:
            result = process_batch(runtime, items)
            for index, reason in result.invalid:
                runtime.store.dead_letter(
                    "sendgrid", f"event {index}: {reason}", {"event": items[index]}
                )
            return result
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    @app.post(
        "/webhooks/sendgrid",
        response_model=SendgridAccepted,
        responses=_responses(400, 401, 413, 415, 503),
        summary="SendGrid's signed Event Webhook",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/SendgridEvent"},
                        }
                    }
                },
            }
        },
        tags=["sendgrid"],
    )
    async def post_sendgrid(
        request: Request,
        signature: str | None = Header(default=None, alias=SENDGRID_SIGNATURE_HEADER),
        timestamp: str | None = Header(default=None, alias=SENDGRID_TIMESTAMP_HEADER),
    ) -> JSONResponse:
        try:
            if sendgrid_key is None:
                raise ApiError(
                    401,
                    "sendgrid_webhook_disabled",
                    "NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY is not set, so SendGrid events are "
                    "refused; set it to the verification key shown in SendGrid's Event "
                    "Webhook settings (Signature Verification)",
                )
            require_json(request)
            body = await read_body(request)
            try:
                verify_sendgrid(sendgrid_key, signature, timestamp, body)
            except SignatureError as exc:
                raise signature_error(exc) from None
            payload = await run_in_threadpool(load_json, body)
            if not isinstance(payload, list):
                raise ApiError(400, "invalid_payload", "expected a JSON array of events")
            if len(payload) > MAX_EVENTS:
                raise ApiError(400, "invalid_payload", f"more than {MAX_EVENTS} events")
            result = await run_in_threadpool(handle_sendgrid, payload)
        except ApiError as exc:
            raise refused("sendgrid", exc) from None
        for name, count in result.by_event.items():
            metrics.sendgrid_events.labels(name, "received").inc(count)
        metrics.sendgrid_events.labels("all", "duplicate").inc(result.duplicates)
        metrics.sendgrid_events.labels("all", "invalid").inc(len(result.invalid))
        answer = SendgridAccepted(
            processed=result.processed,
            duplicates=result.duplicates,
            ignored=result.ignored,
            invalid=len(result.invalid),
        )
        return JSONResponse(answer.model_dump())

    # -- unsubscribe ----------------------------------------------------------------------

    def page(
        request: Request,
        kind: pages.PageKind,
        status: int,
        lead_locale: str | None = None,
        lead_known: bool = False,
    ) -> Response:
        if wants_json(request):
            if kind == "invalid":
                return ApiError(
                    404, "invalid_token", "unknown or altered unsubscribe link"
                ).response()
            if kind == "unavailable":
                return _unavailable(RuntimeError("unsubscribe")).response()
            state: Literal["unsubscribed", "subscribed"] = (
                "subscribed" if kind == "confirm" else "unsubscribed"
            )
            return JSONResponse(
                UnsubscribeResult(status=state, lead_known=lead_known).model_dump(),
                status_code=status,
            )
        language = pages.pick_language(
            lead_locale, request.headers.get("accept-language"), settings.default_locale
        )
        content = pages.render(kind, language, settings.from_name, action=request.url.path)
        headers = {
            # The token is in the URL: keep it out of caches, referrers and search engines.
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        }
        if kind == "unavailable":
            headers["Retry-After"] = RETRY_AFTER
        return HTMLResponse(content, status_code=status, headers=headers)

    def lookup(token: str) -> tuple[str | None, Any]:
        lead_id = read_token(runtime.unsubscribe_secret, token)
        if lead_id is None:
            return None, None
        return lead_id, runtime.store.get_lead(lead_id)

    unsubscribe_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "the page (text/html) or, with Accept: application/json, JSON",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/UnsubscribeResult"}},
            },
        },
        404: {
            "description": "forged, altered or truncated token: nothing changed",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
            },
        },
        503: {
            "description": "Redis unreachable",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
            },
        },
    }

    @app.get(
        "/unsubscribe/{token}",
        response_class=HTMLResponse,
        responses=unsubscribe_responses,
        summary="Confirmation page with a button that POSTs to the same URL",
        tags=["unsubscribe"],
    )
    def get_unsubscribe(request: Request, token: str) -> Response:
        try:
            lead_id, lead = lookup(token)
        except redis.RedisError as exc:
            log.warning("unsubscribe page: Redis unavailable: %s", exc)
            return page(request, "unavailable", 503)
        if lead_id is None:
            return page(request, "invalid", 404)
        locale = lead.data.get("locale") if lead is not None else None
        if lead is not None and lead.suppressed:
            return page(request, "already", 200, locale, lead_known=True)
        return page(request, "confirm", 200, locale, lead_known=lead is not None)

    post_unsubscribe_responses = dict(unsubscribe_responses)
    for code, spec in _responses(400, 413).items():
        # Explicit content: the route's default (text/html) would be assumed otherwise.
        post_unsubscribe_responses[code] = {
            "description": spec["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }

    @app.post(
        "/unsubscribe/{token}",
        response_class=HTMLResponse,
        responses=post_unsubscribe_responses,
        summary="RFC 8058 one-click unsubscribe (body List-Unsubscribe=One-Click, or empty)",
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            }
        },
        tags=["unsubscribe"],
    )
    async def post_unsubscribe(request: Request, token: str) -> Response:
        body = await read_body(request, MAX_UNSUBSCRIBE_BODY)
        # RFC 8058 allows urlencoded and multipart bodies; our page's form sends the same
        # field, and an empty POST is fine too. Anything else is not an unsubscribe.
        if body.strip() and not (b"List-Unsubscribe" in body and b"One-Click" in body):
            raise ApiError(
                400, "bad_request", "expected the body List-Unsubscribe=One-Click or nothing"
            )

        def work() -> tuple[str | None, Any]:
            lead_id, lead = lookup(token)
            if lead_id is not None and not unsubscribe_lead(runtime, lead_id, "unsubscribe"):
                log.warning("unsubscribe for a lead never seen", extra={"lead_id": lead_id})
            return lead_id, lead

        try:
            lead_id, lead = await run_in_threadpool(work)
        except (redis.RedisError, StoreUnavailableError) as exc:
            log.warning("unsubscribe: Redis unavailable: %s", exc)
            return page(request, "unavailable", 503)
        if lead_id is None:
            return page(request, "invalid", 404)
        via = "page" if b"source=page" in body else "one_click" if body.strip() else "empty"
        metrics.unsubscribes.labels(via).inc()
        log.info("lead unsubscribed", extra={"lead_id": lead_id, "via": via})
        locale = lead.data.get("locale") if lead is not None else None
        return page(request, "done", 200, locale, lead_known=lead is not None)

    # -- operations ------------------------------------------------------------------------

    @app.get(
        "/healthz",
        response_model=Status,
        response_model_exclude_none=True,
        tags=["operations"],
        summary="Liveness (answers without Redis)",
    )
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get(
        "/readyz",
        response_model=Status,
        responses={503: {"model": Status, "description": "Redis unreachable"}},
        tags=["operations"],
        summary="Readiness: Redis reachable",
    )
    async def readyz() -> JSONResponse:
        if await run_in_threadpool(runtime.store.ping):
            return JSONResponse(Status(status="ready").model_dump(exclude_none=True))
        return JSONResponse(
            Status(status="unavailable", message="Redis does not answer").model_dump(),
            status_code=503,
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        tags=["operations"],
        summary="Prometheus metrics",
    )
    async def prometheus() -> Response:
        return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(event_schema.pop("$defs", {}))
        components["Event"] = event_schema
        components["UnsubscribeResult"] = UnsubscribeResult.model_json_schema()
        components.setdefault(
            "ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        components.setdefault("Problem", Problem.model_json_schema())
        components["SendgridEvent"] = {
            "type": "object",
            "required": ["event", "sg_event_id"],
            "properties": {
                "event": {"type": "string"},
                "email": {"type": "string"},
                "sg_event_id": {"type": "string"},
                "timestamp": {"type": "integer"},
                "type": {"type": "string"},
                "lead_id": {"type": "string"},
                "sequence": {"type": "string"},
                "step": {"type": "string"},
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


__all__ = ["MAX_BODY", "MAX_DEPTH", "create_app", "load_json", "read_body"]
