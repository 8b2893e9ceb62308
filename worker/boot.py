"""Worker boot: load and warm the engine once, then serve the engine's queue until stopped."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from core.errors import WeightsError
from core.jobstore import JobStore
from core.media import InputLimits
from core.metrics import ParlaMetrics
from core.notify import JobNotifier
from core.queue import JobQueue, queue_name
from core.ratelimit import RateLimiter
from core.redisconn import redis_client
from core.settings import Settings
from core.storage import storage_from_settings, video_url
from core.webhook_outbox import WebhookOutbox
from core.webhooks import parse_secrets
from core.workers import WorkerRegistry
from models.engine import AnyEngine
from models.registry import build_engine
from worker import tasks
from worker.metrics import start_metrics_server
from worker.observer import WorkerObserver
from worker.recovery import Recovery
from worker.rq_worker import ParlaWorker
from worker.runner import ChunkRunner
from worker.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def load_engine(settings: Settings) -> AnyEngine:
    """Construct and warm up the configured engine (raises with a clear message on missing weights)."""
    options: dict[str, Any] = {"device": resolve_device(settings.device), **settings.engine_config}
    if settings.weights_dir is not None:
        options.setdefault("weights_dir", settings.weights_dir)
    started = time.perf_counter()
    try:
        engine = build_engine(settings.engine, **options)
    except (WeightsError, ValueError) as exc:
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


class Presence:
    """Announces every ``interval_s`` that this worker serves its engine (``core.workers``)."""

    def __init__(
        self, registry: WorkerRegistry, worker: str, engine: str, interval_s: float, card: dict[str, Any]
    ):
        self.registry = registry
        self.worker = worker
        self.engine = engine
        self.interval_s = interval_s
        self.card = card
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="parla-presence", daemon=True)

    def announce(self) -> None:
        self.registry.announce(self.worker, self.engine, ttl_s=3 * self.interval_s + 5, card=self.card)

    def start(self) -> Presence:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.announce()
            except Exception as exc:
                log.warning("worker announcement failed: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.registry.withdraw(self.worker, self.engine)
        except Exception:
            log.warning("could not withdraw the worker's announcement; it runs out by itself")


def serve_queue(
    make_worker: Callable[[int], ParlaWorker], stop_requested: threading.Event, burst: bool
) -> None:
    """Run rq's loop until a stop is requested; restart it (with backoff) when it ends on its own.

    rq's loop quits on a Redis timeout or an unexpected error, e.g. when Redis restarts while a job
    is being finished; the engine stays loaded, so the worker rides the outage out and carries on.
    """
    backoff_s = 1.0
    for generation in itertools.count():
        worker = make_worker(generation)
        try:
            worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
        except Exception as exc:
            log.error("rq worker loop failed: %s: %s", type(exc).__name__, exc)
        else:
            backoff_s = 1.0
        if burst or stop_requested.is_set():
            return
        log.error(
            "rq worker loop ended without a stop request (Redis away?); restarting in %.0f s", backoff_s
        )
        if stop_requested.wait(backoff_s):
            return
        backoff_s = min(30.0, backoff_s * 2)


def run_worker(settings: Settings, burst: bool = False) -> None:
    if not settings.redis_url:
        raise SystemExit("PARLA_REDIS_URL is not set: a worker needs the shared Redis")
    engine = load_engine(settings)
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    connection = redis_client(settings.redis_url, "store", ride_out_s=max(1.0, settings.lease_s / 2))
    queue_connection = redis_client(settings.redis_url, "queue")
    jobs = JobStore(connection, settings.key_prefix, settings.job_ttl_s)
    storage = storage_from_settings(settings)
    metrics = ParlaMetrics(CollectorRegistry())
    queue = JobQueue(queue_connection)
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
        api_url=settings.public_url or f"http://{settings.host}:{settings.port}",
    )
    limiter = RateLimiter(
        connection,
        submissions_per_minute=settings.submissions_per_minute,
        max_queued_jobs=settings.max_queued_jobs,
        key_prefix=settings.key_prefix,
    )
    observer = WorkerObserver(notifier, jobs, metrics, limiter, engine.name)
    tasks.install_runner(
        ChunkRunner(
            engine,
            jobs,
            storage,
            observer,
            worker_name=name,
            lease_s=settings.lease_s,
            heartbeat_s=settings.heartbeat_s,
            limits=InputLimits.from_settings(settings),
            pipelined=settings.pipeline_chunks,
        )
    )
    device = resolve_device(settings.device)
    metrics_server = (
        start_metrics_server(
            settings.worker_metrics_port,
            metrics.registry,
            addr=settings.worker_metrics_host,
            health_check=lambda: touch_device(device),
        )
        if settings.worker_metrics_port
        else None
    )
    presence = Presence(
        WorkerRegistry(connection, settings.key_prefix),
        name,
        settings.engine,
        interval_s=min(settings.heartbeat_s, 5.0),
        card={"device": device, "weights_loaded": True},
    )
    presence.announce()
    presence.start()
    recovery = Recovery(
        jobs,
        queue,
        storage,
        max_attempts=settings.max_attempts,
        retention_s=settings.job_ttl_s,
        interval_s=max(1.0, settings.lease_s / 3),
        notifier=notifier,
    )
    recovery.run_once()  # jobs orphaned while no worker was up
    recovery.start()
    stop_requested = threading.Event()

    def make_worker(generation: int) -> ParlaWorker:
        return ParlaWorker(
            [queue_name(settings.engine)],
            name=f"{name}.{generation}",
            connection=queue_connection,
            heartbeat_s=settings.heartbeat_s,
            stop_requested=stop_requested,
        )

    try:
        serve_queue(make_worker, stop_requested, burst)
    finally:
        recovery.stop()
        presence.stop()
        tasks.install_runner(None)
        if dispatcher is not None:
            dispatcher.stop(timeout_s=5)
        if metrics_server is not None:
            metrics_server.stop()
