"""The job queue: one rq queue per engine, carrying only the job id.

rq only delivers messages here; it never retries. Whether a job runs, and who holds it, is decided
by the job record's lease (``core.jobstore``): a lost worker's job is put back on its queue by
Parla's recovery (``worker.recovery``), as a new message, and a second delivery of the same job is
refused by ``JobStore.start_attempt``.
"""

from __future__ import annotations

import redis
from rq import Queue

RENDER_FUNCTION = "worker.tasks.render_job"


def queue_name(engine: str) -> str:
    """rq queue that the workers of ``engine`` listen on."""
    return f"parla-{engine}"


class JobQueue:
    """Enqueues job ids for the workers.

    Args:
        client: redis-py client (rq needs ``decode_responses=False``).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def queue(self, engine: str) -> Queue:
        return Queue(queue_name(engine), connection=self.redis)

    def enqueue(self, job_id: str, engine: str, delivery: int = 0) -> None:
        """Send ``job_id`` to ``engine``'s workers; ``delivery`` > 0 for a re-queue after worker loss."""
        self.queue(engine).enqueue(
            RENDER_FUNCTION,
            job_id,
            job_id=job_id if delivery == 0 else f"{job_id}-r{delivery}",
            job_timeout=-1,  # long renders are fine; liveness comes from the job's lease
            result_ttl=3600,
            failure_ttl=24 * 3600,
        )

    def depth(self, engines: list[str]) -> int:
        """Jobs waiting in the queues of ``engines``."""
        return sum(self.queue(engine).count for engine in engines)

    def in_flight(self, engines: list[str]) -> int:
        """Jobs currently being rendered by some worker."""
        return sum(self.queue(engine).started_job_registry.count for engine in engines)
