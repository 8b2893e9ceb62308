"""The job queue: one rq queue per engine, carrying only the job id."""

from __future__ import annotations

import redis
from rq import Queue, Retry

RENDER_FUNCTION = "worker.tasks.render_job"


def queue_name(engine: str) -> str:
    """rq queue that the workers of ``engine`` listen on."""
    return f"parla-{engine}"


class JobQueue:
    """Enqueues job ids for the workers.

    Args:
        client: redis-py client (rq needs ``decode_responses=False``).
        max_attempts: runs per job; a job whose worker died mid-run is re-queued by rq's
            abandoned-job cleanup (``Retry``) until the attempts are used up.
    """

    def __init__(self, client: redis.Redis, max_attempts: int = 3) -> None:
        self.redis = client
        self.max_attempts = max_attempts

    def queue(self, engine: str) -> Queue:
        return Queue(queue_name(engine), connection=self.redis)

    def enqueue(self, job_id: str, engine: str) -> None:
        self.queue(engine).enqueue(
            RENDER_FUNCTION,
            job_id,
            job_id=job_id,
            job_timeout=-1,  # long renders are fine; liveness comes from the worker's heartbeat
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            retry=Retry(max=self.max_attempts - 1) if self.max_attempts > 1 else None,
        )

    def depth(self, engines: list[str]) -> int:
        """Jobs waiting in the queues of ``engines``."""
        return sum(self.queue(engine).count for engine in engines)

    def in_flight(self, engines: list[str]) -> int:
        """Jobs currently being rendered by some worker."""
        return sum(self.queue(engine).started_job_registry.count for engine in engines)
