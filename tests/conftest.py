"""Shared fixtures: a real redis-server and a real S3 API (moto's server mode), each on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from core.localredis import LocalRedis, free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture()
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """URL of the session's redis-server, flushed before and after each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, Any]]:
    """moto's S3 server on a free loopback port, with credentials for boto3."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        }
    finally:
        server.stop()


@pytest.fixture()
def outside_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fails the test if it tried to connect anywhere but loopback (``tests.loopback``); the attempts."""
    from tests.loopback import forbid_outside_connections

    attempts = forbid_outside_connections(monkeypatch)
    yield attempts
    assert attempts == [], f"connections outside loopback were attempted: {attempts}"
