"""``/v1/videos``: submit, read, list, cancel and download video jobs."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from core.errors import Conflict, InvalidInput, NotFound, ParlaError, ServiceUnavailable
from core.jobs import Job, JobList, JobStatus
from core.jobstore import new_job_id
from core.jsonsafe import MAX_BODY_DEPTH, check_text, loads_bounded
from core.media import InputLimits, check_video, decode_audio, decode_image
from core.storage import job_key, output_url, video_url
from core.webhooks import validate_webhook_url
from models.options import validate_options
from models.registry import EngineSpec, engine_spec
from service.deps import Services, ServicesDep, TenantDep
from service.inputs import Submission, submission_from_form, submission_from_json
from service.openapi import CANCEL_ERRORS, JOB_ERRORS, JOB_EXAMPLE, LIST_ERRORS, JobId, submit_responses

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/videos", tags=["videos"])


def job_views(services: Services, request: Request, jobs: list[Job]) -> list[Job]:
    """The jobs as the caller sees them: fresh video URLs, queue positions and the webhook delivery
    logs (each in one batch)."""
    logs = services.webhook_logs([job.id for job in jobs]) if services.webhook_logs and jobs else {}
    queued = [job for job in jobs if job.status == JobStatus.QUEUED and job.params.engine]
    if queued:
        messages = services.jobs.message_ids([job.id for job in queued])
        positions = services.queue.positions(
            {job.id: (job.params.engine or "", messages[job.id]) for job in queued if job.id in messages}
        )
        for job in queued:
            job.progress.queue_position = positions.get(job.id)
    for job in jobs:
        if job.status != JobStatus.RUNNING:
            job.progress.eta_s = None  # the last attempt's estimate means nothing once it stopped
        if job.result is not None and job.status == JobStatus.SUCCEEDED:
            base = str(request.base_url)
            job.result.video_url = video_url(services.storage, services.settings, job.id, base)
            for name, output in job.result.outputs.items():
                output.url = output_url(services.storage, services.settings, job.id, name, base)
        job.webhooks = logs.get(job.id, [])
    return jobs


def job_view(services: Services, request: Request, job: Job) -> Job:
    """One job as the caller sees it (see ``job_views``)."""
    return job_views(services, request, [job])[0]


async def _read_submission(request: Request, services: Services) -> Submission:
    settings = services.settings
    max_bytes = {
        "image": settings.max_image_bytes,
        "audio": settings.max_audio_bytes,
        "driving_video": settings.max_request_bytes,
    }
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=4, max_fields=64)
        except ParlaError:
            raise
        except Exception as exc:  # malformed multipart
            raise InvalidInput(f"malformed multipart body: {exc}", code="invalid_request") from None
        return await submission_from_form(form, max_bytes)
    if content_type == "application/json":
        try:
            body = loads_bounded(await request.body(), MAX_BODY_DEPTH)
            check_text(body)
        except ValueError as exc:  # not JSON, not UTF-8, too deep, NaN, lone surrogates
            raise InvalidInput(f"the body is not acceptable JSON: {exc}", code="invalid_request") from None
        return await submission_from_json(
            body,
            max_bytes,
            settings.fetch_timeout_s,
            allow_private_networks=settings.fetch_allow_private_networks,
        )
    raise InvalidInput(
        "send multipart/form-data (files) or application/json (URLs)",
        code="unsupported_media_type",
        status_code=415,
    )


def _validate_media(services: Services, submission: Submission) -> None:
    """Decode the files (refusing bad ones with their own codes) and run the face check."""
    limits = InputLimits.from_settings(services.settings)
    image = decode_image(submission.image, limits.image)
    decode_audio(submission.audio, limits.audio)
    if submission.driving_video is not None:
        check_video(submission.driving_video, limits.driving_video)
    if services.portrait_check is not None:
        services.portrait_check(image, submission.options.face_index)


@router.post(
    "",
    status_code=202,
    response_model=Job,
    responses=submit_responses(),
    summary="Submit a portrait and a speech recording",
    description="Files as `multipart/form-data`, or URLs (https:// or `data:`) as `application/json`; "
    "the render options either way. Answers 202 with the queued job; follow it with `GET "
    "/v1/videos/{id}` or a webhook. An `Idempotency-Key` makes a retry safe: the same key with the "
    "same request answers with the first job.",
)
async def submit_video(
    request: Request,
    response: Response,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Makes retries safe: a repeat with the same key and request answers with the "
            "first job (for 24 h); with a different request, 409.",
            examples=["order-1234-render"],
        ),
    ] = None,
) -> Job | JSONResponse:
    submission = await _read_submission(request, services)  # the only awaiting; the rest blocks
    accepted = await run_in_threadpool(
        _accept_submission, services, request, tenant, idempotency_key, submission
    )
    if isinstance(accepted, Job):
        response.headers["Location"] = f"/v1/videos/{accepted.id}"
    return accepted


def _check_options(services: Services, submission: Submission) -> str:
    """Refuse options this deployment cannot serve; returns the job's engine."""
    engine = submission.options.engine or services.settings.engine
    if engine not in services.settings.enabled_engines:
        raise InvalidInput(
            f"engine {engine!r} is not served here; available: {', '.join(services.settings.enabled_engines)}",
            code="engine_unavailable",
        )
    if services.engine_served is not None and not services.engine_served(engine):
        # No live worker listens on this engine's queue: the job would wait forever.
        raise ServiceUnavailable(
            f"no worker serves engine {engine!r} right now; try again later", code="engine_unavailable"
        )
    submission.options.engine = engine
    _check_engine_options(submission, engine_spec(engine))
    if submission.options.webhook_url:
        if not services.settings.webhook_secret:
            raise InvalidInput(
                "this deployment has no webhook signing secret (PARLA_WEBHOOK_SECRET)",
                code="webhooks_not_configured",
            )
        try:
            validate_webhook_url(
                submission.options.webhook_url, allow_http=services.settings.webhook_allow_http
            )
        except ValueError as exc:
            raise InvalidInput(str(exc), code="invalid_webhook_url") from None
    return engine


