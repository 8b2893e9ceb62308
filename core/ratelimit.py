"""Per-tenant admission limits kept in Redis, so that every API replica enforces the same numbers.

Two limits, each checked and recorded by one Lua script (atomic across replicas):

- submissions per minute: a sliding window (``P ratelimit:submissions:<tenant>``, a sorted set of
  submission times; entries older than the window are trimmed on every call);
- concurrent queued jobs: ``P ratelimit:queued:<tenant>``, a sorted set of the tenant's queued job
  ids scored by when they were admitted. The API's ``admit`` takes a slot on submit (``acquire_queued``
  takes one alone) and ``release_queued`` gives it back when the job leaves ``queued`` (started,
  canceled, failed, or its submission rolled back). Members older than
  ``stale_queued_after_s`` are pruned, so a job lost between acquire and release (an API replica
  killed mid-request) cannot hold its slot forever.

``admit`` checks both and records both or neither: a submission refused for the queue limit does
not use up a slot of the per-minute window. A refusal carries ``retry_after_s`` for the 429's
``Retry-After`` header.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import redis

LimitName = Literal["submissions_per_minute", "queued_jobs"]

WINDOW_S: Final = 60.0

# KEYS: submissions zset, queued zset.
# ARGV: now, window_s, per_minute (0 = off), max_queued (0 = off), job_id ('' = no queue slot),
#       submission member ('' = do not count a submission), stale_before, queued_retry_after_s.
# Returns {allowed (1/0), which limit refused ('' when allowed), retry_after_s (string), limit}.
_ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local per_minute = tonumber(ARGV[3])
local max_queued = tonumber(ARGV[4])
local job_id = ARGV[5]
local member = ARGV[6]
if member ~= '' and per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= per_minute then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 'submissions_per_minute', tostring(tonumber(oldest[2]) + window - now), per_minute}
  end
end
if job_id ~= '' and max_queued > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
  if not redis.call('ZSCORE', KEYS[2], job_id) and redis.call('ZCARD', KEYS[2]) >= max_queued then
    return {0, 'queued_jobs', ARGV[8], max_queued}
  end
end
if member ~= '' and per_minute > 0 then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
end
if job_id ~= '' and max_queued > 0 then
  if not redis.call('ZSCORE', KEYS[2], job_id) then redis.call('ZADD', KEYS[2], now, job_id) end
  redis.call('PEXPIRE', KEYS[2], math.ceil((now - tonumber(ARGV[7])) * 1000))
end
return {1, '', '0', 0}
"""


@dataclass(frozen=True)
class RateLimitDecision:
    """The answer to one admission request.

    Attributes:
        allowed: whether the request may go ahead (and was recorded).
        limit_name: which limit refused it (None when allowed).
        limit: the value of that limit (0 when allowed).
        retry_after_s: whole seconds the client should wait (0 when allowed); the API's 429
            ``Retry-After``.
    """

    allowed: bool
    limit_name: LimitName | None = None
    limit: int = 0
    retry_after_s: int = 0


ALLOWED: Final = RateLimitDecision(allowed=True)


class RateLimiter:
    """Per-tenant submission rate and queued-job limits.

    Args:
        redis_client: a redis-py client.
        submissions_per_minute: submissions a tenant may make in any 60 s; 0 disables the limit.
        max_queued_jobs: jobs a tenant may have waiting in the queue at once; 0 disables the limit.
        key_prefix: prefix of every key this class writes.
        queued_retry_after_s: ``Retry-After`` suggested when the queue limit refuses (the queue
            drains at render speed, which this class cannot know).
        stale_queued_after_s: a queued slot older than this is considered leaked and freed.
        clock: unix time source.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        submissions_per_minute: int = 60,
        max_queued_jobs: int = 100,
        key_prefix: str = "parla:",
        queued_retry_after_s: int = 30,
        stale_queued_after_s: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if submissions_per_minute < 0 or max_queued_jobs < 0:
            raise ValueError(
                f"limits must be >= 0 (0 = off), got submissions_per_minute={submissions_per_minute}, "
                f"max_queued_jobs={max_queued_jobs}"
            )
        if queued_retry_after_s < 1 or stale_queued_after_s <= 0:
            raise ValueError("queued_retry_after_s must be >= 1 and stale_queued_after_s > 0")
        self.redis = redis_client
        self.submissions_per_minute = submissions_per_minute
        self.max_queued_jobs = max_queued_jobs
        self.key_prefix = key_prefix
        self.queued_retry_after_s = queued_retry_after_s
        self.stale_queued_after_s = stale_queued_after_s
        self.clock = clock
        self._admit_script = redis_client.register_script(_ADMIT_SCRIPT)

    def _submissions_key(self, tenant: str) -> str:
        return f"{self.key_prefix}ratelimit:submissions:{tenant}"

    def _queued_key(self, tenant: str) -> str:
        return f"{self.key_prefix}ratelimit:queued:{tenant}"

    def _run(self, tenant: str, *, job_id: str | None, count_submission: bool) -> RateLimitDecision:
        now = self.clock()
        allowed, limit_name, retry_after, limit = self._admit_script(
            keys=[self._submissions_key(tenant), self._queued_key(tenant)],
            args=[
                repr(now),
                repr(WINDOW_S),
                self.submissions_per_minute,
                self.max_queued_jobs,
                job_id or "",
                f"{now!r}:{uuid.uuid4().hex}" if count_submission else "",
                repr(now - self.stale_queued_after_s),
                self.queued_retry_after_s,
            ],
        )
        if int(allowed):
            return ALLOWED
        name = limit_name.decode() if isinstance(limit_name, bytes) else str(limit_name)
        wait = float(retry_after.decode() if isinstance(retry_after, bytes) else retry_after)
        return RateLimitDecision(
            allowed=False,
            limit_name=name,  # type: ignore[arg-type]  # the script returns one of the two names
            limit=int(limit),
            retry_after_s=max(1, math.ceil(wait)),
        )

    def admit(self, tenant: str, job_id: str) -> RateLimitDecision:
        """Check and record one submission and its queued slot together (both or neither)."""
        return self._run(tenant, job_id=job_id, count_submission=True)

    def check_submission(self, tenant: str) -> RateLimitDecision:
        """Check and record one submission against the per-minute window only."""
        return self._run(tenant, job_id=None, count_submission=True)

    def acquire_queued(self, tenant: str, job_id: str) -> RateLimitDecision:
        """Take a queued-job slot for ``job_id`` (idempotent: a job already holding one is allowed)."""
        return self._run(tenant, job_id=job_id, count_submission=False)

    def release_queued(self, tenant: str, job_id: str) -> None:
        """Free ``job_id``'s queued slot (no-op when it holds none)."""
        self.redis.zrem(self._queued_key(tenant), job_id)

    def queued_count(self, tenant: str) -> int:
        """How many queued slots ``tenant`` holds now (stale ones excluded)."""
        stale_before = self.clock() - self.stale_queued_after_s
        return int(self.redis.zcount(self._queued_key(tenant), f"({stale_before!r}", "+inf"))
