"""The end every event route shares (``POST /events`` and the CRM webhooks): queue the
events durably, count them, answer 202. Only then is an event kept (docs/architecture.md,
"One event, from HTTP to a sent email")."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from worker.errors import StoreUnavailableError
from worker.events import Event
from worker.http.errors import unavailable
from worker.http.metrics import HttpMetrics
from worker.ingest import IngestResult, ingest
from worker.runtime import Runtime


async def ingest_and_accept(
    runtime: Runtime,
    metrics: HttpMetrics,
    source: str,
    events: list[Event],
    answer: Callable[[IngestResult], BaseModel],
    *,
    dead_letters: Sequence[tuple[str, str]] = (),
) -> JSONResponse:
    """Keep ``dead_letters``, queue ``events`` and answer 202 with ``answer(result)``.

    Args:
        source: The route's label in the metrics (native, hubspot, pipedrive).
        dead_letters: (kind, reason) of what the request held that could not be read,
            kept for the operator before the events are queued.

    Raises:
        ApiError: 503 when Redis is unreachable; nothing was accepted.
    """
    result = await run_in_threadpool(_keep_and_ingest, runtime, events, dead_letters)
    metrics.events_accepted.labels(source).inc(result.accepted)
    metrics.events_duplicate.labels(source).inc(result.duplicates)
    return JSONResponse(answer(result).model_dump(), status_code=202)


def _keep_and_ingest(
    runtime: Runtime, events: list[Event], dead_letters: Sequence[tuple[str, str]]
) -> IngestResult:
    """The store's part (runs in the threadpool: Redis round trips block)."""
    try:
        for kind, reason in dead_letters:
            runtime.store.dead_letter(kind, reason, {})
        return ingest(runtime, events)
    except (StoreUnavailableError, redis.RedisError) as exc:
        raise unavailable(exc) from None
