"""The job queue: one rq queue per engine, carrying only the job id.

rq only delivers messages here; it never retries. Whether a job runs, and who holds it, is decided
by the job record's lease (``core.jobstore``): a lost worker's job is put back on its queue by
Parla's recovery (``worker.recovery``), as a new message, and a second delivery of the same job is
refused by ``JobStore.start_attempt``.
"""

from __future__ import annotations

import secrets

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core.jobstore import first_message_id

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

    def enqueue(self, job_id: str, engine: str, *, first: bool = True) -> str:
        """Send ``job_id`` to ``engine``'s workers; returns the message id.

        The API's message is the job's first (its id is the job id); every later one (recovery's)
        gets a fresh id, so that it never collides with a message rq still remembers.
        """
        message_id = first_message_id(job_id) if first else f"{job_id}-m{secrets.token_hex(4)}"
        self.queue(engine).enqueue(
            RENDER_FUNCTION,
            job_id,
            job_id=message_id,
            job_timeout=-1,  # long renders are fine; liveness comes from the job's lease
            result_ttl=3600,
            failure_ttl=24 * 3600,
        )
        return message_id

    def is_waiting(self, message_id: str) -> bool:
        """Whether message ``message_id`` is still waiting on a queue (not taken, not gone)."""
        try:
            job = Job.fetch(message_id, connection=self.redis)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)

    def positions(self, messages: dict[str, tuple[str, str]]) -> dict[str, int]:
        """``job id -> (engine, message id)`` to each message's place on its queue (0: next; one round trip).

        Messages no longer waiting on their queue (taken, or lost) are left out.
        """
        with self.redis.pipeline(transaction=False) as pipe:
            for engine, message_id in messages.values():
                pipe.lpos(self.queue(engine).key, message_id)
            found = pipe.execute()
        return {job_id: int(at) for job_id, at in zip(messages, found, strict=True) if at is not None}

    def depth(self, engines: list[str]) -> int:
        """Jobs waiting in the queues of ``engines``."""
        return sum(self.queue(engine).count for engine in engines)

    def in_flight(self, engines: list[str]) -> int:
        """Jobs currently being rendered by some worker."""
        return sum(self.queue(engine).started_job_registry.count for engine in engines)
