from __future__ import annotations

import time

import pytest
import redis

from core.errors import Conflict, NotFound
from core.jobs import JobError, JobStatus, Progress, RenderOptions, VideoResult
from core.jobstore import JobStore, LeaseLost


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), ttl_s=60)


def test_create_get_and_tenant_isolation(store: JobStore) -> None:
    job = store.create("alice", RenderOptions(fps=30, metadata={"order": 7}))
    fetched = store.get(job.id, "alice")
    assert fetched.status == JobStatus.QUEUED and fetched.params.fps == 30
    assert fetched.metadata == {"order": 7}
    with pytest.raises(NotFound):
        store.get(job.id, "bob")
    with pytest.raises(NotFound):
        store.get("vid_missing")


def test_lifecycle_and_terminal_is_final(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    attempt = store.start_attempt(job.id)
    assert attempt is not None and attempt.job.status == JobStatus.RUNNING and attempt.job.attempts == 1
    progress = Progress(chunks_done=3, chunks_total=3, frames_done=20, frames_total=20)
    store.set_progress(job.id, progress, attempt.token)
    assert store.get(job.id).progress.frames_done == 20
    result = VideoResult(duration_s=1.0, fps=25, frames=25, width=64, height=64, bytes=10)
    done = store.finish(job.id, JobStatus.SUCCEEDED, result=result, token=attempt.token)
    assert done is not None and done.finished_at is not None and done.result == result
    assert done.progress == progress  # terminal webhook payloads carry the real progress
    assert store.finish(job.id, JobStatus.FAILED, error=JobError(code="x", message="y")) is None
    assert store.start_attempt(job.id) is None
    assert store.get(job.id).status == JobStatus.SUCCEEDED
    assert 0 < store.redis.ttl(store._key(job.id)) <= 60


def test_an_ended_job_has_no_eta_in_its_record_or_its_webhook_payload(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    attempt = store.start_attempt(job.id)
    assert attempt is not None
    progress = Progress(chunks_done=2, chunks_total=2, frames_done=20, frames_total=20, eta_s=0.0)
    store.set_progress(job.id, progress, attempt.token)
    done = store.finish(job.id, JobStatus.FAILED, error=JobError(code="x", message="y"), token=attempt.token)
    assert done is not None and done.progress.eta_s is None and done.progress.frames_done == 20
    assert store.get(job.id).progress == done.progress
    queued = store.create("t", RenderOptions())
    canceled, now = store.request_cancel(queued.id)
    assert now and canceled.progress.eta_s is None and canceled.progress.queue_position is None


def test_a_second_delivery_is_refused_while_the_lease_is_held(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    first = store.start_attempt(job.id, "w1", lease_s=30)
    assert first is not None and store.start_attempt(job.id, "w2", lease_s=30) is None
    assert store.expired_leases() == [] and store.reclaim(job.id, max_attempts=3) == "skip"


def test_an_expired_lease_is_reclaimed_and_the_old_attempt_is_fenced_off(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    first = store.start_attempt(job.id, "w1", lease_s=0.2)
    assert first is not None
    time.sleep(0.3)
    assert store.expired_leases() == [job.id]
    assert store.reclaim(job.id, max_attempts=3) == "requeue"
    assert store.get(job.id).status == JobStatus.QUEUED and store.waiting_due() == [(job.id, job.id)]
    second = store.start_attempt(job.id, "w2", lease_s=30)
    assert second is not None and second.job.attempts == 2 and store.waiting_due() == []
    with pytest.raises(LeaseLost):
        store.renew_lease(job.id, first.token, 30)
    with pytest.raises(LeaseLost):
        store.set_progress(job.id, Progress(chunks_done=9), first.token)
    with pytest.raises(LeaseLost):
        store.count_chunk_render(job.id, first.token)
    assert (
        store.finish(job.id, JobStatus.FAILED, error=JobError(code="x", message="y"), token=first.token)
        is None
    )
    assert store.get(job.id).status == JobStatus.RUNNING and store.get(job.id).progress.chunks_done == 0
    assert store.renew_lease(job.id, second.token, 30) > 0
    assert store.finish(job.id, JobStatus.SUCCEEDED, token=second.token) is not None


def test_out_of_attempts_fails_with_worker_lost(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    store.start_attempt(job.id, "w1", lease_s=0.1)
    time.sleep(0.2)
    assert store.reclaim(job.id, max_attempts=1) == "failed"
    failed = store.get(job.id)
    assert (
        failed.status == JobStatus.FAILED and failed.error is not None and failed.error.code == "worker_lost"
    )
    assert store.expired_leases() == []


def test_a_lease_ends_with_a_cancel_or_failure_recorded_elsewhere(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    attempt = store.start_attempt(job.id, "w1", lease_s=30)
    assert attempt is not None
    store.finish(job.id, JobStatus.FAILED, error=JobError(code="worker_lost", message="..."))
    with pytest.raises(LeaseLost, match="failed"):
        store.renew_lease(job.id, attempt.token, 30)


def test_finished_jobs_are_listed_for_retention_then_forgotten(store: JobStore) -> None:
    job = store.create("t", RenderOptions())
    attempt = store.start_attempt(job.id)
    assert attempt is not None
    store.finish(job.id, JobStatus.SUCCEEDED, token=attempt.token)
    assert store.expired_finished(older_than_s=3600) == []
    time.sleep(0.01)
    assert store.expired_finished(older_than_s=0) == [("t", job.id)]
    store.forget_finished("t", job.id)
    assert store.expired_finished(older_than_s=0) == [] and store.list("t")[0] == []


def test_cancel_queued_is_immediate_running_is_flagged(store: JobStore) -> None:
    queued = store.create("t", RenderOptions())
    canceled, changed = store.request_cancel(queued.id)
    assert canceled.status == JobStatus.CANCELED and changed
    again, changed_again = store.request_cancel(queued.id)
    assert again.status == JobStatus.CANCELED and not changed_again  # the transition happens once
    assert store.start_attempt(queued.id) is None
    running = store.create("t", RenderOptions())
    assert store.start_attempt(running.id) is not None
    assert not store.cancel_requested(running.id)
    flagged, changed = store.request_cancel(running.id)
    assert flagged.status == JobStatus.RUNNING and not changed
    assert store.cancel_requested(running.id)


def test_list_is_newest_first_and_paginates(store: JobStore) -> None:
    ids = [store.create("t", RenderOptions()).id for _ in range(5)]
    store.create("other", RenderOptions())
    page1, cursor = store.list("t", limit=2)
    assert [j.id for j in page1] == ids[::-1][:2] and cursor
    page2, cursor2 = store.list("t", limit=2, cursor=cursor)
    assert [j.id for j in page2] == ids[::-1][2:4]
    page3, cursor3 = store.list("t", limit=2, cursor=cursor2)
    assert [j.id for j in page3] == ids[:1] and cursor3 is None


def test_idempotency_same_request_same_job_other_request_conflict(store: JobStore) -> None:
    assert store.find_idempotent("t", "key-1", "hash-a") is None
    assert store.remember_idempotent("t", "key-1", "hash-a", "vid_1") == "vid_1"
    assert store.remember_idempotent("t", "key-1", "hash-a", "vid_2") == "vid_1"
    assert store.find_idempotent("t", "key-1", "hash-a") == "vid_1"
    assert store.find_idempotent("other-tenant", "key-1", "hash-a") is None
    with pytest.raises(Conflict):
        store.find_idempotent("t", "key-1", "hash-b")


def test_forget_idempotent_only_removes_its_own_binding(store: JobStore) -> None:
    store.remember_idempotent("t", "key-1", "hash-a", "vid_1")
    assert not store.forget_idempotent("t", "key-1", "vid_other")  # bound to another job: kept
    assert store.find_idempotent("t", "key-1", "hash-a") == "vid_1"
    assert store.forget_idempotent("t", "key-1", "vid_1")
    assert store.find_idempotent("t", "key-1", "hash-a") is None
    assert not store.forget_idempotent("t", "key-1", "vid_1")  # already gone
    assert store.remember_idempotent("t", "key-1", "hash-b", "vid_2") == "vid_2"  # free again


def test_get_many_and_delete(store: JobStore) -> None:
    first, second = store.create("t", RenderOptions(fps=24)), store.create("t", RenderOptions())
    store.set_progress(first.id, Progress(chunks_done=1, chunks_total=2, frames_done=4, frames_total=8))
    found = store.get_many([first.id, "vid_missing", second.id])
    assert list(found) == [first.id, second.id]
    assert found[first.id].params.fps == 24 and found[first.id].progress.frames_done == 4
    assert store.get_many([]) == {}
    store.delete("t", first.id)
    with pytest.raises(NotFound):
        store.get(first.id)
    assert [job.id for job in store.list("t")[0]] == [second.id]
    assert store.redis.zscore(store._index_key("t"), first.id) is None


def test_a_stale_binding_to_a_job_never_created_is_released(store: JobStore) -> None:
    import time

    store.remember_idempotent("t", "key-s", "hash-a", "vid_ghost")
    assert not store.release_stale_idempotent("t", "key-s", "vid_ghost", older_than_s=60)  # too young
    time.sleep(0.05)
    assert not store.release_stale_idempotent("t", "key-s", "vid_other", older_than_s=0.01)  # another job
    assert store.release_stale_idempotent("t", "key-s", "vid_ghost", older_than_s=0.01)
    assert store.find_idempotent("t", "key-s", "hash-b") is None  # free for any request now
    job = store.create("t", RenderOptions(), "hash-a")
    store.remember_idempotent("t", "key-e", "hash-a", job.id)
    time.sleep(0.05)
    assert not store.release_stale_idempotent("t", "key-e", job.id, older_than_s=0.01)  # the job exists
    assert store.find_idempotent("t", "key-e", "hash-a") == job.id
