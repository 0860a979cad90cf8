"""``POST /webhooks/sendgrid``: SendGrid's signed Event Webhook (suppression and counts,
see :mod:`worker.http.sendgrid_events`)."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from worker.errors import ApiError
from worker.http.body import decode_json, read_body, require_json
from worker.http.deps import StateDep
from worker.http.errors import unavailable
from worker.http.schemas import SENDGRID_BODY, SendgridAccepted, error_responses
from worker.http.sendgrid_events import MAX_EVENTS, SendgridResult, process_batch
from worker.http.signatures import (
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    verify_sendgrid,
)
from worker.runtime import Runtime

router = APIRouter(tags=["sendgrid"])

_DISABLED = (
    "NURTURE_SENDGRID_WEBHOOK_PUBLIC_KEY is not set, so SendGrid events are refused; set it "
    "to the verification key shown in SendGrid's Event Webhook settings (Signature "
    "Verification)"
)


def decode_batch(body: bytes) -> list[Any]:
    """The body as a list of SendGrid events (runs in the threadpool).

    Raises:
        BodyError: When the body is not JSON.
        ApiError: 400 ``invalid_payload`` when it is not an array of at most MAX_EVENTS.
    """
    payload = decode_json(body)
    if not isinstance(payload, list):
        raise ApiError(400, "invalid_payload", "expected a JSON array of events")
    if len(payload) > MAX_EVENTS:
        raise ApiError(400, "invalid_payload", f"more than {MAX_EVENTS} events")
    return payload


def handle_batch(runtime: Runtime, items: list[Any]) -> SendgridResult:
    """Act on the events and dead-letter the unreadable ones (runs in the threadpool).

    Raises:
        ApiError: 503 when Redis is unreachable.
    """
    try:
        result = process_batch(runtime, items)
        for index, reason in result.invalid:
            runtime.store.dead_letter(
                "sendgrid", f"event {index}: {reason}", {"event": items[index]}
            )
        return result
    except redis.RedisError as exc:
        raise unavailable(exc) from None


@router.post(
    "/webhooks/sendgrid",
    response_model=SendgridAccepted,
    responses=error_responses(400, 401, 413, 415, 503),
    summary="SendGrid's signed Event Webhook",
    openapi_extra={"requestBody": SENDGRID_BODY},
)
async def post_sendgrid(
    request: Request,
    state: StateDep,
    signature: str | None = Header(default=None, alias=SENDGRID_SIGNATURE_HEADER),
    timestamp: str | None = Header(default=None, alias=SENDGRID_TIMESTAMP_HEADER),
) -> JSONResponse:
    metrics = state.metrics
    with metrics.counting_refusals("sendgrid"):
        if state.sendgrid_key is None:
            raise ApiError(401, "sendgrid_webhook_disabled", _DISABLED)
        require_json(request)
        body = await read_body(request)
        verify_sendgrid(state.sendgrid_key, signature, timestamp, body)
        payload = await run_in_threadpool(decode_batch, body)
        result = await run_in_threadpool(handle_batch, state.runtime, payload)
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
