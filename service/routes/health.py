"""Liveness and readiness probes, metrics. Routes that touch Redis or storage are plain ``def`` (threadpool)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from core.metrics import exposition
from service.deps import ServicesDep
from service.openapi import Health, Readiness

router = APIRouter(tags=["health"])


@router.get(
    "/healthz", response_model=Health, operation_id="get_health", summary="Liveness: the process answers"
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="get_readiness",
    responses={503: {"model": Readiness, "description": "Redis or storage does not answer"}},
    summary="Readiness: Redis and storage answer",
)
def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        services.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        services.storage.ping()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    operation_id="get_metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"}},
)
def metrics(services: ServicesDep) -> Response:
    if services.metrics is None:
        return Response(status_code=404)
    body, content_type = exposition(services.metrics.registry)  # the queue gauges read Redis
    return Response(body, media_type=content_type)