def _check_engine_options(submission: Submission, spec: EngineSpec) -> None:
    """Validate the job's engine options against the engine's model; record them with defaults filled in."""
    options = submission.options
    has_video = submission.driving_video is not None
    if has_video and not spec.capabilities.driving_video:
        raise InvalidInput(
            f"engine {spec.name!r} does not use a driving video; leave driving_video out",
            code="invalid_params",
        )
    if options.framing not in spec.capabilities.framing:
        raise InvalidInput(
            f"framing: engine {spec.name!r} renders {', '.join(spec.capabilities.framing)}",
            code="invalid_params",
        )
    unmade = [name for name in options.outputs if name not in spec.capabilities.outputs]
    if unmade:
        raise InvalidInput(
            f"outputs: engine {spec.name!r} makes {', '.join(spec.capabilities.outputs)}, "
            f"not {', '.join(unmade)}",
            code="invalid_params",
        )
    validated = validate_options(spec.options, options.engine_options, driving_video=has_video)
    options.engine_options = validated.model_dump(mode="json")


def _accept_submission(
    services: Services,
    request: Request,
    tenant: str,
    idempotency_key: str | None,
    submission: Submission,
) -> Job | JSONResponse:
    """Validate, admit, store and enqueue one submission (blocking: runs in the threadpool).

    Everything after admission is one unit: when a step fails, ``_roll_back`` undoes the steps
    before it and the error goes on to the client (a 503 for storage or Redis trouble), so a retry
    with the same ``Idempotency-Key`` starts afresh instead of meeting a half-made job.
    """
    engine = _check_options(services, submission)
    request_hash = submission.request_hash()
    if idempotency_key:
        existing = services.jobs.find_idempotent(tenant, idempotency_key, request_hash)
        # A key bound to a job that was never stored (its API process died mid-submit) is freed
        # after PARLA_IDEMPOTENCY_STALE_S, and this request is submitted afresh.
        if existing is not None and not services.jobs.release_stale_idempotent(
            tenant, idempotency_key, existing, services.settings.idempotency_stale_s
        ):
            return _replay(services, request, existing)
        if existing is not None:
            log.warning("idempotency key of %s named %s, never created: taken over", tenant, existing)
    _validate_media(services, submission)
    if submission.options.seed is None:
        submission.options.seed = secrets.randbelow(2**32)

    job_id = new_job_id()
    if services.admit_submission is not None:
        services.admit_submission(tenant, job_id)
    try:
        if idempotency_key:
            winner = services.jobs.remember_idempotent(tenant, idempotency_key, request_hash, job_id)
            if winner != job_id:  # a concurrent twin bound the key first: answer with its job
                if services.release_submission is not None:
                    services.release_submission(tenant, job_id)
                return _replay(services, request, winner)
        for name in ("image", "audio", "driving_video"):
            data = getattr(submission, name)
            if data is not None:
                services.storage.put_bytes(job_key(job_id, "inputs", name), data)
        job = services.jobs.create(tenant, submission.options, request_hash, job_id=job_id)
        services.queue.enqueue(job.id, engine)
    except BaseException:
        _roll_back(services, tenant, job_id, idempotency_key)
        raise
    if services.metrics is not None:
        services.metrics.jobs_submitted.inc()
    log.info("job %s submitted by %s (engine %s)", job.id, tenant, engine)
    return job_view(services, request, job)


