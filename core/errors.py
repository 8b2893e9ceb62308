"""The error tree of the API, the worker and the engines (torch-free).

Each error carries a machine-readable ``code``, the HTTP status the API answers, and ``retryable``.
"""

from __future__ import annotations

from typing import Any


class ParlaError(Exception):
    """Base of Parla's errors.

    ``retryable`` sorts the infrastructure's transient faults (storage or Redis briefly away: the
    job is given back and resumes from its last checkpoint) from everything else (the caller's
    fault, or a real failure: the job fails once, with its code).
    """

    code = "internal_error"
    status_code = 500
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(ParlaError):
    """The caller's fault: bad file, bad parameter. Answered with a 4xx (422 unless told otherwise).

    Engines raise it too (in the worker it fails the job once, with its code): ``no_face_found``,
    ``face_not_found``, ``face_too_small``, ``face_not_frontal``, ``invalid_image``,
    ``invalid_driving_video``, ``invalid_params``.
    """

    code = "invalid_input"
    status_code = 422


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    status_code = 413


class NotFound(ParlaError):
    code = "not_found"
    status_code = 404


class Conflict(ParlaError):
    code = "conflict"
    status_code = 409


class Unauthorized(ParlaError):
    code = "unauthorized"
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class RateLimited(ParlaError):
    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ServiceUnavailable(ParlaError):
    """The deployment cannot take the request right now (no live worker for the engine, ...)."""

    code = "service_unavailable"
    status_code = 503
    retryable = True


class StorageError(ParlaError):
    code = "storage_error"
    status_code = 503
    retryable = True


class EngineFailure(ParlaError):
    """The engine failed for a reason that is not the caller's fault (a bug, a broken carry...)."""

    code = "engine_error"
    status_code = 500


class WeightsError(EngineFailure):
    """A weights directory is missing, incomplete or does not match the expected layout.

    Raised when a worker builds its engine: the worker refuses to start, with the message.
    """

    code = "weights_error"
