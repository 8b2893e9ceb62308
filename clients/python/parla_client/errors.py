"""The SDK's errors: one base, the API's answers with their machine-readable codes, and failed jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parla_client.models import Job


class ParlaError(Exception):
    """Base of every error this package raises."""


class APIError(ParlaError):
    """The API answered with an error (``{"error": {"code", "message"}}``).

    Attributes:
        status_code: the HTTP status.
        code: the API's machine-readable code (``invalid_params``, ``job_not_found``, ...).
        message: the API's explanation.
        retry_after_s: the ``Retry-After`` the API sent (429, 503), if any.
    """

    def __init__(self, status_code: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class JobFailed(ParlaError):
    """A job ended without a video (``failed`` or ``canceled``); ``job`` is its last state."""

    def __init__(self, job: Job) -> None:
        reason = f"{job.error.code}: {job.error.message}" if job.error else "no error recorded"
        super().__init__(f"job {job.id} {job.status}: {reason}")
        self.job = job


class WaitTimeout(ParlaError):
    """``wait`` gave up before the job ended; ``job`` is its last state seen."""

    def __init__(self, job: Job, timeout_s: float) -> None:
        super().__init__(f"job {job.id} still {job.status} after {timeout_s:g} s")
        self.job = job
