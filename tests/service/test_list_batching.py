"""The list route reads a page with a fixed number of Redis round trips; blocking routes are plain ``def``."""

from __future__ import annotations

import base64
import inspect
from typing import Any

import redis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from core.jobs import RenderOptions
from core.jobstore import JobStore
from core.settings import Settings
from core.storage import LocalStorage
from core.webhook_outbox import WebhookOutbox
from service.app import create_app


class CountingConnection(redis.Connection):
    """Counts what it sends: one ``send_packed_command`` is one round trip (a pipeline is one too)."""

    round_trips = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)


def counting_client(url: str) -> redis.Redis:
    return redis.Redis(
        connection_pool=redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    )


def seed_jobs(store: JobStore, outbox: WebhookOutbox, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        job = store.create("anonymous", RenderOptions(webhook_url="https://example.com/h"))
        outbox.enqueue(job.id, "video.started", "https://example.com/h", {"id": job.id}, terminal=False)
        outbox.enqueue(job.id, "video.canceled", "https://example.com/h", {"id": job.id}, terminal=True)
        ids.append(job.id)
    return ids


def round_trips_of_list(settings: Settings, count: int) -> int:
    plain = redis.Redis.from_url(settings.redis_url or "")
    plain.flushall()
    seed_jobs(JobStore(plain), WebhookOutbox(plain), count)
    configured = settings.model_copy(
        update={"webhook_secret": "whsec_" + base64.b64encode(b"k" * 32).decode()}
    )
    client = counting_client(settings.redis_url or "")
    app = create_app(configured, redis_client=client, storage=LocalStorage(settings.storage_dir))
    with TestClient(app) as test_client:
        assert test_client.get("/v1/videos", params={"limit": 1}).status_code == 200  # connect first
        before = CountingConnection.round_trips
        page = test_client.get("/v1/videos", params={"limit": 100}).json()
        trips = CountingConnection.round_trips - before
    assert len(page["data"]) == count
    assert all(
        [d["type"] for d in job["webhooks"]] == ["video.started", "video.canceled"] for job in page["data"]
    )
    return trips


def test_list_round_trips_do_not_grow_with_the_page(settings: Settings) -> None:
    small, large = round_trips_of_list(settings, 3), round_trips_of_list(settings, 20)
    assert large == small and large <= 5, (small, large)


def test_batch_reads_match_the_single_reads(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store, outbox = JobStore(client), WebhookOutbox(client)
    ids = seed_jobs(store, outbox, 4)
    quiet = store.create("anonymous", RenderOptions()).id
    logs = outbox.deliveries_many([*ids, quiet, "vid_unknown"])
    assert logs == {**{i: outbox.deliveries(i) for i in ids}, quiet: [], "vid_unknown": []}
    assert outbox.deliveries_many([]) == {}
    jobs = store.get_many([*ids, "vid_unknown"])
    assert {i: j.model_dump() for i, j in jobs.items()} == {i: store.get(i).model_dump() for i in ids}


def test_routes_that_block_on_redis_are_not_coroutines() -> None:
    from service.routes import downloads, health, videos

    async_ok = {("/v1/videos", "POST"), ("/healthz", "GET")}  # submit awaits the body; healthz does no I/O
    checked = 0
    for router in (videos.router, downloads.router, health.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods:
                is_async = inspect.iscoroutinefunction(route.endpoint)
                assert not is_async or (route.path, method) in async_ok, f"{method} {route.path} is async def"
                checked += 1
    assert checked >= 9
