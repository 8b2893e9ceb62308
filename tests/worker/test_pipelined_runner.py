"""The pipelined runner: chunk k is stored while chunk k+1 renders, in order, with the same checkpoints.

Real redis-server; storage is local files with hooks that block or fail on chosen writes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from core.errors import StorageError
from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore
from core.storage import LocalStorage, job_key
from models.engine import ChunkCarry, ChunkSpec, Frames
from models.testing import PatternEngine, PatternPrepared
from tests.media import image_bytes, wav_bytes
from worker.runner import ChunkRunner, carry_key, segment_key


class HookedStorage(LocalStorage):
    """Local storage that runs ``hook(key)`` before each write and counts stored carries."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.hook: Any = None
        self.carries_stored = 0

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.hook is not None:
            self.hook(key)
        super().put_bytes(key, data, content_type)
        if key.endswith(".carry"):
            self.carries_stored += 1


class WatchedEngine(PatternEngine):
    """Records, as each chunk starts rendering, how many chunks were stored by then."""

    def __init__(self, storage: HookedStorage, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.storage = storage
        self.started: dict[int, threading.Event] = {}
        self.stored_when_started: list[tuple[int, int]] = []
        self.fail_at: int | None = None

    def render_chunk(
        self, prepared: PatternPrepared, chunk: ChunkSpec, carry: ChunkCarry | None
    ) -> tuple[Frames, ChunkCarry]:
        self.stored_when_started.append((chunk.index, self.storage.carries_stored))
        self.started.setdefault(chunk.index, threading.Event()).set()
        if chunk.index == self.fail_at:
            raise RuntimeError("the engine failed")
        return super().render_chunk(prepared, chunk, carry)

    def wait_started(self, index: int, timeout: float) -> bool:
        return self.started.setdefault(index, threading.Event()).wait(timeout)


@pytest.fixture()
def jobs(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url))


@pytest.fixture()
def storage(tmp_path: Path) -> HookedStorage:
    return HookedStorage(tmp_path / "storage")


def new_job(jobs: JobStore, storage: LocalStorage, seconds: float = 2.0) -> str:
    job = jobs.create("t", RenderOptions(engine="test", size=64, seed=1))
    storage.put_bytes(job_key(job.id, "inputs", "image"), image_bytes(160, 160))
    storage.put_bytes(job_key(job.id, "inputs", "audio"), wav_bytes(seconds))
    return job.id


@pytest.mark.parametrize("pipelined", [True, False])
def test_the_next_chunk_renders_while_the_previous_one_is_stored(
    jobs: JobStore, storage: HookedStorage, pipelined: bool
) -> None:
    job_id = new_job(jobs, storage)
    engine = WatchedEngine(storage, chunk_frames=8)
    overlapped: list[bool] = []

    def hold_segment_zero(key: str) -> None:
        if key == segment_key(job_id, 0):  # storing chunk 0: does chunk 1 render meanwhile?
            overlapped.append(engine.wait_started(1, timeout=10.0 if pipelined else 0.3))

    storage.hook = hold_segment_zero
    assert ChunkRunner(engine, jobs, storage, pipelined=pipelined).run(job_id) == JobStatus.SUCCEEDED
    assert overlapped == [pipelined]
    # Bounded: when chunk k starts rendering, every chunk before k - 1 is stored (at most two alive).
    lag = 1 if pipelined else 0
    assert all(stored >= index - lag for index, stored in engine.stored_when_started)


def test_pipelined_and_serial_runs_store_the_same_video(jobs: JobStore, storage: HookedStorage) -> None:
    videos = []
    for pipelined in (True, False):
        job_id = new_job(jobs, storage)
        ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage, pipelined=pipelined).run(job_id)
        videos.append(storage.get_bytes(job_key(job_id, "video.mp4")))
        assert jobs.get(job_id).progress.chunks_done == 7
    assert videos[0] == videos[1]


def test_a_storage_failure_in_the_sink_stops_rendering_and_the_job_resumes(
    jobs: JobStore, storage: HookedStorage
) -> None:
    reference = new_job(jobs, storage)
    ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage, pipelined=False).run(reference)

    job_id = new_job(jobs, storage)
    engine = WatchedEngine(storage, chunk_frames=8)

    def storage_down_at_chunk_two(key: str) -> None:
        if key == segment_key(job_id, 2):
            raise StorageError("S3 put failed: connection reset")

    storage.hook = storage_down_at_chunk_two
    assert ChunkRunner(engine, jobs, storage, lease_s=30).run(job_id) is None  # given back
    rendered = [index for index, _ in engine.stored_when_started]
    assert rendered in ([0, 1, 2], [0, 1, 2, 3])  # at most the chunk after the failed one
    job = jobs.get(job_id)
    assert job.status == JobStatus.RUNNING and job.progress.chunks_done == 2
    assert not storage.exists(carry_key(job_id, 2)) and job.error is None

    storage.hook = None
    jobs.redis.hset(jobs._key(job_id), "lease_until", 0)  # given back: recovery would re-queue it
    assert jobs.reclaim(job_id, max_attempts=3) == "requeue"
    resumed = WatchedEngine(storage, chunk_frames=8)
    assert ChunkRunner(resumed, jobs, storage).run(job_id) == JobStatus.SUCCEEDED
    assert [index for index, _ in resumed.stored_when_started] == [2, 3, 4, 5, 6]
    assert storage.get_bytes(job_key(job_id, "video.mp4")) == storage.get_bytes(
        job_key(reference, "video.mp4")
    )


def test_an_engine_failure_keeps_the_chunk_being_stored(jobs: JobStore, storage: HookedStorage) -> None:
    job_id = new_job(jobs, storage)
    engine = WatchedEngine(storage, chunk_frames=8)
    engine.fail_at = 3
    assert ChunkRunner(engine, jobs, storage).run(job_id) == JobStatus.FAILED
    job = jobs.get(job_id)
    assert job.error is not None and job.error.code == "engine_error"
    assert job.progress.chunks_done == 3 and storage.exists(carry_key(job_id, 2))


def test_progress_carries_an_eta_from_the_measured_chunks(jobs: JobStore, storage: HookedStorage) -> None:
    job_id = new_job(jobs, storage)
    seen: list[float | None] = []

    class Watching(PatternEngine):
        def render_chunk(self, prepared: Any, chunk: ChunkSpec, carry: Any) -> Any:
            seen.append(jobs.get(job_id).progress.eta_s)
            return super().render_chunk(prepared, chunk, carry)

    assert (
        ChunkRunner(Watching(chunk_frames=8), jobs, storage, pipelined=False).run(job_id)
        == JobStatus.SUCCEEDED
    )
    assert seen[0] is None and all(eta is not None and eta >= 0 for eta in seen[1:])
    assert jobs.get(job_id).progress.eta_s is None  # the job ended: no ETA (the last chunk's was 0)
