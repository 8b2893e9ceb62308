"""Job events -> webhook deliveries (recorded in the outbox before any attempt) and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.jobs import Job
from core.metrics import ParlaMetrics
from core.webhook_outbox import WebhookOutbox
from core.webhooks import DEFAULT_WEBHOOK_EVENTS, is_terminal_event

log = logging.getLogger("parla.events")


def public_job_json(job: Job, video_url: str | None) -> dict[str, Any]:
    """The job JSON as webhooks carry it: the API's view, without the delivery log."""
    data = job.model_dump(mode="json", exclude={"webhooks"})
    if data.get("result") is not None:
        data["result"]["video_url"] = video_url
    return data


class JobNotifier:
    """Shared by the API and the worker.

    Args:
        outbox: durable webhook deliveries (None: webhooks off).
        metrics: counters to move (None: no metrics).
        video_url: job id -> URL of its video, for the ``result`` in webhook payloads.
        wake: called after a delivery is recorded, to wake a local dispatcher.
    """

    def __init__(
        self,
        outbox: WebhookOutbox | None,
        metrics: ParlaMetrics | None,
        video_url: Callable[[str], str | None],
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.video_url = video_url
        self.wake = wake

    def job_event(self, event_type: str, job: Job) -> None:
        """Never raises: a webhook or metric problem must not fail the job."""
        try:
            if self.metrics is not None and is_terminal_event(event_type):
                self.metrics.job_finished(job.status.value)
            url = job.params.webhook_url
            wanted = job.params.webhook_events or list(DEFAULT_WEBHOOK_EVENTS)
            if self.outbox is None or not url or event_type not in wanted:
                return
            data = public_job_json(job, self.video_url(job.id) if job.result else None)
            self.outbox.enqueue(job.id, event_type, url, data, terminal=is_terminal_event(event_type))
            if self.wake is not None:
                self.wake()
        except Exception:
            log.exception("job %s: recording event %s failed", job.id, event_type)
