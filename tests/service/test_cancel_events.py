"""A canceled job sends one ``video.canceled`` and is counted once, however often it is canceled."""

from __future__ import annotations

import base64

import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from core.metrics import ParlaMetrics
from core.ratelimit import RateLimiter
from core.settings import Settings
from core.webhook_outbox import WebhookOutbox
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app


def test_repeated_cancel_sends_one_event_and_counts_once(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"webhook_secret": "whsec_" + base64.b64encode(b"k" * 32).decode()}
    )
    metrics = ParlaMetrics(CollectorRegistry())
    client = redis.Redis.from_url(settings.redis_url or "")
    with TestClient(make_app(configured, metrics=metrics)) as test_client:
        files = {"image": ("p.png", image_bytes(256, 256)), "audio": ("a.wav", wav_bytes(1.0))}
        submitted = test_client.post("/v1/videos", files=files, data={"webhook_url": "https://example.com/h"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert RateLimiter(client).queued_count("anonymous") == 1
        for _ in range(3):
            canceled = test_client.post(f"/v1/videos/{job_id}/cancel")
            assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        deliveries = WebhookOutbox(client).deliveries(job_id)
        assert [d["type"] for d in deliveries] == ["video.canceled"]
        assert [d["type"] for d in canceled.json()["webhooks"]] == ["video.canceled"]
        finished = metrics.registry.get_sample_value("parla_jobs_finished_total", {"status": "canceled"})
        assert finished == 1.0
        assert RateLimiter(client).queued_count("anonymous") == 0
