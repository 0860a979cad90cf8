"""``GET`` and ``POST /unsubscribe/{token}``: the page behind the link in every email,
and RFC 8058 one-click unsubscribe (the ``List-Unsubscribe-Post`` header mail clients
use). Browsers get a page in the lead's language; clients asking for JSON get JSON."""

from __future__ import annotations

import logging
from typing import Any, Literal

import redis
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from worker.errors import ApiError, StoreUnavailableError
from worker.http import pages
from worker.http.body import read_body
from worker.http.deps import MetricsDep, RuntimeDep
from worker.http.errors import RETRY_AFTER, error_response, unavailable
from worker.http.schemas import (
    POST_UNSUBSCRIBE_RESPONSES,
    UNSUBSCRIBE_BODY,
    UNSUBSCRIBE_RESPONSES,
    UnsubscribeResult,
)
from worker.runtime import Runtime
from worker.suppression import unsubscribe_lead
from worker.tokens import read_token

log = logging.getLogger("worker.http")

MAX_UNSUBSCRIBE_BODY = 4096  # a one-click body is 26 bytes; a form a little more

router = APIRouter(tags=["unsubscribe"])

# The token is in the URL: keep it out of caches, referrers and search engines.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


def wants_json(request: Request) -> bool:
    """True when the client prefers JSON over HTML (scripts, not browsers)."""
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


def page(
    request: Request,
    runtime: Runtime,
    kind: pages.PageKind,
    status: int,
    lead: Any = None,
) -> Response:
    """The answer for one outcome: a page in the lead's language, or JSON."""
    if wants_json(request):
        if kind == "invalid":
            return error_response(
                ApiError(404, "invalid_token", "unknown or altered unsubscribe link")
            )
        if kind == "unavailable":
            return error_response(unavailable(RuntimeError("unsubscribe")))
        state: Literal["unsubscribed", "subscribed"] = (
            "subscribed" if kind == "confirm" else "unsubscribed"
        )
        result = UnsubscribeResult(status=state, lead_known=lead is not None)
        return JSONResponse(result.model_dump(), status_code=status)
    settings = runtime.settings
    locale = lead.data.get("locale") if lead is not None else None
    language = pages.pick_language(
        locale, request.headers.get("accept-language"), settings.default_locale
    )
    content = pages.render(kind, language, settings.from_name, action=request.url.path)
    headers = dict(_PAGE_HEADERS)
    if kind == "unavailable":
        headers["Retry-After"] = RETRY_AFTER
    return HTMLResponse(content, status_code=status, headers=headers)


def lookup(runtime: Runtime, token: str) -> tuple[str | None, Any]:
    """The token's lead id (None when forged or altered) and its record (None when unknown)."""
    lead_id = read_token(runtime.unsubscribe_secret, token)
    if lead_id is None:
        return None, None
    return lead_id, runtime.store.get_lead(lead_id)


def unsubscribe(runtime: Runtime, token: str) -> tuple[str | None, Any]:
    """Unsubscribe the token's lead (runs in the threadpool); as :func:`lookup`."""
    lead_id, lead = lookup(runtime, token)
    if lead_id is not None and not unsubscribe_lead(runtime, lead_id, "unsubscribe"):
        log.warning("unsubscribe for a lead never seen", extra={"lead_id": lead_id})
    return lead_id, lead


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=UNSUBSCRIBE_RESPONSES,
    summary="Confirmation page with a button that POSTs to the same URL",
)
def get_unsubscribe(request: Request, token: str, runtime: RuntimeDep) -> Response:
    try:
        lead_id, lead = lookup(runtime, token)
    except redis.RedisError as exc:
        log.warning("unsubscribe page: Redis unavailable: %s", exc)
        return page(request, runtime, "unavailable", 503)
    if lead_id is None:
        return page(request, runtime, "invalid", 404)
    if lead is not None and lead.suppressed:
        return page(request, runtime, "already", 200, lead)
    return page(request, runtime, "confirm", 200, lead)


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=POST_UNSUBSCRIBE_RESPONSES,
    summary="RFC 8058 one-click unsubscribe (body List-Unsubscribe=One-Click, or empty)",
    openapi_extra={"requestBody": UNSUBSCRIBE_BODY},
)
async def post_unsubscribe(
    request: Request, token: str, runtime: RuntimeDep, metrics: MetricsDep
) -> Response:
    body = await read_body(request, MAX_UNSUBSCRIBE_BODY)
    # RFC 8058 allows urlencoded and multipart bodies; our page's form sends the same
    # field, and an empty POST is fine too. Anything else is not an unsubscribe.
    if body.strip() and not (b"List-Unsubscribe" in body and b"One-Click" in body):
        raise ApiError(
            400, "bad_request", "expected the body List-Unsubscribe=One-Click or nothing"
        )
    try:
        lead_id, lead = await run_in_threadpool(unsubscribe, runtime, token)
    except (redis.RedisError, StoreUnavailableError) as exc:
        log.warning("unsubscribe: Redis unavailable: %s", exc)
        return page(request, runtime, "unavailable", 503)
    if lead_id is None:
        return page(request, runtime, "invalid", 404)
    via = "page" if b"source=page" in body else "one_click" if body.strip() else "empty"
    metrics.unsubscribes.labels(via).inc()
    log.info("lead unsubscribed", extra={"lead_id": lead_id, "via": via})
    return page(request, runtime, "done", 200, lead)
