"""The worker's runner observer: job events to webhooks, limits and metrics; stage timings to metrics."""

from __future__ import annotations

import logging
import sys

from core.jobs import Job, JobStatus, utcnow
from core.jobstore import JobStore
from core.metrics import ParlaMetrics
from core.notify import JobNotifier
from core.ratelimit import RateLimiter

log = logging.getLogger(__name__)


class WorkerObserver:
    """Implements ``worker.runner.RunnerObserver``.

    Args:
        notifier: webhook deliveries and the finished-jobs counter.
        jobs: job records (tenant lookups).
        metrics: the worker's metrics (None: off).
        limiter: frees the tenant's queued-job slot when a job starts (None: no limits).
        engine: engine name, a label of the render-speed histogram.
    """

    def __init__(
        self,
        notifier: JobNotifier,
        jobs: JobStore,
        metrics: ParlaMetrics | None = None,
        limiter: RateLimiter | None = None,
        engine: str = "",
    ) -> None:
        self.notifier = notifier
        self.jobs = jobs
        self.metrics = metrics
        self.limiter = limiter
        self.engine = engine

    def job_event(self, event_type: str, job: Job) -> None:
        try:
            if event_type == "video.started" and self.limiter is not None:
                tenant = self.jobs.tenant_of(job.id)
                if tenant is not None:
                    self.limiter.release_queued(tenant, job.id)
            if self.metrics is not None:
                self._observe(event_type, job)
        except Exception:
            log.exception("job %s: observing %s failed", job.id, event_type)
        self.notifier.job_event(event_type, job)

    def chunk_stored(self, job: Job, index: int, start: int, stop: int) -> None:
        self.notifier.chunk_stored(job, index, start, stop)

    def _observe(self, event_type: str, job: Job) -> None:
        assert self.metrics is not None
        if event_type == "video.started" and job.started_at is not None:
            self.metrics.queue_wait.observe((job.started_at - job.created_at).total_seconds())
        elif event_type == "video.progress" and job.progress.chunks_done == 1 and job.started_at is not None:
            self.metrics.time_to_first_chunk.observe((utcnow() - job.started_at).total_seconds())
        elif job.status.is_terminal() and job.started_at is not None and job.finished_at is not None:
            elapsed = (job.finished_at - job.started_at).total_seconds()
            self.metrics.job_duration.observe(elapsed)
            if job.status == JobStatus.SUCCEEDED and job.result is not None and job.result.duration_s > 0:
                ratio = elapsed / job.result.duration_s
                self.metrics.render_seconds_per_video_second.labels(engine=self.engine).observe(ratio)
            self._gpu_memory()

    def _gpu_memory(self) -> None:
        torch = sys.modules.get("torch")  # only when the engine already loaded torch
        if torch is None or not torch.cuda.is_available() or self.metrics is None:
            return
        device = str(torch.cuda.current_device())
        self.metrics.gpu_memory.labels(device=device, kind="allocated").set(torch.cuda.memory_allocated())
        self.metrics.gpu_memory.labels(device=device, kind="reserved").set(torch.cuda.memory_reserved())
        self.metrics.gpu_memory.labels(device=device, kind="peak").set(torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()

    def stage_seconds(self, stage: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_stage(stage, seconds)
