"""Job events -> webhook deliveries (recorded in the outbox before any attempt) and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.jobs import Job
from core.metrics import ParlaMetrics
from core.webhook_outbox import WebhookOutbox
from core.webhooks import DEFAULT_WEBHOOK_EVENTS, EVENT_CHUNK, is_terminal_event

log = logging.getLogger(__name__)


def public_job_json(job: Job, video_url: str | None) -> dict[str, Any]:
    """The job JSON as webhooks carry it: the API's view, without the delivery log."""
    data = job.model_dump(mode="json", exclude={"webhooks"})
    if data.get("result") is not None:
        data["result"]["video_url"] = video_url
    return data


def chunk_json(job_id: str, index: int, start: int, stop: int, api_url: str) -> dict[str, Any]:
    """The ``chunk`` object of a ``video.chunk`` event: which frames the stored chunk holds and
    where to watch it (API routes: they take the same bearer key as the rest of ``/v1``)."""
    base = f"{api_url.rstrip('/')}/v1/videos/{job_id}"
    return {
        "index": index,
        "start_frame": start,
        "stop_frame": stop,
        "frames": stop - start,
        "segment_url": f"{base}/stream/{index}.ts",
        "playlist_url": f"{base}/stream.m3u8",
        "preview_url": f"{base}/preview.mp4",
        "thumbnail_url": f"{base}/thumbnail.jpg",
    }


class JobNotifier:
    """Shared by the API and the worker.

    Args:
        outbox: durable webhook deliveries (None: webhooks off).
        metrics: counters to move (None: no metrics).
        video_url: job id -> URL of its video, for the ``result`` in webhook payloads.
        wake: called after a delivery is recorded, to wake a local dispatcher.
        api_url: base URL clients reach the API at, for the preview links of ``video.chunk``
            (``PARLA_PUBLIC_URL``; default: the API's own host and port).
    """

    def __init__(
        self,
        outbox: WebhookOutbox | None,
        metrics: ParlaMetrics | None,
        video_url: Callable[[str], str | None],
        wake: Callable[[], None] | None = None,
        api_url: str = "http://127.0.0.1:8000",
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.video_url = video_url
        self.wake = wake
        self.api_url = api_url

    def job_event(self, event_type: str, job: Job) -> None:
        """Never raises: a webhook or metric problem must not fail the job."""
        try:
            if self.metrics is not None and is_terminal_event(event_type):
                self.metrics.job_finished(job.status.value)
            if self._wants(event_type, job):
                self._send(
                    event_type, job, public_job_json(job, self.video_url(job.id) if job.result else None)
                )
        except Exception:
            log.exception("job %s: recording event %s failed", job.id, event_type)

    def chunk_stored(self, job: Job, index: int, start: int, stop: int) -> None:
        """``video.chunk`` for a job that subscribed to it: chunk ``index`` (frames ``start`` to
        ``stop``) is in storage. Never raises."""
        try:
            if self._wants(EVENT_CHUNK, job):
                data = public_job_json(job, None)
                data["chunk"] = chunk_json(job.id, index, start, stop, self.api_url)
                self._send(EVENT_CHUNK, job, data)
        except Exception:
            log.exception("job %s: recording event %s failed", job.id, EVENT_CHUNK)

    def _wants(self, event_type: str, job: Job) -> bool:
        wanted = job.params.webhook_events or list(DEFAULT_WEBHOOK_EVENTS)
        return self.outbox is not None and bool(job.params.webhook_url) and event_type in wanted

    def _send(self, event_type: str, job: Job, data: dict[str, Any]) -> None:
        assert self.outbox is not None and job.params.webhook_url  # checked by _wants
        self.outbox.enqueue(
            job.id, event_type, job.params.webhook_url, data, terminal=is_terminal_event(event_type)
        )
        if self.wake is not None:
            self.wake()
