"""Recovery and retention, run by every worker in a thread.

Each pass:

1. jobs whose lease ran out (their worker died: OOM, kill -9, node loss, or it lost Redis for
   longer than a lease) go back to ``queued`` and get a new queue message, or fail with
   ``worker_lost`` when their attempts are used up;
2. queued jobs whose queue message is lost get a new one: the API died between storing the job and
   sending it, a recoverer died before re-sending it, or a worker took the message and died (or
   lost Redis) before starting the attempt. A message still waiting on its queue is checked again
   later; a duplicate message is harmless (``JobStore.start_attempt`` takes a job once);
3. jobs that ended more than ``PARLA_JOB_TTL_S`` ago lose their files (inputs, segments, chunk
   state, video) and leave their tenant's index.

One bad record never stops a pass: each job is handled on its own, and a failure is logged with
the job id and the pass goes on.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from core.jobs import JobStatus
from core.jobstore import JobStore
from core.notify import JobNotifier
from core.queue import JobQueue
from core.storage import Storage, job_key

log = logging.getLogger(__name__)


class Recovery:
    """One recovery and retention pass at a time (``run_once``), or a thread (``start``).

    Args:
        jobs: job records.
        queue: where re-queued jobs are sent.
        storage: job files (retention deletes them).
        max_attempts: runs of one job before it fails with ``worker_lost``.
        retention_s: how long a finished job's files are kept.
        interval_s: seconds between passes of the thread.
        notifier: webhooks and metrics of jobs that fail here.
    """

    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        storage: Storage,
        *,
        max_attempts: int,
        retention_s: float,
        interval_s: float,
        notifier: JobNotifier | None = None,
    ) -> None:
        self.jobs = jobs
        self.queue = queue
        self.storage = storage
        self.max_attempts = max_attempts
        self.retention_s = retention_s
        self.interval_s = interval_s
        self.notifier = notifier
        self._adopted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="parla-recovery", daemon=True)

    def start(self) -> Recovery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:  # Redis away, say: the next pass tries again
                log.warning("recovery pass failed", exc_info=True)

    def run_once(self) -> None:
        if not self._adopted:
            self.jobs.adopt_legacy_requeues()
            self._adopted = True
        for job_id in self.jobs.expired_leases():
            self._each(job_id, self._reclaim)
        for job_id, message_id in self.jobs.waiting_due():
            self._each(job_id, functools.partial(self._check_message, message_id))
        for tenant, job_id in self.jobs.expired_finished(self.retention_s):
            self._each(job_id, functools.partial(self._delete, tenant))

    def _each(self, job_id: str, handle: Callable[[str], None]) -> None:
        try:
            handle(job_id)
        except Exception:
            log.exception("job %s: recovery could not handle it; the pass goes on", job_id)

    def _reclaim(self, job_id: str) -> None:
        outcome = self.jobs.reclaim(job_id, self.max_attempts)
        if outcome == "requeue":
            log.warning("job %s: its worker stopped renewing the lease; re-queued", job_id)
            self._send(job_id)
        elif outcome == "failed":
            log.error("job %s: worker lost and no attempts left; failed", job_id)
            if self.notifier is not None:
                self.notifier.job_event("video.failed", self.jobs.get(job_id))

    def _check_message(self, message_id: str, job_id: str) -> None:
        if message_id and self.queue.is_waiting(message_id):
            self.jobs.check_later(job_id)
            return
        log.warning("job %s: queued, but its queue message %r is gone; sending a new one", job_id, message_id)
        self._send(job_id)

    def _send(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job.status != JobStatus.QUEUED or job.params.engine is None:
            return
        message_id = self.queue.enqueue(job_id, job.params.engine, first=False)
        self.jobs.message_sent(job_id, message_id)

    def _delete(self, tenant: str, job_id: str) -> None:
        self.storage.delete_prefix(job_key(job_id) + "/")
        self.jobs.forget_finished(tenant, job_id)
        log.info("job %s: files deleted after the retention period", job_id)
