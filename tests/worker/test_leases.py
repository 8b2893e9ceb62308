"""Leases under faults: jobs longer than their lease, duplicate deliveries, lost leases, Redis outages."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore, LeaseLost
from core.localredis import LocalRedis
from core.queue import JobQueue
from core.redisconn import redis_client
from core.storage import LocalStorage, job_key
from models.engine import ChunkSpec
from models.testing import PatternEngine
from tests.media import image_bytes, wav_bytes
from worker.lease import LeaseKeeper
from worker.recovery import Recovery
from worker.runner import ChunkRunner

LEASE_S = 0.8
HEARTBEAT_S = 0.2


def new_job(jobs: JobStore, storage: LocalStorage, seconds: float) -> str:
    job = jobs.create("t", RenderOptions(engine="test", size=64, seed=1))
    storage.put_bytes(job_key(job.id, "inputs", "image"), image_bytes(160, 160))
    storage.put_bytes(job_key(job.id, "inputs", "audio"), wav_bytes(seconds))
    return job.id


@pytest.fixture()
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A redis-server of this test's own (AOF on), which the test may stop and start again."""
    server = LocalRedis(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_job_of_several_leases_with_two_workers_renders_once(redis_url: str, storage: LocalStorage) -> None:
    """Two workers get the same job (a duplicate delivery) while recovery runs all along: one renders."""
    jobs = JobStore(redis.Redis.from_url(redis_url))
    job_id = new_job(jobs, storage, seconds=2.0)  # 50 frames * 0.08 s = 4 s = 5 leases
    engine = PatternEngine(chunk_frames=5, frame_delay_s=0.08)
    recovery = Recovery(
        jobs,
        JobQueue(redis.Redis.from_url(redis_url)),
        storage,
        max_attempts=3,
        retention_s=3600,
        interval_s=0.1,
    )
    results: list[Any] = []

    def work() -> None:
        runner = ChunkRunner(engine, jobs, storage, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S)
        results.append(runner.run(job_id))

    first = threading.Thread(target=work)
    first.start()
    time.sleep(0.3)
    second = threading.Thread(target=work)
    second.start()
    started = time.monotonic()
    while first.is_alive():
        recovery.run_once()
        time.sleep(0.1)
    first.join()
    second.join()
    assert time.monotonic() - started > 3 * LEASE_S  # the job really outlived its lease several times
    assert sorted(results, key=str) == [None, JobStatus.SUCCEEDED]
    job = jobs.get(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    assert jobs.chunk_renders(job_id) == job.progress.chunks_total == 10


class Gate(PatternEngine):
    """Blocks in chunk ``at`` until released, like a worker frozen mid-render (GC pause, network split)."""

    def __init__(self, at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.at = at
        self.reached = threading.Event()
        self.release = threading.Event()

    def render_chunk(self, prepared: Any, chunk: ChunkSpec, carry: Any) -> Any:
        if chunk.index == self.at:
            self.reached.set()
            self.release.wait(30)
        return super().render_chunk(prepared, chunk, carry)


def test_an_attempt_that_was_replaced_stops_and_writes_nothing(redis_url: str, storage: LocalStorage) -> None:
    jobs = JobStore(redis.Redis.from_url(redis_url))
    job_id = new_job(jobs, storage, seconds=1.0)
    frozen = Gate(at=1, chunk_frames=8)
    outcome: list[Any] = []
    old = threading.Thread(
        target=lambda: outcome.append(
            ChunkRunner(frozen, jobs, storage, lease_s=30, heartbeat_s=10).run(job_id)
        )
    )
    old.start()
    assert frozen.reached.wait(10)
    # Its lease runs out in Redis (the worker is frozen): recovery hands the job to another worker.
    jobs.redis.hset(jobs._key(job_id), "lease_until", 0)
    assert jobs.reclaim(job_id, max_attempts=3) == "requeue"
    assert ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage).run(job_id) == JobStatus.SUCCEEDED
    done = jobs.get(job_id)
    video = storage.get_bytes(job_key(job_id, "video.mp4"))
    frozen.release.set()
    old.join(10)
    assert outcome == [None]  # the old attempt noticed and stopped: no status, no progress, no video
    after = jobs.get(job_id)
    assert after.status == JobStatus.SUCCEEDED and after.attempts == 2
    assert after.progress == done.progress and after.finished_at == done.finished_at
    assert storage.get_bytes(job_key(job_id, "video.mp4")) == video


def test_a_job_failed_elsewhere_stops_its_worker_within_one_chunk(
    redis_url: str, storage: LocalStorage
) -> None:
    jobs = JobStore(redis.Redis.from_url(redis_url))
    job_id = new_job(jobs, storage, seconds=2.0)
    rendered: list[int] = []

    class FailedMeanwhile(PatternEngine):
        def render_chunk(self, prepared: Any, chunk: ChunkSpec, carry: Any) -> Any:
            rendered.append(chunk.index)
            if chunk.index == 1:
                jobs.redis.hset(jobs._key(job_id), "lease_until", 0)
                assert jobs.reclaim(job_id, max_attempts=1) == "failed"
            return super().render_chunk(prepared, chunk, carry)

    runner = ChunkRunner(FailedMeanwhile(chunk_frames=8), jobs, storage, lease_s=5, heartbeat_s=1)
    assert runner.run(job_id) is None
    assert rendered == [0, 1]
    job = jobs.get(job_id)
    assert job.status == JobStatus.FAILED and job.error is not None and job.error.code == "worker_lost"
    # Chunk 0 was being stored while chunk 1 rendered (pipelined): its progress is recorded, or
    # refused when the failure came first; never more, and no video.
    assert job.progress.chunks_done in (0, 1) and not storage.exists(job_key(job_id, "video.mp4"))


def test_a_failing_heartbeat_is_loud_and_gives_the_lease_up(
    own_redis: LocalRedis, caplog: pytest.LogCaptureFixture
) -> None:
    server = own_redis
    jobs = JobStore(redis_client(server.url, "store", ride_out_s=0.1))
    job = jobs.create("t", RenderOptions(engine="test"))
    attempt = jobs.start_attempt(job.id, "w", lease_s=1.0)
    assert attempt is not None
    keeper = LeaseKeeper(jobs, job.id, attempt.token, lease_s=1.0, heartbeat_s=0.25)
    keeper.renew_once()
    keeper.check()
    server.stop()
    with caplog.at_level(logging.ERROR, logger="worker.lease"):
        deadline = time.monotonic() + 5
        while keeper.lost is None and time.monotonic() < deadline:
            keeper.renew_once()
            time.sleep(0.1)
    assert keeper.lost is not None and "renewal" in keeper.lost
    with pytest.raises(LeaseLost):
        keeper.check()
    assert any("lease renewal failed" in r.getMessage() for r in caplog.records)
    assert any("lease lost" in r.getMessage() for r in caplog.records)
    assert time.monotonic() - deadline < 5  # lost within about a lease, not after the loop timed out


def test_a_redis_restart_mid_job_is_ridden_out(own_redis: LocalRedis, storage: LocalStorage) -> None:
    """Redis away for ~1.5 s (AOF on): the attempt goes on and the job succeeds, never engine_error."""
    server = own_redis
    jobs = JobStore(redis_client(server.url, "store", ride_out_s=10))
    job_id = new_job(jobs, storage, seconds=2.0)

    class RestartsRedis(PatternEngine):
        def render_chunk(self, prepared: Any, chunk: ChunkSpec, carry: Any) -> Any:
            if chunk.index == 2:
                server.stop()
                threading.Timer(1.5, server.start).start()
            return super().render_chunk(prepared, chunk, carry)

    runner = ChunkRunner(RestartsRedis(chunk_frames=8), jobs, storage, lease_s=20, heartbeat_s=0.5)
    assert runner.run(job_id) == JobStatus.SUCCEEDED
    job = jobs.get(job_id)
    assert job.attempts == 1 and job.error is None and jobs.chunk_renders(job_id) == 7


def test_a_long_outage_gives_the_job_back_and_it_resumes(
    own_redis: LocalRedis, storage: LocalStorage
) -> None:
    """Redis away longer than a command rides out: the attempt stops unrecorded; the job resumes later."""
    server = own_redis
    jobs = JobStore(redis_client(server.url, "store", ride_out_s=0.3))
    job_id = new_job(jobs, storage, seconds=2.0)

    class LosesRedis(PatternEngine):
        def render_chunk(self, prepared: Any, chunk: ChunkSpec, carry: Any) -> Any:
            if chunk.index == 2 and server.process is not None:
                server.stop()
            return super().render_chunk(prepared, chunk, carry)

    assert (
        ChunkRunner(LosesRedis(chunk_frames=8), jobs, storage, lease_s=1, heartbeat_s=0.25).run(job_id)
        is None
    )
    server.start()
    time.sleep(1.1)  # the lease runs out (it could not be given back while Redis was away)
    recovery = Recovery(
        jobs,
        JobQueue(redis.Redis.from_url(server.url)),
        storage,
        max_attempts=3,
        retention_s=3600,
        interval_s=1,
    )
    recovery.run_once()
    assert jobs.get(job_id).status == JobStatus.QUEUED
    resumed = ChunkRunner(PatternEngine(chunk_frames=8), jobs, storage).run(job_id)
    job = jobs.get(job_id)
    assert resumed == JobStatus.SUCCEEDED and job.attempts == 2 and job.error is None
    assert jobs.chunk_renders(job_id) <= job.progress.chunks_total + 1


def test_recovery_survives_a_bad_record_and_retention_deletes_files(
    redis_url: str, storage: LocalStorage
) -> None:
    client = redis.Redis.from_url(redis_url)
    jobs = JobStore(client)
    bad = new_job(jobs, storage, seconds=1.0)
    good = new_job(jobs, storage, seconds=1.0)
    for job_id in (bad, good):
        assert jobs.start_attempt(job_id, lease_s=0.1) is not None
    client.hset(jobs._key(bad), "record", b"{not json")
    time.sleep(0.2)
    queue = JobQueue(client)
    recovery = Recovery(jobs, queue, storage, max_attempts=3, retention_s=0, interval_s=1)
    recovery.run_once()  # the bad record is logged and skipped; the good job is re-queued
    assert jobs.get(good).status == JobStatus.QUEUED and queue.depth(["test"]) == 1
    attempt = jobs.start_attempt(good)
    assert attempt is not None
    jobs.finish(good, JobStatus.SUCCEEDED, token=attempt.token)
    assert storage.list_keys(job_key(good))
    time.sleep(0.01)
    recovery.run_once()
    assert storage.list_keys(job_key(good)) == [] and jobs.list("t")[0] == []
    assert storage.list_keys(job_key(bad))  # not finished: kept
