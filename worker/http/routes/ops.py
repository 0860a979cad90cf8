"""Operations: ``/healthz`` (liveness), ``/readyz`` (Redis reachable; ``degraded`` with
the reason while delivery is paused by an account fault), ``/metrics``."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from worker.http.deps import MetricsDep, RuntimeDep
from worker.http.metrics import CONTENT_TYPE
from worker.http.schemas import Status
from worker.runtime import Runtime

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Status,
    response_model_exclude_none=True,
    summary="Liveness (answers without Redis)",
)
async def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz",
    response_model=Status,
    responses={503: {"model": Status, "description": "Redis unreachable"}},
    summary="Readiness: Redis reachable",
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    if await run_in_threadpool(runtime.store.ping):
        pause = await run_in_threadpool(_delivery_pause, runtime)
        if pause is not None:
            # Events are still accepted and kept, so this service stays ready (200);
            # the body says why no email goes out.
            return JSONResponse(Status(status="degraded", message=pause).model_dump())
        return JSONResponse(Status(status="ready").model_dump(exclude_none=True))
    return JSONResponse(
        Status(status="unavailable", message="Redis does not answer").model_dump(),
        status_code=503,
    )


def _delivery_pause(runtime: Runtime) -> str | None:
    """Why delivery is paused and since when, or None when it runs (or Redis failed)."""
    try:
        pause = runtime.store.pauses.delivery()
    except redis.RedisError:
        return None
    if pause is None:
        return None
    since = datetime.fromtimestamp(pause.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"delivery paused since {since} by an account fault: {pause.reason}"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)
