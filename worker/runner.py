"""The chunk runner: renders one job chunk by chunk, checkpointing after every chunk.

After each chunk its video segment and the engine's ``ChunkCarry`` are stored before progress is
recorded, so a job whose worker dies resumes after its last recorded chunk.

Pipelined (the default): while the engine renders chunk ``k + 1``, a second thread (``ChunkSink``)
encodes chunk ``k``, stores its segment and carry, records progress and sends the progress event,
in chunk order, so the GPU does not wait for the encoder, the storage or Redis. The hand-over holds
one chunk: at most two chunks of frames are alive (the one being stored, the one just rendered),
and a worker that dies loses at most those two (rendered again on resume). An error of the sink
(storage down, lease lost) stops the rendering before the next chunk, as it would serially.

Every attempt runs under a lease (``worker.lease.LeaseKeeper``) and writes with its fencing token,
so an attempt that lost its job (lease ran out, re-assigned, failed or canceled elsewhere) stops
before its next chunk and cannot overwrite the attempt that replaced it. Errors are sorted: the
caller's fault (bad input) fails the job with its code; a transient infrastructure error (Redis
away for longer than a command rides out, storage unreachable) gives the job back to be resumed
from its last checkpoint; anything else fails it as ``engine_error``.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import InvalidInput, NotFound, ParlaError
from core.jobs import Job, JobError, JobStatus, OutputFile, Progress, RenderOptions, VideoResult
from core.jobstore import Attempt, JobStore, LeaseLost
from core.logs import job_context
from core.media import InputLimits, assemble_mp4, decode_audio, decode_image, encode_segment
from core.redisconn import TRANSIENT_REDIS_ERRORS
from core.storage import Storage, carry_key, job_key, output_key, output_part_key, segment_key
from models.engine import (
    AnyEngine,
    ChunkCarry,
    ChunkOutputs,
    ChunkSpec,
    OutputEngine,
    RenderInputs,
    RenderParams,
)
from models.options import EngineOptions, validate_options
from worker.lease import LeaseKeeper
from worker.outputs import check_chunk_outputs, encode_part, join_parts, side_outputs
from worker.sink import ChunkClock, ChunkSink

log = logging.getLogger(__name__)


class RunnerObserver(Protocol):
    """Hooks for webhooks and metrics; every method must return quickly and never raise."""

    def job_event(self, event_type: str, job: Job) -> None: ...
    def chunk_stored(self, job: Job, index: int, start: int, stop: int) -> None: ...
    def stage_seconds(self, stage: str, seconds: float) -> None: ...


class NullObserver:
    def job_event(self, event_type: str, job: Job) -> None:
        return None

    def chunk_stored(self, job: Job, index: int, start: int, stop: int) -> None:
        return None

    def stage_seconds(self, stage: str, seconds: float) -> None:
        return None


__all__ = ["ChunkRunner", "carry_key", "render_params", "segment_key"]


def render_params(
    options: RenderOptions, options_model: type[EngineOptions], *, driving_video: bool
) -> RenderParams[Any]:
    """The engine's view of the job's options: the common ones and its own, validated again.

    Raises:
        InvalidInput: ``invalid_params`` when the stored engine options no longer fit the engine's
            model (a record from a deployment with other engine versions).
    """
    return RenderParams(
        validate_options(options_model, options.engine_options, driving_video=driving_video),
        fps=options.fps,
        size=options.size,
        seed=options.seed or 0,
        framing=options.framing,
        face_index=options.face_index,
        outputs=tuple(options.outputs),
    )


class ChunkRunner:
    """Runs jobs on one engine.

    Args:
        engine: the loaded engine.
        jobs: job records.
        storage: inputs, segments, chunk state and results.
        observer: webhook and metric hooks.
        worker_name: recorded with each attempt's lease.
        lease_s: lease of an attempt; renewed every ``heartbeat_s``.
        heartbeat_s: lease renewal interval.
        limits: the deployment's input limits (``InputLimits.from_settings``, as the API checks them).
        pipelined: store chunk ``k`` on a second thread while chunk ``k + 1`` renders (see above);
            False stores each chunk before the next one renders.
    """

    def __init__(
        self,
        engine: AnyEngine,
        jobs: JobStore,
        storage: Storage,
        observer: RunnerObserver | None = None,
        *,
        worker_name: str = "",
        lease_s: float = 60.0,
        heartbeat_s: float = 10.0,
        limits: InputLimits | None = None,
        pipelined: bool = True,
    ) -> None:
        self.engine = engine
        self.jobs = jobs
        self.storage = storage
        self.observer: RunnerObserver = observer or NullObserver()
        self.worker_name = worker_name
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.limits = limits or InputLimits()
        self.pipelined = pipelined

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observer.stage_seconds(name, time.perf_counter() - start)

    def run(self, job_id: str) -> JobStatus | None:
        """Render ``job_id`` to the end, or until it is canceled. Returns the final status.

        None when there was nothing to do (already running elsewhere, finished, gone) or when this
        attempt stopped without ending the job (lease lost; a transient error left it to resume).
        Every line logged meanwhile, on any thread of the job, names the job (``core.logs``).
        """
        with job_context(job_id):
            return self._run(job_id)

    def _run(self, job_id: str) -> JobStatus | None:
        attempt = self.jobs.start_attempt(job_id, self.worker_name, self.lease_s)
        if attempt is None:
            log.info("job %s: already running elsewhere, finished or gone; nothing to do", job_id)
            return None
        job = attempt.job
        log.info("job %s: attempt %d on engine %s", job_id, job.attempts, self.engine.name)
        if job.attempts == 1:
            self.observer.job_event("video.started", job)
        with LeaseKeeper(self.jobs, job_id, attempt.token, self.lease_s, self.heartbeat_s) as lease:
            return self._run_attempt(attempt, lease)

    def _run_attempt(self, attempt: Attempt, lease: LeaseKeeper) -> JobStatus | None:
        job_id = attempt.job.id
        try:
            return self._render(attempt, lease)
        except LeaseLost as exc:
            log.error("job %s: attempt %d stopped: %s", job_id, attempt.job.attempts, exc)
            return None
        except InvalidInput as exc:
            code, message = exc.code, exc.message
        except TRANSIENT_REDIS_ERRORS as exc:
            self._give_back(attempt, exc)
            return None
        except ParlaError as exc:
            if exc.retryable:
                self._give_back(attempt, exc)
                return None
            log.exception("job %s failed", job_id)
            code, message = exc.code, exc.message
        except Exception as exc:
            log.exception("job %s failed", job_id)
            code, message = "engine_error", f"rendering failed: {type(exc).__name__}: {exc}"
        return self._finish(attempt, JobStatus.FAILED, error=JobError(code=code, message=message))

    def _give_back(self, attempt: Attempt, exc: Exception) -> None:
        """A transient infrastructure error: the job resumes from its last chunk (now, or after the lease)."""
        log.error(
            "job %s: transient %s (%s); giving the job back to resume from its last chunk",
            attempt.job.id,
            type(exc).__name__,
            exc,
        )
        try:
            self.jobs.release_lease(attempt.job.id, attempt.token)
        except Exception:  # Redis still away: the lease runs out by itself and recovery re-queues
            log.error("job %s: could not give the job back; its lease will run out", attempt.job.id)

    def _finish(
        self,
        attempt: Attempt,
        status: JobStatus,
        *,
        result: VideoResult | None = None,
        error: JobError | None = None,
    ) -> JobStatus | None:
        job_id = attempt.job.id
        finished = self.jobs.finish(job_id, status, result=result, error=error, token=attempt.token)
        if finished is not None:
            self.observer.job_event(f"video.{status.value}", finished)
            return status
        log.warning("job %s: not recorded as %s: the attempt no longer holds the job", job_id, status.value)
        return None

    def _load_inputs(self, job_id: str) -> tuple[RenderInputs, bytes]:
        with self._stage("decode"):
            image = decode_image(
                self.storage.get_bytes(job_key(job_id, "inputs", "image")), self.limits.image
            )
            audio_bytes = self.storage.get_bytes(job_key(job_id, "inputs", "audio"))
            audio = decode_audio(audio_bytes, self.limits.audio)
            driving_key = job_key(job_id, "inputs", "driving_video")
            driving = self.storage.get_bytes(driving_key) if self.storage.exists(driving_key) else None
        return RenderInputs(image, audio.samples, audio.sample_rate, driving), audio_bytes

    def _resume_point(
        self, job_id: str, chunks: list[ChunkSpec], wanted: frozenset[str]
    ) -> tuple[int, ChunkCarry | None]:
        """First chunk still to render and the carry to start it from (after a crash: > 0)."""
        done = min(self.jobs.get(job_id).progress.chunks_done, len(chunks))
        while done > 0:
            try:
                carry = ChunkCarry.from_bytes(self.storage.get_bytes(carry_key(job_id, done - 1)))
            except NotFound:
                done -= 1  # recorded but not stored (storage lost it): render it again
                continue
            stored = [segment_key(job_id, done - 1)]
            stored += [output_part_key(job_id, name, done - 1) for name in sorted(wanted)]
            if all(self.storage.exists(key) for key in stored):
                return done, carry
            done -= 1
        return 0, None

    def _render(self, attempt: Attempt, lease: LeaseKeeper) -> JobStatus | None:
        job, token = attempt.job, attempt.token
        job_id = job.id
        inputs, audio_bytes = self._load_inputs(job_id)
        with self._stage("prepare"):
            params = render_params(
                job.params, self.engine.options_model, driving_video=inputs.driving_video is not None
            )
            wanted = side_outputs(self.engine, params)
            prepared = self.engine.prepare(inputs, params)
            chunks = self.engine.plan(prepared)
        first, carry = self._resume_point(job_id, chunks, wanted)
        if first:
            log.info("job %s: resuming at chunk %d of %d", job_id, first, len(chunks))
        progress = Progress(
            chunks_done=first,
            chunks_total=len(chunks),
            frames_done=chunks[first - 1].stop if first else 0,
            frames_total=prepared.num_frames,
        )
        self.jobs.set_progress(job_id, progress, token)
        clock = ChunkClock(first, len(chunks))
        store = functools.partial(self.store_chunk, job_id, token, lease, progress, prepared.fps, clock)
        sink = ChunkSink(store, job_id, threaded=self.pipelined)
        try:
            for chunk in chunks[first:]:
                sink.raise_if_failed()
                lease.check()
                if self.jobs.cancel_requested(job_id):
                    break
                outputs: ChunkOutputs = {}
                with self._stage("render"):
                    if wanted:
                        frames, carry, outputs = self._output_engine.render_chunk_outputs(
                            prepared, chunk, carry, wanted
                        )
                    else:
                        frames, carry = self.engine.render_chunk(prepared, chunk, carry)
                self.jobs.count_chunk_render(job_id, token)
                check_chunk_outputs(chunk, wanted, outputs)
                expected = (chunk.num_frames, prepared.height, prepared.width, 3)
                if frames.shape != expected or frames.dtype != np.uint8:
                    raise RuntimeError(
                        f"engine returned {frames.dtype} {frames.shape} for chunk {chunk}, expected {expected}"
                    )
                sink.put(chunk, frames, carry, outputs)
                del frames, outputs
        except BaseException:
            sink.close(raise_error=False)  # stores what was handed over (a crash loses no more)
            raise
        sink.close()  # stores what was handed over; raises the sink's error, if any
        if self.jobs.cancel_requested(job_id):
            return self._cancel(attempt)
        result = self._assemble(job_id, chunks, audio_bytes, prepared, lease)
        result.outputs = self._write_outputs(job_id, chunks, prepared, wanted, lease)
        return self._finish(attempt, JobStatus.SUCCEEDED, result=result)

    @property
    def _output_engine(self) -> OutputEngine[Any, Any]:
        assert isinstance(self.engine, OutputEngine)  # side_outputs checked it
        return self.engine

    def _write_outputs(
        self, job_id: str, chunks: list[ChunkSpec], prepared: Any, wanted: frozenset[str], lease: LeaseKeeper
    ) -> dict[str, OutputFile]:
        """Each side output's file, from its chunks' arrays joined in order (axis 0: every frame).

        The arrays are joined into memory-mapped files and the engine writes the output into a
        file: memory holds one chunk's part at a time, whatever the length of the job.
        """
        files: dict[str, OutputFile] = {}
        for name in sorted(wanted):
            with tempfile.TemporaryDirectory(prefix="parla-out-") as tmp:
                joined = join_parts(self.storage, job_id, name, chunks, Path(tmp))
                path = Path(tmp) / f"{name}.npz"
                with self._stage("encode"), path.open("wb") as handle:
                    self._output_engine.write_output(prepared, name, joined, handle)
                del joined
                lease.check()
                with self._stage("upload"):
                    self.storage.put_file(output_key(job_id, name), path, "application/octet-stream")
                files[name] = OutputFile(bytes=path.stat().st_size)
        return files

    def _assemble(
        self, job_id: str, chunks: list[ChunkSpec], audio_bytes: bytes, prepared: Any, lease: LeaseKeeper
    ) -> VideoResult:
        fps = prepared.fps
        with tempfile.TemporaryDirectory(prefix="parla-") as tmp:
            out_path = Path(tmp) / "video.mp4"
            with self._stage("encode"):
                segments = (self.storage.get_bytes(segment_key(job_id, c.index)) for c in chunks)
                assemble_mp4(segments, audio_bytes, fps, out_path)
            size = out_path.stat().st_size
            lease.check()
            with self._stage("upload"):
                # From the file, in parts: memory does not grow with the length of the video.
                self.storage.put_file(job_key(job_id, "video.mp4"), out_path, "video/mp4")
        frames = chunks[-1].stop
        return VideoResult(
            video_url=None,
            duration_s=frames / fps,
            fps=fps,
            frames=frames,
            width=prepared.width,
            height=prepared.height,
            bytes=size,
        )

    def store_chunk(
        self,
        job_id: str,
        token: str,
        lease: LeaseKeeper,
        progress: Progress,
        fps: float,
        clock: ChunkClock,
        chunk: ChunkSpec,
        frames: npt.NDArray[np.uint8],
        carry: ChunkCarry,
        outputs: ChunkOutputs,
    ) -> None:
        """Checkpoint one rendered chunk: encode, store segment, side outputs and carry, then record
        progress (the carry last: a resume trusts a chunk whose carry is stored)."""
        with self._stage("encode"):
            segment = encode_segment(frames, fps)
            parts = {name: encode_part(arrays) for name, arrays in outputs.items()}
        lease.check()
        with self._stage("upload"):
            self.storage.put_bytes(segment_key(job_id, chunk.index), segment, "video/mp4")
            for name, part in parts.items():
                self.storage.put_bytes(output_part_key(job_id, name, chunk.index), part)
            self.storage.put_bytes(carry_key(job_id, chunk.index), carry.to_bytes())
        progress.chunks_done, progress.frames_done = chunk.index + 1, chunk.stop
        progress.eta_s = clock.eta_s(chunk.index + 1)
        self.jobs.set_progress(job_id, progress, token)
        job = self.jobs.get(job_id)
        self.observer.job_event("video.progress", job)
        self.observer.chunk_stored(job, chunk.index, chunk.start, chunk.stop)

    def _cancel(self, attempt: Attempt) -> JobStatus | None:
        log.info("job %s: canceled", attempt.job.id)
        return self._finish(
            attempt, JobStatus.CANCELED, error=JobError(code="canceled", message="canceled by request")
        )
