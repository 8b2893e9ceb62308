"""The one place where Parla touches rq's worker internals (pinned by tests/worker/test_rq_adapter.py).

rq only carries messages for Parla: which attempt holds a job is decided by the job's lease in its
record (``core.jobstore``, ``worker.lease``), not by rq's started registry, and rq never retries
(``core.queue``). What rq still needs from us:

- ``SimpleWorker`` runs the job in this process (no fork, so the engine stays loaded on the GPU);
- rq's own bookkeeping of the job (its execution entry in the started registry) must not run out
  while a long render goes on, or rq's maintenance would move a healthy job to its failed registry:
  ``get_heartbeat_ttl`` (rq 3: ``(job, working_time)``) returns a long TTL;
- rq's worker key is refreshed during long jobs (``heartbeat``), so ``rq info`` and
  ``Worker.all()`` keep listing a busy worker;
- a stop request (SIGTERM/SIGINT, warm shutdown: finish the job in hand) is visible to the boot
  loop, which otherwise restarts rq's loop after a Redis outage (``stop_requested``).

If a future rq renames or re-signs any of these, the adapter's tests fail.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

from rq import Queue, SimpleWorker
from rq.job import Job as RqJob

log = logging.getLogger(__name__)

EXECUTION_TTL_S = 7 * 24 * 3600
"""rq's view of a running job outlives any render; Parla's lease is what detects a lost worker."""


class ParlaWorker(SimpleWorker):
    """rq ``SimpleWorker`` for Parla's render jobs.

    Args:
        heartbeat_s: how often rq's worker key is refreshed while a job runs.
        stop_requested: set when rq was asked to stop (signal); the boot loop reads it.
    """

    def __init__(
        self,
        *args: Any,
        heartbeat_s: float = 10.0,
        stop_requested: threading.Event | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_s = heartbeat_s
        self.stop_requested = stop_requested or threading.Event()

    def get_heartbeat_ttl(self, job: RqJob, working_time: float = 0.0) -> int:
        return EXECUTION_TTL_S

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def execute_job(self, job: RqJob, queue: Queue) -> None:
        done = threading.Event()

        def keep_listed() -> None:
            while not done.wait(self.heartbeat_s):
                try:
                    self.heartbeat(int(self.heartbeat_s * 3) + 60)
                except Exception as exc:  # only rq's listing depends on it; the job's lease is separate
                    log.warning("rq worker heartbeat failed: %s: %s", type(exc).__name__, exc)

        thread = threading.Thread(target=keep_listed, name="parla-rq-heartbeat", daemon=True)
        thread.start()
        try:
            super().execute_job(job, queue)
        finally:
            done.set()
            thread.join(timeout=5)
