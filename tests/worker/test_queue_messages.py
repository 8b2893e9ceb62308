"""A queued job whose queue message was lost gets a new one; one whose message waits is left alone.

Real redis-server and real rq queues. The ways a message is lost: the API died between storing the
job and sending its message; a worker took the message and died (or lost Redis) before it started
the attempt; a recoverer died between re-queueing a job and sending its message.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from rq.job import Job as RqJob
from rq.job import JobStatus as RqStatus

import core.jobstore
from core.jobs import JobStatus, RenderOptions
from core.jobstore import JobStore
from core.queue import JobQueue
from core.storage import LocalStorage
from worker.recovery import Recovery

CHECK_S = 0.05


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.jobstore, "MESSAGE_CHECK_AFTER_S", CHECK_S)


@pytest.fixture()
def parts(redis_url: str, tmp_path: Path) -> tuple[redis.Redis, JobStore, JobQueue, Recovery]:
    client = redis.Redis.from_url(redis_url)
    jobs, queue = JobStore(client), JobQueue(client)
    recovery = Recovery(jobs, queue, LocalStorage(tmp_path), max_attempts=3, retention_s=3600, interval_s=1)
    return client, jobs, queue, recovery


def waiting_messages(queue: JobQueue) -> list[str]:
    return list(queue.queue("test").job_ids)


def test_a_job_stored_but_never_sent_gets_its_message(
    parts: tuple[redis.Redis, JobStore, JobQueue, Recovery],
) -> None:
    _, jobs, queue, recovery = parts
    job = jobs.create("t", RenderOptions(engine="test"))  # the API died before enqueue
    recovery.run_once()
    assert waiting_messages(queue) == []  # not due yet: it may be on its way
    time.sleep(CHECK_S * 2)
    recovery.run_once()
    (message,) = waiting_messages(queue)
    assert message.startswith(f"{job.id}-m") and jobs.raw_fields(job.id)["message"] == message
    recovery.run_once()  # sent: not due again for a while
    assert waiting_messages(queue) == [message]


def test_a_message_still_waiting_on_its_queue_is_left_alone(
    parts: tuple[redis.Redis, JobStore, JobQueue, Recovery],
) -> None:
    client, jobs, queue, recovery = parts
    job = jobs.create("t", RenderOptions(engine="test"))
    queue.enqueue(job.id, "test")
    time.sleep(CHECK_S * 2)
    recovery.run_once()
    assert waiting_messages(queue) == [job.id]
    score = client.zscore("parla:waiting", job.id)
    assert score is not None and score > time.time() * 1000 + 60_000  # checked again in minutes


def test_a_message_taken_by_a_worker_that_died_before_starting_is_sent_again(
    parts: tuple[redis.Redis, JobStore, JobQueue, Recovery],
) -> None:
    client, jobs, queue, recovery = parts
    job = jobs.create("t", RenderOptions(engine="test"))
    queue.enqueue(job.id, "test")
    # A worker takes the message (rq marks it started) and dies before JobStore.start_attempt.
    rq_queue = queue.queue("test")
    rq_queue.remove(job.id)
    taken = RqJob.fetch(job.id, connection=client)
    taken.set_status(RqStatus.STARTED)
    assert not queue.is_waiting(job.id)
    time.sleep(CHECK_S * 2)
    recovery.run_once()
    (message,) = waiting_messages(queue)
    assert message != job.id and queue.is_waiting(message)
    # The new message starts the job once; a late duplicate delivery is refused.
    assert jobs.start_attempt(job.id, "w1", lease_s=30) is not None
    assert jobs.start_attempt(job.id, "w2", lease_s=30) is None
    time.sleep(CHECK_S * 2)
    recovery.run_once()  # running: no longer waiting, nothing more is sent
    assert waiting_messages(queue) == [message] and client.zscore("parla:waiting", job.id) is None


def test_jobs_that_left_queued_are_dropped_and_a_rolled_back_one_too(
    parts: tuple[redis.Redis, JobStore, JobQueue, Recovery],
) -> None:
    client, jobs, queue, recovery = parts
    canceled = jobs.create("t", RenderOptions(engine="test"))
    jobs.request_cancel(canceled.id)
    rolled_back = jobs.create("t", RenderOptions(engine="test"))
    jobs.delete("t", rolled_back.id)
    time.sleep(CHECK_S * 2)
    recovery.run_once()
    assert waiting_messages(queue) == [] and client.zcard("parla:waiting") == 0
    assert jobs.get(canceled.id).status == JobStatus.CANCELED


def test_legacy_requeues_are_adopted(parts: tuple[redis.Redis, JobStore, JobQueue, Recovery]) -> None:
    client, jobs, queue, recovery = parts
    job = jobs.create("t", RenderOptions(engine="test"))
    client.zrem("parla:waiting", job.id)
    client.zadd("parla:requeued", {job.id: 1})  # written by a worker before the waiting set
    recovery.run_once()
    assert not client.exists("parla:requeued")
    assert [m.startswith(job.id) for m in waiting_messages(queue)] == [True]
