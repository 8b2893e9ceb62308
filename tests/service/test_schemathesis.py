"""Schemathesis against the live API: every answer matches the OpenAPI document (bounded: seconds).

The API runs as the other service tests run it (the ``test`` engine, a real redis-server, local
storage) but with a real API key, so that the checks on authentication mean something. URL inputs
are never fetched: ``service.inputs._download`` is replaced by a stand-in that answers as an
unreachable host does, so no generated URL leaves the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from core.errors import InvalidInput
from core.jobs import JobStatus
from core.jobstore import JobStore
from core.settings import Settings
from core.storage import LocalStorage
from models.testing import PatternEngine
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app
from worker.runner import ChunkRunner

API_KEY = "schemathesis-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CONFIG = schemathesis.Config.from_dict({"seed": 1})
OPERATIONS = [
    "POST /v1/videos",
    "GET /v1/videos",
    "GET /v1/videos/{job_id}",
    "POST /v1/videos/{job_id}/cancel",
    "GET /v1/videos/{job_id}/video",
    "HEAD /v1/videos/{job_id}/video",
    "GET /v1/videos/{job_id}/outputs/{name}",
    "GET /v1/videos/{job_id}/stream.m3u8",
    "GET /v1/videos/{job_id}/stream/{index}.ts",
    "GET /v1/videos/{job_id}/preview.mp4",
    "GET /v1/videos/{job_id}/thumbnail.jpg",
    "GET /v1/engines",
    "GET /v1/engines/{name}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
]
EXAMPLES_PER_OPERATION = 4


async def _unreachable(name: str, url: httpx.URL, *args: Any) -> bytes:
    raise InvalidInput(f"could not fetch `{name}_url`", code="url_fetch_failed")


@pytest.fixture()
def api(settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FastAPI, str]]:
    """The API, and the id of a job it rendered (so that generated requests also meet a real one)."""
    monkeypatch.setattr("service.inputs._download", _unreachable)
    settings = settings.model_copy(
        update={"engines": ["test", "warp"], "auth_disabled": False, "api_keys": f"tester:{API_KEY}"}
    )
    app = make_app(settings)
    with TestClient(app, headers=AUTH) as client:  # runs the app's startup, as a server would
        files = {"image": ("p.png", image_bytes(160, 160)), "audio": ("a.wav", wav_bytes(0.5))}
        submitted = client.post("/v1/videos", files=files, data={"size": "64", "fps": "10"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        jobs = JobStore(redis.Redis.from_url(redis_url))
        runner = ChunkRunner(PatternEngine(chunk_frames=8), jobs, LocalStorage(settings.storage_dir))
        assert runner.run(job_id) == JobStatus.SUCCEEDED
        yield app, job_id


def test_the_operations_below_are_all_of_them(api: tuple[FastAPI, str]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api[0], config=CONFIG)
    assert sorted(result.ok().label for result in schema.get_all_operations()) == sorted(OPERATIONS)


RUNS = [
    *((label, "positive") for label in OPERATIONS),
    *(
        (label, "negative")
        for label in OPERATIONS
        if "{" in label or label.startswith(("POST", "GET /v1/videos"))
    ),
    *((label, "known") for label in OPERATIONS if "{" in label),  # the path names a job or engine that exists
]


@pytest.mark.parametrize(("label", "run"), RUNS, ids=[f"{label}-{run}" for label, run in RUNS])
def test_every_answer_matches_the_document(api: tuple[FastAPI, str], label: str, run: str) -> None:
    app, job_id = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    method, path = label.split(" ")
    operation = schema[path][method]
    mode = GenerationMode.NEGATIVE if run == "negative" else GenerationMode.POSITIVE
    known = {"job_id": job_id} if "{job_id}" in path else {"name": "test"}
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=known if run == "known" else None)
    excluded = []
    if label == "POST /v1/videos":
        # Bodies that satisfy the schema still carry random bytes as images, or engine options of
        # another engine than the one named: the API rightly refuses them (422).
        excluded.append(positive_data_acceptance)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=excluded)

    check()
