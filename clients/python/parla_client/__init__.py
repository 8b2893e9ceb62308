"""Python SDK for the Parla API: ``Client``/``AsyncClient``, typed jobs, webhook verification."""

from parla_client._requests import Media, RetryPolicy
from parla_client.async_client import AsyncClient
from parla_client.client import Client
from parla_client.errors import APIError, JobFailed, ParlaError, WaitTimeout
from parla_client.models import Chunk, Engine, Job, JobError, JobPage, OutputFile, Progress, VideoResult
from parla_client.webhooks import EVENT_TYPES, WebhookEvent, WebhookVerificationError, verify_webhook

__version__ = "0.1.0"
__all__ = [
    "EVENT_TYPES",
    "APIError",
    "AsyncClient",
    "Chunk",
    "Client",
    "Engine",
    "Job",
    "JobError",
    "JobFailed",
    "JobPage",
    "Media",
    "OutputFile",
    "ParlaError",
    "Progress",
    "RetryPolicy",
    "VideoResult",
    "WaitTimeout",
    "WebhookEvent",
    "WebhookVerificationError",
    "verify_webhook",
]
