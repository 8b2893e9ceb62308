"""Standard Webhooks signing and the event envelope (https://www.standardwebhooks.com).

A webhook is a POST whose body is the JSON envelope ``{"type", "timestamp", "data"}`` and whose
headers are ``webhook-id`` (stable across retries: the receiver's idempotency key),
``webhook-timestamp`` (unix seconds of *this attempt*) and ``webhook-signature``: one
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` per configured secret, space separated,
so that a secret can be rotated without downtime (sign with the new and the old one for a while).

The body is serialised once (``encode_event``) and stored; every attempt sends exactly those bytes,
because the signature covers them and a receiver verifies the raw body.

This module is pure standard library: no HTTP, no Redis, no torch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

SECRET_PREFIX: Final = "whsec_"
SIGNATURE_VERSION: Final = "v1"
# The spec asks for at least 24 random bytes (192 bits) and at most 512 bits.
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64

EVENT_STARTED: Final = "video.started"
EVENT_PROGRESS: Final = "video.progress"
EVENT_CHUNK: Final = "video.chunk"
EVENT_SUCCEEDED: Final = "video.succeeded"
EVENT_FAILED: Final = "video.failed"
EVENT_CANCELED: Final = "video.canceled"

TERMINAL_WEBHOOK_EVENTS: Final = (EVENT_SUCCEEDED, EVENT_FAILED, EVENT_CANCELED)
"""Events that end a job; the ones a client must not miss (retried for hours)."""
DEFAULT_WEBHOOK_EVENTS: Final = TERMINAL_WEBHOOK_EVENTS
"""What a job subscribes to when its request names no ``webhook_events``."""
STREAM_WEBHOOK_EVENTS: Final = (EVENT_PROGRESS, EVENT_CHUNK)
"""Events sent while a job renders: throttled per job, one best-effort attempt, short-lived."""
ALL_WEBHOOK_EVENTS: Final = (EVENT_STARTED, EVENT_PROGRESS, EVENT_CHUNK, *TERMINAL_WEBHOOK_EVENTS)

HEADER_ID: Final = "webhook-id"
HEADER_TIMESTAMP: Final = "webhook-timestamp"
HEADER_SIGNATURE: Final = "webhook-signature"


def is_terminal_event(event_type: str) -> bool:
    """Whether ``event_type`` ends a job (and so is delivered persistently)."""
    return event_type in TERMINAL_WEBHOOK_EVENTS


def validate_webhook_events(event_types: Iterable[str]) -> list[str]:
    """Check a job's ``webhook_events`` list; returns it deduplicated in ``ALL_WEBHOOK_EVENTS`` order.

    Raises:
        ValueError: an unknown event type (the message lists the known ones).
    """
    wanted = set(event_types)
    unknown = sorted(wanted.difference(ALL_WEBHOOK_EVENTS))
    if unknown:
        raise ValueError(f"unknown webhook event(s) {unknown}; known: {list(ALL_WEBHOOK_EVENTS)}")
    return [event for event in ALL_WEBHOOK_EVENTS if event in wanted]


MAX_WEBHOOK_URL_LENGTH: Final = 2048


def validate_webhook_url(url: str, *, allow_http: bool = False) -> str:
    """Check a job's webhook URL at submission (syntax only; addresses are checked at send time).

    Raises:
        ValueError: not https (or http when ``allow_http``), no host, credentials in the URL, a
            fragment, or longer than 2048 characters.
    """
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise ValueError(f"webhook_url is longer than {MAX_WEBHOOK_URL_LENGTH} characters")
    parts = urlsplit(url)
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise ValueError(f"webhook_url must use {' or '.join(allowed)}, got {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise ValueError("webhook_url has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook_url must not carry credentials (user:password@)")
    if parts.fragment:
        raise ValueError("webhook_url must not have a #fragment")
    return url


def generate_secret(num_bytes: int = 32) -> str:
    """A fresh ``whsec_`` secret (for operators: ``python -c 'from core.webhooks import *; print(generate_secret())'``)."""
    if not MIN_SECRET_BYTES <= num_bytes <= MAX_SECRET_BYTES:
        raise ValueError(f"num_bytes must be in [{MIN_SECRET_BYTES}, {MAX_SECRET_BYTES}], got {num_bytes}")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(num_bytes)).decode("ascii")


def parse_secret(value: str) -> bytes:
    """Decode one ``whsec_<base64>`` secret into its key bytes.

    Raises:
        ValueError: missing prefix, invalid base64, or a key outside 24..64 bytes. The message never
            repeats the secret itself (it would end up in logs).
    """
    text = value.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r} (Standard Webhooks format)")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"webhook secret after {SECRET_PREFIX!r} is not valid base64") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret decodes to {len(key)} bytes; the spec asks for "
            f"{MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} random bytes"
        )
    return key


def parse_secrets(value: str) -> list[bytes]:
    """Decode a comma-separated list of ``whsec_`` secrets (first = current, rest = being rotated out).

    An empty or blank ``value`` gives an empty list (no secret configured).

    Raises:
        ValueError: one of the secrets is malformed; the message says which position.
    """
    keys: list[bytes] = []
    for position, item in enumerate(value.split(","), start=1):
        if not item.strip():
            continue
        try:
            keys.append(parse_secret(item))
        except ValueError as exc:
            raise ValueError(f"webhook secret #{position}: {exc}") from exc
    return keys


def _check_token(name: str, value: str) -> None:
    # The signed content is "{id}.{timestamp}.{body}": a '.' in the id would make two different
    # (id, timestamp) pairs sign the same string.
    if not value or "." in value or any(ch.isspace() for ch in value):
        raise ValueError(f"{name} must be non-empty without '.' or whitespace, got {value!r}")


def sign(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<base64>`` per secret, space separated.

    Args:
        secrets: raw keys from ``parse_secrets``; at least one.
        msg_id: the delivery id (``webhook-id``), the same on every attempt.
        timestamp: unix seconds of this attempt (``webhook-timestamp``).
        body: the exact bytes sent as the request body.
    """
    if not secrets:
        raise ValueError("cannot sign a webhook without a secret")
    _check_token("msg_id", msg_id)
    signed_content = f"{msg_id}.{int(timestamp)}.".encode() + body
    signatures = []
    for key in secrets:
        digest = hmac.new(key, signed_content, hashlib.sha256).digest()
        signatures.append(f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}")
    return " ".join(signatures)


