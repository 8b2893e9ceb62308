"""While Redis is unreachable the API answers 503 with ``Retry-After``, quickly, and recovers after."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi.testclient import TestClient

from core.localredis import LocalRedis
from core.settings import Settings
from core.workers import WorkerRegistry
from service.app import create_app
from tests.media import image_bytes, wav_bytes

FILES = {"image": ("p.png", image_bytes(256, 256)), "audio": ("a.wav", wav_bytes(1.0))}


def outage_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        storage_dir=tmp_path / "storage",
        engine="test",
        auth_disabled=True,
        redis_timeout_s=0.5,
    )


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "service_unavailable"


def test_stopped_redis_is_503_then_the_api_recovers_on_restart(tmp_path: Path) -> None:
    server = LocalRedis(tmp_path / "redis").start()
    restarted = LocalRedis(tmp_path / "redis", port=server.port)
    app = create_app(outage_settings(server.url, tmp_path))  # the API's own Redis client
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/v1/videos").status_code == 200
            server.stop()
            for method, path, kwargs in (
                ("GET", "/v1/videos/vid_x", {}),
                ("GET", "/v1/videos", {}),
                ("POST", "/v1/videos", {"files": FILES}),
                ("POST", "/v1/videos", {"files": FILES, "headers": {"Idempotency-Key": "k1"}}),
                ("POST", "/v1/videos/vid_x/cancel", {}),
            ):
                started = time.monotonic()
                assert_unavailable(client.request(method, path, **kwargs))
                assert time.monotonic() - started < 3, f"{method} {path} hung"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")

            restarted.start()  # same port: the API's pooled connections are stale now
            WorkerRegistry(redis.Redis.from_url(restarted.url)).announce("w1", "test", ttl_s=60)
            assert client.get("/v1/videos/vid_x").json()["error"]["code"] == "job_not_found"
            assert client.get("/v1/videos").status_code == 200
            submitted = client.post("/v1/videos", files=FILES, headers={"Idempotency-Key": "k1"})
            assert submitted.status_code == 202, submitted.text
            assert client.get("/readyz").status_code == 200
    finally:
        server.stop()
        restarted.stop()


def test_a_redis_that_never_answers_is_a_503_within_the_timeout(tmp_path: Path) -> None:
    # A listener that completes TCP handshakes (the kernel does) but never reads: a hung Redis.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    app = create_app(outage_settings(url, tmp_path))
    answers: list[Any] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        started = time.monotonic()
        thread = threading.Thread(target=lambda: answers.append(client.get("/v1/videos/vid_x")))
        thread.start()
        thread.join(timeout=8)
        elapsed = time.monotonic() - started
        silent.close()  # unblocks a request that would otherwise wait forever
        thread.join(timeout=10)
    assert answers and elapsed < 3, f"the request waited {elapsed:.1f} s on a silent Redis (timeout 0.5 s)"
    assert_unavailable(answers[0])
