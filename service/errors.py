"""The machine-readable error codes of the API, with what each means (the OpenAPI ``ErrorCode`` enum).

Every error the API answers is ``{"error": {"code", "message"}}`` with one of these codes, and a
failed job's ``error.code`` is one of them too. The list is written out here, not gathered at run
time: tests/service/test_openapi_contract.py scans the code base for every code it can raise and
fails when one is missing here (or listed here but raised nowhere).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every ``error.code`` the API answers with or a failed job records."""

    BAD_REQUEST = "bad_request"
    INVALID_CURSOR = "invalid_cursor"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    JOB_NOT_FOUND = "job_not_found"
    ENGINE_NOT_FOUND = "engine_not_found"
    VIDEO_NOT_FOUND = "video_not_found"
    OUTPUT_NOT_FOUND = "output_not_found"
    OBJECT_NOT_FOUND = "object_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    REQUEST_TIMEOUT = "request_timeout"
    CONFLICT = "conflict"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    VIDEO_NOT_READY = "video_not_ready"
    PREVIEW_NOT_READY = "preview_not_ready"
    SEGMENT_NOT_FOUND = "segment_not_found"
    VIDEO_EXPIRED = "video_expired"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    IMAGE_TOO_LARGE = "image_too_large"
    AUDIO_TOO_LARGE = "audio_too_large"
    DRIVING_VIDEO_TOO_LARGE = "driving_video_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    INVALID_REQUEST = "invalid_request"
    INVALID_INPUT = "invalid_input"
    INVALID_PARAMS = "invalid_params"
    MISSING_IMAGE = "missing_image"
    MISSING_AUDIO = "missing_audio"
    INVALID_IMAGE = "invalid_image"
    UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"
    IMAGE_TOO_SMALL = "image_too_small"
    INVALID_AUDIO = "invalid_audio"
    AUDIO_TOO_SHORT = "audio_too_short"
    AUDIO_TOO_LONG = "audio_too_long"
    INVALID_DRIVING_VIDEO = "invalid_driving_video"
    INVALID_URL = "invalid_url"
    URL_FETCH_FAILED = "url_fetch_failed"
    NO_FACE_FOUND = "no_face_found"
    FACE_NOT_FOUND = "face_not_found"
    FACE_TOO_SMALL = "face_too_small"
    FACE_NOT_FRONTAL = "face_not_frontal"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    INVALID_WEBHOOK_URL = "invalid_webhook_url"
    WEBHOOKS_NOT_CONFIGURED = "webhooks_not_configured"
    RATE_LIMITED = "rate_limited"
    REQUEST_HEADER_TOO_LARGE = "request_header_too_large"
    HTTP_ERROR = "http_error"
    INTERNAL_ERROR = "internal_error"
    ENGINE_ERROR = "engine_error"
    WEIGHTS_ERROR = "weights_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    STORAGE_ERROR = "storage_error"
    CANCELED = "canceled"
    WORKER_LOST = "worker_lost"


