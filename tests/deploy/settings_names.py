"""The one list of ``PARLA_`` settings the deploy files may use (name -> default, meaning).

Proposed to ``core/settings.py``; once it exists, ``test_settings_list_matches_core_settings``
should compare this list with the ``Settings`` fields (env prefix ``PARLA_``).
"""

from __future__ import annotations

from typing import Final

PARLA_SETTINGS: Final[dict[str, tuple[str, str]]] = {
    "PARLA_REDIS_URL": ("redis://127.0.0.1:6379/0", "Redis for jobs, queue, webhook outbox, rate limits"),
    "PARLA_KEY_PREFIX": ("parla:", "prefix of every Redis key Parla writes"),
    "PARLA_STORAGE": ("local", "object storage backend: local | s3"),
    "PARLA_STORAGE_DIR": ("var/storage", "root directory of local storage"),
    "PARLA_S3_BUCKET": ("", "bucket for inputs, segments, chunk state and videos (required for s3)"),
    "PARLA_S3_PREFIX": ("", "key prefix inside the bucket"),
    "PARLA_S3_ENDPOINT_URL": ("", "S3 API endpoint (MinIO, R2...); empty = AWS"),
    "PARLA_S3_PUBLIC_ENDPOINT_URL": (
        "",
        "endpoint used in presigned URLs handed to clients; empty = the endpoint",
    ),
    "PARLA_S3_REGION": ("us-east-1", "S3 region"),
    "PARLA_PRESIGNED_URL_TTL_S": ("3600", "lifetime of presigned video URLs"),
    "PARLA_API_KEYS": ("", "'tenant:key,...' or '@/path/to/file'; required unless auth is disabled"),
    "PARLA_AUTH_DISABLED": ("false", "accept unauthenticated calls as tenant 'anonymous' (development only)"),
    "PARLA_RATE_LIMIT_PER_MINUTE": ("60", "submissions per tenant per sliding minute; 0 = off"),
    "PARLA_MAX_QUEUED_JOBS_PER_TENANT": ("100", "jobs a tenant may have queued at once; 0 = off"),
    "PARLA_WEBHOOK_SECRET": ("", "comma-separated whsec_ secrets (first signs, all sign during rotation)"),
    "PARLA_WEBHOOK_TIMEOUT_S": ("15", "per-attempt webhook timeout"),
    "PARLA_WEBHOOK_RETRY_SCHEDULE_S": (
        "5,30,120,600,1800,3600,7200,14400,28800",
        "waits between terminal retries",
    ),
    "PARLA_WEBHOOK_ALLOW_HTTP": ("false", "accept http:// webhook URLs (https only otherwise)"),
    "PARLA_WEIGHTS_DIR": ("", "directory of model weights (/weights in the image); empty = none"),
    "PARLA_ENGINE": ("auto", "auto | vexpress | warp (auto: vexpress when its weights are present)"),
    "PARLA_DEVICE": ("auto", "torch device for the worker: auto | cuda | cuda:N | cpu"),
    "PARLA_WORKER_METRICS_PORT": ("9100", "worker port serving /metrics and /healthz; 0 = off"),
    "PARLA_HOST": ("127.0.0.1", "API bind address (0.0.0.0 in the image)"),
    "PARLA_PORT": ("8000", "API port"),
    "PARLA_LOG_LEVEL": ("INFO", "logging level"),
}
