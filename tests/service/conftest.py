from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.settings import Settings
from core.storage import LocalStorage
from service.app import create_app


@pytest.fixture()
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        storage_dir=tmp_path / "storage",
        engine="test",
        engines=["test"],
        max_audio_seconds=5.0,
        max_image_bytes=2_000_000,
        max_request_bytes=3_000_000,
        auth_disabled=True,
    )


def make_app(settings: Settings, **collaborators: Any) -> FastAPI:
    """The API on the test's Redis and a local storage directory."""
    return create_app(
        settings,
        redis_client=redis.Redis.from_url(settings.redis_url or ""),
        storage=LocalStorage(settings.storage_dir),
        **collaborators,
    )


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(make_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def live_workers(redis_url: str) -> None:
    """A live worker announced for each engine the API tests submit to (the API refuses the others)."""
    from core.workers import WorkerRegistry

    registry = WorkerRegistry(redis.Redis.from_url(redis_url))
    for engine in ("test", "warp", "vexpress-tiny"):
        registry.announce(f"test-worker-{engine}", engine, ttl_s=3600)
