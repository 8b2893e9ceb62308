"""The FastAPI app factory. Tests build their own app with their own collaborators."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import __version__, redisconn
from core.errors import InvalidInput, ParlaError, RateLimited, Unauthorized
from core.jobs import Job
from core.jobstore import JobStore
from core.metrics import ParlaMetrics
from core.notify import JobNotifier
from core.queue import JobQueue
from core.ratelimit import RateLimiter
from core.settings import Settings
from core.storage import Storage, storage_from_settings, video_url
from core.webhook_outbox import WebhookOutbox
from core.workers import WorkerRegistry
from models.registry import engine_spec
from service.auth import ApiKeyRegistry
from service.deps import Authenticator, PortraitCheck, Services
from service.middleware import BodySizeLimit, HeadSizeLimit
from service.openapi import allowed_methods, complete_openapi, install_docs
from service.routes import downloads, engines, health, previews, videos

log = logging.getLogger(__name__)
PLAYGROUND_DIR = Path(__file__).resolve().parent / "playground"

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def key_authenticator(registry: ApiKeyRegistry) -> Authenticator:
    def authenticate(authorization: str | None) -> str:
        tenant = registry.authenticate(authorization)
        if tenant is None:
            raise Unauthorized("missing or invalid API key (send `Authorization: Bearer <key>`)")
        return tenant

    return authenticate


def face_portrait_check(settings: Settings) -> PortraitCheck:
    """The submit-time face check of ``models.face`` (its ``InvalidInput`` errors are 422s)."""
    from models.face import admit_portrait

    def check(image: npt.NDArray[np.uint8], face_index: int | None) -> None:
        admit_portrait(
            image,
            face_index,
            min_face_size=settings.face_min_size_px,
            max_abs_yaw=settings.face_max_yaw_deg,
        )

    return check


# Redis trouble that is the infrastructure's fault, not the request's: answered 503 + Retry-After.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, BusyLoadingError (replaying its AOF)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica during failover
    redis.exceptions.OutOfMemoryError,
)
RETRY_AFTER_S = 5


def api_redis_client(settings: Settings) -> redis.Redis:
    """The API's Redis client (``core.redisconn``'s ``api`` role: an outage is a 503 within seconds)."""
    if not settings.redis_url:
        raise ValueError("settings.redis_url is required (or pass redis_client)")
    return redisconn.redis_client(settings.redis_url, "api", timeout_s=settings.redis_timeout_s)


class ParlaAPI(FastAPI):
    """The app; ``service.openapi.complete_openapi`` finishes its OpenAPI document.

    Every enabled engine's options model becomes a component schema (``WarpOptions``, ...), and the
    submit bodies' ``engine_options`` is one of them (which one depends on ``engine``).
    """

    def __init__(self, *, engine_names: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine_names = list(engine_names)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = complete_openapi(super().openapi(), self.engine_names)
        return self.openapi_schema


def _operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names (``submit_video``, ``get_video``, ...)."""
    return route.name


def routed_app(engine_names: list[str]) -> ParlaAPI:
    """The app's routes and documents, without services: enough for its OpenAPI document."""
    app = ParlaAPI(
        engine_names=engine_names,
        title="Parla",
        version=__version__,
        description="One portrait and one speech recording in, an MP4 of that person speaking out.\n\n"
        'Every error is `{"error": {"code", "message"}}`; `ErrorCode` lists the codes. Send the API '
        "key as `Authorization: Bearer <key>`.",
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_operation_id,
    )
    install_docs(app, app.openapi_url or "/openapi.json")
    app.include_router(videos.router)
    app.include_router(engines.router)
    app.include_router(downloads.router)
    app.include_router(previews.router)
    app.include_router(health.router)
    app.mount("/playground", StaticFiles(directory=PLAYGROUND_DIR, html=True), name="playground")
    return app


