"""What the sync and async clients share: request building, retry timing, error parsing (no I/O)."""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

import httpx

from parla_client.errors import APIError

Media = str | os.PathLike[str] | bytes | IO[bytes]
"""A submitted file: a path, its bytes, an open binary file, or an ``https://``/``data:`` URL (a str)."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})
URL_PREFIXES = ("https://", "http://", "data:")
MEDIA_FIELDS = ("image", "audio", "driving_video")


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again: on 429/502/503/504 and on connection errors.

    The wait is the answer's ``Retry-After`` when it has one (at most ``max_wait_s``), else an
    exponential backoff with full jitter from ``backoff_s``. A submit is retried safely because it
    always carries an ``Idempotency-Key`` (one is generated when the caller gives none).

    Attributes:
        max_retries: retries after the first try (0: none).
        backoff_s: first backoff step.
        max_wait_s: longest single wait, ``Retry-After`` included.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_wait_s: float = 30.0

    def delay_s(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        if response is not None:
            after = retry_after_s(response)
            if after is not None:
                return min(after, self.max_wait_s)
        return random.uniform(0, min(self.max_wait_s, self.backoff_s * 2**attempt))


def retry_after_s(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta-seconds or an HTTP date), None if absent or bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def api_error(response: httpx.Response) -> APIError:
    """The ``APIError`` for an error answer (its ``{"error": {...}}`` body, or the bare status)."""
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    elif response.text:
        message = response.text[:500]
    return APIError(response.status_code, code, message, retry_after_s(response))


def is_url(media: Media) -> bool:
    return isinstance(media, str) and media.startswith(URL_PREFIXES)


def read_media(media: Media, name: str) -> tuple[str, bytes]:
    """A local file's name (for its multipart part and MIME type) and bytes."""
    if isinstance(media, bytes | bytearray):
        return name, bytes(media)
    if isinstance(media, str | os.PathLike):
        path = Path(media)
        return path.name, path.read_bytes()
    return Path(str(getattr(media, "name", name))).name, media.read()


def guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def data_uri(filename: str, data: bytes) -> str:
    return f"data:{guess_type(filename)};base64,{base64.b64encode(data).decode('ascii')}"


def submit_request(
    media: dict[str, Media | None], options: dict[str, Any], idempotency_key: str | None
) -> dict[str, Any]:
    """Keyword arguments for ``httpx`` of one ``POST /v1/videos``.

    Local files go as multipart parts with the options as flat form fields (objects and lists as
    JSON); when any input is a URL the body is JSON instead, local files becoming ``data:`` URIs.
    """
    headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"}
    given = {name: value for name, value in media.items() if value is not None}
    options = {key: value for key, value in options.items() if value is not None}
    if any(is_url(value) for value in given.values()):
        body: dict[str, Any] = dict(options)
        for name, value in given.items():
            body[f"{name}_url"] = value if is_url(value) else data_uri(*read_media(value, name))
        return {"json": body, "headers": headers}
    files = []
    for name, value in given.items():
        filename, data = read_media(value, name)
        files.append((name, (filename, data, guess_type(filename))))
    fields = {
        key: json.dumps(value) if isinstance(value, dict | list) else _form_value(value)
        for key, value in options.items()
    }
    return {"files": files, "data": fields, "headers": headers}


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
