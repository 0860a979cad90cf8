"""Operations: ``/healthz`` (liveness), ``/readyz`` (Redis reachable), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from worker.http.deps import MetricsDep, RuntimeDep
from worker.http.metrics import CONTENT_TYPE
from worker.http.schemas import Status

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
        return JSONResponse(Status(status="ready").model_dump(exclude_none=True))
    return JSONResponse(
        Status(status="unavailable", message="Redis does not answer").model_dump(),
        status_code=503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)