def build_headers(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """All headers of one attempt: the three Standard Webhooks headers and the content type."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(int(timestamp)),
        HEADER_SIGNATURE: sign(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """Receiver-side check (for our own end-to-end tests and client examples).

    True when the timestamp is within ``tolerance_s`` of ``now`` and one of the ``v1`` signatures
    matches one of ``secrets`` (constant-time comparison). ``headers`` keys are matched
    case-insensitively.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get(HEADER_ID, "")
    timestamp_text = lowered.get(HEADER_TIMESTAMP, "")
    if not msg_id or not timestamp_text.isdigit() or abs(now - int(timestamp_text)) > tolerance_s:
        return False
    expected = sign(secrets, msg_id, int(timestamp_text), body).split(" ")
    received = lowered.get(HEADER_SIGNATURE, "").split()
    matched = False
    for candidate in received:
        for wanted in expected:
            matched |= hmac.compare_digest(candidate.encode(), wanted.encode())
    return matched


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: ``2026-11-20T22:46:11.123456Z``."""
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(
    event_type: str, data: Mapping[str, Any], *, occurred_at: datetime | None = None
) -> dict[str, Any]:
    """The event envelope ``{"type", "timestamp", "data"}``; ``data`` is the job JSON (with a
    ``chunk`` object added for ``video.chunk``).

    ``timestamp`` is when the event happened, not when an attempt is made (that is the
    ``webhook-timestamp`` header), so it stays the same across retries.
    """
    if event_type not in ALL_WEBHOOK_EVENTS:
        raise ValueError(f"unknown webhook event {event_type!r}; known: {list(ALL_WEBHOOK_EVENTS)}")
    moment = occurred_at if occurred_at is not None else datetime.now(UTC)
    return {"type": event_type, "timestamp": format_timestamp(moment), "data": dict(data)}


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Serialise an envelope deterministically (sorted keys, no spaces, UTF-8): the signed bytes."""
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
