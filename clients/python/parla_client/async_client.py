"""``AsyncClient``: ``Client``'s methods as coroutines, on ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import httpx

from parla_client._requests import RETRY_STATUSES, Media, RetryPolicy, api_error, submit_request
from parla_client.client import _finished, _Poll, _Settings, _submit_options
from parla_client.models import Engine, Job, JobPage, JobStatus


class AsyncClient:
    """Asynchronous client: ``Client``'s methods as coroutines (``iter_jobs`` an async iterator)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = _Settings(base_url, api_key, timeout_s, retry)
        self._http = http or httpx.AsyncClient(**self.settings.http_options())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        policy = self.settings.retry
        for attempt in range(policy.max_retries + 1):
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = await self._http.send(request, stream=stream, follow_redirects=True)
            except httpx.TransportError:
                if attempt == policy.max_retries:
                    raise
                await asyncio.sleep(policy.delay_s(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < policy.max_retries:
                await response.aclose()
                await asyncio.sleep(policy.delay_s(attempt, response))
                continue
            if response.is_error:
                if stream:
                    await response.aread()
                    await response.aclose()
                raise api_error(response)
            return response
        raise AssertionError("unreachable")

    async def submit(
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
        """See ``Client.submit`` (local files are read in the calling thread)."""
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
        return Job.from_json((await self._send("POST", "/v1/videos", **request)).json())

    async def get(self, job_id: str) -> Job:
        return Job.from_json((await self._send("GET", f"/v1/videos/{job_id}")).json())

    async def cancel(self, job_id: str) -> Job:
        return Job.from_json((await self._send("POST", f"/v1/videos/{job_id}/cancel")).json())

    async def list(
        self, *, limit: int = 20, cursor: str | None = None, status: JobStatus | None = None
    ) -> JobPage:
        params = {
            key: value for key, value in (("limit", limit), ("cursor", cursor), ("status", status)) if value
        }
        body = (await self._send("GET", "/v1/videos", params=params)).json()
        return JobPage([Job.from_json(item) for item in body["data"]], body.get("next_cursor"))

    async def iter_jobs(self, *, status: JobStatus | None = None, page_size: int = 50) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            page = await self.list(limit=page_size, cursor=cursor, status=status)
            for job in page.data:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def engines(self) -> builtins.list[Engine]:
        return [Engine.from_json(item) for item in (await self._send("GET", "/v1/engines")).json()["data"]]

    async def wait(
        self,
        job_id: str,
        *,
        timeout_s: float | None = None,
        poll_interval_s: float = 0.5,
        max_interval_s: float = 5.0,
        on_progress: Callable[[Job], object | Awaitable[object]] | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """See ``Client.wait``; ``on_progress`` may be a coroutine function."""
        poll = _Poll(poll_interval_s, max_interval_s, timeout_s)
        while True:
            job = await self.get(job_id)
            if poll.changed(job) and on_progress is not None:
                outcome = on_progress(job)
                if isinstance(outcome, Awaitable):
                    await outcome
            if job.done:
                return _finished(job, raise_on_failure)
            await asyncio.sleep(poll.next_sleep(job))

    async def download(self, job_id: str, path: str | os.PathLike[str] | None = None) -> bytes | Path:
        return await self._fetch(f"/v1/videos/{job_id}/video", path)

    async def download_output(
        self, job_id: str, name: str, path: str | os.PathLike[str] | None = None
    ) -> bytes | Path:
        """One of the finished job's other outputs (``outputs``, e.g. ``"motion"``): an NPZ file."""
        return await self._fetch(f"/v1/videos/{job_id}/outputs/{name}", path)

    async def preview(self, job_id: str, path: str | os.PathLike[str] | None = None) -> bytes | Path:
        return await self._fetch(f"/v1/videos/{job_id}/preview.mp4", path)

    async def thumbnail(self, job_id: str) -> bytes:
        return (await self._send("GET", f"/v1/videos/{job_id}/thumbnail.jpg")).content

    def stream_url(self, job_id: str) -> str:
        return f"{self.settings.base_url}/v1/videos/{job_id}/stream.m3u8"

    async def _fetch(self, url: str, path: str | os.PathLike[str] | None) -> bytes | Path:
        response = await self._send("GET", url, stream=True)
        try:
            if path is None:
                return await response.aread()
            target = Path(path)
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as handle:
                async for block in response.aiter_bytes():
                    handle.write(block)
            partial.replace(target)
            return target
        finally:
            await response.aclose()

    async def render(
        self,
        image: Media,
        audio: Media,
        output: str | os.PathLike[str],
        *,
        timeout_s: float | None = None,
        on_progress: Callable[[Job], object | Awaitable[object]] | None = None,
        **submit_options: Any,
    ) -> Job:
        job = await self.submit(image, audio, **submit_options)
        job = await self.wait(job.id, timeout_s=timeout_s, on_progress=on_progress)
        await self.download(job.id, output)
        return job
