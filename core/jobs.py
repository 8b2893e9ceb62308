"""Job schema: statuses, the render options a client may set, and the job JSON the API returns."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

OutputName = Literal["video", "motion", "landmarks"]
"""What a job can produce (``RenderOptions.outputs``, ``RenderParams.outputs``): the ``video``
always; ``motion`` (the generated motion, a ``parla-motion`` NPZ) and ``landmarks`` (a two-stage
engine's first-stage landmarks, an NPZ) when the engine makes them."""

WebhookEvent = Literal[
    "video.started", "video.progress", "video.chunk", "video.succeeded", "video.failed", "video.canceled"
]
MAX_METADATA_BYTES = 4096
"""Size of ``metadata`` as compact UTF-8 JSON (what is stored), not as escaped ASCII."""
MAX_METADATA_DEPTH = 8
"""Deepest nesting of a submitted ``metadata`` object (``{"a": {}}`` is 2)."""


def _video_only() -> list[OutputName]:
    return ["video"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class RenderOptions(BaseModel):
    """Options of one render: the common ones, and the engine's own in ``engine_options``.

    ``None`` means the default. The engine's options are checked against its model
    (``models.options``) by the API, not here: this module does not know the engines.
    """

    model_config = ConfigDict(extra="forbid")

    engine: str | None = Field(None, description="Engine to render with; the deployment's default if unset.")
    fps: float = Field(25.0, ge=1.0, le=60.0, description="Frames per second of the output video.")
    size: int = Field(
        512,
        ge=64,
        le=1024,
        multiple_of=8,
        description="Side of the square face crop (pixels, multiple of 8).",
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed; chosen and recorded if unset."
    )
    framing: Literal["crop", "full"] = Field(
        "crop", description="`crop`: square video of the face; `full`: animated face pasted into the photo."
    )
    face_index: int | None = Field(
        None,
        ge=0,
        description="Which face to animate when there are several (0 = largest); largest if unset.",
    )
    outputs: list[OutputName] = Field(
        default_factory=_video_only,
        description="What the job produces: `video` always; `motion` (the generated motion, a "
        "`parla-motion` NPZ) and `landmarks` (a two-stage engine's first-stage landmarks, an NPZ) "
        "where the engine's `capabilities.outputs` lists them. Downloaded from "
        "`/v1/videos/{id}/outputs/{name}` once the job has succeeded.",
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The engine's own options (`GET /v1/engines` lists each engine's, with their "
        "defaults). Checked at submit against the chosen engine; a job records them with every "
        "default filled in. A top-level field that is not a common option is taken as an engine "
        "option too (the form of multipart requests): `head_motion=0.8` is "
        '`engine_options={"head_motion": 0.8}`.',
    )
    webhook_url: str | None = Field(None, max_length=2048, description="URL that receives the job's events.")
    webhook_events: list[WebhookEvent] | None = Field(
        None,
        description="Events to send; default: the terminal ones. `video.progress` and `video.chunk` "
        "(a stored chunk, with its preview links) are opt-in, throttled and best-effort.",
    )
    metadata: dict[str, Any] | None = Field(
        None,
        description=f"Your own JSON object (at most {MAX_METADATA_BYTES} bytes as UTF-8, nested at most "
        f"{MAX_METADATA_DEPTH} levels), returned as given.",
    )

    @model_validator(mode="before")
    @classmethod
    def _engine_options_at_top_level(cls, value: Any) -> Any:
        """Moves top-level fields that are not common options into ``engine_options``.

        Records stored before engine options were typed hold them at the top level too (with
        ``null`` for unset ones, which are dropped).
        """
        if not isinstance(value, dict):
            return value
        loose = {key: item for key, item in value.items() if key not in cls.model_fields}
        if not loose:
            return value
        nested = value.get("engine_options")
        if nested is None:
            nested = {}
        if not isinstance(nested, dict):
            return value  # the field's own validation reports it
        both = sorted(set(loose) & set(nested))
        if both:
            raise ValueError(f"given both at the top level and in engine_options: {', '.join(both)}")
        common = {key: item for key, item in value.items() if key in cls.model_fields}
        given = {key: item for key, item in loose.items() if item is not None}
        return {**common, "engine_options": {**nested, **given}}

    @field_validator("outputs")
    @classmethod
    def _outputs_with_video(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"each output at most once, got {value}")
        if "video" not in value:
            raise ValueError(f"outputs must include 'video', got {value}")
        return ["video", *(name for name in value if name != "video")]

    @field_validator("webhook_url")
    @classmethod
    def _webhook_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Counted as stored: compact, UTF-8 (an "é" is 2 bytes, not the 6 of its \u00e9 escape).
        # A lone surrogate cannot be encoded: the UnicodeEncodeError is a ValueError, so a 422.
        if value is not None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"metadata is {size} bytes as JSON, more than {MAX_METADATA_BYTES}")
        return value


class Progress(BaseModel):
    chunks_done: int = 0
    chunks_total: int = 0
    frames_done: int = 0
    frames_total: int = 0
    eta_s: float | None = Field(
        None,
        description="Seconds until the last chunk is rendered, from this attempt's measured chunk "
        "times (a running job, after its first chunk).",
    )
    queue_position: int | None = Field(
        None, description="Jobs ahead of this one on its engine's queue (a queued job; 0: next)."
    )


class OutputFile(BaseModel):
    """One output besides the video (``RenderOptions.outputs``)."""

    url: str | None = Field(None, description="Where to download it (presigned or API link).")
    bytes: int
    content_type: str = "application/octet-stream"


class VideoResult(BaseModel):
    video_url: str | None = Field(None, description="Where to download the MP4 (presigned or API link).")
    duration_s: float
    fps: float
    frames: int
    width: int
    height: int
    bytes: int
    outputs: dict[str, OutputFile] = Field(
        default_factory=dict, description="The job's other outputs (`outputs` besides `video`), by name."
    )


class JobError(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    """The job JSON of the API (and of webhook payloads)."""

    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress = Field(default_factory=Progress)
    params: RenderOptions
    metadata: dict[str, Any] | None = None
    result: VideoResult | None = None
    error: JobError | None = None
    attempts: int = Field(0, description="Runs so far (more than 1 after a worker was lost mid-job).")
    webhooks: list[dict[str, Any]] = Field(default_factory=list, description="Webhook delivery log.")


class JobList(BaseModel):
    data: list[Job]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page.")
