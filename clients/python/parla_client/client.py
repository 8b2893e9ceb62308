"""``Client``: the Parla API over ``httpx`` (``AsyncClient`` in ``async_client`` has the same methods)."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx

from parla_client._requests import RETRY_STATUSES, Media, RetryPolicy, api_error, submit_request
from parla_client.errors import JobFailed, WaitTimeout
from parla_client.models import Engine, Job, JobPage, JobStatus

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
ProgressCallback = Callable[[Job], object]


class _Settings:
    """What both clients hold: the base URL, the key, timeouts and the retry policy."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("PARLA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("PARLA_API_KEY")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    def http_options(self) -> dict[str, Any]:
        headers = {"User-Agent": "parla-client/0.1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {"base_url": self.base_url, "headers": headers, "timeout": self.timeout_s}


def _submit_options(
    engine: str | None,
    engine_options: dict[str, Any] | None,
    fps: float | None,
    size: int | None,
    seed: int | None,
    framing: Literal["crop", "full"] | None,
    face_index: int | None,
    outputs: list[str] | None,
    webhook_url: str | None,
    webhook_events: list[str] | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "engine": engine,
        "engine_options": engine_options,
        "fps": fps,
        "size": size,
        "seed": seed,
        "framing": framing,
        "face_index": face_index,
        "outputs": outputs,
        "webhook_url": webhook_url,
        "webhook_events": webhook_events,
        "metadata": metadata,
    }


class _Poll:
    """Polling state of ``wait``: the interval grows while nothing changes, and resets on a change."""

    def __init__(self, interval_s: float, max_interval_s: float, timeout_s: float | None) -> None:
        self.base, self.interval, self.max_interval = interval_s, interval_s, max_interval_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.last: tuple[str, int] | None = None

    def changed(self, job: Job) -> bool:
        state = (job.status, job.progress.frames_done)
        changed, self.last = state != self.last, state
        self.interval = self.base if changed else min(self.interval * 1.5, self.max_interval)
        return changed

    def next_sleep(self, job: Job) -> float:
        """Seconds to sleep before the next poll; raises ``WaitTimeout`` past the deadline."""
        if self.deadline is None:
            return self.interval
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(job, self.timeout_s or 0.0)
        return min(self.interval, left)


def _finished(job: Job, raise_on_failure: bool) -> Job:
    if raise_on_failure and job.status != "succeeded":
        raise JobFailed(job)
    return job


class Client:
    """Synchronous client.

    Args:
        base_url: the API's root (``PARLA_BASE_URL``, else ``http://127.0.0.1:8000``).
        api_key: bearer key (``PARLA_API_KEY``; none for a deployment with auth disabled).
        timeout_s: per request.
        retry: retry policy for 429/5xx answers and connection errors.
        http: an ``httpx.Client`` to use instead of one built here (its base URL and headers are kept).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = _Settings(base_url, api_key, timeout_s, retry)
        self._http = http or httpx.Client(**self.settings.http_options())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        policy = self.settings.retry
        for attempt in range(policy.max_retries + 1):
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=stream, follow_redirects=True)
            except httpx.TransportError:
                if attempt == policy.max_retries:
                    raise
                time.sleep(policy.delay_s(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < policy.max_retries:
                response.close()
                time.sleep(policy.delay_s(attempt, response))
                continue
            if response.is_error:
                if stream:
                    response.read()
                    response.close()
                raise api_error(response)
            return response
        raise AssertionError("unreachable")

    def submit(
        self,
        image: Media,
        audio: Media,
        *,
        driving_video: Media | None = None,
        engine: str | None = None,
        engine_options: dict[str, Any] | None = None,
        fps: float | None = None,
        size: int | None = None,
        seed: int | None = None,
        framing: Literal["crop", "full"] | None = None,
        face_index: int | None = None,
        outputs: list[str] | None = None,
        webhook_url: str | None = None,
        webhook_events: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job: files (paths, bytes, open files) as multipart, or URLs as JSON.

        ``None`` leaves an option to the server's default. Raises ``APIError`` when refused.
        """
        options = _submit_options(
            engine,
            engine_options,
            fps,
            size,
            seed,
            framing,
            face_index,
            outputs,
            webhook_url,
            webhook_events,
            metadata,
        )
        media = {"image": image, "audio": audio, "driving_video": driving_video}
        request = submit_request(media, options, idempotency_key)
        return Job.from_json(self._send("POST", "/v1/videos", **request).json())

    def get(self, job_id: str) -> Job:
        return Job.from_json(self._send("GET", f"/v1/videos/{job_id}").json())

    def cancel(self, job_id: str) -> Job:
        return Job.from_json(self._send("POST", f"/v1/videos/{job_id}/cancel").json())

    def list(self, *, limit: int = 20, cursor: str | None = None, status: JobStatus | None = None) -> JobPage:
        """One page of your jobs, newest first."""
        params = {
            key: value for key, value in (("limit", limit), ("cursor", cursor), ("status", status)) if value
        }
        body = self._send("GET", "/v1/videos", params=params).json()
        return JobPage([Job.from_json(item) for item in body["data"]], body.get("next_cursor"))

    def iter_jobs(self, *, status: JobStatus | None = None, page_size: int = 50) -> Iterator[Job]:
        """Every job, page after page."""
        cursor: str | None = None
        while True:
            page = self.list(limit=page_size, cursor=cursor, status=status)
            yield from page.data
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def engines(self) -> builtins.list[Engine]:
        """The engines served now, with their options schemas and defaults."""
        return [Engine.from_json(item) for item in self._send("GET", "/v1/engines").json()["data"]]

    def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_interval_s: float = 0.5,
        max_interval_s: float = 5.0,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """Poll until the job ends; ``on_progress(job)`` runs on every change of status or progress.

        Raises:
            JobFailed: it failed or was canceled (unless ``raise_on_failure`` is False).
            WaitTimeout: it was still running after ``timeout_s``.
        """
        poll = _Poll(poll_interval_s, max_interval_s, timeout_s)
        while True:
            job = self.get(job_id)
            if poll.changed(job) and on_progress is not None:
                on_progress(job)
            if job.done:
                return _finished(job, raise_on_failure)
            time.sleep(poll.next_sleep(job))

    def download(self, job_id: str, path: str | os.PathLike[str] | None = None) -> bytes | Path:
        """The finished MP4: written to ``path`` (returned) in blocks, or returned as bytes."""
        return self._fetch(f"/v1/videos/{job_id}/video", path)

    def _fetch(self, url: str, path: str | os.PathLike[str] | None) -> bytes | Path:
        response = self._send("GET", url, stream=True)
        try:
            if path is None:
                return response.read()
            target = Path(path)
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as handle:
                for block in response.iter_bytes():
                    handle.write(block)
            partial.replace(target)
            return target
        finally:
            response.close()

    def download_output(
        self, job_id: str, name: str, path: str | os.PathLike[str] | None = None
    ) -> bytes | Path:
        """One of the finished job's other outputs (``outputs``, e.g. ``"motion"``): an NPZ file,
        written to ``path`` (returned) or returned as bytes."""
        return self._fetch(f"/v1/videos/{job_id}/outputs/{name}", path)

    def preview(self, job_id: str, path: str | os.PathLike[str] | None = None) -> bytes | Path:
        """The chunks rendered so far as one MP4 with the speech (``APIError`` 409 before the first)."""
        return self._fetch(f"/v1/videos/{job_id}/preview.mp4", path)

    def thumbnail(self, job_id: str) -> bytes:
        """The first rendered frame as JPEG (``APIError`` 409 before the first chunk)."""
        return self._send("GET", f"/v1/videos/{job_id}/thumbnail.jpg").content

    def stream_url(self, job_id: str) -> str:
        """The job's live HLS playlist, for a player (it needs this client's Authorization header)."""
        return f"{self.settings.base_url}/v1/videos/{job_id}/stream.m3u8"

    def render(
        self,
        image: Media,
        audio: Media,
        output: str | os.PathLike[str],
        *,
        timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        **submit_options: Any,
    ) -> Job:
        """Submit, wait and download to ``output``: the whole round trip. Raises ``JobFailed``."""
        job = self.submit(image, audio, **submit_options)
        job = self.wait(job.id, timeout_s=timeout_s, on_progress=on_progress)
        self.download(job.id, output)
        return job
