"""Object storage: S3 (boto3, any S3-compatible endpoint) or a local directory.

Everything of one job lives under ``jobs/{job_id}/``: ``inputs/``, ``segments/``, ``state/``
and ``video.mp4`` (see ``job_key``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from core.errors import NotFound, StorageError
from core.settings import Settings


def job_key(job_id: str, *parts: str) -> str:
    """Key of an object of a job, e.g. ``job_key(id, "segments", "00003.mp4")``."""
    return "/".join(("jobs", job_id, *parts))


def segment_key(job_id: str, index: int) -> str:
    """A finished chunk's H.264 MP4 segment (the worker writes it; previews read it)."""
    return job_key(job_id, "segments", f"{index:05d}.mp4")


def carry_key(job_id: str, index: int) -> str:
    """A finished chunk's ``ChunkCarry``: what the next chunk starts from after a resume."""
    return job_key(job_id, "state", f"{index:05d}.carry")


def output_part_key(job_id: str, name: str, index: int) -> str:
    """A finished chunk's arrays of output ``name`` (an NPZ, joined into the output at the end)."""
    return job_key(job_id, "outputs", name, f"{index:05d}.npz")


def output_key(job_id: str, name: str) -> str:
    """The file of output ``name`` (besides ``video.mp4``) of a finished job."""
    return job_key(job_id, "outputs", f"{name}.npz")


class Storage(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Store the file at ``path`` without reading it whole into memory."""
        ...

    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL a client can GET without credentials, or None (the API streams the file)."""
        ...

    def size(self, key: str) -> int:
        """The object's length in bytes; ``NotFound`` when there is none."""
        ...

    def iter_bytes(
        self, key: str, chunk_size: int = 1 << 20, *, start: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """The object's bytes from ``start`` (``length`` of them, or to the end), in blocks.

        The object is opened by the call itself, not by the first ``next``: a missing object
        raises ``NotFound`` here, before a caller has sent any response headers.
        """
        ...

    def ping(self) -> None:
        """Raise ``StorageError`` if the storage does not answer."""
        ...


class LocalStorage:
    """A directory on this machine; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key escapes the storage root: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle, Path(path).open("rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {key!r}", code="object_not_found") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list_keys(prefix):
            self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object {key!r}", code="object_not_found")
        return path.stat().st_size

    def iter_bytes(
        self, key: str, chunk_size: int = 1 << 20, *, start: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        _check_span(start, length)
        try:
            handle = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"no object {key!r}", code="object_not_found") from None
        handle.seek(start)
        return _read_blocks(handle, chunk_size, length)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"storage directory {self.root} is not writable")


class S3Storage:
    """An S3 bucket (AWS, MinIO, R2, ...) through boto3.

    Args:
        bucket: bucket name (must exist).
        prefix: key prefix inside the bucket.
        client_kwargs: passed to ``boto3.client("s3", ...)`` (endpoint_url, region_name, credentials).
    """

    def __init__(
        self, bucket: str, prefix: str = "", public_endpoint_url: str | None = None, **client_kwargs: Any
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, signature_version="s3v4")
        self.client = boto3.client("s3", config=config, **client_kwargs)
        # Presigning is local computation: a second client signs URLs for the host clients can reach.
        self.presign_client = (
            boto3.client("s3", config=config, **{**client_kwargs, "endpoint_url": public_endpoint_url})
            if public_endpoint_url
            else self.client
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"no object {kwargs.get('Key')!r}", code="object_not_found") from None
            raise StorageError(f"S3 {what} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {what} failed: {exc}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call("put", self.client.put_object, Key=self._key(key), Body=data, ContentType=content_type)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        # Multipart above 16 MiB, in 16 MiB parts: constant memory whatever the video's length.
        config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
        try:
            self.client.upload_file(
                str(path), self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}, Config=config
            )
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise StorageError(f"S3 upload failed: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        response = self._call("get", self.client.get_object, Key=self._key(key))
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self._call("head", self.client.head_object, Key=self._key(key))
        except NotFound:
            return False
        return True

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list", self.client.list_objects_v2, Prefix=self._key(prefix), **extra)
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list_keys(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._call("delete", self.client.delete_objects, Delete={"Objects": batch})

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        url: str = self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )
        return url

    def size(self, key: str) -> int:
        response = self._call("head", self.client.head_object, Key=self._key(key))
        return int(response["ContentLength"])

    def iter_bytes(
        self, key: str, chunk_size: int = 1 << 20, *, start: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        _check_span(start, length)
        if length == 0:
            return iter(())
        extra: dict[str, str] = {}
        if start > 0 or length is not None:
            extra["Range"] = f"bytes={start}-{'' if length is None else start + length - 1}"
        response = self._call("get", self.client.get_object, Key=self._key(key), **extra)
        chunks: Iterator[bytes] = response["Body"].iter_chunks(chunk_size)
        return chunks

    def ping(self) -> None:
        self._call("ping", self.client.head_bucket)


def _check_span(start: int, length: int | None) -> None:
    if start < 0 or (length is not None and length < 0):
        raise ValueError(f"start and length must be >= 0, got {start}, {length}")


def _read_blocks(handle: BinaryIO, chunk_size: int, length: int | None) -> Iterator[bytes]:
    with handle:
        remaining = length
        while remaining is None or remaining > 0:
            block = handle.read(chunk_size if remaining is None else min(chunk_size, remaining))
            if not block:
                return
            if remaining is not None:
                remaining -= len(block)
            yield block


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage == "s3":
        kwargs: dict[str, Any] = {}
        if settings.s3_endpoint_url:
            kwargs["endpoint_url"] = settings.s3_endpoint_url
        if settings.s3_region:
            kwargs["region_name"] = settings.s3_region
        return S3Storage(
            settings.s3_bucket,
            settings.s3_prefix,
            public_endpoint_url=settings.s3_public_endpoint_url,
            **kwargs,
        )
    return LocalStorage(settings.storage_dir)


def video_url(storage: Storage, settings: Settings, job_id: str, base_url: str | None = None) -> str:
    """Where a client downloads a finished job's MP4: a presigned URL, or the API's download route."""
    return _download_url(storage, settings, job_key(job_id, "video.mp4"), f"{job_id}/video", base_url)


def output_url(
    storage: Storage, settings: Settings, job_id: str, name: str, base_url: str | None = None
) -> str:
    """Where a client downloads a finished job's output ``name``: presigned, or the API's route."""
    return _download_url(storage, settings, output_key(job_id, name), f"{job_id}/outputs/{name}", base_url)


def _download_url(storage: Storage, settings: Settings, key: str, route: str, base_url: str | None) -> str:
    presigned = storage.presigned_url(key, settings.presign_expires_s)
    if presigned is not None:
        return presigned
    base = settings.public_url or base_url or f"http://{settings.host}:{settings.port}"
    return f"{base.rstrip('/')}/v1/videos/{route}"
