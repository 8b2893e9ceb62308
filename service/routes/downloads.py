"""``GET``/``HEAD /v1/videos/{id}/video``: the MP4, whole or one byte range (players seek with ranges);
``GET /v1/videos/{id}/outputs/{name}``: a job's other outputs (``outputs``: ``motion``, ``landmarks``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from core.errors import Conflict, NotFound, ParlaError
from core.jobs import Job, JobStatus, OutputName, utcnow
from core.storage import job_key, output_key
from service.deps import Services, ServicesDep, TenantDep
from service.openapi import DOWNLOAD_ERRORS, DOWNLOAD_HEAD_ERRORS, OUTPUT_ERRORS, JobId

router = APIRouter(prefix="/v1/videos", tags=["videos"])

_RANGE: Final = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

_MP4_HEADERS: Final = {
    "Accept-Ranges": {"required": True, "schema": {"type": "string", "enum": ["bytes"]}},
    "Content-Length": {"required": True, "schema": {"type": "integer", "minimum": 0}},
    "Content-Disposition": {
        "required": True,
        "schema": {"type": "string"},
        "example": 'attachment; filename="vid_abcdefghijk234567mnp.mp4"',
    },
}
_RANGE_HEADERS: Final = {
    **_MP4_HEADERS,
    "Content-Range": {"required": True, "schema": {"type": "string"}, "example": "bytes 0-1023/48213"},
}
_REDIRECT: Final = {
    "description": "The video is in S3: a presigned URL to fetch it from (valid for a few minutes).",
    "headers": {"Location": {"required": True, "schema": {"type": "string", "format": "uri"}}},
}
_MP4: Final = {"schema": {"type": "string", "format": "binary", "contentMediaType": "video/mp4"}}


def _download_responses(*, with_body: bool) -> dict[int | str, dict[str, Any]]:
    whole: dict[str, Any] = {"description": "The whole MP4", "headers": _MP4_HEADERS}
    part: dict[str, Any] = {
        "description": "The requested byte range (`Range: bytes=a-b`)",
        "headers": _RANGE_HEADERS,
    }
    if with_body:
        whole["content"] = {"video/mp4": _MP4}
        part["content"] = {"video/mp4": _MP4}
    errors = DOWNLOAD_ERRORS if with_body else DOWNLOAD_HEAD_ERRORS
    return {200: whole, 206: part, 307: _REDIRECT, **errors}


@dataclass(frozen=True)
class ByteSpan:
    """``length`` bytes from ``start`` of a file of ``size`` bytes."""

    start: int
    length: int
    size: int

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{self.size}"


class RangeNotSatisfiable(ParlaError):
    code = "range_not_satisfiable"
    status_code = 416

    def __init__(self, size: int) -> None:
        super().__init__(
            f"the range is outside the video's {size} bytes", headers={"Content-Range": f"bytes */{size}"}
        )


def parse_range(header: str | None, size: int) -> ByteSpan | None:
    """The span one ``Range: bytes=...`` asks for, or None to send the whole file.

    One range (``a-b``, ``a-``, ``-n``) is served; several ranges, other units and malformed values
    get the whole file, which RFC 9110 allows a server to do. A range that starts past the end (or
    an empty suffix) is ``RangeNotSatisfiable`` (416).
    """
    match = _RANGE.match(header or "")
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        start = max(0, size - suffix)
        return ByteSpan(start, size - start, size)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last) if last else size - 1, size - 1)
    return ByteSpan(start, end - start + 1, size)


@router.get(
    "/{job_id}/video",
    responses=_download_responses(with_body=True),
    response_class=Response,
    summary="Download the MP4",
    description="The whole file, or one byte range (`Range: bytes=a-b`, `a-` or `-n`: players seek "
    "with ranges). With S3 storage, a 307 to a presigned URL instead.",
)
def download_video(
    job_id: JobId,
    services: ServicesDep,
    tenant: TenantDep,
    range_header: Annotated[
        str | None, Header(alias="range", description="One byte range.", examples=["bytes=0-1023"])
    ] = None,
) -> Response:
    return _download(services, job_id, tenant, range_header, with_body=True)


@router.head(
    "/{job_id}/video",
    responses=_download_responses(with_body=False),
    response_class=Response,
    summary="Headers of the MP4 download (size, ranges)",
)
def download_video_head(
    job_id: JobId,
    services: ServicesDep,
    tenant: TenantDep,
    range_header: Annotated[
        str | None, Header(alias="range", description="One byte range.", examples=["bytes=0-1023"])
    ] = None,
) -> Response:
    return _download(services, job_id, tenant, range_header, with_body=False)


def _download(
    services: Services, job_id: str, tenant: str, range_header: str | None, *, with_body: bool
) -> Response:
    job = services.jobs.get(job_id, tenant)
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        raise Conflict(f"the video is not ready (status {job.status.value})", code="video_not_ready")
    key = job_key(job_id, "video.mp4")
    url = services.storage.presigned_url(key, services.settings.presign_expires_s)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    try:
        # Open before answering: once headers are sent, a missing file can only cut the body short.
        size = services.storage.size(key)
        span = parse_range(range_header, size)
        start, length = (span.start, span.length) if span else (0, size)
        body = services.storage.iter_bytes(key, start=start, length=length) if with_body else None
    except NotFound:
        raise _video_gone(services, job) from None
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(length),
        "Content-Disposition": f'attachment; filename="{job_id}.mp4"',
    }
    status = 200
    if span is not None:
        status, headers["Content-Range"] = 206, span.content_range
    if body is None:
        return Response(status_code=status, headers=headers, media_type="video/mp4")
    return StreamingResponse(body, status_code=status, headers=headers, media_type="video/mp4")


@router.get(
    "/{job_id}/outputs/{name}",
    responses={
        200: {
            "description": "The output's file: an NPZ (NumPy arrays, no pickled objects) with a JSON "
            "`meta` array describing its format (`parla-motion`, `parla-landmarks`); see docs/api.md.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        307: {**_REDIRECT, "description": "The file is in S3: a presigned URL to fetch it from."},
        **OUTPUT_ERRORS,
    },
    response_class=Response,
    summary="Download one of the job's other outputs",
    description="An output the job asked for in `outputs` besides the video (`motion`, `landmarks`), "
    "once the job has succeeded. With S3 storage, a 307 to a presigned URL instead.",
)
def download_output(job_id: JobId, name: OutputName, services: ServicesDep, tenant: TenantDep) -> Response:
    job = services.jobs.get(job_id, tenant)
    if name == "video" or name not in job.params.outputs:
        raise NotFound(
            f"job {job_id!r} did not ask for the {name!r} output (its outputs: {', '.join(job.params.outputs)})",
            code="output_not_found",
        )
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        raise Conflict(f"the outputs are not ready (status {job.status.value})", code="video_not_ready")
    key = output_key(job_id, name)
    url = services.storage.presigned_url(key, services.settings.presign_expires_s)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    try:
        size = services.storage.size(key)
        body = services.storage.iter_bytes(key, start=0, length=size)
    except NotFound:
        raise _output_gone(services, job, name) from None
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f'attachment; filename="{job_id}-{name}.npz"',
    }
    return StreamingResponse(body, headers=headers, media_type="application/octet-stream")


def _video_gone(services: Services, job: Job) -> ParlaError:
    return _expired(services, job, "video") or NotFound(
        f"the video file of {job.id!r} is missing", code="video_not_found"
    )


def _output_gone(services: Services, job: Job, name: str) -> ParlaError:
    return _expired(services, job, f"{name} output") or NotFound(
        f"the {name} output file of {job.id!r} is missing", code="output_not_found"
    )


def _expired(services: Services, job: Job, what: str) -> ParlaError | None:
    """The 410 for a file deleted when the job's retention ended; None while it should be there."""
    retention = timedelta(seconds=services.settings.job_ttl_s)
    if job.finished_at is not None and utcnow() - job.finished_at > retention:
        return ParlaError(
            f"the {what} of {job.id!r} was deleted when its retention ended",
            code="video_expired",
            status_code=410,
        )
    return None
