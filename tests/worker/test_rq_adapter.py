"""The rq adapter (worker/rq_worker.py): what it overrides and calls in rq, pinned, and how it behaves.

These fail when an rq upgrade renames or re-signs a method the adapter relies on (rq 3.0 changed
``get_heartbeat_ttl`` and ``maintain_heartbeats``; the old adapter silently stopped heartbeating).
"""

from __future__ import annotations

import inspect
import threading
import time

import pytest
import redis
import rq
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.registry import StartedJobRegistry

from worker.rq_worker import EXECUTION_TTL_S, ParlaWorker


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_rq_methods_the_adapter_overrides_or_calls_keep_their_signatures() -> None:
    assert rq.__version__.split(".")[0] == "3"
    assert parameters(SimpleWorker.get_heartbeat_ttl) == ["self", "job", "working_time"]
    assert parameters(SimpleWorker.request_stop) == ["self", "signum", "frame"]
    assert parameters(SimpleWorker.execute_job) == ["self", "job", "queue"]
    assert parameters(SimpleWorker.heartbeat) == ["self", "timeout", "pipeline"]
    work = parameters(SimpleWorker.work)
    assert {"burst", "with_scheduler", "logging_level"} <= set(work)
    # rq's own bookkeeping of a started job takes its TTL from get_heartbeat_ttl (execution entry)
    source = inspect.getsource(rq.executions.prepare_execution)
    assert "get_heartbeat_ttl(job)" in source
    for name in ("get_heartbeat_ttl", "request_stop", "execute_job"):
        assert parameters(getattr(ParlaWorker, name)) == parameters(getattr(SimpleWorker, name))


_seen: dict[str, float] = {}


def probe_started_registry(queue_name: str, hold_s: float) -> str:
    """A job function: records how far ahead rq's started-registry entry of this job runs."""
    connection = rq.get_current_job().connection  # type: ignore[union-attr]
    registry = StartedJobRegistry(queue_name, connection=connection)
    (entry,) = connection.zrange(registry.key, 0, -1, withscores=True)
    _seen["ahead_s"] = entry[1] - time.time()
    time.sleep(hold_s)
    return "ok"


def test_a_long_job_is_not_abandoned_by_rq_and_the_worker_stays_listed(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = Queue("parla-adapter", connection=connection)
    rq_job = queue.enqueue(probe_started_registry, "parla-adapter", 1.5, job_timeout=-1)
    worker = ParlaWorker([queue], connection=connection, heartbeat_s=0.2, worker_ttl=1)
    listed: list[int] = []

    def watch() -> None:
        for _ in range(5):
            time.sleep(0.25)
            listed.append(len(rq.Worker.all(connection=connection)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    watcher.join()
    assert _seen["ahead_s"] > EXECUTION_TTL_S - 60
    rq_job.refresh()
    assert rq_job.get_status() == "finished" and rq_job.return_value() == "ok"
    assert min(listed) == 1  # listed all along although rq's own worker TTL (1 s) passed mid-job


def test_a_stop_request_is_visible_to_the_boot_loop(redis_url: str) -> None:
    worker = ParlaWorker(["parla-adapter"], connection=redis.Redis.from_url(redis_url))
    assert not worker.stop_requested.is_set()
    with pytest.raises(StopRequested):  # idle: rq stops at once
        worker.request_stop(15, None)
    assert worker.stop_requested.is_set()
