"""``POST /events``: lead events in our own format (one object, an array, JSON Lines)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from worker.errors import ApiError, EventError
from worker.events import MAX_EVENTS_PER_BATCH, Event, validate_event
from worker.http.body import decode_json, read_body, require_json
from worker.http.deps import MetricsDep, RuntimeDep, unix_now, webhook_secrets
from worker.http.ingesting import ingest_and_accept
from worker.http.schemas import EVENTS_BODY, Accepted, error_responses
from worker.http.signatures import SIGNATURE_HEADER, verify

router = APIRouter(tags=["events"])


def validate_batch(items: list[Any]) -> tuple[list[Event], list[tuple[int, str]]]:
    """Validate decoded items as events: the good ones, and (index, reason) of the bad."""
    events: list[Event] = []
    problems: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        try:
            events.append(validate_event(item, index))
        except EventError as exc:
            problems.append((exc.index, exc.reason))
    return events, problems


def parse_lead_events(body: bytes) -> list[Event]:
    """Decode and validate a ``POST /events`` body (CPU work: runs in the threadpool).

    Raises:
        BodyError: When the body is not JSON (see :func:`decode_json`).
        ApiError: 400 ``invalid_events`` with each bad event's index and reason.
    """
    items = decode_json(body, json_lines=True)
    if len(items) > MAX_EVENTS_PER_BATCH:
        message = f"batch of {len(items)} events; send at most {MAX_EVENTS_PER_BATCH}"
        raise ApiError(400, "invalid_json", message)
    events, problems = validate_batch(items)
    if problems:
        raise ApiError(
            400,
            "invalid_events",
            f"{len(problems)} of {len(items)} event(s) are invalid; nothing was queued",
            errors=problems,
        )
    return events


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses=error_responses(400, 401, 413, 415, 503),
    summary="Lead events from the CRM (one object, an array, or JSON Lines)",
    openapi_extra={"requestBody": EVENTS_BODY},
)
async def post_events(
    request: Request,
    runtime: RuntimeDep,
    metrics: MetricsDep,
    x_nurture_signature: str | None = Header(
        default=None,
        alias=SIGNATURE_HEADER,
        description="t=<unix seconds>,v1=<hex HMAC-SHA256 over '<t>.<raw body>'>",
    ),
) -> JSONResponse:
    with metrics.counting_refusals("native"):
        require_json(request)
        body = await read_body(request)
        verify(x_nurture_signature, body, webhook_secrets(runtime.settings), unix_now(runtime))
        events = await run_in_threadpool(parse_lead_events, body)
        return await ingest_and_accept(
            runtime,
            metrics,
            "native",
            events,
            lambda result: Accepted(accepted=result.accepted, duplicates=result.duplicates),
        )
