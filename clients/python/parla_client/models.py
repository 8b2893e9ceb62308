"""Typed views of the API's JSON: jobs, their progress and result, engines, pages of jobs.

Each keeps the JSON it was read from in ``raw``, so fields added by a newer server stay reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Progress:
    """Chunks and frames rendered so far."""

    chunks_done: int = 0
    chunks_total: int = 0
    frames_done: int = 0
    frames_total: int = 0

    @property
    def fraction(self) -> float:
        """Share of the frames rendered, 0 to 1 (0 while the total is unknown)."""
        return self.frames_done / self.frames_total if self.frames_total else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            int(data.get("chunks_done", 0)),
            int(data.get("chunks_total", 0)),
            int(data.get("frames_done", 0)),
            int(data.get("frames_total", 0)),
        )


@dataclass(frozen=True)
class OutputFile:
    """One output of a job besides the video (``outputs``, e.g. ``motion``): an NPZ file."""

    url: str | None
    bytes: int
    content_type: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputFile:
        return cls(
            data.get("url"), int(data["bytes"]), str(data.get("content_type", "application/octet-stream"))
        )


@dataclass(frozen=True)
class VideoResult:
    """The finished video: where it is and what it holds, and the job's other outputs by name."""

    video_url: str | None
    duration_s: float
    fps: float
    frames: int
    width: int
    height: int
    bytes: int
    outputs: dict[str, OutputFile] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoResult:
        return cls(
            data.get("video_url"),
            float(data["duration_s"]),
            float(data["fps"]),
            int(data["frames"]),
            int(data["width"]),
            int(data["height"]),
            int(data["bytes"]),
            {name: OutputFile.from_json(item) for name, item in (data.get("outputs") or {}).items()},
        )


@dataclass(frozen=True)
class Chunk:
    """The chunk a ``video.chunk`` webhook is about: its frames and where to watch it.

    The links are API routes and take the same API key (``Client.download`` style requests).
    """

    index: int
    start_frame: int
    stop_frame: int
    frames: int
    segment_url: str
    playlist_url: str
    preview_url: str
    thumbnail_url: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chunk:
        return cls(
            int(data["index"]),
            int(data["start_frame"]),
            int(data["stop_frame"]),
            int(data["frames"]),
            str(data["segment_url"]),
            str(data["playlist_url"]),
            str(data["preview_url"]),
            str(data["thumbnail_url"]),
        )


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True)
class Job:
    """One video job as ``GET /v1/videos/{id}`` returns it."""

    id: str
    status: JobStatus
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    params: dict[str, Any]
    metadata: dict[str, Any] | None
    result: VideoResult | None
    error: JobError | None
    attempts: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or canceled)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        error = data.get("error")
        result = data.get("result")
        return cls(
            id=str(data["id"]),
            status=data["status"],
            created_at=_time(data.get("created_at")),
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            progress=Progress.from_json(data.get("progress") or {}),
            params=dict(data.get("params") or {}),
            metadata=data.get("metadata"),
            result=VideoResult.from_json(result) if result else None,
            error=JobError(str(error["code"]), str(error["message"])) if error else None,
            attempts=int(data.get("attempts", 0)),
            raw=data,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of ``GET /v1/videos``; pass ``next_cursor`` back for the next one (None: the last)."""

    data: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class Engine:
    """One engine as ``GET /v1/engines`` describes it."""

    name: str
    summary: str
    default: bool
    capabilities: dict[str, Any]
    options_schema: dict[str, Any]
    defaults: dict[str, Any]
    workers: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Engine:
        return cls(
            name=str(data["name"]),
            summary=str(data.get("summary", "")),
            default=bool(data.get("default", False)),
            capabilities=dict(data.get("capabilities") or {}),
            options_schema=dict(data.get("options_schema") or {}),
            defaults=dict(data.get("defaults") or {}),
            workers=int((data.get("workers") or {}).get("count", 0)),
            raw=data,
        )
