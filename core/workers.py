"""Which engines live workers serve: each worker announces itself every few seconds with a TTL.

Keys (``P`` is the key prefix):

- ``P engines`` set: every engine name a worker ever announced;
- ``P engine:<name>:workers`` sorted set: worker names by the end of their announcement (ms);
- ``P worker:<name>`` string: the worker's JSON card (engine, device, weights loaded, ...), with a TTL.

The API refuses jobs for an engine no live worker serves (``engine_unavailable``) instead of letting
them wait forever on a queue nobody listens to, and ``GET /v1/engines`` lists what is served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

import redis


class WorkerRegistry:
    """Announcements of live workers.

    Args:
        client: a redis-py client.
        key_prefix: prefix of every key this class writes.
        clock: unix seconds (tests pass their own).
    """

    def __init__(
        self, client: redis.Redis, key_prefix: str = "parla:", clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = client
        self.prefix = key_prefix
        self.clock = clock

    def _workers_key(self, engine: str) -> str:
        return f"{self.prefix}engine:{engine}:workers"

    def _card_key(self, worker: str) -> str:
        return f"{self.prefix}worker:{worker}"

    def announce(self, worker: str, engine: str, ttl_s: float, card: dict[str, Any] | None = None) -> None:
        """Say that ``worker`` serves ``engine`` for the next ``ttl_s`` seconds."""
        until_ms = int((self.clock() + ttl_s) * 1000)
        payload = json.dumps({"worker": worker, "engine": engine, **(card or {})})
        with self.redis.pipeline() as pipe:
            pipe.sadd(f"{self.prefix}engines", engine)
            pipe.zadd(self._workers_key(engine), {worker: until_ms})
            pipe.set(self._card_key(worker), payload, px=max(1, int(ttl_s * 1000)))
            pipe.execute()

    def withdraw(self, worker: str, engine: str) -> None:
        """The worker stops serving (clean shutdown)."""
        with self.redis.pipeline() as pipe:
            pipe.zrem(self._workers_key(engine), worker)
            pipe.delete(self._card_key(worker))
            pipe.execute()

    def live_workers(self, engine: str) -> list[str]:
        """Workers whose announcement for ``engine`` has not run out."""
        now_ms = int(self.clock() * 1000)
        key = self._workers_key(engine)
        self.redis.zremrangebyscore(key, "-inf", f"({now_ms}")
        return sorted(_text(name) for name in cast(list[bytes], self.redis.zrange(key, 0, -1)))

    def is_served(self, engine: str) -> bool:
        """Whether at least one live worker serves ``engine``."""
        now_ms = int(self.clock() * 1000)
        return bool(self.redis.zcount(self._workers_key(engine), now_ms, "+inf"))

    def cards(self, engine: str) -> list[dict[str, Any]]:
        """The JSON cards of ``engine``'s live workers."""
        names = self.live_workers(engine)
        if not names:
            return []
        raw = self.redis.mget([self._card_key(name) for name in names])
        return [json.loads(item) for item in cast(list[bytes | None], raw) if item is not None]

    def served_engines(self) -> list[str]:
        """Engines with at least one live worker, sorted."""
        names = sorted(_text(name) for name in cast(set[bytes], self.redis.smembers(f"{self.prefix}engines")))
        return [name for name in names if self.is_served(name)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
