"""Job records in Redis: one hash per job, a per-tenant index, idempotency keys.

The API reads these records and never touches rq's own keys; rq carries only the job id.

Keys (``prefix`` defaults to ``parla:``):
- ``{prefix}job:{id}`` hash: ``record`` (the job JSON without progress), ``progress`` (JSON),
  ``status``, ``tenant``, ``cancel`` ("1" once cancel was asked), ``chunk_renders`` (counter),
  ``request_hash``.
- ``{prefix}tenant:{tenant}:jobs`` sorted set of job ids by creation time (microseconds).
- ``{prefix}idem:{tenant}:{key}`` JSON ``{"job_id", "request_hash"}``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

import redis

from core.errors import Conflict, InvalidInput, NotFound
from core.jobs import Job, JobError, JobStatus, Progress, RenderOptions, VideoResult, utcnow

IDEMPOTENCY_TTL_S = 24 * 3600

# KEYS: the idempotency key. ARGV: job id. Deletes the key only while it names that job.
_FORGET_IDEMPOTENT_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, stored = pcall(cjson.decode, raw)
if ok and type(stored) == 'table' and stored['job_id'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_job_id() -> str:
    """Sortable-enough, unguessable job id: ``vid_`` + 20 random base32 characters."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "vid_" + "".join(secrets.choice(alphabet) for _ in range(20))


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


