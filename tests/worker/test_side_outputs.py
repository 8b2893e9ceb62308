"""Outputs besides the video (``outputs``): stored per chunk with the checkpoint, joined at the end.

Real redis-server and local storage; the engine is the pattern engine with a side output of its own
(the loudness level it draws, per frame), so the arrays are the engine's real per-chunk state.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pytest
import redis

from core.errors import StorageError
from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore
from core.storage import LocalStorage, job_key, output_key, output_part_key
from models.engine import ChunkCarry, ChunkOutputs, ChunkSpec, Frames, OutputEngine
from models.testing import PatternEngine, PatternPrepared
from tests.media import image_bytes, wav_bytes
from worker.runner import ChunkRunner


class LevelEngine(PatternEngine):
    """The pattern engine, which also returns the level of its bar per frame as output ``landmarks``."""

    def __init__(
        self,
        *,
        rows_off_by: int = 0,
        fail_at: int | None = None,
        wider_from: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rows_off_by = rows_off_by
        self.wider_from = wider_from
        self.fail_at = fail_at
        self.rendered: list[int] = []

    def render_chunk_outputs(
        self, prepared: PatternPrepared, chunk: ChunkSpec, carry: ChunkCarry | None, outputs: frozenset[str]
    ) -> tuple[Frames, ChunkCarry, ChunkOutputs]:
        self.rendered.append(chunk.index)
        if chunk.index == self.fail_at:
            raise StorageError("storage away")  # transient: the job is given back, to resume
        frames, next_carry = self.render_chunk(prepared, chunk, carry)
        bars = (frames[:, :, 0, 0] == 255).sum(axis=1).astype(np.float32)  # bar height per frame
        rows = chunk.num_frames + self.rows_off_by
        bar = np.resize(bars, rows)
        if self.wider_from is not None and chunk.index >= self.wider_from:
            bar = np.stack([bar, bar], axis=1)  # a later chunk's arrays change shape
        return frames, next_carry, {"landmarks": {"bar": bar, "index": np.arange(rows)}}

    def write_output(
        self, prepared: PatternPrepared, name: str, arrays: dict[str, npt.NDArray[Any]], target: BinaryIO
    ) -> None:
        np.savez(target, **arrays, frames=np.array([prepared.num_frames]))


@pytest.fixture()
def jobs(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url))


@pytest.fixture()
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def new_job(jobs: JobStore, storage: LocalStorage, outputs: list[Any]) -> str:
    job = jobs.create("t", RenderOptions(engine="test", size=64, seed=1, outputs=outputs))
    storage.put_bytes(job_key(job.id, "inputs", "image"), image_bytes(160, 160))
    storage.put_bytes(job_key(job.id, "inputs", "audio"), wav_bytes(2.0))
    return job.id


def read_output(storage: LocalStorage, job_id: str, name: str) -> dict[str, npt.NDArray[Any]]:
    with np.load(io.BytesIO(storage.get_bytes(output_key(job_id, name))), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_the_engine_is_an_output_engine_and_the_pattern_engine_is_not() -> None:
    assert isinstance(LevelEngine(), OutputEngine) and not isinstance(PatternEngine(), OutputEngine)


def test_a_side_output_is_joined_over_the_chunks_and_recorded_in_the_result(
    jobs: JobStore, storage: LocalStorage
) -> None:
    job_id = new_job(jobs, storage, ["landmarks", "video"])
    assert jobs.get(job_id).params.outputs == ["video", "landmarks"]  # video first, as recorded
    assert ChunkRunner(LevelEngine(chunk_frames=8), jobs, storage).run(job_id) == JobStatus.SUCCEEDED
    job = jobs.get(job_id)
    assert job.result is not None and set(job.result.outputs) == {"landmarks"}
    arrays = read_output(storage, job_id, "landmarks")
    assert job.result.outputs["landmarks"].bytes == len(storage.get_bytes(output_key(job_id, "landmarks")))
    assert arrays["index"].tolist() == [i % 8 for i in range(50)]  # 7 chunks of 8, 8, ..., 2 frames
    assert arrays["frames"].tolist() == [50] and arrays["bar"].shape == (50,)
    # The same job in one chunk gives the same arrays.
    whole = new_job(jobs, storage, ["video", "landmarks"])
    ChunkRunner(LevelEngine(chunk_frames=100), jobs, storage).run(whole)
    assert np.array_equal(read_output(storage, whole, "landmarks")["bar"], arrays["bar"])


def test_a_job_without_side_outputs_stores_none(jobs: JobStore, storage: LocalStorage) -> None:
    job_id = new_job(jobs, storage, ["video"])
    engine = LevelEngine(chunk_frames=8)
    assert ChunkRunner(engine, jobs, storage).run(job_id) == JobStatus.SUCCEEDED
    job = jobs.get(job_id)
    assert engine.rendered == [] and job.result is not None and job.result.outputs == {}
    assert not storage.exists(output_part_key(job_id, "landmarks", 0))


def test_an_engine_that_makes_no_side_outputs_fails_the_job_with_invalid_params(
    jobs: JobStore, storage: LocalStorage
) -> None:
    job_id = new_job(jobs, storage, ["video", "motion"])
    assert ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage).run(job_id) == JobStatus.FAILED
    error = jobs.get(job_id).error
    assert error is not None and error.code == "invalid_params" and "motion" in error.message


def test_side_output_arrays_of_the_wrong_length_fail_the_job(jobs: JobStore, storage: LocalStorage) -> None:
    job_id = new_job(jobs, storage, ["video", "landmarks"])
    assert (
        ChunkRunner(LevelEngine(chunk_frames=8, rows_off_by=1), jobs, storage).run(job_id) == JobStatus.FAILED
    )
    error = jobs.get(job_id).error
    assert error is not None and error.code == "engine_error" and "expected 8 rows" in error.message
    assert jobs.get(job_id).progress.chunks_done == 0  # nothing was checkpointed


def test_a_resumed_job_gives_the_same_output_and_renders_a_chunk_whose_part_was_lost(
    jobs: JobStore, storage: LocalStorage
) -> None:
    reference = new_job(jobs, storage, ["video", "landmarks"])
    ChunkRunner(LevelEngine(chunk_frames=8), jobs, storage).run(reference)

    job_id = new_job(jobs, storage, ["video", "landmarks"])
    assert ChunkRunner(LevelEngine(chunk_frames=8, fail_at=4), jobs, storage).run(job_id) is None
    assert jobs.get(job_id).progress.chunks_done == 4
    # Given back; and storage lost the last stored chunk's side output: that chunk is rendered
    # again, the ones before it are not.
    storage._path(output_part_key(job_id, "landmarks", 3)).unlink()
    jobs.redis.hset(jobs._key(job_id), "lease_until", 0)
    assert jobs.reclaim(job_id, max_attempts=3) == "requeue"
    resumed = LevelEngine(chunk_frames=8)
    assert ChunkRunner(resumed, jobs, storage).run(job_id) == JobStatus.SUCCEEDED
    assert resumed.rendered == [3, 4, 5, 6]
    mine, theirs = read_output(storage, job_id, "landmarks"), read_output(storage, reference, "landmarks")
    assert all(np.array_equal(mine[key], theirs[key]) for key in theirs)
    assert storage.get_bytes(job_key(job_id, "video.mp4")) == storage.get_bytes(
        job_key(reference, "video.mp4")
    )


def test_chunks_whose_arrays_change_shape_fail_the_job_when_joined(
    jobs: JobStore, storage: LocalStorage
) -> None:
    job_id = new_job(jobs, storage, ["video", "landmarks"])
    assert (
        ChunkRunner(LevelEngine(chunk_frames=8, wider_from=3), jobs, storage).run(job_id) == JobStatus.FAILED
    )
    error = jobs.get(job_id).error
    assert error is not None and error.code == "engine_error" and "chunk 3's bar" in error.message
    assert not storage.exists(output_key(job_id, "landmarks"))
