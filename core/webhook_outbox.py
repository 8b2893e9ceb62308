"""The webhook outbox: every delivery is written to Redis before anyone tries to send it.

Keys (``P`` is the key prefix, ``parla:`` by default):

- ``P webhook:delivery:<id>`` hash: the delivery (job id, type, url, body bytes, attempts, state...);
- ``P webhook:job:<job_id>`` list: the job's delivery ids in creation order (its delivery log);
- ``P webhook:due`` sorted set: pending delivery ids scored by next attempt time (unix seconds);
- ``P webhook:progress:<job_id>``, ``P webhook:chunk:<job_id>``: the throttle markers of
  ``video.progress`` and ``video.chunk`` (each expires after its interval);
- ``P webhook:gone:<job_id>`` set: URLs that answered 410 for this job (never sent to again).

A dispatcher *claims* due ids with one Lua script that also pushes their score ``lease_s`` into the
future and stamps a claim token on the hash; two dispatchers therefore never hold the same attempt,
and an attempt whose dispatcher died becomes due again when the lease runs out. The result of an
attempt is recorded only by the holder of the current token, so a dispatcher that outlived its
lease cannot overwrite what the next one recorded. Delivery is at-least-once: receivers
de-duplicate on ``webhook-id``.

Progress and chunk events (``core.webhooks.STREAM_WEBHOOK_EVENTS``) are throttled *here*, in
``enqueue`` (at most one of each type per job per ``progress_min_interval_s`` and
``chunk_min_interval_s``; the rest are not stored at all), are not listed in the job's delivery log
(a long job would swamp it), and expire from Redis after ``progress_ttl_s`` whether sent or not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from core.webhooks import EVENT_CHUNK, STREAM_WEBHOOK_EVENTS, build_event, encode_event, format_timestamp

DeliveryState = Literal["pending", "delivered", "failed", "dropped"]

_CLAIM_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', key, 'claim', ARGV[4])
    table.insert(claimed, id)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""

# KEYS: delivery hash, due set. ARGV: token, state, last_status, next_at ('' = not pending),
# now, delivery id, count_attempt ('1'/'0').
_RECORD_SCRIPT = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'last_status', ARGV[3], 'next_attempt_at', ARGV[4],
           'updated_at', ARGV[5], 'claim', '')
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[6])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
end
return 1
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _iso(epoch_s: float) -> str:
    return format_timestamp(datetime.fromtimestamp(epoch_s, UTC))


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as stored in the outbox.

    Attributes:
        id: ``msg_<uuid hex>``, sent as ``webhook-id`` on every attempt.
        job_id: the job the event is about.
        type: the event type (``video.succeeded``, ...).
        url: where it goes.
        body: the serialised envelope, exactly the bytes that are signed and sent.
        terminal: retried persistently when True; a single best-effort attempt when False.
        attempts: attempts recorded so far.
        last_status: HTTP status code of the last attempt, or an error string
            (``timeout``, ``connection_error: ...``, ``gone_before_send``); None before any attempt.
        state: ``pending``, ``delivered``, ``failed`` (gave up) or ``dropped`` (receiver said 410).
        next_attempt_at: unix seconds of the next attempt while pending, else None.
        created_at: unix seconds of ``enqueue``.
        claim: the token of the dispatcher holding the current attempt ('' when none).
    """

    id: str
    job_id: str
    type: str
    url: str
    body: bytes
    terminal: bool
    attempts: int
    last_status: int | str | None
    state: DeliveryState
    next_attempt_at: float | None
    created_at: float
    claim: str

    @classmethod
    def from_hash(cls, fields: Mapping[Any, Any]) -> Delivery:
        values = {_text(key): value for key, value in fields.items()}
        body = values["body"]
        last_status_text = _text(values.get("last_status", ""))
        next_text = _text(values.get("next_attempt_at", ""))
        last_status: int | str | None = None
        if last_status_text.isdigit():
            last_status = int(last_status_text)
        elif last_status_text:
            last_status = last_status_text
        state = _text(values["state"])
        if state not in ("pending", "delivered", "failed", "dropped"):
            raise ValueError(f"corrupt webhook delivery state {state!r}")
        return cls(
            id=_text(values["id"]),
            job_id=_text(values["job_id"]),
            type=_text(values["type"]),
            url=_text(values["url"]),
            body=body if isinstance(body, bytes) else str(body).encode("utf-8"),
            terminal=_text(values["terminal"]) == "1",
            attempts=int(_text(values.get("attempts", "0"))),
            last_status=last_status,
            state=state,  # type: ignore[arg-type]  # checked just above
            next_attempt_at=float(next_text) if next_text else None,
            created_at=float(_text(values["created_at"])),
            claim=_text(values.get("claim", "")),
        )

    def log_entry(self) -> dict[str, Any]:
        """The job JSON's view: id, type, attempts, last_status, state, next_attempt_at, created_at."""
        return {
            "id": self.id,
            "type": self.type,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "state": self.state,
            "next_attempt_at": _iso(self.next_attempt_at) if self.next_attempt_at is not None else None,
            "created_at": _iso(self.created_at),
        }


