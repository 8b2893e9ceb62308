"""The error tree. Each error carries a machine-readable ``code`` and the HTTP status the API answers."""

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
    """The caller's fault: bad file, bad parameter. Answered with a 4xx (422 unless told otherwise)."""

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
    """The engine failed for a reason that is not the caller's fault."""

    code = "engine_error"
    status_code = 500
