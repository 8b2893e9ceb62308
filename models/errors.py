"""Errors raised by engines. The worker maps them onto job errors (``core.errors``)."""

from __future__ import annotations


class EngineError(Exception):
    """The engine failed for a reason that is not the caller's fault."""

    code = "engine_error"


class EngineInputError(EngineError):
    """The inputs cannot be rendered (the caller's fault): carries a machine-readable ``code``.

    Codes used: ``no_face_found``, ``face_not_found``, ``face_too_small``, ``face_not_frontal``,
    ``invalid_driving_video``, ``invalid_params``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WeightsError(EngineError):
    """A weights directory is missing, incomplete or does not match the expected layout."""

    code = "weights_error"