class JobStore:
    """Reads and writes job records.

    Args:
        client: a redis-py client (``decode_responses`` is not required).
        prefix: key prefix.
        ttl_s: how long a finished job's record is kept.
    """

    def __init__(self, client: redis.Redis, prefix: str = "parla:", ttl_s: int = 7 * 24 * 3600) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._forget_idempotent_script = client.register_script(_FORGET_IDEMPOTENT_SCRIPT)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _index_key(self, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}:jobs"

    # --- create and read

    def create(
        self, tenant: str, params: RenderOptions, request_hash: str = "", job_id: str | None = None
    ) -> Job:
        job = Job(
            id=job_id or new_job_id(),
            status=JobStatus.QUEUED,
            created_at=utcnow(),
            params=params,
            metadata=params.metadata,
        )
        with self.redis.pipeline() as pipe:
            pipe.hset(
                self._key(job.id),
                mapping={
                    "record": job.model_dump_json(exclude={"progress"}),
                    "progress": Progress().model_dump_json(),
                    "status": job.status.value,
                    "tenant": tenant,
                    "cancel": "0",
                    "chunk_renders": 0,
                    "request_hash": request_hash,
                },
            )
            pipe.zadd(self._index_key(tenant), {job.id: _micros(job.created_at)})
            pipe.execute()
        return job

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, or ``NotFound``; with ``tenant``, also ``NotFound`` when another tenant owns it."""
        fields = self.redis.hmget(self._key(job_id), ["record", "progress", "tenant"])
        if fields[0] is None or (tenant is not None and _text(fields[2]) != tenant):
            raise NotFound(f"no video job {job_id!r}", code="job_not_found")
        job = Job.model_validate_json(fields[0])
        job.progress = Progress.model_validate_json(fields[1]) if fields[1] else Progress()
        return job

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The records of ``job_ids`` in one round trip; ids without a record are left out."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._key(job_id), ["record", "progress"])
            rows = pipe.execute()
        jobs: dict[str, Job] = {}
        for job_id, (record, progress) in zip(job_ids, rows, strict=True):
            if record is None:
                continue
            job = Job.model_validate_json(record)
            job.progress = Progress.model_validate_json(progress) if progress else Progress()
            jobs[job_id] = job
        return jobs

    def delete(self, tenant: str, job_id: str) -> None:
        """Remove the job's record and its entry in the tenant's index (a submission rolled back)."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self._key(job_id))
            pipe.zrem(self._index_key(tenant), job_id)
            pipe.execute()

    def tenant_of(self, job_id: str) -> str | None:
        value = self.redis.hget(self._key(job_id), "tenant")
        return _text(value) if value is not None else None

    def list(self, tenant: str, limit: int = 20, cursor: str | None = None) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is the opaque value returned as the previous page's ``next_cursor``."""
        max_score: str = "+inf"
        if cursor:
            if not cursor.isdigit():
                raise InvalidInput("invalid cursor", code="invalid_cursor", status_code=400)
            max_score = f"({cursor}"
        rows = self.redis.zrevrangebyscore(
            self._index_key(tenant), max_score, "-inf", start=0, num=limit + 1, withscores=True
        )
        scored = cast(list[tuple[bytes, float]], rows)
        page_ids = [_text(job_id) for job_id, _score in scored[:limit]]
        found = self.get_many(page_ids)  # one round trip for the page, not one per job
        jobs = [found[job_id] for job_id in page_ids if job_id in found]
        expired = [job_id for job_id in page_ids if job_id not in found]
        if expired:
            self.redis.zrem(self._index_key(tenant), *expired)
        next_cursor = str(int(scored[limit - 1][1])) if len(scored) > limit and limit > 0 else None
        return jobs, next_cursor

    # --- idempotency

    def find_idempotent(self, tenant: str, key: str, request_hash: str) -> str | None:
        """Job id already created with this key, or None. ``Conflict`` when the request differs."""
        raw = self.redis.get(f"{self.prefix}idem:{tenant}:{key}")
        if raw is None:
            return None
        stored = json.loads(raw)
        if stored["request_hash"] != request_hash:
            raise Conflict(
                "this Idempotency-Key was used with a different request", code="idempotency_key_reused"
            )
        return str(stored["job_id"])

    def remember_idempotent(self, tenant: str, key: str, request_hash: str, job_id: str) -> str:
        """Bind ``key`` to ``job_id`` unless a concurrent request bound it first; returns the winner."""
        redis_key = f"{self.prefix}idem:{tenant}:{key}"
        payload = json.dumps({"job_id": job_id, "request_hash": request_hash})
        if self.redis.set(redis_key, payload, nx=True, ex=IDEMPOTENCY_TTL_S):
            return job_id
        winner = self.find_idempotent(tenant, key, request_hash)
        return winner or job_id

    def forget_idempotent(self, tenant: str, key: str, job_id: str) -> bool:
        """Unbind ``key`` if it is still bound to ``job_id`` (a submission that failed half-way).

        Atomic (one Lua compare-and-delete), so a failed request never frees a key that a
        concurrent request has bound to its own job. Returns whether the key was removed.
        """
        removed = self._forget_idempotent_script(keys=[f"{self.prefix}idem:{tenant}:{key}"], args=[job_id])
        return bool(removed)

    # --- state changes (each atomic: WATCH + MULTI)

    def _update(self, job_id: str, change: Callable[[Job], bool]) -> Job | None:
        """Apply ``change`` to the record atomically; it returns False to leave the record alone."""
        key = self._key(job_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.hget(key, "record")
                    if raw is None:
                        pipe.unwatch()
                        return None
                    job = Job.model_validate_json(raw)
                    if not change(job):
                        pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.hset(
                        key,
                        mapping={
                            "record": job.model_dump_json(exclude={"progress"}),
                            "status": job.status.value,
                        },
                    )
                    if job.status.is_terminal():
                        pipe.expire(key, self.ttl_s)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    def start_attempt(self, job_id: str) -> Job | None:
        """Mark the job running for a new attempt; None if it is terminal (canceled meanwhile, ...)."""

        def change(job: Job) -> bool:
            if job.status.is_terminal():
                return False
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at or utcnow()
            job.attempts += 1
            return True

        return self._update(job_id, change)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: VideoResult | None = None,
        error: JobError | None = None,
    ) -> Job | None:
        """Record the end of the job; None if it had already ended."""
        if not status.is_terminal():
            raise ValueError(f"{status} is not a terminal status")

        def change(job: Job) -> bool:
            if job.status.is_terminal():
                return False
            job.status, job.result, job.error = status, result, error
            job.finished_at = utcnow()
            return True

        return self._update(job_id, change)

    def request_cancel(self, job_id: str) -> tuple[Job, bool]:
        """A queued job is canceled at once; a running one is flagged and stops within one chunk.

        Returns:
            ``(job, canceled_now)``: ``canceled_now`` is True only for the call whose transition
            moved the job from ``queued`` to ``canceled``, so events and counters follow it once
            however often a client repeats the cancel.
        """
        self.redis.hset(self._key(job_id), "cancel", "1")

        def change(job: Job) -> bool:
            if job.status != JobStatus.QUEUED:
                return False
            job.status = JobStatus.CANCELED
            job.finished_at = utcnow()
            job.error = JobError(code="canceled", message="canceled before it started")
            return True

        canceled = self._update(job_id, change)
        if canceled is not None:
            return canceled, True
        return self.get(job_id), False

    def cancel_requested(self, job_id: str) -> bool:
        return _text(self.redis.hget(self._key(job_id), "cancel") or b"0") == "1"

    def set_progress(self, job_id: str, progress: Progress) -> None:
        self.redis.hset(self._key(job_id), "progress", progress.model_dump_json())

    def count_chunk_render(self, job_id: str) -> int:
        """Count one chunk render (how many chunks a resumed job rendered twice is visible)."""
        return int(self.redis.hincrby(self._key(job_id), "chunk_renders", 1))

    def chunk_renders(self, job_id: str) -> int:
        return int(self.redis.hget(self._key(job_id), "chunk_renders") or 0)

    def raw_fields(self, job_id: str) -> dict[str, Any]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self._key(job_id)).items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
