"""The lease of the attempt in flight, kept alive by a thread while the engine renders.

The keeper renews the attempt's lease (``JobStore.renew_lease``) every ``heartbeat_s``. It never
hides a failed renewal: each one is logged at ERROR, and the lease is given up (``lost``) as soon as

- Redis says another attempt holds the job or the job ended (canceled, failed by recovery), or
- no renewal succeeded for long enough that the lease may have run out in Redis (the last good
  renewal's end, minus one heartbeat of safety margin, has passed),

because from then on another worker may be rendering the same job. The runner calls ``check()``
before every chunk and every checkpoint write; a lost lease raises ``LeaseLost`` there and the
attempt stops without writing anything more (its writes are also fenced by token in Redis).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from core.jobstore import JobStore, LeaseLost
from core.logs import in_job_context

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews ``token``'s lease on ``job_id`` until closed.

    Args:
        jobs: the job store.
        job_id: the job.
        token: the attempt's fencing token (``Attempt.token``).
        lease_s: lease length; each renewal extends it this far from now.
        heartbeat_s: renewal interval; must be well below ``lease_s``.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        token: str,
        lease_s: float,
        heartbeat_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < heartbeat_s < lease_s:
            raise ValueError(f"heartbeat_s ({heartbeat_s}) must be > 0 and below lease_s ({lease_s})")
        self.jobs = jobs
        self.job_id = job_id
        self.token = token
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        # Counted from before the attempt started, so the first deadline is conservative.
        self._valid_until = self._clock() + lease_s - heartbeat_s
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=in_job_context(self._run), name=f"parla-lease-{job_id}", daemon=True
        )

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.heartbeat_s + 15)

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def lost(self) -> str | None:
        """Why the lease is lost, or None while it is held."""
        if self._lost is None and self._clock() > self._valid_until:
            self._lose(f"no lease renewal succeeded for {self.lease_s - self.heartbeat_s:.0f} s")
        return self._lost

    def check(self) -> None:
        """Raise ``LeaseLost`` if the attempt may no longer hold its job."""
        reason = self.lost
        if reason is not None:
            raise LeaseLost(f"job {self.job_id}: lease lost: {reason}")

    def renew_once(self) -> None:
        """One renewal (the thread's body; tests call it directly)."""
        if self._lost is not None:
            return
        started = self._clock()
        try:
            self.jobs.renew_lease(self.job_id, self.token, self.lease_s)
        except LeaseLost as exc:
            self._lose(str(exc))
            return
        except Exception as exc:  # Redis unreachable, say: loud, and the deadline keeps running
            left = self._valid_until - self._clock()
            log.error(
                "job %s: lease renewal failed (%s: %s); the attempt stops in %.0f s unless one succeeds",
                self.job_id,
                type(exc).__name__,
                exc,
                max(0.0, left),
            )
            return
        self._valid_until = started + self.lease_s - self.heartbeat_s

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            log.error("job %s: lease lost (%s); this attempt stops rendering now", self.job_id, reason)

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.renew_once()
            if self.lost is not None:
                return
