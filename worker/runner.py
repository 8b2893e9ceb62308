"""The chunk runner: renders one job chunk by chunk, checkpointing after every chunk.

After each chunk its video segment and the engine's ``ChunkCarry`` are stored before progress is
recorded, so a job whose worker dies resumes after its last recorded chunk and renders at most one
chunk twice. Only one chunk of frames is alive at a time.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.errors import InvalidInput, NotFound, ParlaError
from core.jobs import Job, JobError, JobStatus, Progress, RenderOptions, VideoResult
from core.jobstore import JobStore
from core.media import assemble_mp4, decode_audio, decode_image, encode_segment
from core.storage import Storage, job_key
from models.engine import ChunkCarry, ChunkSpec, Engine, RenderInputs, RenderParams
from models.errors import EngineInputError

log = logging.getLogger("parla.worker")


class RunnerObserver(Protocol):
    """Hooks for webhooks and metrics; every method must return quickly and never raise."""

    def job_event(self, event_type: str, job: Job) -> None: ...
    def stage_seconds(self, stage: str, seconds: float) -> None: ...


class NullObserver:
    def job_event(self, event_type: str, job: Job) -> None:
        return None

    def stage_seconds(self, stage: str, seconds: float) -> None:
        return None


def segment_key(job_id: str, index: int) -> str:
    return job_key(job_id, "segments", f"{index:05d}.mp4")


def carry_key(job_id: str, index: int) -> str:
    return job_key(job_id, "state", f"{index:05d}.carry")


def render_params(options: RenderOptions) -> RenderParams:
    """The engine's view of the job's options (``None`` keeps the engine's default)."""
    values: dict[str, Any] = {
        name: getattr(options, name)
        for name in (
            "num_inference_steps",
            "guidance_scale",
            "reference_attention_weight",
            "audio_attention_weight",
            "context_frames",
            "motion_frames",
            "continuity",
            "face_index",
        )
    }
    values["head_motion"] = options.head_motion
    return RenderParams(
        fps=options.fps, size=options.size, seed=options.seed or 0, framing=options.framing, **values
    )


class ChunkRunner:
    """Runs jobs on one engine.

    Args:
        engine: the loaded engine.
        jobs: job records.
        storage: inputs, segments, chunk state and results.
        observer: webhook and metric hooks.
    """

    def __init__(
        self, engine: Engine, jobs: JobStore, storage: Storage, observer: RunnerObserver | None = None
    ) -> None:
        self.engine = engine
        self.jobs = jobs
        self.storage = storage
        self.observer: RunnerObserver = observer or NullObserver()

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observer.stage_seconds(name, time.perf_counter() - start)

    def run(self, job_id: str) -> JobStatus | None:
        """Render ``job_id`` to the end, or until it is canceled. Returns the final status."""
        job = self.jobs.start_attempt(job_id)
        if job is None:
            log.info("job %s: already finished or gone, nothing to do", job_id)
            return None
        log.info("job %s: attempt %d on engine %s", job_id, job.attempts, self.engine.name)
        if job.attempts == 1:
            self.observer.job_event("video.started", job)
        try:
            return self._render(job)
        except (EngineInputError, InvalidInput) as exc:
            code = exc.code
            message = exc.message
        except ParlaError as exc:
            log.exception("job %s failed", job_id)
            code, message = exc.code, exc.message
        except Exception as exc:
            log.exception("job %s failed", job_id)
            code, message = "engine_error", f"rendering failed: {type(exc).__name__}: {exc}"
        return self._finish(job_id, JobStatus.FAILED, error=JobError(code=code, message=message))

    def _finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: VideoResult | None = None,
        error: JobError | None = None,
    ) -> JobStatus:
        finished = self.jobs.finish(job_id, status, result=result, error=error)
        if finished is not None:
            self.observer.job_event(f"video.{status.value}", finished)
            return status
        return self.jobs.get(job_id).status

    def _load_inputs(self, job_id: str) -> tuple[RenderInputs, bytes]:
        with self._stage("decode"):
            image = decode_image(self.storage.get_bytes(job_key(job_id, "inputs", "image")))
            audio_bytes = self.storage.get_bytes(job_key(job_id, "inputs", "audio"))
            audio = decode_audio(audio_bytes)
            driving_key = job_key(job_id, "inputs", "driving_video")
            driving = self.storage.get_bytes(driving_key) if self.storage.exists(driving_key) else None
        return RenderInputs(image, audio.samples, audio.sample_rate, driving), audio_bytes

    def _resume_point(self, job_id: str, chunks: list[ChunkSpec]) -> tuple[int, ChunkCarry | None]:
        """First chunk still to render and the carry to start it from (after a crash: > 0)."""
        done = min(self.jobs.get(job_id).progress.chunks_done, len(chunks))
        while done > 0:
            try:
                carry = ChunkCarry.from_bytes(self.storage.get_bytes(carry_key(job_id, done - 1)))
            except NotFound:
                done -= 1  # recorded but not stored (storage lost it): render it again
                continue
            if self.storage.exists(segment_key(job_id, done - 1)):
                return done, carry
            done -= 1
        return 0, None

    def _render(self, job: Job) -> JobStatus:
        job_id = job.id
        inputs, audio_bytes = self._load_inputs(job_id)
        with self._stage("prepare"):
            prepared = self.engine.prepare(inputs, render_params(job.params))
            chunks = self.engine.plan(prepared)
        first, carry = self._resume_point(job_id, chunks)
        if first:
            log.info("job %s: resuming at chunk %d of %d", job_id, first, len(chunks))
        progress = Progress(
            chunks_done=first,
            chunks_total=len(chunks),
            frames_done=chunks[first - 1].stop if first else 0,
            frames_total=prepared.num_frames,
        )
        self.jobs.set_progress(job_id, progress)
        for chunk in chunks[first:]:
            if self.jobs.cancel_requested(job_id):
                return self._cancel(job_id)
            with self._stage("render"):
                frames, carry = self.engine.render_chunk(prepared, chunk, carry)
            self.jobs.count_chunk_render(job_id)
            expected = (chunk.num_frames, prepared.height, prepared.width, 3)
            if frames.shape != expected or frames.dtype != np.uint8:
                raise RuntimeError(
                    f"engine returned {frames.dtype} {frames.shape} for chunk {chunk}, expected {expected}"
                )
            with self._stage("encode"):
                segment = encode_segment(frames, prepared.fps)
            del frames
            with self._stage("upload"):
                self.storage.put_bytes(segment_key(job_id, chunk.index), segment, "video/mp4")
                self.storage.put_bytes(carry_key(job_id, chunk.index), carry.to_bytes())
            progress.chunks_done, progress.frames_done = chunk.index + 1, chunk.stop
            self.jobs.set_progress(job_id, progress)
            self.observer.job_event("video.progress", self.jobs.get(job_id))
        if self.jobs.cancel_requested(job_id):
            return self._cancel(job_id)
        result = self._assemble(job_id, chunks, audio_bytes, prepared.fps, prepared.width, prepared.height)
        return self._finish(job_id, JobStatus.SUCCEEDED, result=result)

    def _assemble(
        self, job_id: str, chunks: list[ChunkSpec], audio_bytes: bytes, fps: float, width: int, height: int
    ) -> VideoResult:
        with self._stage("encode"), tempfile.TemporaryDirectory(prefix="parla-") as tmp:
            out_path = Path(tmp) / "video.mp4"
            segments = (self.storage.get_bytes(segment_key(job_id, c.index)) for c in chunks)
            assemble_mp4(segments, audio_bytes, fps, out_path)
            data = out_path.read_bytes()
        with self._stage("upload"):
            self.storage.put_bytes(job_key(job_id, "video.mp4"), data, "video/mp4")
        frames = chunks[-1].stop
        return VideoResult(
            video_url=None,
            duration_s=frames / fps,
            fps=fps,
            frames=frames,
            width=width,
            height=height,
            bytes=len(data),
        )

    def _cancel(self, job_id: str) -> JobStatus:
        log.info("job %s: canceled", job_id)
        return self._finish(
            job_id, JobStatus.CANCELED, error=JobError(code="canceled", message="canceled by request")
        )
