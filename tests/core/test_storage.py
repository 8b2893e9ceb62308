from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.errors import NotFound
from core.storage import LocalStorage, S3Storage, Storage, job_key


@pytest.fixture()
def s3_storage(s3_server: dict[str, Any]) -> Iterator[S3Storage]:
    import boto3

    boto3.client("s3", **s3_server).create_bucket(Bucket="parla-test")
    storage = S3Storage("parla-test", prefix="env/a", **s3_server)
    yield storage
    storage.delete_prefix("")


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    return request.getfixturevalue("s3_storage")  # type: ignore[no-any-return]


def test_put_get_list_delete(storage: Storage) -> None:
    storage.put_bytes(job_key("j1", "inputs", "image"), b"png")
    storage.put_bytes(job_key("j1", "segments", "00000.mp4"), b"seg0")
    storage.put_bytes(job_key("j2", "video.mp4"), b"other job")
    assert storage.get_bytes("jobs/j1/inputs/image") == b"png"
    assert storage.exists("jobs/j1/segments/00000.mp4") and not storage.exists("jobs/j1/nothing")
    assert storage.list_keys("jobs/j1/") == ["jobs/j1/inputs/image", "jobs/j1/segments/00000.mp4"]
    assert b"".join(storage.iter_bytes("jobs/j2/video.mp4", chunk_size=3)) == b"other job"
    storage.delete_prefix("jobs/j1/")
    assert storage.list_keys("jobs/j1/") == [] and storage.exists("jobs/j2/video.mp4")
    with pytest.raises(NotFound):
        storage.get_bytes("jobs/j1/inputs/image")
    storage.ping()


def test_overwrite_replaces_content(storage: Storage) -> None:
    storage.put_bytes("jobs/x/state/00001.carry", b"first")
    storage.put_bytes("jobs/x/state/00001.carry", b"second")
    assert storage.get_bytes("jobs/x/state/00001.carry") == b"second"


def test_s3_presigned_url_downloads_without_credentials(s3_storage: S3Storage) -> None:
    s3_storage.put_bytes("jobs/j/video.mp4", b"mp4 bytes", "video/mp4")
    url = s3_storage.presigned_url("jobs/j/video.mp4", 60)
    assert url is not None and "env/a/jobs/j/video.mp4" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"mp4 bytes"


def test_s3_prefix_keeps_deployments_apart(s3_storage: S3Storage, s3_server: dict[str, Any]) -> None:
    other = S3Storage("parla-test", prefix="env/b", **s3_server)
    s3_storage.put_bytes("jobs/j/a", b"1")
    assert other.list_keys("jobs/") == [] and not other.exists("jobs/j/a")


def test_local_storage_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        storage.put_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()
    assert storage.presigned_url("jobs/j/video.mp4", 60) is None


def test_size_and_ranged_reads(storage: Storage) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    storage.put_bytes("jobs/r/video.mp4", data, "video/mp4")
    assert storage.size("jobs/r/video.mp4") == len(data)
    assert b"".join(storage.iter_bytes("jobs/r/video.mp4", chunk_size=1000)) == data
    assert b"".join(storage.iter_bytes("jobs/r/video.mp4", 7, start=100, length=50)) == data[100:150]
    assert b"".join(storage.iter_bytes("jobs/r/video.mp4", start=10_000)) == data[10_000:]
    assert b"".join(storage.iter_bytes("jobs/r/video.mp4", start=10_239, length=1)) == data[-1:]
    assert b"".join(storage.iter_bytes("jobs/r/video.mp4", start=5, length=0)) == b""
    with pytest.raises(ValueError):
        storage.iter_bytes("jobs/r/video.mp4", start=-1)


def test_missing_object_raises_when_opened_not_when_first_read(storage: Storage) -> None:
    with pytest.raises(NotFound):
        storage.size("jobs/none/video.mp4")
    with pytest.raises(NotFound):
        storage.iter_bytes("jobs/none/video.mp4")  # no next(): the call itself must fail
    with pytest.raises(NotFound):
        storage.iter_bytes("jobs/none/video.mp4", start=3, length=4)