class WebhookOutbox:
    """Durable webhook deliveries in Redis, shared by every dispatcher.

    Args:
        redis_client: a redis-py client (``decode_responses`` either way).
        key_prefix: prefix of every key this class writes.
        progress_min_interval_s: at most one ``video.progress`` delivery per job per this many seconds.
        chunk_min_interval_s: at most one ``video.chunk`` delivery per job per this many seconds.
        progress_ttl_s: how long a progress or chunk delivery is kept (sent or not): a stale one
            is worthless.
        retention_s: how long other deliveries (and the job's log) are kept; longer than any
            retry schedule.
        clock: unix time source (tests pass their own).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        key_prefix: str = "parla:",
        progress_min_interval_s: float = 1.0,
        chunk_min_interval_s: float = 1.0,
        progress_ttl_s: float = 600.0,
        retention_s: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if progress_min_interval_s < 0 or chunk_min_interval_s < 0:
            raise ValueError(
                "progress_min_interval_s and chunk_min_interval_s must be >= 0, got "
                f"{progress_min_interval_s}, {chunk_min_interval_s}"
            )
        if progress_ttl_s <= 0 or retention_s <= 0:
            raise ValueError(
                f"progress_ttl_s and retention_s must be > 0, got {progress_ttl_s}, {retention_s}"
            )
        self.redis = redis_client
        self.key_prefix = key_prefix
        self.progress_min_interval_s = progress_min_interval_s
        self.chunk_min_interval_s = chunk_min_interval_s
        self.progress_ttl_s = progress_ttl_s
        self.retention_s = retention_s
        self.clock = clock
        self._claim_script = redis_client.register_script(_CLAIM_SCRIPT)
        self._record_script = redis_client.register_script(_RECORD_SCRIPT)

    # Keys ---------------------------------------------------------------------------------------
    @property
    def due_key(self) -> str:
        return f"{self.key_prefix}webhook:due"

    def delivery_key(self, delivery_id: str) -> str:
        return f"{self.key_prefix}webhook:delivery:{delivery_id}"

    def job_log_key(self, job_id: str) -> str:
        return f"{self.key_prefix}webhook:job:{job_id}"

    def _throttle_key(self, event_type: str, job_id: str) -> str:
        # video.progress -> webhook:progress:<job>, video.chunk -> webhook:chunk:<job>
        return f"{self.key_prefix}webhook:{event_type.removeprefix('video.')}:{job_id}"

    def _gone_key(self, job_id: str) -> str:
        return f"{self.key_prefix}webhook:gone:{job_id}"

    # Producer side ------------------------------------------------------------------------------
    def should_send_progress(self, job_id: str) -> bool:
        """Take the job's progress slot: True at most once per ``progress_min_interval_s`` per job.

        Atomic across processes (``SET NX PX``). ``enqueue`` calls it for ``video.progress``.
        """
        return self._take_slot("video.progress", job_id, self.progress_min_interval_s)

    def should_send_chunk(self, job_id: str) -> bool:
        """Take the job's chunk slot: True at most once per ``chunk_min_interval_s`` per job (``SET NX PX``)."""
        return self._take_slot(EVENT_CHUNK, job_id, self.chunk_min_interval_s)

    def _take_slot(self, event_type: str, job_id: str, interval_s: float) -> bool:
        if interval_s == 0:
            return True
        interval_ms = max(1, int(interval_s * 1000))
        return bool(self.redis.set(self._throttle_key(event_type, job_id), "1", nx=True, px=interval_ms))

    def enqueue(
        self,
        job_id: str,
        event_type: str,
        url: str,
        data: Mapping[str, Any],
        *,
        terminal: bool,
        occurred_at: datetime | None = None,
    ) -> str | None:
        """Record a delivery of ``event_type`` for ``job_id`` to ``url``, due now.

        Args:
            job_id: the job the event is about.
            event_type: one of ``core.webhooks.ALL_WEBHOOK_EVENTS``.
            url: the job's webhook URL (validated by the API).
            data: the job JSON, the envelope's ``data``.
            terminal: retried persistently when True; a single best-effort attempt when False.
            occurred_at: when the event happened; now when omitted.

        Returns:
            The delivery id (``msg_<uuid hex>``), or None when a progress or chunk event was
            throttled away and nothing was stored.
        """
        is_stream = event_type in STREAM_WEBHOOK_EVENTS
        if is_stream and not terminal:
            taken = (
                self.should_send_chunk(job_id)
                if event_type == EVENT_CHUNK
                else self.should_send_progress(job_id)
            )
            if not taken:
                return None
        body = encode_event(build_event(event_type, data, occurred_at=occurred_at))
        delivery_id = f"msg_{uuid.uuid4().hex}"
        now = self.clock()
        ttl_ms = int((self.progress_ttl_s if is_stream else self.retention_s) * 1000)
        key = self.delivery_key(delivery_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "id": delivery_id,
                "job_id": job_id,
                "type": event_type,
                "url": url,
                "body": body,
                "terminal": "1" if terminal else "0",
                "attempts": 0,
                "last_status": "",
                "state": "pending",
                "next_attempt_at": repr(now),
                "created_at": repr(now),
                "updated_at": repr(now),
                "claim": "",
            },
        )
        pipe.pexpire(key, ttl_ms)
        if not is_stream:
            pipe.rpush(self.job_log_key(job_id), delivery_id)
            pipe.pexpire(self.job_log_key(job_id), ttl_ms)
        pipe.zadd(self.due_key, {delivery_id: now})
        pipe.execute()
        return delivery_id

    # Reading ------------------------------------------------------------------------------------
    def get(self, delivery_id: str) -> Delivery | None:
        """The stored delivery, or None when unknown or expired."""
        fields = self.redis.hgetall(self.delivery_key(delivery_id))
        return Delivery.from_hash(fields) if fields else None

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's delivery log (progress and chunk events excluded), oldest first, for the job JSON."""
        ids = [_text(item) for item in self.redis.lrange(self.job_log_key(job_id), 0, -1)]
        entries = []
        for delivery_id in ids:
            delivery = self.get(delivery_id)
            if delivery is not None:
                entries.append(delivery.log_entry())
        return entries

    def deliveries_many(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """``deliveries`` of several jobs in two round trips (the logs, then every delivery hash)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.lrange(self.job_log_key(job_id), 0, -1)
            logs = [[_text(item) for item in ids] for ids in pipe.execute()]
        with self.redis.pipeline(transaction=False) as pipe:
            for ids in logs:
                for delivery_id in ids:
                    pipe.hgetall(self.delivery_key(delivery_id))
            hashes = iter(pipe.execute())  # an empty pipeline sends nothing
        entries: dict[str, list[dict[str, Any]]] = {}
        for job_id, ids in zip(job_ids, logs, strict=True):
            fields = [next(hashes) for _ in ids]
            entries[job_id] = [Delivery.from_hash(f).log_entry() for f in fields if f]
        return entries

    def pending_count(self) -> int:
        """Deliveries waiting for an attempt (due now or later, claimed or not)."""
        return int(self.redis.zcard(self.due_key))

    # Dispatcher side ----------------------------------------------------------------------------
    def claim_due(
        self, *, now: float | None = None, limit: int = 32, lease_s: float = 60.0
    ) -> tuple[str, list[str]]:
        """Atomically claim up to ``limit`` deliveries due at ``now`` for ``lease_s`` seconds.

        The lease runs from the later of ``now`` and the clock, so a long dispatcher pass that
        keeps claiming with the ``now`` it started with still gets full leases.

        Returns:
            ``(claim_token, delivery_ids)``; pass the token to ``record_attempt``.
        """
        if limit < 1 or lease_s <= 0:
            raise ValueError(f"limit must be >= 1 and lease_s > 0, got {limit}, {lease_s}")
        current = self.clock()
        moment = current if now is None else now
        token = uuid.uuid4().hex
        ids = self._claim_script(
            keys=[self.due_key],
            args=[repr(moment), repr(max(moment, current) + lease_s), limit, token, self.delivery_key("")],
        )
        return token, [_text(item) for item in ids]

    def record_attempt(
        self,
        delivery_id: str,
        claim_token: str,
        *,
        state: DeliveryState,
        last_status: int | str,
        next_attempt_at: float | None = None,
        now: float | None = None,
        count_attempt: bool = True,
    ) -> bool:
        """Record the outcome of a claimed attempt (and reschedule it when ``state`` is pending).

        Returns:
            False when ``claim_token`` no longer holds the delivery (the lease ran out and another
            dispatcher took it): nothing is written then.
        """
        if (state == "pending") != (next_attempt_at is not None):
            raise ValueError("next_attempt_at is required for pending and only for pending")
        moment = self.clock() if now is None else now
        written = self._record_script(
            keys=[self.delivery_key(delivery_id), self.due_key],
            args=[
                claim_token,
                state,
                str(last_status),
                repr(next_attempt_at) if next_attempt_at is not None else "",
                repr(moment),
                delivery_id,
                "1" if count_attempt else "0",
            ],
        )
        return bool(written)

    def release_finished(self, delivery_id: str) -> None:
        """Take a delivery that is no longer pending off the due set (a stray id after a race)."""
        self.redis.zrem(self.due_key, delivery_id)

    def mark_gone(self, job_id: str, url: str) -> None:
        """Remember that ``url`` answered 410 for this job: later events of the job are not sent."""
        key = self._gone_key(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(key, url)
        pipe.pexpire(key, int(self.retention_s * 1000))
        pipe.execute()

    def is_gone(self, job_id: str, url: str) -> bool:
        """Whether ``url`` answered 410 for this job before."""
        return bool(self.redis.sismember(self._gone_key(job_id), url))