def _roll_back(services: Services, tenant: str, job_id: str, idempotency_key: str | None) -> None:
    """Undo a submission that failed after admission: record first, so no worker starts it.

    Each step is tried even when an earlier one fails (Redis or storage may still be down); what
    cannot be undone is logged with the job id. Left behind then: the key (expires after 24 h) and
    the slot (pruned as stale after a day), both of which only hold back this tenant.
    """
    steps: list[tuple[str, Callable[[], object]]] = [
        ("job record", lambda: services.jobs.delete(tenant, job_id)),
        ("stored inputs", lambda: services.storage.delete_prefix(job_key(job_id) + "/")),
    ]
    if idempotency_key:
        steps.append(
            ("idempotency key", lambda: services.jobs.forget_idempotent(tenant, idempotency_key, job_id))
        )
    if services.release_submission is not None:
        release = services.release_submission
        steps.append(("queued slot", lambda: release(tenant, job_id)))
    left = []
    for what, undo in steps:
        try:
            undo()
        except Exception:
            log.exception("job %s: rolling back the failed submission could not remove its %s", job_id, what)
            left.append(what)
    log.warning(
        "job %s: submission by %s failed; rolled back%s",
        job_id,
        tenant,
        f" except its {', '.join(left)}" if left else "",
    )


def _replay(services: Services, request: Request, job_id: str) -> JSONResponse:
    try:
        job = services.jobs.get(job_id)
    except NotFound:
        raise Conflict(
            "a request with this Idempotency-Key is still being accepted", code="idempotency_in_progress"
        ) from None
    body = job_view(services, request, job).model_dump(mode="json")
    return JSONResponse(
        body, status_code=202, headers={"Location": f"/v1/videos/{job.id}", "Idempotent-Replayed": "true"}
    )


@router.get("", response_model=JobList, responses=LIST_ERRORS, summary="List your video jobs, newest first")
def list_videos(
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(
            max_length=32,
            description="`next_cursor` of the previous page; another value is a 400 `invalid_cursor`.",
            json_schema_extra={"pattern": "^[0-9]*$"},  # documented only: a mismatch is a 400, not a 422
        ),
    ] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
) -> JobList:
    if cursor and not (cursor.isascii() and cursor.isdigit()):
        raise InvalidInput("invalid cursor", code="invalid_cursor", status_code=400)
    jobs, next_cursor = services.jobs.list(tenant, limit, cursor, status=status)
    return JobList(data=job_views(services, request, jobs), next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    response_model=Job,
    responses={200: {"content": {"application/json": {"example": JOB_EXAMPLE}}}, **JOB_ERRORS},
    summary="Status, progress and result",
)
def get_video(job_id: JobId, request: Request, services: ServicesDep, tenant: TenantDep) -> Job:
    return job_view(services, request, services.jobs.get(job_id, tenant))


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    responses=CANCEL_ERRORS,
    summary="Cancel a job",
    description="A queued job is canceled at once; a running one stops at its next chunk. Canceling "
    "a finished job changes nothing and answers with it.",
)
def cancel_video(job_id: JobId, request: Request, services: ServicesDep, tenant: TenantDep) -> Job:
    services.jobs.get(job_id, tenant)
    job, canceled_now = services.jobs.request_cancel(job_id)
    if canceled_now and services.on_canceled is not None:  # a repeated cancel changes nothing
        services.on_canceled(tenant, job)
    return job_view(services, request, job)
