"""Prometheus metrics of the API and the workers, created on a registry the caller owns.

Nothing is registered at import: ``ParlaMetrics(CollectorRegistry())`` in ``create_app`` and in the
worker boot, so tests build as many as they like.

Queue depth and in-flight jobs are global facts stored in Redis, not per-process counts: they are
read by callbacks at scrape time (``set_queue_callbacks``). Only the API sets them; a process
without callbacks exports no sample for them, so with several API replicas every replica reports
the same value and dashboards and KEDA use ``max(...)``, never ``sum(...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# Jobs last from seconds (a short clip on a fast engine) to an hour (long audio, diffusion engine).
JOB_DURATION_BUCKETS_S: Final = (
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
)
QUEUE_WAIT_BUCKETS_S: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
FIRST_CHUNK_BUCKETS_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Render seconds per second of video: ~0.1 for the warp engine, 10 to 100+ for diffusion.
RENDER_RATIO_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
CHUNK_STAGE_BUCKETS_S: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

CHUNK_STAGES: Final = ("prepare", "render", "decode", "encode", "upload")
JOB_FINISH_STATUSES: Final = ("succeeded", "failed", "canceled")
WEBHOOK_OUTCOMES: Final = ("delivered", "retrying", "failed", "dropped")


class _QueueCollector(Collector):
    """Reads queue depth and in-flight count from callbacks (Redis) when Prometheus scrapes."""

    def __init__(self) -> None:
        self.queued: Callable[[], int] | None = None
        self.in_flight: Callable[[], int] | None = None

    def describe(self) -> Iterator[Metric]:
        # Described up front so the registry knows the names (and refuses duplicates).
        yield GaugeMetricFamily("parla_queue_depth", "Jobs waiting in the queue (all replicas, from Redis).")
        yield GaugeMetricFamily("parla_jobs_in_flight", "Jobs being rendered now (all workers, from Redis).")

    def collect(self) -> Iterator[Metric]:
        for name, documentation, callback in (
            ("parla_queue_depth", "Jobs waiting in the queue (all replicas, from Redis).", self.queued),
            ("parla_jobs_in_flight", "Jobs being rendered now (all workers, from Redis).", self.in_flight),
        ):
            if callback is None:
                continue
            try:
                value = float(callback())
            except Exception:  # Redis unreachable: skip the sample, keep the rest of the scrape
                logger.warning("metrics: cannot read %s", name, exc_info=True)
                continue
            yield GaugeMetricFamily(name, documentation, value=value)


class ParlaMetrics:
    """Every Parla metric, registered on ``registry``.

    Attributes are the prometheus-client objects; the helpers below keep label values in the
    documented sets.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs_submitted = Counter(
            "parla_jobs_submitted", "Jobs accepted by the API.", registry=registry
        )  # exported as parla_jobs_submitted_total
        self.jobs_finished = Counter(
            "parla_jobs_finished", "Jobs that reached a terminal status.", ["status"], registry=registry
        )
        self.job_duration = Histogram(
            "parla_job_duration_seconds",
            "From start of rendering to the terminal status.",
            buckets=JOB_DURATION_BUCKETS_S,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "parla_queue_wait_seconds",
            "From submission to a worker starting the job.",
            buckets=QUEUE_WAIT_BUCKETS_S,
            registry=registry,
        )
        self.time_to_first_chunk = Histogram(
            "parla_time_to_first_chunk_seconds",
            "From a worker starting the job to its first stored chunk.",
            buckets=FIRST_CHUNK_BUCKETS_S,
            registry=registry,
        )
        self.render_seconds_per_video_second = Histogram(
            "parla_render_seconds_per_video_second",
            "Wall seconds spent per second of output video, per job.",
            ["engine"],
            buckets=RENDER_RATIO_BUCKETS,
            registry=registry,
        )
        self.chunk_stage = Histogram(
            "parla_chunk_stage_seconds",
            "Seconds per stage: prepare (once per job), render, decode, encode, upload (per chunk).",
            ["stage"],
            buckets=CHUNK_STAGE_BUCKETS_S,
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "parla_webhook_deliveries", "Webhook attempts by outcome.", ["outcome"], registry=registry
        )
        self.input_rejections = Counter(
            "parla_input_rejections",
            "Submissions or jobs refused for bad input, by error code.",
            ["code"],
            registry=registry,
        )
        self.gpu_memory = Gauge(
            "parla_gpu_memory_bytes",
            "GPU memory of this worker: allocated, reserved, and peak allocated since the last job.",
            ["device", "kind"],
            registry=registry,
        )
        self._queue_collector = _QueueCollector()
        registry.register(self._queue_collector)
        for status in JOB_FINISH_STATUSES:
            self.jobs_finished.labels(status=status)
        for stage in CHUNK_STAGES:
            self.chunk_stage.labels(stage=stage)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome=outcome)

    def set_queue_callbacks(self, queued: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Read ``parla_queue_depth`` and ``parla_jobs_in_flight`` from these at scrape time."""
        self._queue_collector.queued = queued
        self._queue_collector.in_flight = in_flight

    def job_finished(self, status: str) -> None:
        """Count a terminal status (``succeeded``, ``failed`` or ``canceled``)."""
        if status not in JOB_FINISH_STATUSES:
            raise ValueError(f"status must be one of {JOB_FINISH_STATUSES}, got {status!r}")
        self.jobs_finished.labels(status=status).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Record one stage timing (``prepare``, ``render``, ``decode``, ``encode``, ``upload``)."""
        if stage not in CHUNK_STAGES:
            raise ValueError(f"stage must be one of {CHUNK_STAGES}, got {stage!r}")
        self.chunk_stage.labels(stage=stage).observe(seconds)

    def webhook_outcome(self, outcome: str) -> None:
        """Count one webhook attempt outcome; pass as ``WebhookDispatcher(on_outcome=...)``."""
        if outcome not in WEBHOOK_OUTCOMES:
            raise ValueError(f"outcome must be one of {WEBHOOK_OUTCOMES}, got {outcome!r}")
        self.webhook_deliveries.labels(outcome=outcome).inc()

    def input_rejected(self, code: str) -> None:
        """Count one refusal for bad input, by its error code (``no_face_found``, ...)."""
        self.input_rejections.labels(code=code).inc()


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """``(body, content type)`` for a ``/metrics`` response."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
