"""Worker boot: load and warm the engine once, then serve the engine's queue until stopped."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from core.jobstore import JobStore
from core.queue import queue_name
from core.settings import Settings
from core.storage import storage_from_settings
from models.engine import Engine
from models.registry import build_engine
from worker import tasks
from worker.rq_worker import HeartbeatWorker, RecoveryThread
from worker.runner import ChunkRunner, RunnerObserver

log = logging.getLogger("parla.worker")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def load_engine(settings: Settings) -> Engine:
    """Construct and warm up the configured engine (raises with a clear message on missing weights)."""
    options: dict[str, Any] = {"device": resolve_device(settings.device), **settings.engine_options}
    if settings.weights_dir is not None:
        options.setdefault("weights_dir", settings.weights_dir)
    started = time.perf_counter()
    engine = build_engine(settings.engine, **options)
    engine.warmup()
    log.info(
        "engine %s ready in %.1f s (options %s)", settings.engine, time.perf_counter() - started, options
    )
    return engine


def run_worker(settings: Settings, observer: RunnerObserver | None = None, burst: bool = False) -> None:
    if not settings.redis_url:
        raise SystemExit("PARLA_REDIS_URL is not set: a worker needs the shared Redis")
    engine = load_engine(settings)
    connection = redis.Redis.from_url(settings.redis_url)
    jobs = JobStore(connection, settings.key_prefix, settings.job_ttl_s)
    tasks.install_runner(ChunkRunner(engine, jobs, storage_from_settings(settings), observer))
    worker = HeartbeatWorker(
        [queue_name(settings.engine)],
        connection=connection,
        lease_s=settings.lease_s,
        heartbeat_s=settings.heartbeat_s,
    )
    recovery = RecoveryThread(worker.queues, jobs, interval_s=max(1.0, settings.lease_s / 3))
    recovery.recover_once()  # jobs orphaned while no worker was up
    recovery.start()
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        recovery.stop()
        tasks.install_runner(None)
