"""How an HTTP error is shaped: every 4xx/5xx answer of the service is made here.

Routes raise :class:`~worker.errors.ApiError` (or one of its subclasses: ``BodyError``,
``SignatureError``, ``PayloadError``), which carries the status, the machine-readable
code, the message and any headers; the handlers below turn it, Starlette's own 404/405
and any crash into the same JSON body, :class:`~worker.http.schemas.ErrorBody`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import ApiError
from worker.http.schemas import ErrorBody, Problem

log = logging.getLogger("worker.http")

RETRY_AFTER = "5"  # seconds a client should wait after a 503 before retrying
_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(exc: ApiError) -> JSONResponse:
    """The JSON answer for a refusal: ``{"error", "message"[, "errors"]}`` and its headers."""
    problems = None
    if exc.errors is not None:
        problems = [Problem(index=index, reason=reason) for index, reason in exc.errors]
    body = ErrorBody(error=exc.code, message=exc.message, errors=problems)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=exc.status, headers=exc.headers
    )


def unavailable(exc: Exception) -> ApiError:
    """The 503 for Redis being unreachable (logged here, once)."""
    log.warning("Redis unavailable: %s", exc)
    return ApiError(
        503,
        "unavailable",
        "the queue (Redis) is unreachable; nothing was accepted, retry later",
        headers={"Retry-After": RETRY_AFTER},
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STARLETTE_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=headers))


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(ApiError(500, "internal", "internal error; see the service log"))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal, unknown route and crash of ``app`` with the JSON error body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _crash)
