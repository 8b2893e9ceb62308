"""A submission that fails half-way leaves nothing behind: no key, no slot, no record, no files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from core.errors import StorageError
from core.jobstore import JobStore
from core.queue import JobQueue
from core.ratelimit import RateLimiter
from core.settings import Settings
from core.storage import LocalStorage
from service.app import create_app
from tests.media import image_bytes, wav_bytes

FILES = {
    "image": ("portrait.png", image_bytes(256, 256), "image/png"),
    "audio": ("speech.wav", wav_bytes(1.0), "audio/wav"),
}
TENANT = "anonymous"


class FlakyStorage(LocalStorage):
    """Local storage whose writes fail while ``failing`` (after the first write of each attempt)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failing = True
        self.writes = 0

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.writes += 1
        if self.failing and self.writes > 1:  # the image is stored, the audio is not
            raise StorageError("S3 put failed: connection reset")
        super().put_bytes(key, data, content_type)


class FlakyQueue(JobQueue):
    """A queue whose enqueue fails (Redis dropped the connection) while ``failing``."""

    failing = True

    def enqueue(self, job_id: str, engine: str, *, first: bool = True) -> str:
        if self.failing:
            raise redis.exceptions.ConnectionError("Error 104 while writing to socket")
        return super().enqueue(job_id, engine, first=first)


@pytest.fixture()
def one_slot(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_queued_jobs": 1})


def leftovers(client: redis.Redis, storage: LocalStorage) -> dict[str, Any]:
    return {
        "records": sorted(k.decode() for k in client.scan_iter("parla:job:*")),
        "files": storage.list_keys("jobs/"),
    }


def check_rolled_back_then_retry_succeeds(
    test_client: TestClient, client: redis.Redis, storage: LocalStorage, make_work: Any
) -> None:
    limiter = RateLimiter(client)
    headers = {"Idempotency-Key": "order-7"}
    failed = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
    assert failed.status_code == 503, failed.text
    assert failed.headers["retry-after"] == "5"
    assert limiter.queued_count(TENANT) == 0  # the slot is back
    assert leftovers(client, storage) == {"records": [], "files": []}
    assert test_client.get("/v1/videos").json()["data"] == []

    make_work()
    retried = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
    assert retried.status_code == 202, retried.text  # not 409 idempotency_in_progress
    assert "idempotent-replayed" not in retried.headers  # a new job, not a replay of a ghost
    job_id = retried.json()["id"]
    assert [j["id"] for j in test_client.get("/v1/videos").json()["data"]] == [job_id]
    assert limiter.queued_count(TENANT) == 1
    assert leftovers(client, storage)["records"] == [f"parla:job:{job_id}"]
    assert all(key.startswith(f"jobs/{job_id}/") for key in storage.list_keys("jobs/"))
    replay = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
    assert replay.json()["id"] == job_id and replay.headers["idempotent-replayed"] == "true"


def test_storage_failure_rolls_back_the_submission(one_slot: Settings, tmp_path: Path) -> None:
    client = redis.Redis.from_url(one_slot.redis_url or "")
    storage = FlakyStorage(tmp_path / "flaky")
    app = create_app(one_slot, redis_client=client, storage=storage)

    def heal() -> None:
        storage.failing = False

    with TestClient(app, raise_server_exceptions=False) as test_client:
        check_rolled_back_then_retry_succeeds(test_client, client, storage, heal)


def test_enqueue_failure_rolls_back_the_submission(one_slot: Settings, tmp_path: Path) -> None:
    client = redis.Redis.from_url(one_slot.redis_url or "")
    storage = LocalStorage(tmp_path / "store")
    queue = FlakyQueue(client)
    app = create_app(one_slot, redis_client=client, storage=storage, queue=queue)

    def heal() -> None:
        queue.failing = False

    with TestClient(app, raise_server_exceptions=False) as test_client:
        check_rolled_back_then_retry_succeeds(test_client, client, storage, heal)
        assert queue.depth(["test"]) == 1  # only the retry reached the queue


def test_a_lost_idempotency_race_frees_the_losers_slot(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(settings.redis_url or "")
    limited = settings.model_copy(update={"max_queued_jobs": 2})
    app = create_app(limited, redis_client=client, storage=LocalStorage(tmp_path / "s"))
    headers = {"Idempotency-Key": "k"}
    with TestClient(app) as test_client:
        first = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert first.status_code == 202
        # a concurrent twin that looked the key up before the first request bound it
        original, lookups = JobStore.find_idempotent, []

        def missed_once(self: JobStore, *args: str) -> str | None:
            lookups.append(args)
            return None if len(lookups) == 1 else original(self, *args)

        monkeypatch.setattr(JobStore, "find_idempotent", missed_once)
        twin = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert twin.status_code == 202 and twin.json()["id"] == first.json()["id"]
        assert RateLimiter(client).queued_count(TENANT) == 1  # the twin's admitted slot was freed


class DyingStorage(LocalStorage):
    """The API process "dies" while storing the inputs: nothing after that runs (no rollback)."""

    dying = True

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.dying:
            raise RuntimeError("the process died here")  # with the rollback disabled, as a death would
        super().put_bytes(key, data, content_type)


def test_a_key_bound_by_a_submission_that_died_is_taken_over_once_stale(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.routes.videos as videos

    monkeypatch.setattr(videos, "_roll_back", lambda *args: None)  # a dead process rolls nothing back
    client = redis.Redis.from_url(settings.redis_url or "")
    storage = DyingStorage(tmp_path / "dying")
    stale_s = 1.0
    app = create_app(
        settings.model_copy(update={"idempotency_stale_s": stale_s}), redis_client=client, storage=storage
    )
    headers = {"Idempotency-Key": "order-9"}
    with TestClient(app, raise_server_exceptions=False) as test_client:
        died = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert died.status_code == 500
        assert client.exists("parla:idem:anonymous:order-9") and leftovers(client, storage)["records"] == []
        storage.dying = False
        # Still young: it may be a submission in progress on another replica.
        early = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert early.status_code == 409 and early.json()["error"]["code"] == "idempotency_in_progress"
        time.sleep(stale_s + 0.1)
        retried = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert retried.status_code == 202, retried.text
        assert "idempotent-replayed" not in retried.headers
        replay = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert replay.json()["id"] == retried.json()["id"] and replay.headers["idempotent-replayed"] == "true"
        time.sleep(stale_s + 0.1)  # an old binding of a job that exists is never released
        again = test_client.post("/v1/videos", files=FILES, data={"seed": "1"}, headers=headers)
        assert again.json()["id"] == retried.json()["id"] and again.headers["idempotent-replayed"] == "true"
