"""A client generated from the live OpenAPI document (openapi-python-client) drives jobs end to end.

The API runs on a real uvicorn on 127.0.0.1 with a real key; the generator runs in a subprocess,
offline, into ``tmp_path``; the job is rendered in this process by the worker's ``ChunkRunner`` on
the ``test`` engine. Both submit forms are used, with options: multipart (flat fields, an engine
option among them) and JSON (``data:`` URIs, ``engine_options`` as an object).
"""

from __future__ import annotations

import base64
import importlib
import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from core.jobs import JobStatus
from core.jobstore import JobStore
from core.localredis import free_port
from core.settings import Settings
from core.storage import LocalStorage
from models.testing import PatternEngine
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app
from worker.runner import ChunkRunner

API_KEY = "generated-client-key-0123"
GENERATOR_CONFIG = """\
post_hooks: []
content_type_overrides:
  video/mp4: application/octet-stream
  video/mp2t: application/octet-stream
  application/vnd.apple.mpegurl: application/octet-stream
  image/jpeg: application/octet-stream
"""
"""No formatter runs after generation; ``video/mp4`` downloads parse as files (the generator's own
configuration, for media types it does not know)."""


@pytest.fixture()
def server(settings: Settings) -> Iterator[tuple[str, Settings]]:
    settings = settings.model_copy(
        update={"engines": ["test", "warp"], "auth_disabled": False, "api_keys": f"sdk:{API_KEY}"}
    )
    port = free_port()
    config = uvicorn.Config(make_app(settings), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", settings
    finally:
        uv.should_exit = True
        thread.join(10)


def generate_client(base_url: str, directory: Path) -> ModuleType:
    """Fetch the live document, generate a package from it, and import the package."""
    spec = directory / "openapi.json"
    spec.write_bytes(httpx.get(f"{base_url}/openapi.json").raise_for_status().content)
    (directory / "config.yaml").write_text(GENERATOR_CONFIG)
    generator = Path(sys.executable).with_name("openapi-python-client")
    package = directory / "parla_generated"
    result = subprocess.run(
        [
            *(str(generator), "generate", "--path", str(spec), "--output-path", str(package)),
            *("--meta", "none", "--config", str(directory / "config.yaml")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("parla_generated")
    finally:
        sys.path.remove(str(directory))


@pytest.fixture()
def generated(server: tuple[str, Settings], tmp_path: Path) -> Iterator[Any]:
    base_url, _ = server
    yield generate_client(base_url, tmp_path)
    for name in [name for name in sys.modules if name.split(".")[0] == "parla_generated"]:
        del sys.modules[name]


def sub(package: Any, name: str) -> Any:
    """A module of the generated package."""
    return importlib.import_module(f"{package.__name__}.{name}")


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.slow  # about 9 s: the generator runs in a subprocess
def test_a_generated_client_submits_both_forms_follows_and_downloads(
    generated: Any, server: tuple[str, Settings], redis_url: str
) -> None:
    base_url, settings = server
    models = sub(generated, "models")
    types = sub(generated, "types")
    submit, get_video, list_videos = (
        sub(generated, f"api.videos.{n}") for n in ("submit_video", "get_video", "list_videos")
    )
    cancel_video, download_video = (
        sub(generated, "api.videos.cancel_video"),
        sub(generated, "api.videos.download_video"),
    )
    list_engines, get_engine = (
        sub(generated, "api.engines.list_engines"),
        sub(generated, "api.engines.get_engine"),
    )
    client = generated.AuthenticatedClient(base_url=base_url, token=API_KEY, raise_on_unexpected_status=True)

    # multipart: files, common options and an engine option as flat fields, metadata as JSON
    form = models.SubmitVideoForm(
        image=types.File(payload=io.BytesIO(image_bytes(160, 160)), file_name="p.png", mime_type="image/png"),
        audio=types.File(payload=io.BytesIO(wav_bytes(0.5)), file_name="a.wav", mime_type="audio/wav"),
        engine=models.SubmitVideoFormEngine("warp"),
        fps=10.0,
        size=64,
        head_motion=0.8,
        metadata=models.SubmitVideoFormMetadata.from_dict({"order": "42"}),
    )
    response = submit.sync_detailed(client=client, body=form)
    assert response.status_code == 202, response.content
    warp_job = response.parsed
    assert isinstance(warp_job, models.Job) and warp_job.status == models.JobStatus.QUEUED
    assert warp_job.params.engine_options.to_dict() == {"head_motion": 0.8}
    assert warp_job.metadata.to_dict() == {"order": "42"}
    assert response.headers["location"] == f"/v1/videos/{warp_job.id}"
    canceled = cancel_video.sync(warp_job.id, client=client)
    assert isinstance(canceled, models.Job) and canceled.status == models.JobStatus.CANCELED

    # JSON: data: URIs, engine_options as an object, an idempotency key
    body = models.SubmitVideoJson(
        image_url=data_uri("image/png", image_bytes(160, 160)),
        audio_url=data_uri("audio/wav", wav_bytes(0.5)),
        engine=models.SubmitVideoJsonEngineType0("test"),
        fps=10.0,
        size=64,
        seed=7,
        engine_options=models.PatternOptions(),
    )
    job = submit.sync(client=client, body=body, idempotency_key="generated-1")
    assert isinstance(job, models.Job) and job.params.seed == 7 and job.params.engine == "test"
    again = submit.sync_detailed(client=client, body=body, idempotency_key="generated-1")
    assert again.parsed.id == job.id and again.headers["idempotent-replayed"] == "true"

    runner = ChunkRunner(
        PatternEngine(chunk_frames=8),
        JobStore(redis.Redis.from_url(redis_url)),
        LocalStorage(settings.storage_dir),
    )
    assert runner.run(job.id) == JobStatus.SUCCEEDED

    done = get_video.sync(job.id, client=client)
    assert done.status == models.JobStatus.SUCCEEDED and done.result.frames == 5
    page = list_videos.sync(client=client, limit=10)
    assert [item.id for item in page.data] == [job.id, warp_job.id]
    download = download_video.sync_detailed(job.id, client=client)
    assert download.status_code == 200 and download.content[4:8] == b"ftyp"
    assert download.parsed.payload.read() == download.content
    assert int(download.headers["content-length"]) == done.result.bytes_

    engines = list_engines.sync(client=client)
    assert sorted(engine.name for engine in engines.data) == ["test", "warp"]

    # errors parse as the one error body, with its code
    missing = get_engine.sync("nope", client=client)
    assert isinstance(missing, models.ErrorBody) and missing.error.code == models.ErrorCode.ENGINE_NOT_FOUND
    bad_cursor = list_videos.sync(client=client, cursor="x")
    assert bad_cursor.error.code == models.ErrorCode.INVALID_CURSOR
    not_ready = download_video.sync_detailed(warp_job.id, client=client)
    assert not_ready.status_code == 409 and not_ready.parsed.error.code == models.ErrorCode.VIDEO_NOT_READY
    anonymous = generated.Client(base_url=base_url, raise_on_unexpected_status=True)
    refused = get_video.sync(job.id, client=anonymous)
    assert refused.error.code == models.ErrorCode.UNAUTHORIZED
