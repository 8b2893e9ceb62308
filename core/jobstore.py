"""Job records in Redis: one hash per job, a per-tenant index, idempotency keys.

The API reads these records and never touches rq's own keys; rq carries only the job id.

Keys (``prefix`` defaults to ``parla:``):
- ``{prefix}job:{id}`` hash: ``record`` (the job JSON without progress), ``progress`` (JSON),
  ``status``, ``tenant``, ``cancel`` ("1" once cancel was asked), ``chunk_renders`` (counter),
  ``request_hash``, ``message`` (the id of the job's latest queue message), and the lease of the
  attempt in flight: ``token`` (the attempt's fencing token), ``lease_until`` (Redis server time,
  ms), ``worker``.
- ``{prefix}tenant:{tenant}:jobs`` sorted set of job ids by creation time (microseconds).
- ``{prefix}idem:{tenant}:{key}`` JSON ``{"job_id", "request_hash", "bound_at_ms"}`` (Redis time).
- ``{prefix}leases`` sorted set: running job ids by ``lease_until``; recovery re-queues those past it.
- ``{prefix}waiting`` sorted set: ``queued`` job ids until an attempt starts, by when recovery should
  check that their queue message is still on its way (Redis time, ms). A message can be lost: the
  API died between storing the job and sending it, a recoverer died before re-sending it, a worker
  took it and died (or lost Redis) before ``start_attempt``. Recovery then sends a new one.
- ``{prefix}finished`` sorted set: ``tenant/job id`` by finish time (ms), for retention.

Leases and fencing: ``start_attempt`` gives the attempt a fresh token and a lease; the worker renews
the lease (``renew_lease``) while it renders, and every write of the attempt (progress, chunk count,
the final status) names the token and is refused once another attempt holds the job or it ended.
So a worker that lost its lease (Redis outage, GC pause, a network split) cannot overwrite the
attempt that replaced it: it gets ``LeaseLost`` and stops.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import redis
from pydantic import ValidationError

from core.errors import Conflict, InvalidInput, NotFound
from core.jobs import Job, JobError, JobStatus, Progress, RenderOptions, VideoResult, utcnow
from core.redisconn import TRANSIENT_REDIS_ERRORS

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 24 * 3600
MESSAGE_CHECK_AFTER_S = 30.0
"""A queued job's message is first checked this long after it was sent."""
MESSAGE_RECHECK_S = 300.0
"""A job found still waiting on its queue is checked again after this long."""
TRANSACTION_RIDE_OUT_S = 30.0
"""How long a WATCH/MULTI state change keeps retrying while Redis is unreachable."""

LeaseState = Literal["held", "lost"]

# KEYS: job hash, leases zset. ARGV: token, lease_ms, job id.
# Extends the lease when `token` still holds a running job; returns {1, lease_until} or {0, reason}.
_RENEW_SCRIPT = """
local fields = redis.call('HMGET', KEYS[1], 'token', 'status')
if fields[2] ~= 'running' then return {0, fields[2] or 'gone'} end
if not fields[1] or fields[1] ~= ARGV[1] then return {0, 'superseded'} end
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', until_ms)
redis.call('ZADD', KEYS[2], until_ms, ARGV[3])
return {1, until_ms}
"""

# KEYS: job hash. ARGV: token, field, value | increment, mode ('set' | 'incr').
# A write of the attempt holding `token`; 0 when another attempt holds the job or it ended.
_FENCED_WRITE_SCRIPT = """
local fields = redis.call('HMGET', KEYS[1], 'token', 'status')
if not fields[1] or fields[1] ~= ARGV[1] or fields[2] ~= 'running' then return 0 end
if ARGV[4] == 'incr' then return redis.call('HINCRBY', KEYS[1], ARGV[2], tonumber(ARGV[3])) end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""


class LeaseLost(Exception):
    """The attempt no longer holds its job: another attempt took over, or the job ended elsewhere."""


@dataclass(frozen=True)
class Attempt:
    """One run of a job by one worker: the job as it started and the fencing token of its writes."""

    job: Job
    token: str
    lease_until_ms: int


def _redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


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

# KEYS: the idempotency key, the job's record. ARGV: job id, age in ms. Deletes the key only while it
# names that job, the job has no record, and the binding is at least that old (Redis time).
_RELEASE_STALE_IDEMPOTENT_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, stored = pcall(cjson.decode, raw)
if not ok or type(stored) ~= 'table' or stored['job_id'] ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms - (tonumber(stored['bound_at_ms']) or 0) < tonumber(ARGV[2]) then return 0 end
return redis.call('DEL', KEYS[1])
"""


