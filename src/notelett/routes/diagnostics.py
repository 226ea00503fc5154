"""``/health`` (liveness), ``/api/diagnostics/readiness`` and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from notelett.deps import State
from notelett.models import HealthOut, ReadinessOut
from notelett.readiness import check_readiness

router = APIRouter(tags=["diagnostics"])


@router.get(
    "/health",
    summary="Liveness: answers while the process runs; touches nothing",
    operation_id="getHealth",
)
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/api/diagnostics/readiness",
    response_model=ReadinessOut,
    summary="Readiness: database, key provider canary (cached), current MEK version enabled",
    responses={503: {"model": ReadinessOut, "description": "At least one check failed"}},
    operation_id="getReadiness",
)
async def readiness(state: State) -> JSONResponse:
    cache = state.backend.encryptor.cache
    result = await run_in_threadpool(
        check_readiness,
        notes=state.backend.notes,
        provider=state.provider_check,
        cached_deks=lambda: cache.stats().size,
    )
    return JSONResponse(
        result.model_dump(mode="json"), status_code=503 if result.status == "fail" else 200
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    body = await run_in_threadpool(state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
