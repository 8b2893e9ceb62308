"""JobNotifier: which job events become webhook deliveries, and what a ``video.chunk`` carries."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from core.jobs import Job, JobStatus, RenderOptions, utcnow
from core.notify import JobNotifier
from core.webhook_outbox import WebhookOutbox


@pytest.fixture()
def outbox(redis_url: str) -> Iterator[WebhookOutbox]:
    client = redis.Redis.from_url(redis_url)
    yield WebhookOutbox(client, chunk_min_interval_s=0)
    client.close()


def running_job(**options: object) -> Job:
    return Job(id="vid_1", status=JobStatus.RUNNING, created_at=utcnow(), params=RenderOptions(**options))


def bodies(outbox: WebhookOutbox) -> list[dict[str, object]]:
    ids = [item.decode() for item in outbox.redis.zrange(outbox.due_key, 0, -1)]
    deliveries = [outbox.get(delivery_id) for delivery_id in ids]
    return [json.loads(delivery.body) for delivery in deliveries if delivery is not None]


def test_chunk_event_carries_the_chunk_and_its_preview_links(outbox: WebhookOutbox) -> None:
    notifier = JobNotifier(outbox, None, lambda job_id: None, api_url="https://api.example.com/")
    job = running_job(webhook_url="https://hooks.example.com/p", webhook_events=["video.chunk"])
    notifier.chunk_stored(job, 2, 50, 75)
    notifier.job_event("video.progress", job)  # not subscribed
    [event] = bodies(outbox)
    assert event["type"] == "video.chunk"
    data = event["data"]
    assert isinstance(data, dict) and data["id"] == "vid_1" and "webhooks" not in data
    base = "https://api.example.com/v1/videos/vid_1"
    assert data["chunk"] == {
        "index": 2,
        "start_frame": 50,
        "stop_frame": 75,
        "frames": 25,
        "segment_url": f"{base}/stream/2.ts",
        "playlist_url": f"{base}/stream.m3u8",
        "preview_url": f"{base}/preview.mp4",
        "thumbnail_url": f"{base}/thumbnail.jpg",
    }


def test_chunk_events_are_opt_in(outbox: WebhookOutbox) -> None:
    notifier = JobNotifier(outbox, None, lambda job_id: None)
    notifier.chunk_stored(running_job(webhook_url="https://hooks.example.com/p"), 0, 0, 25)  # default events
    notifier.chunk_stored(running_job(webhook_events=["video.chunk"]), 0, 0, 25)  # no URL
    JobNotifier(None, None, lambda job_id: None).chunk_stored(
        running_job(webhook_url="https://hooks.example.com/p", webhook_events=["video.chunk"]), 0, 0, 25
    )  # webhooks off
    assert bodies(outbox) == []


def test_a_failing_outbox_never_reaches_the_renderer() -> None:
    client = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
    notifier = JobNotifier(WebhookOutbox(client), None, lambda job_id: None)
    job = running_job(webhook_url="https://hooks.example.com/p", webhook_events=["video.chunk"])
    notifier.chunk_stored(job, 0, 0, 25)  # logged, not raised


def test_webhook_events_accept_chunk_and_refuse_unknown_names() -> None:
    assert RenderOptions(webhook_events=["video.chunk"]).webhook_events == ["video.chunk"]
    with pytest.raises(ValueError, match="Input should be"):
        RenderOptions(webhook_events=["video.chunks"])  # type: ignore[list-item]