def first_message_id(job_id: str) -> str:
    """The id of a job's first queue message (the API's); later ones get a suffix."""
    return job_id


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
        self._renew = client.register_script(_RENEW_SCRIPT)
        self._fenced_write = client.register_script(_FENCED_WRITE_SCRIPT)
        self._forget_idempotent_script = client.register_script(_FORGET_IDEMPOTENT_SCRIPT)
        self._release_stale_script = client.register_script(_RELEASE_STALE_IDEMPOTENT_SCRIPT)

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
        check_at_ms = _redis_now_ms(self.redis) + int(MESSAGE_CHECK_AFTER_S * 1000)
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
                    "message": first_message_id(job.id),
                },
            )
            pipe.zadd(self._index_key(tenant), {job.id: _micros(job.created_at)})
            pipe.zadd(self._waiting_key, {job.id: check_at_ms})
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
            try:
                job = Job.model_validate_json(record)
                job.progress = Progress.model_validate_json(progress) if progress else Progress()
            except ValidationError:  # one unreadable record must not break a whole page
                log.error("job %s: its record cannot be read; left out", job_id)
                continue
            jobs[job_id] = job
        return jobs

    def delete(self, tenant: str, job_id: str) -> None:
        """Remove the job's record and its entry in the tenant's index (a submission rolled back)."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self._key(job_id))
            pipe.zrem(self._index_key(tenant), job_id)
            pipe.zrem(self._waiting_key, job_id)
            pipe.execute()

    def tenant_of(self, job_id: str) -> str | None:
        value = self.redis.hget(self._key(job_id), "tenant")
        return _text(value) if value is not None else None

    def list(
        self,
        tenant: str,
        limit: int = 20,
        cursor: str | None = None,
        status: JobStatus | None = None,
        max_scan: int = 1000,
    ) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is the opaque value returned as the previous page's ``next_cursor``.

        With ``status``, only jobs in that status: the filter runs while paging through the index
        and reads about ``max_scan`` index entries per call at most (bounded work per request), so a
        page of a rare status may hold fewer than ``limit`` jobs, even none, and a ``next_cursor`` to
        go on from. A ``next_cursor`` of None means there is nothing further.
        """
        max_score: str = "+inf"
        if cursor:
            if not cursor.isdigit():
                raise InvalidInput("invalid cursor", code="invalid_cursor", status_code=400)
            max_score = f"({cursor}"
        index_key = self._index_key(tenant)
        batch = limit + 1 if status is None else min(max(limit + 1, 100), max_scan)
        jobs: list[Job] = []
        consumed_score = 0.0  # every index entry down to this score is returned or filtered out
        scanned = 0
        while scanned < max_scan:
            rows = cast(
                list[tuple[bytes, float]],
                self.redis.zrevrangebyscore(
                    index_key, max_score, "-inf", start=0, num=batch, withscores=True
                ),
            )
            if not rows:
                return jobs, None
            scanned += len(rows)
            states: list[Any] = [None] * len(rows)
            if status is not None:  # the status fields first: records are read only for matches
                pipe = self.redis.pipeline(transaction=False)
                for job_id, _score in rows:
                    pipe.hget(self._key(_text(job_id)), "status")
                states = pipe.execute()
            wanted = [
                status is None or (state is not None and _text(state) == status.value) for state in states
            ]
            found = self.get_many([_text(row[0]) for row, keep in zip(rows, wanted, strict=True) if keep])
            expired = []
            for (job_id, score), keep in zip(rows, wanted, strict=True):
                job = found.get(_text(job_id)) if keep else None
                if keep and job is None:
                    expired.append(job_id)  # expired (or unreadable) record
                elif job is not None and (status is None or job.status == status):  # it may have moved on
                    if len(jobs) == limit:  # a further match exists: the page is full
                        break
                    jobs.append(job)
                consumed_score = score
            else:
                max_score = f"({int(rows[-1][1])}"
                if expired:
                    self.redis.zrem(index_key, *expired)
                continue
            if expired:
                self.redis.zrem(index_key, *expired)
            return jobs, str(int(consumed_score))
        return jobs, str(int(consumed_score))

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
        bound_at_ms = _redis_now_ms(self.redis)
        payload = json.dumps({"job_id": job_id, "request_hash": request_hash, "bound_at_ms": bound_at_ms})
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

    def release_stale_idempotent(self, tenant: str, key: str, job_id: str, older_than_s: float) -> bool:
        """Unbind ``key`` from ``job_id`` when that job was never created and the binding is old.

        A submission binds its key before it stores the job; one whose API process died in between
        leaves a key bound to a job that will never exist. After ``older_than_s`` (longer than any
        submission takes) a retry with the key may take it over. Atomic: the key is kept if it
        names another job, the job exists, or the binding is younger. Returns whether it was removed.
        """
        removed = self._release_stale_script(
            keys=[f"{self.prefix}idem:{tenant}:{key}", self._key(job_id)],
            args=[job_id, int(older_than_s * 1000)],
        )
        return bool(removed)

    # --- state changes (each atomic: WATCH + MULTI)

    def _update(
        self,
        job_id: str,
        change: Callable[[Job, dict[str, str]], bool],
        extra: Callable[[Job, Any], None] | None = None,
    ) -> Job | None:
        """Apply ``change`` to the record atomically; it returns False to leave the record alone.

        ``change`` sees the job and the hash's lease fields (``token``, ``tenant``, ``lease_until``);
        ``extra(job, pipe)`` queues more commands into the same transaction. The returned job carries
        its current progress (webhook payloads are built from it). Connection errors are retried
        for ``TRANSACTION_RIDE_OUT_S``: a WATCH is lost with its connection, so the whole transaction
        is run again.
        """
        key = self._key(job_id)
        deadline = time.monotonic() + TRANSACTION_RIDE_OUT_S
        wait = 0.05
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw, progress, token, tenant, lease_until = pipe.hmget(
                        key, ["record", "progress", "token", "tenant", "lease_until"]
                    )
                    if raw is None:
                        pipe.unwatch()
                        return None
                    job = Job.model_validate_json(raw)
                    job.progress = Progress.model_validate_json(progress) if progress else Progress()
                    fields = {
                        "token": _text(token or b""),
                        "tenant": _text(tenant or b""),
                        "lease_until": _text(lease_until or b"0"),
                    }
                    if not change(job, fields):
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
                        progress_json = job.progress.model_dump_json()
                        pipe.hset(key, mapping={"token": "", "lease_until": 0, "progress": progress_json})
                        pipe.expire(key, self.ttl_s)
                        pipe.zrem(self._leases_key, job_id)
                        pipe.zrem(self._waiting_key, job_id)
                        finished_ms = int((job.finished_at or utcnow()).timestamp() * 1000)
                        pipe.zadd(self._finished_key, {f"{fields['tenant']}/{job_id}": finished_ms})
                    if extra is not None:
                        extra(job, pipe)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue
                except TRANSIENT_REDIS_ERRORS:
                    if time.monotonic() > deadline:
                        raise
                    log.warning("job %s: Redis unreachable during a state change; retrying", job_id)
                    pipe.reset()
                    time.sleep(wait)
                    wait = min(2.0, wait * 2)

    @property
    def _leases_key(self) -> str:
        return f"{self.prefix}leases"

    @property
    def _waiting_key(self) -> str:
        return f"{self.prefix}waiting"

    @property
    def _finished_key(self) -> str:
        return f"{self.prefix}finished"

    def start_attempt(self, job_id: str, worker: str = "", lease_s: float = 60.0) -> Attempt | None:
        """Start a new attempt: the job becomes ``running`` under a fresh token and lease.

        Only a ``queued`` job, or a ``running`` one whose lease ran out, can be started: a second
        delivery of a job that another worker is rendering returns None, as does a terminal job.
        """
        token = secrets.token_hex(16)
        now_ms = _redis_now_ms(self.redis)
        lease_until = now_ms + int(lease_s * 1000)

        def change(job: Job, fields: dict[str, str]) -> bool:
            if job.status == JobStatus.RUNNING and int(fields["lease_until"]) > now_ms:
                return False
            if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                return False
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at or utcnow()
            job.attempts += 1
            return True

        def extra(job: Job, pipe: Any) -> None:
            pipe.hset(
                self._key(job_id), mapping={"token": token, "lease_until": lease_until, "worker": worker}
            )
            pipe.zadd(self._leases_key, {job_id: lease_until})
            pipe.zrem(self._waiting_key, job_id)

        job = self._update(job_id, change, extra)
        return Attempt(job, token, lease_until) if job is not None else None

    def renew_lease(self, job_id: str, token: str, lease_s: float) -> int:
        """Extend the attempt's lease by ``lease_s`` from now; returns the new end (Redis ms).

        Raises:
            LeaseLost: another attempt holds the job, or it ended (failed, canceled, expired).
        """
        held, value = self._renew(
            keys=[self._key(job_id), self._leases_key], args=[token, int(lease_s * 1000), job_id]
        )
        if not int(held):
            raise LeaseLost(f"job {job_id}: the attempt no longer holds the job ({_text(value)})")
        return int(value)

    def release_lease(self, job_id: str, token: str) -> None:
        """Give the job back (its attempt stops on a transient error): recovery re-queues it now."""
        if self._fenced(job_id, token, "lease_until", "0"):
            self.redis.zadd(self._leases_key, {job_id: 0}, xx=True)

    def _fenced(self, job_id: str, token: str, field: str, value: str | int, mode: str = "set") -> int:
        return int(self._fenced_write(keys=[self._key(job_id)], args=[token, field, value, mode]))

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: VideoResult | None = None,
        error: JobError | None = None,
        token: str | None = None,
    ) -> Job | None:
        """Record the end of the job; None if it had already ended (or ``token`` no longer holds it)."""
        if not status.is_terminal():
            raise ValueError(f"{status} is not a terminal status")

        def change(job: Job, fields: dict[str, str]) -> bool:
            if job.status.is_terminal() or (token is not None and fields["token"] != token):
                return False
            job.status, job.result, job.error = status, result, error
            job.finished_at = utcnow()
            job.progress.eta_s = None  # an ended job has no ETA (in webhooks too, not only the API)
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

        def change(job: Job, fields: dict[str, str]) -> bool:
            if job.status != JobStatus.QUEUED:
                return False
            job.status = JobStatus.CANCELED
            job.finished_at = utcnow()
            job.progress.eta_s = job.progress.queue_position = None
            job.error = JobError(code="canceled", message="canceled before it started")
            return True

        canceled = self._update(job_id, change)
        if canceled is not None:
            return canceled, True
        return self.get(job_id), False

    def cancel_requested(self, job_id: str) -> bool:
        return _text(self.redis.hget(self._key(job_id), "cancel") or b"0") == "1"

    def set_progress(self, job_id: str, progress: Progress, token: str | None = None) -> None:
        """Record progress; with ``token``, only while that attempt holds the job (else ``LeaseLost``)."""
        if token is None:
            self.redis.hset(self._key(job_id), "progress", progress.model_dump_json())
        elif not self._fenced(job_id, token, "progress", progress.model_dump_json()):
            raise LeaseLost(f"job {job_id}: progress refused, the attempt no longer holds the job")

    def count_chunk_render(self, job_id: str, token: str | None = None) -> int:
        """Count one chunk render (how many chunks a resumed job rendered twice is visible)."""
        if token is None:
            return int(self.redis.hincrby(self._key(job_id), "chunk_renders", 1))
        count = self._fenced(job_id, token, "chunk_renders", 1, mode="incr")
        if not count:
            raise LeaseLost(f"job {job_id}: chunk count refused, the attempt no longer holds the job")
        return count

    def chunk_renders(self, job_id: str) -> int:
        return int(self.redis.hget(self._key(job_id), "chunk_renders") or 0)

    def raw_fields(self, job_id: str) -> dict[str, Any]:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self._key(job_id)).items()}

    # --- recovery and retention

    def expired_leases(self, limit: int = 100) -> builtins.list[str]:
        """Running jobs whose lease ended (by Redis server time), oldest first."""
        now_ms = _redis_now_ms(self.redis)
        ids = self.redis.zrangebyscore(self._leases_key, "-inf", f"({now_ms}", start=0, num=limit)
        return [_text(job_id) for job_id in cast(builtins.list[bytes], ids)]

    def reclaim(self, job_id: str, max_attempts: int) -> Literal["requeue", "failed", "skip"]:
        """Take back a job whose attempt's lease ended: ``queued`` again, or failed out of attempts.

        ``requeue``: the caller must send a queue message (``message_sent``). ``failed``: the job
        ended with ``worker_lost`` (notify). ``skip``: the lease was renewed meanwhile or the job ended.
        """
        now_ms = _redis_now_ms(self.redis)
        outcome: builtins.list[Literal["requeue", "failed"]] = []

        def change(job: Job, fields: dict[str, str]) -> bool:
            if job.status != JobStatus.RUNNING or int(fields["lease_until"]) >= now_ms:
                return False
            if job.attempts >= max_attempts:
                job.status = JobStatus.FAILED
                job.finished_at = utcnow()
                job.error = JobError(
                    code="worker_lost", message=f"the job's worker was lost {job.attempts} times"
                )
                outcome.append("failed")
            else:
                job.status = JobStatus.QUEUED
                outcome.append("requeue")
            return True

        def extra(job: Job, pipe: Any) -> None:
            if job.status == JobStatus.QUEUED:
                pipe.hset(self._key(job_id), mapping={"token": "", "lease_until": 0})
                pipe.zrem(self._leases_key, job_id)
                pipe.zadd(self._waiting_key, {job_id: now_ms})

        if self._update(job_id, change, extra) is None:
            if not self.redis.exists(self._key(job_id)):
                self.redis.zrem(self._leases_key, job_id)  # the record expired: nothing to recover
            return "skip"
        return outcome[0]

    def message_ids(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The latest queue message id of each job (one round trip; jobs without one are left out)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._key(job_id), "message")
            values = pipe.execute()
        return {job_id: _text(value) for job_id, value in zip(job_ids, values, strict=True) if value}

    def message_sent(self, job_id: str, message_id: str) -> None:
        """A new queue message ``message_id`` was sent for the queued job: check it later."""
        check_at_ms = _redis_now_ms(self.redis) + int(MESSAGE_CHECK_AFTER_S * 1000)
        with self.redis.pipeline() as pipe:
            pipe.hset(self._key(job_id), "message", message_id)
            pipe.zadd(self._waiting_key, {job_id: check_at_ms}, xx=True)
            pipe.execute()

    def check_later(self, job_id: str, after_s: float = MESSAGE_RECHECK_S) -> None:
        """The job's message is still on its queue: look again in ``after_s``."""
        check_at_ms = _redis_now_ms(self.redis) + int(after_s * 1000)
        self.redis.zadd(self._waiting_key, {job_id: check_at_ms}, xx=True)

    def waiting_due(self, limit: int = 100) -> builtins.list[tuple[str, str]]:
        """``(job id, latest message id)`` of queued jobs whose message is due for a check.

        Members that are no longer queued (started, ended, expired) are dropped on the way.
        """
        now_ms = _redis_now_ms(self.redis)
        ids = self.redis.zrangebyscore(self._waiting_key, "-inf", now_ms, start=0, num=limit)
        due = []
        for raw in cast(builtins.list[bytes], ids):
            job_id = _text(raw)
            status, message = self.redis.hmget(self._key(job_id), ["status", "message"])
            if _text(status or b"") == JobStatus.QUEUED.value:
                due.append((job_id, _text(message or b"")))
            else:
                self.redis.zrem(self._waiting_key, job_id)
        return due

    def adopt_legacy_requeues(self) -> int:
        """Moves the members of ``{prefix}requeued`` (before ``waiting``) into ``waiting``, due now."""
        legacy = f"{self.prefix}requeued"
        members = cast(builtins.list[bytes], self.redis.zrange(legacy, 0, -1))
        if members:
            self.redis.zadd(self._waiting_key, {_text(m): 0 for m in members})
            self.redis.delete(legacy)
        return len(members)

    def expired_finished(self, older_than_s: float, limit: int = 100) -> builtins.list[tuple[str, str]]:
        """``(tenant, job id)`` of jobs that ended more than ``older_than_s`` ago (retention)."""
        before_ms = _redis_now_ms(self.redis) - int(older_than_s * 1000)
        members = self.redis.zrangebyscore(self._finished_key, "-inf", before_ms, start=0, num=limit)
        rows = []
        for member in cast(builtins.list[bytes], members):
            tenant, _, job_id = _text(member).rpartition("/")
            rows.append((tenant, job_id))
        return rows

    def forget_finished(self, tenant: str, job_id: str) -> None:
        """Drop an expired job from its tenant's index and the retention set (its files are gone)."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(self._index_key(tenant), job_id)
            pipe.zrem(self._finished_key, f"{tenant}/{job_id}")
            pipe.delete(self._key(job_id))
            pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
