from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import redis

from core.errors import InvalidInput
from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore
from core.storage import LocalStorage, job_key
from models.engine import ChunkCarry, ChunkSpec, Frames
from models.testing import PatternEngine, PatternPrepared
from tests.media import image_bytes, wav_bytes
from worker.runner import ChunkRunner


class Crash(BaseException):
    """Stands in for the process dying: nothing in the runner catches it."""


class CrashingEngine(PatternEngine):
    def __init__(self, crash_at_chunk: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crash_at_chunk = crash_at_chunk
        self.rendered: list[int] = []

    def render_chunk(
        self, prepared: PatternPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        if chunk.index == self.crash_at_chunk:
            raise Crash()
        self.rendered.append(chunk.index)
        return super().render_chunk(prepared, chunk, carry)


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.chunks: list[tuple[int, int, int]] = []
        self.stages: set[str] = set()

    def job_event(self, event_type: str, job: Any) -> None:
        self.events.append(event_type)

    def chunk_stored(self, job: Any, index: int, start: int, stop: int) -> None:
        self.chunks.append((index, start, stop))

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self.stages.add(stage)


@pytest.fixture()
def jobs(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url))


@pytest.fixture()
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def new_job(jobs: JobStore, storage: LocalStorage, seconds: float = 1.0, **options: Any) -> str:
    job = jobs.create("t", RenderOptions(engine="test", size=64, seed=1, **options))
    storage.put_bytes(job_key(job.id, "inputs", "image"), image_bytes(160, 160))
    storage.put_bytes(job_key(job.id, "inputs", "audio"), wav_bytes(seconds))
    return job.id


def decoded_frames(storage: LocalStorage, job_id: str, tmp_path: Path) -> np.ndarray:
    path = tmp_path / f"{job_id}.mp4"
    path.write_bytes(storage.get_bytes(job_key(job_id, "video.mp4")))
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_job_renders_in_chunks_to_an_mp4(jobs: JobStore, storage: LocalStorage, tmp_path: Path) -> None:
    job_id = new_job(jobs, storage, seconds=1.0, fps=25)
    observer = RecordingObserver()
    assert (
        ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage, observer).run(job_id) == JobStatus.SUCCEEDED
    )
    job = jobs.get(job_id)
    assert job.progress.chunks_done == job.progress.chunks_total == 4
    assert job.progress.frames_done == job.progress.frames_total == 25
    assert job.result is not None and job.result.frames == 25 and job.result.width == 64
    assert decoded_frames(storage, job_id, tmp_path).shape == (25, 64, 64, 3)
    assert observer.events == ["video.started"] + ["video.progress"] * 4 + ["video.succeeded"]
    assert observer.chunks == [(0, 0, 8), (1, 8, 16), (2, 16, 24), (3, 24, 25)]
    assert {"decode", "prepare", "render", "encode", "upload"} <= observer.stages


def test_crash_then_resume_renders_one_chunk_twice_and_same_video(
    jobs: JobStore, storage: LocalStorage, tmp_path: Path
) -> None:
    reference_id = new_job(jobs, storage, seconds=2.0)
    ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage).run(reference_id)

    job_id = new_job(jobs, storage, seconds=2.0)
    crashing = CrashingEngine(crash_at_chunk=3, chunk_frames=8)
    with pytest.raises(Crash):
        ChunkRunner(crashing, jobs, storage, lease_s=0.6, heartbeat_s=0.2).run(job_id)
    assert jobs.get(job_id).status == JobStatus.RUNNING and jobs.get(job_id).progress.chunks_done == 3
    assert ChunkRunner(CrashingEngine(chunk_frames=8), jobs, storage).run(job_id) is None  # lease still held
    time.sleep(0.7)  # the dead attempt's lease runs out; recovery puts the job back
    assert jobs.expired_leases() == [job_id] and jobs.reclaim(job_id, max_attempts=3) == "requeue"

    resumed = CrashingEngine(chunk_frames=8)
    assert ChunkRunner(resumed, jobs, storage).run(job_id) == JobStatus.SUCCEEDED
    assert resumed.rendered == [3, 4, 5, 6]  # chunks 0-2 came from storage
    job = jobs.get(job_id)
    assert job.attempts == 2 and jobs.chunk_renders(job_id) == 7
    np.testing.assert_array_equal(
        decoded_frames(storage, job_id, tmp_path), decoded_frames(storage, reference_id, tmp_path)
    )


def test_cancel_stops_between_chunks(jobs: JobStore, storage: LocalStorage) -> None:
    job_id = new_job(jobs, storage, seconds=2.0)

    class CancelAfterFirst(PatternEngine):
        def render_chunk(self, prepared: Any, chunk: ChunkSpec, carry: Any) -> Any:
            out = super().render_chunk(prepared, chunk, carry)
            jobs.request_cancel(job_id)
            return out

    assert ChunkRunner(CancelAfterFirst(chunk_frames=8), jobs, storage).run(job_id) == JobStatus.CANCELED
    job = jobs.get(job_id)
    assert job.progress.chunks_done == 1 and job.error is not None and job.error.code == "canceled"
    assert not storage.exists(job_key(job_id, "video.mp4"))


def test_engine_input_error_fails_the_job_with_its_code(jobs: JobStore, storage: LocalStorage) -> None:
    class NoFace(PatternEngine):
        def prepare(self, inputs: Any, params: Any) -> Any:
            raise InvalidInput("no face in the portrait", code="no_face_found")

    job_id = new_job(jobs, storage)
    observer = RecordingObserver()
    assert ChunkRunner(NoFace(), jobs, storage, observer).run(job_id) == JobStatus.FAILED
    error = jobs.get(job_id).error
    assert error is not None and error.code == "no_face_found"
    assert observer.events[-1] == "video.failed"


def test_unexpected_engine_failure_is_recorded_not_raised(jobs: JobStore, storage: LocalStorage) -> None:
    class Broken(PatternEngine):
        def render_chunk(self, prepared: Any, chunk: Any, carry: Any) -> Any:
            return np.zeros((1, 2, 2, 3), np.uint8), ChunkCarry()

    job_id = new_job(jobs, storage)
    assert ChunkRunner(Broken(), jobs, storage).run(job_id) == JobStatus.FAILED
    error = jobs.get(job_id).error
    assert error is not None and error.code == "engine_error" and "expected" in error.message


def test_canceled_before_start_is_skipped(jobs: JobStore, storage: LocalStorage) -> None:
    job_id = new_job(jobs, storage)
    jobs.request_cancel(job_id)
    engine = CrashingEngine()
    assert ChunkRunner(engine, jobs, storage).run(job_id) is None
    assert engine.rendered == []


def test_the_worker_decodes_with_the_deployment_limits_not_the_defaults(
    jobs: JobStore, storage: LocalStorage
) -> None:
    """The API admitted the clip under the settings' limits; the worker must apply the same ones."""
    from core.media import AudioLimits, InputLimits

    strict = ChunkRunner(
        PatternEngine(), jobs, storage, limits=InputLimits(audio=AudioLimits(max_seconds=0.8))
    )
    job_id = new_job(jobs, storage, seconds=1.0)
    assert strict.run(job_id) == JobStatus.FAILED
    error = jobs.get(job_id).error
    assert error is not None and error.code == "audio_too_long"
    lenient = ChunkRunner(
        PatternEngine(), jobs, storage, limits=InputLimits(audio=AudioLimits(max_seconds=900))
    )
    assert lenient.run(new_job(jobs, storage, seconds=1.0)) == JobStatus.SUCCEEDED
