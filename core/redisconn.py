"""Redis clients for each role, with the timeouts and retries that role needs.

Three roles, never sharing a connection pool:

- ``api``: the API's. Short connect and read timeouts (``timeout_s``), so that an outage is a 503
  within seconds; one quick retry on a connection error replaces a pooled connection that went
  stale when Redis restarted; a timeout is not retried (a hung Redis would only double the wait).
- ``store``: the worker's job records, leases and webhook outbox. Every command is retried with
  exponential backoff for up to ``ride_out_s`` seconds on connection errors and timeouts, so that a
  short Redis restart (AOF on, nothing lost) is ridden out inside the command and the job in hand
  goes on; only a longer outage surfaces as ``redis.exceptions.ConnectionError``.
- ``queue``: rq's own client. rq blocks in ``BLPOP`` for minutes while idle; a socket timeout shorter
  than that makes the dequeue time out, back off and pick up new jobs late, so this pool has no
  read timeout (rq sets its own above the dequeue timeout).
"""

from __future__ import annotations

from typing import Literal

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

Role = Literal["api", "store", "queue"]

TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
"""Errors that mean Redis is (briefly) unreachable, not that a command was wrong."""


def _retries_for(ride_out_s: float, cap_s: float) -> int:
    """Retries of an exponential backoff (base 0.05 s, capped at ``cap_s``) that add up to ``ride_out_s``."""
    waited, wait, retries = 0.0, 0.05, 0
    while waited < ride_out_s:
        waited += min(wait, cap_s)
        wait *= 2
        retries += 1
    return retries


def redis_client(url: str, role: Role, *, ride_out_s: float = 30.0, timeout_s: float = 3.0) -> redis.Redis:
    """A client for ``role`` (see the module docstring).

    Args:
        url: the Redis URL.
        role: ``api``, ``store`` or ``queue``.
        ride_out_s: for ``store``: how long one command keeps retrying through an outage.
        timeout_s: for ``api``: connect and read timeout.
    """
    if role == "api":
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), 1, (RedisConnectionError,)),
        )
    if role == "queue":
        return redis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=5, health_check_interval=30
        )
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=_retries_for(ride_out_s, 2.0))
    return redis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=2,
        retry=retry,
        retry_on_error=list(TRANSIENT_REDIS_ERRORS),
        health_check_interval=30,
    )