ERROR_CODE_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "400: the request is malformed.",
    ErrorCode.INVALID_CURSOR: "400: `cursor` is not one that a list answer gave.",
    ErrorCode.UNAUTHORIZED: "401: no API key, or an unknown one (send `Authorization: Bearer <key>`).",
    ErrorCode.FORBIDDEN: "403: the key may not do this.",
    ErrorCode.NOT_FOUND: "404: no such route.",
    ErrorCode.JOB_NOT_FOUND: "404: no such job, or not one of yours.",
    ErrorCode.ENGINE_NOT_FOUND: "404: no such engine is served here.",
    ErrorCode.VIDEO_NOT_FOUND: "404: the job succeeded but its video file is missing.",
    ErrorCode.OUTPUT_NOT_FOUND: "404: the job did not ask for that output (`outputs`), or its file is missing.",
    ErrorCode.OBJECT_NOT_FOUND: "404: a stored object is missing.",
    ErrorCode.METHOD_NOT_ALLOWED: "405: the route does not take this method (`Allow` lists those it takes).",
    ErrorCode.NOT_ACCEPTABLE: "406: no representation matches `Accept`.",
    ErrorCode.REQUEST_TIMEOUT: "408: the client paused too long while sending the body.",
    ErrorCode.CONFLICT: "409: the request conflicts with the resource's state.",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "409: this `Idempotency-Key` was used with a different request.",
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: "409: a request with this `Idempotency-Key` is still being accepted.",
    ErrorCode.VIDEO_NOT_READY: "409: the job has not succeeded (yet).",
    ErrorCode.PREVIEW_NOT_READY: "409: no chunk of the job is rendered yet (previews).",
    ErrorCode.SEGMENT_NOT_FOUND: "404: that live-preview segment is not rendered (yet).",
    ErrorCode.VIDEO_EXPIRED: "410: the video was deleted when its retention ended.",
    ErrorCode.PAYLOAD_TOO_LARGE: "413: the request body is larger than the deployment accepts.",
    ErrorCode.IMAGE_TOO_LARGE: "413: the portrait file is too large.",
    ErrorCode.AUDIO_TOO_LARGE: "413: the speech file is too large.",
    ErrorCode.DRIVING_VIDEO_TOO_LARGE: "413: the driving video is too large.",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "415: submit `multipart/form-data` (files) or `application/json` (URLs).",
    ErrorCode.RANGE_NOT_SATISFIABLE: "416: the byte range starts past the end of the video.",
    ErrorCode.INVALID_REQUEST: "422: the request's structure is wrong (bad JSON, a bad field, a bad query).",
    ErrorCode.INVALID_INPUT: "422: an input is not acceptable.",
    ErrorCode.INVALID_PARAMS: "422: a render option (common or the engine's) is refused; the message names it.",
    ErrorCode.MISSING_IMAGE: "422: no portrait (`image` file or `image_url`).",
    ErrorCode.MISSING_AUDIO: "422: no speech (`audio` file or `audio_url`).",
    ErrorCode.INVALID_IMAGE: "422: the portrait cannot be decoded.",
    ErrorCode.UNSUPPORTED_IMAGE_FORMAT: "422: the portrait is not PNG, JPEG or WebP.",
    ErrorCode.IMAGE_TOO_SMALL: "422: the portrait is too small.",
    ErrorCode.INVALID_AUDIO: "422: the speech cannot be decoded.",
    ErrorCode.AUDIO_TOO_SHORT: "422: the speech is too short.",
    ErrorCode.AUDIO_TOO_LONG: "422: the speech is longer than the deployment renders.",
    ErrorCode.INVALID_DRIVING_VIDEO: "422: the driving video cannot be used.",
    ErrorCode.INVALID_URL: "422: an `*_url` is not an https:// URL or a data: URI, or is refused.",
    ErrorCode.URL_FETCH_FAILED: "422: an `*_url` could not be fetched.",
    ErrorCode.NO_FACE_FOUND: "422: the portrait shows no face.",
    ErrorCode.FACE_NOT_FOUND: "422: there is no face with this `face_index`.",
    ErrorCode.FACE_TOO_SMALL: "422: the face is too small in the portrait.",
    ErrorCode.FACE_NOT_FRONTAL: "422: the face is turned too far from the camera.",
    ErrorCode.ENGINE_UNAVAILABLE: "422: the engine is not enabled here; 503: no worker serves it right now.",
    ErrorCode.INVALID_WEBHOOK_URL: "422: `webhook_url` is refused.",
    ErrorCode.WEBHOOKS_NOT_CONFIGURED: "422: the deployment has no webhook signing secret.",
    ErrorCode.RATE_LIMITED: "429: a submission limit is reached; retry after `Retry-After` seconds.",
    ErrorCode.REQUEST_HEADER_TOO_LARGE: "431: the request line and headers are too large.",
    ErrorCode.HTTP_ERROR: "Any other HTTP error of the framework (the status tells).",
    ErrorCode.INTERNAL_ERROR: "500: an unexpected failure (logged).",
    ErrorCode.ENGINE_ERROR: "A job: the engine failed for a reason that is not the input's fault.",
    ErrorCode.WEIGHTS_ERROR: "A job: the worker's model weights are missing or broken.",
    ErrorCode.SERVICE_UNAVAILABLE: "503: the job store is unavailable; retry after `Retry-After` seconds.",
    ErrorCode.STORAGE_ERROR: "503: object storage is unavailable; retry after `Retry-After` seconds.",
    ErrorCode.CANCELED: "A job: canceled by request.",
    ErrorCode.WORKER_LOST: "A job: its worker was lost too many times.",
}


def error_codes_markdown() -> str:
    """The codes as a Markdown table (docs/api.md holds it; ``python -m service.errors`` prints it)."""
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| `{code.value}` | {ERROR_CODE_DESCRIPTIONS[code]} |" for code in ErrorCode]
    return "\n".join(rows)


if __name__ == "__main__":
    print(error_codes_markdown())
