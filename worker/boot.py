"""Worker boot: load and warm the engine once, then serve the engine's queue until stopped."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from prometheus_client import CollectorRegistry

from core.jobstore import JobStore
from core.metrics import ParlaMetrics
from core.notify import JobNotifier
from core.queue import JobQueue, queue_name
from core.ratelimit import RateLimiter
from core.settings import Settings
from core.storage import storage_from_settings, video_url
from core.webhook_outbox import WebhookOutbox
from core.webhooks import parse_secrets
from models.engine import Engine
from models.errors import WeightsError
from models.registry import build_engine
from worker import tasks
from worker.metrics import start_metrics_server
from worker.observer import WorkerObserver
from worker.rq_worker import HeartbeatWorker, RecoveryThread
from worker.runner import ChunkRunner
from worker.webhooks import WebhookDispatcher

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
    try:
        engine = build_engine(settings.engine, **options)
    except WeightsError as exc:
        raise SystemExit(f"worker cannot start engine {settings.engine!r}: {exc}") from None
    engine.warmup()
    log.info(
        "engine %s ready in %.1f s (options %s)", settings.engine, time.perf_counter() - started, options
    )
    return engine


def touch_device(device: str) -> bool:
    """Liveness: a tiny operation on the worker's device (a wedged GPU fails or hangs here)."""
    if not device.startswith("cuda"):
        return True
    import torch

    value = torch.ones(1, device=device) + 1
    torch.cuda.synchronize(device)
    return bool(value.item() == 2)


def run_worker(settings: Settings, burst: bool = False) -> None:
    if not settings.redis_url:
        raise SystemExit("PARLA_REDIS_URL is not set: a worker needs the shared Redis")
    engine = load_engine(settings)
    connection = redis.Redis.from_url(settings.redis_url)
    jobs = JobStore(connection, settings.key_prefix, settings.job_ttl_s)
    storage = storage_from_settings(settings)
    metrics = ParlaMetrics(CollectorRegistry())
    queue = JobQueue(connection, settings.max_attempts)
    metrics.set_queue_callbacks(
        lambda: queue.depth([settings.engine]), lambda: queue.in_flight([settings.engine])
    )
    outbox = WebhookOutbox(connection, key_prefix=settings.key_prefix)
    dispatcher: WebhookDispatcher | None = None
    if settings.webhook_secret:
        dispatcher = WebhookDispatcher(
            outbox,
            parse_secrets(settings.webhook_secret),
            timeout_s=settings.webhook_timeout_s,
            retry_schedule_s=settings.webhook_retry_schedule_s,
            on_outcome=metrics.webhook_outcome,
            allow_private_networks=settings.webhook_allow_private_networks,
        )
        dispatcher.run_in_thread()
    notifier = JobNotifier(
        outbox if dispatcher else None,
        metrics,
        lambda job_id: video_url(storage, settings, job_id),
        wake=dispatcher.notify if dispatcher else None,
    )
    limiter = RateLimiter(
        connection,
        submissions_per_minute=settings.submissions_per_minute,
        max_queued_jobs=settings.max_queued_jobs,
        key_prefix=settings.key_prefix,
    )
    observer = WorkerObserver(notifier, jobs, metrics, limiter, engine.name)
    tasks.install_runner(ChunkRunner(engine, jobs, storage, observer))
    device = resolve_device(settings.device)
    metrics_server = (
        start_metrics_server(
            settings.worker_metrics_port, metrics.registry, health_check=lambda: touch_device(device)
        )
        if settings.worker_metrics_port
        else None
    )
    worker = HeartbeatWorker(
        [queue_name(settings.engine)],
        connection=connection,
        lease_s=settings.lease_s,
        heartbeat_s=settings.heartbeat_s,
    )
    recovery = RecoveryThread(
        worker.queues, jobs, interval_s=max(1.0, settings.lease_s / 3), notifier=notifier
    )
    recovery.recover_once()  # jobs orphaned while no worker was up
    recovery.start()
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
    finally:
        recovery.stop()
        tasks.install_runner(None)
        if dispatcher is not None:
            dispatcher.stop(timeout_s=5)
        if metrics_server is not None:
            metrics_server.stop()
