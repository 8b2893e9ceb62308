"""rq worker that keeps the engine loaded and proves it is alive while a long job runs."""

from __future__ import annotations

import logging
import threading
from typing import Any

from rq import Queue, SimpleWorker
from rq.job import Job as RqJob
from rq.registry import FailedJobRegistry, StartedJobRegistry

from core.errors import NotFound
from core.jobs import JobError, JobStatus
from core.jobstore import JobStore
from core.notify import JobNotifier

log = logging.getLogger("parla.worker")


class HeartbeatWorker(SimpleWorker):
    """Runs jobs in its own process (no fork, so the engine stays on the GPU), with a heartbeat.

    rq's SimpleWorker does not heartbeat while a job runs; this one does, every ``heartbeat_s``, and
    keeps the job's entry in the started registry ``lease_s`` ahead. A worker that dies (OOM, node
    loss, kill -9) stops heartbeating; after ``lease_s`` rq's abandoned-job cleanup (run by
    ``RecoveryThread`` in every worker) puts the job back on the queue, where the next worker
    resumes it after its last stored chunk.
    """

    def __init__(self, *args: Any, lease_s: int = 60, heartbeat_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.job_monitoring_interval = max(1, int(heartbeat_s))

    def get_heartbeat_ttl(self, job: RqJob) -> int:
        return self.lease_s

    def execute_job(self, job: RqJob, queue: Queue) -> None:
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_s):
                try:
                    if getattr(self, "execution", None) is not None:
                        self.maintain_heartbeats(job)
                except Exception:  # a missed beat is retried; the job must not die of it
                    log.warning("heartbeat for job %s failed", job.id, exc_info=True)

        thread = threading.Thread(target=beat, name="parla-heartbeat", daemon=True)
        thread.start()
        try:
            super().execute_job(job, queue)
        finally:
            done.set()
            thread.join(timeout=5)


class RecoveryThread(threading.Thread):
    """Every ``interval_s``: re-queue jobs whose worker stopped heartbeating; fail those out of attempts."""

    def __init__(
        self, queues: list[Queue], jobs: JobStore, interval_s: float, notifier: JobNotifier | None = None
    ) -> None:
        super().__init__(name="parla-recovery", daemon=True)
        self.queues = queues
        self.jobs = jobs
        self.notifier = notifier
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.recover_once()
            except Exception:
                log.warning("recovery pass failed", exc_info=True)

    def recover_once(self) -> None:
        for queue in self.queues:
            StartedJobRegistry(queue=queue).cleanup()
            for job_id in FailedJobRegistry(queue=queue).get_job_ids():
                self._fail_if_running(job_id)

    def _fail_if_running(self, job_id: str) -> None:
        try:
            job = self.jobs.get(job_id)
        except NotFound:
            return
        if not job.status.is_terminal():
            log.warning("job %s: worker lost and no attempts left", job_id)
            failed = self.jobs.finish(
                job_id,
                JobStatus.FAILED,
                error=JobError(code="worker_lost", message=f"the worker was lost {job.attempts} times"),
            )
            if failed is not None and self.notifier is not None:
                self.notifier.job_event("video.failed", failed)

    def stop(self) -> None:
        self.stopped.set()