def create_app(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    storage: Storage | None = None,
    authenticate: Authenticator | None = None,
    portrait_check: PortraitCheck | None = None,
    metrics: ParlaMetrics | None = None,
    queue: JobQueue | None = None,
) -> FastAPI:
    """Build the API.

    Args:
        settings: configuration.
        redis_client: shared Redis (``api_redis_client(settings)`` when omitted).
        storage: object storage (from settings when omitted).
        authenticate: maps the Authorization header to a tenant; from ``settings.api_keys`` if omitted
            (raises ``ConfigurationError`` when there are none and auth is not disabled).
        portrait_check: submit-time face check (none if omitted).
        metrics: the API's metrics (a fresh registry if omitted).
        queue: the job queue (on ``redis_client`` when omitted).
    """
    for name in settings.enabled_engines:
        engine_spec(name)  # an unknown engine name stops the API here, not at the first submit
    if redis_client is None:
        redis_client = api_redis_client(settings)
    if authenticate is None:
        registry = ApiKeyRegistry.from_setting(settings.api_keys, auth_disabled=settings.auth_disabled)
        authenticate = key_authenticator(registry)
    services = _build_services(
        settings,
        redis_client,
        storage if storage is not None else storage_from_settings(settings),
        authenticate,
        portrait_check,
        metrics or ParlaMetrics(CollectorRegistry()),
        queue or JobQueue(redis_client),
    )
    app = routed_app(settings.enabled_engines)
    app.state.services = services
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, idle_timeout_s=settings.http_body_timeout_s
    )
    app.add_middleware(HeadSizeLimit, max_bytes=settings.http_max_header_bytes)  # outermost: runs first
    _install_error_handlers(app, services.metrics)
    return app


def _build_services(
    settings: Settings,
    redis_client: redis.Redis,
    storage: Storage,
    authenticate: Authenticator,
    portrait_check: PortraitCheck | None,
    metrics: ParlaMetrics,
    queue: JobQueue,
) -> Services:
    metrics.set_queue_callbacks(
        lambda: queue.depth(settings.enabled_engines), lambda: queue.in_flight(settings.enabled_engines)
    )
    outbox = WebhookOutbox(redis_client, key_prefix=settings.key_prefix)
    limiter = RateLimiter(
        redis_client,
        submissions_per_minute=settings.submissions_per_minute,
        max_queued_jobs=settings.max_queued_jobs,
        key_prefix=settings.key_prefix,
    )
    notifier = JobNotifier(outbox, metrics, lambda job_id: video_url(storage, settings, job_id))
    workers = WorkerRegistry(redis_client, settings.key_prefix)

    def admit_submission(tenant: str, job_id: str) -> None:
        decision = limiter.admit(tenant, job_id)
        if not decision.allowed:
            raise RateLimited(
                f"limit reached: {decision.limit} {(decision.limit_name or 'requests').replace('_', ' ')}",
                decision.retry_after_s,
            )

    def on_canceled(tenant: str, job: Job) -> None:
        limiter.release_queued(tenant, job.id)
        notifier.job_event("video.canceled", job)

    return Services(
        settings=settings,
        redis=redis_client,
        jobs=JobStore(redis_client, settings.key_prefix, settings.job_ttl_s),
        queue=queue,
        storage=storage,
        authenticate=authenticate,
        portrait_check=portrait_check,
        metrics=metrics,
        webhook_logs=outbox.deliveries_many,
        admit_submission=admit_submission,
        release_submission=limiter.release_queued,
        on_canceled=on_canceled,
        engine_served=workers.is_served,
        engine_workers=workers.cards,
    )


def _install_error_handlers(app: FastAPI, metrics: ParlaMetrics | None) -> None:
    """Every error is ``{"error": {"code", "message"}}``; infrastructure trouble is a 503 + Retry-After."""

    @app.exception_handler(ParlaError)
    async def parla_error(request: Request, exc: ParlaError) -> JSONResponse:
        if isinstance(exc, InvalidInput) and metrics is not None:
            metrics.input_rejected(exc.code)
        headers = exc.headers
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        if exc.status_code == 503 and not headers:
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return _error(exc.status_code, exc.code, exc.message, headers)

    async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "%s %s: Redis unavailable: %s: %s", request.method, request.url.path, type(exc).__name__, exc
        )
        return _error(
            503,
            "service_unavailable",
            "the job store is unavailable; retry shortly",
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    for exc_class in REDIS_UNAVAILABLE:
        app.add_exception_handler(exc_class, redis_unavailable)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route at the path; name all of them.
            methods = allowed_methods(app, request.scope)
            if methods is not None:
                if request.method == "OPTIONS":
                    return Response(status_code=204, headers={"Allow": ", ".join(methods)})
                headers["Allow"] = ", ".join(methods)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal_error", "internal error; the failure was logged")
