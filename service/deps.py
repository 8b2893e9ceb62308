"""Request dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import numpy as np
import numpy.typing as npt
import redis
from fastapi import Depends, Request

from core.jobs import Job
from core.jobstore import JobStore
from core.metrics import ParlaMetrics
from core.queue import JobQueue
from core.settings import Settings
from core.storage import Storage


class PortraitCheck(Protocol):
    """Submit-time face check: raises ``core.errors.InvalidInput`` when the portrait is unusable."""

    def __call__(self, image: npt.NDArray[np.uint8], face_index: int | None) -> None: ...


class Authenticator(Protocol):
    """Maps the ``Authorization`` header to a tenant name; raises ``Unauthorized`` otherwise."""

    def __call__(self, authorization: str | None) -> str: ...


@dataclass
class Services:
    """Everything the routes need, built once by ``create_app``.

    The optional hooks connect tenancy limits, webhooks and metrics: ``admit_submission(tenant,
    job_id)`` raises to refuse a submission (rate limits), ``release_submission(tenant, job_id)``
    gives back what it took when the submission is not completed, ``on_canceled`` observes a job
    canceled while queued (once, by the call that canceled it), ``webhook_logs(job_ids)`` returns
    the jobs' webhook deliveries for their JSON, in one batch; ``engine_served(engine)`` tells
    whether a live worker serves an engine and ``engine_workers(engine)`` gives their cards
    (``core.workers``).
    """

    settings: Settings
    redis: redis.Redis
    jobs: JobStore
    queue: JobQueue
    storage: Storage
    authenticate: Authenticator
    portrait_check: PortraitCheck | None = None
    metrics: ParlaMetrics | None = None
    webhook_logs: Callable[[Sequence[str]], dict[str, list[dict[str, Any]]]] | None = None
    admit_submission: Callable[[str, str], None] | None = None
    release_submission: Callable[[str, str], None] | None = None
    on_canceled: Callable[[str, Job], None] | None = None
    engine_served: Callable[[str], bool] | None = None
    engine_workers: Callable[[str], list[dict[str, Any]]] | None = None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_tenant(request: Request, services: ServicesDep) -> str:
    return services.authenticate(request.headers.get("authorization"))


TenantDep = Annotated[str, Depends(get_tenant)]
