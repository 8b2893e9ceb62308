"""``GET``/``HEAD /v1/videos/{id}/video``: whole file, single byte ranges, missing files, S3 redirects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from core.jobs import JobStatus, RenderOptions, VideoResult, utcnow
from core.jobstore import JobStore
from core.settings import Settings
from core.storage import LocalStorage, S3Storage, Storage, job_key
from service.app import create_app

VIDEO = bytes(range(256)) * 8  # 2048 bytes standing in for an MP4


def finished_job(settings: Settings, storage: Storage, data: bytes | None = VIDEO) -> str:
    store = JobStore(redis.Redis.from_url(settings.redis_url or ""), settings.key_prefix, settings.job_ttl_s)
    job = store.create("anonymous", RenderOptions())
    if data is not None:
        storage.put_bytes(job_key(job.id, "video.mp4"), data, "video/mp4")
    result = VideoResult(duration_s=1.0, fps=25, frames=25, width=64, height=64, bytes=len(data or b""))
    store.finish(job.id, JobStatus.SUCCEEDED, result=result)
    return job.id


@pytest.fixture()
def storage(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.storage_dir)


@pytest.fixture()
def client(settings: Settings, storage: LocalStorage) -> Iterator[TestClient]:
    app = create_app(settings, redis_client=redis.Redis.from_url(settings.redis_url or ""), storage=storage)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_whole_file_and_head(client: TestClient, settings: Settings, storage: LocalStorage) -> None:
    job_id = finished_job(settings, storage)
    whole = client.get(f"/v1/videos/{job_id}/video")
    assert whole.status_code == 200 and whole.content == VIDEO
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(len(VIDEO))
    head = client.head(f"/v1/videos/{job_id}/video")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(VIDEO)) and head.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-", 100, 2047),
        ("bytes=-16", 2032, 2047),
        ("bytes=2000-99999", 2000, 2047),  # an end past the file is clamped
        ("bytes=-5000", 0, 2047),  # a suffix longer than the file is the whole file
        ("bytes=2047-2047", 2047, 2047),
        ("Bytes=5-6", 5, 6),
    ],
)
def test_single_range_is_206(
    client: TestClient, settings: Settings, storage: LocalStorage, header: str, start: int, end: int
) -> None:
    job_id = finished_job(settings, storage)
    response = client.get(f"/v1/videos/{job_id}/video", headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == VIDEO[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(VIDEO)}"
    assert response.headers["content-length"] == str(end - start + 1)
    head = client.head(f"/v1/videos/{job_id}/video", headers={"Range": header})
    assert head.status_code == 206 and head.headers["content-range"] == f"bytes {start}-{end}/{len(VIDEO)}"


@pytest.mark.parametrize("header", ["bytes=2048-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416(
    client: TestClient, settings: Settings, storage: LocalStorage, header: str
) -> None:
    job_id = finished_job(settings, storage)
    response = client.get(f"/v1/videos/{job_id}/video", headers={"Range": header})
    assert response.status_code == 416, response.text
    assert response.headers["content-range"] == f"bytes */{len(VIDEO)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=a-b", "bytes="])
def test_ranges_we_do_not_serve_get_the_whole_file(
    client: TestClient, settings: Settings, storage: LocalStorage, header: str
) -> None:
    job_id = finished_job(settings, storage)
    response = client.get(f"/v1/videos/{job_id}/video", headers={"Range": header})
    assert response.status_code == 200 and response.content == VIDEO


def test_missing_file_is_404_not_an_empty_200(
    client: TestClient, settings: Settings, storage: LocalStorage
) -> None:
    job_id = finished_job(settings, storage, data=None)
    for method in ("GET", "HEAD"):
        response = client.request(method, f"/v1/videos/{job_id}/video")
        assert response.status_code == 404, (method, response.text)
    assert client.get(f"/v1/videos/{job_id}/video").json()["error"]["code"] == "video_not_found"
    ranged = client.get(f"/v1/videos/{job_id}/video", headers={"Range": "bytes=0-1"})
    assert ranged.status_code == 404


def test_file_gone_after_the_retention_is_410(
    client: TestClient, settings: Settings, storage: LocalStorage
) -> None:
    job_id = finished_job(settings, storage, data=None)
    store = JobStore(redis.Redis.from_url(settings.redis_url or ""))
    job = store.get(job_id)
    job.finished_at = utcnow() - timedelta(seconds=settings.job_ttl_s + 60)
    store.redis.hset(store._key(job_id), "record", job.model_dump_json(exclude={"progress"}))
    response = client.get(f"/v1/videos/{job_id}/video")
    assert response.status_code == 410 and response.json()["error"]["code"] == "video_expired"


def test_s3_download_is_still_a_presigned_redirect(settings: Settings, s3_server: dict[str, Any]) -> None:
    boto3.client("s3", **s3_server).create_bucket(Bucket="parla-download")
    storage = S3Storage("parla-download", prefix="dl", **s3_server)
    app = create_app(settings, redis_client=redis.Redis.from_url(settings.redis_url or ""), storage=storage)
    job_id = finished_job(settings, storage)
    try:
        with TestClient(app) as client:
            for method in ("GET", "HEAD"):
                response = client.request(method, f"/v1/videos/{job_id}/video", follow_redirects=False)
                assert response.status_code == 307
            url = client.get(f"/v1/videos/{job_id}/video", follow_redirects=False).headers["location"]
        ranged = httpx.get(url, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == VIDEO[10:20]
    finally:
        storage.delete_prefix("")


def test_download_of_a_job_not_finished_is_409(
    client: TestClient, settings: Settings, redis_url: str
) -> None:
    store = JobStore(redis.Redis.from_url(redis_url))
    job = store.create("anonymous", RenderOptions())
    response = client.head(f"/v1/videos/{job.id}/video")
    assert response.status_code == 409
    assert client.get(f"/v1/videos/{job.id}/video").json()["error"]["code"] == "video_not_ready"
