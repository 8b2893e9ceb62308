"""Per-tenant limits against a real redis-server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from core.ratelimit import RateLimiter


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_sliding_window_refuses_the_extra_submission_with_retry_after(client: redis.Redis) -> None:
    clock = FakeClock()
    limiter = RateLimiter(client, submissions_per_minute=3, max_queued_jobs=0, clock=clock)
    assert limiter.check_submission("acme").allowed
    clock.now += 20
    assert limiter.check_submission("acme").allowed
    assert limiter.check_submission("acme").allowed
    clock.now += 10
    refused = limiter.check_submission("acme")
    assert not refused.allowed
    assert (refused.limit_name, refused.limit, refused.retry_after_s) == ("submissions_per_minute", 3, 30)
    assert limiter.check_submission("beta").allowed  # limits are per tenant
    clock.now += 30.5  # the first submission has left the window
    assert limiter.check_submission("acme").allowed
    assert not limiter.check_submission("acme").allowed


def test_queued_limit_counts_distinct_jobs_and_frees_on_release(client: redis.Redis) -> None:
    limiter = RateLimiter(client, submissions_per_minute=0, max_queued_jobs=2, queued_retry_after_s=15)
    assert limiter.acquire_queued("acme", "job_1").allowed
    assert limiter.acquire_queued("acme", "job_2").allowed
    assert limiter.acquire_queued("acme", "job_1").allowed  # idempotent
    refused = limiter.acquire_queued("acme", "job_3")
    assert (refused.allowed, refused.limit_name, refused.limit, refused.retry_after_s) == (
        False,
        "queued_jobs",
        2,
        15,
    )
    assert limiter.queued_count("acme") == 2
    limiter.release_queued("acme", "job_1")
    limiter.release_queued("acme", "job_1")
    assert limiter.queued_count("acme") == 1
    assert limiter.acquire_queued("acme", "job_3").allowed
    assert limiter.acquire_queued("beta", "job_9").allowed


def test_admit_records_both_or_neither(client: redis.Redis) -> None:
    limiter = RateLimiter(client, submissions_per_minute=2, max_queued_jobs=1, clock=FakeClock())
    assert limiter.admit("acme", "job_1").allowed
    refused = limiter.admit("acme", "job_2")
    assert refused.limit_name == "queued_jobs"
    limiter.release_queued("acme", "job_1")
    # The refused submission did not use up the per-minute window: one slot is left.
    assert limiter.admit("acme", "job_2").allowed
    limiter.release_queued("acme", "job_2")
    assert limiter.admit("acme", "job_3").limit_name == "submissions_per_minute"
    assert limiter.queued_count("acme") == 0


def test_leaked_queued_slots_expire(client: redis.Redis) -> None:
    clock = FakeClock()
    limiter = RateLimiter(client, max_queued_jobs=1, stale_queued_after_s=3600, clock=clock)
    assert limiter.acquire_queued("acme", "lost_job").allowed
    assert not limiter.acquire_queued("acme", "job_2").allowed
    clock.now += 3601
    assert limiter.queued_count("acme") == 0
    assert limiter.acquire_queued("acme", "job_2").allowed


def test_concurrent_submissions_never_exceed_the_limit(client: redis.Redis, redis_url: str) -> None:
    limit = 5
    results: list[bool] = []
    lock = threading.Lock()

    def submit() -> None:
        connection = redis.Redis.from_url(redis_url)
        limiter = RateLimiter(connection, submissions_per_minute=limit, max_queued_jobs=0)
        for _ in range(5):
            allowed = limiter.check_submission("acme").allowed
            with lock:
                results.append(allowed)
        connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 20 and results.count(True) == limit


def test_limits_are_validated(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="submissions_per_minute=-1"):
        RateLimiter(client, submissions_per_minute=-1)
