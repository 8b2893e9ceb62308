"""Receiving Parla's webhooks: verify a delivery (Standard Webhooks) and read its event.

Parla signs each delivery with ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
headers: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` under the ``whsec_`` secret
(several during a rotation, space separated). Verify the raw body bytes, before parsing them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from parla_client.errors import ParlaError
from parla_client.models import Chunk, Job

SECRET_PREFIX = "whsec_"
EVENT_TYPES = (
    "video.started",
    "video.progress",
    "video.chunk",
    "video.succeeded",
    "video.failed",
    "video.canceled",
)
"""The event types a job can subscribe to (``webhook_events``); ``video.chunk`` carries ``chunk``."""


class WebhookVerificationError(ParlaError):
    """The delivery is not authentic (bad or missing signature, stale timestamp, bad secret)."""


@dataclass(frozen=True)
class WebhookEvent:
    """One verified delivery: ``type`` (``video.succeeded``, ...), its ``id`` and the job.

    ``chunk`` is set for ``video.chunk`` (the chunk just stored, with its preview links).
    """

    id: str
    type: str
    job: Job
    raw: dict[str, Any]
    chunk: Chunk | None = None


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the webhook secret is not whsec_<base64>") from None


def verify_webhook(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> WebhookEvent:
    """Check one delivery and return its event.

    Args:
        secret: the deployment's ``whsec_`` secret, or several (any one may match).
        headers: the request's headers (matched case-insensitively).
        body: the raw request body.
        tolerance_s: how far ``webhook-timestamp`` may be from now (replay protection).
        now: the current unix time (tests).

    Raises:
        WebhookVerificationError: when no signature matches or the timestamp is out of tolerance.
    """
    keys = [_key(item) for item in ([secret] if isinstance(secret, str) else secret)]
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        raise WebhookVerificationError("webhook-id or webhook-timestamp is missing")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance_s:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance_s:g} s from now")
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = [base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) for key in keys]
    matched = False
    for candidate in lowered.get("webhook-signature", "").split():
        version, _, value = candidate.partition(",")
        if version == "v1":
            for wanted in expected:
                matched |= hmac.compare_digest(value.encode(), wanted)
    if not matched:
        raise WebhookVerificationError("no webhook-signature matches the secret")
    event = json.loads(body)
    data = event["data"]
    chunk = Chunk.from_json(data["chunk"]) if isinstance(data.get("chunk"), dict) else None
    return WebhookEvent(msg_id, str(event.get("type", "")), Job.from_json(data), event, chunk)
