"""Outputs besides the video: ``outputs`` checked at submit against the engine, then downloaded."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from core.jobs import JobStatus, OutputFile, RenderOptions, VideoResult
from core.jobstore import JobStore
from core.settings import Settings
from core.storage import LocalStorage, job_key, output_key
from core.workers import WorkerRegistry
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app

FILES = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(1.0))}
MOTION = b"\x93NUMPY stand-in" * 10


@pytest.fixture()
def client(settings: Settings, redis_url: str) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"engines": ["test", "liveportrait-tiny"]})
    WorkerRegistry(redis.Redis.from_url(redis_url)).announce("w-lp", "liveportrait-tiny", ttl_s=60)
    with TestClient(make_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def finished(settings: Settings, outputs: list[str], *, stored: bool = True) -> str:
    store = JobStore(redis.Redis.from_url(settings.redis_url or ""), settings.key_prefix, settings.job_ttl_s)
    job = store.create("anonymous", RenderOptions(engine="liveportrait-tiny", outputs=outputs))  # type: ignore[arg-type]
    storage = LocalStorage(settings.storage_dir)
    storage.put_bytes(job_key(job.id, "video.mp4"), b"mp4", "video/mp4")
    files = {}
    for name in outputs[1:]:
        if stored:
            storage.put_bytes(output_key(job.id, name), MOTION)
        files[name] = OutputFile(bytes=len(MOTION))
    result = VideoResult(duration_s=1, fps=25, frames=25, width=64, height=64, bytes=3, outputs=files)
    store.finish(job.id, JobStatus.SUCCEEDED, result=result)
    return job.id


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"engine": "test", "outputs": "video,motion"}, "engine 'test' makes video, not motion"),
        ({"engine": "liveportrait-tiny", "outputs": "video,landmarks"}, "not landmarks"),
        ({"engine": "liveportrait-tiny", "outputs": "motion"}, "must include 'video'"),
        ({"engine": "liveportrait-tiny", "outputs": '["video", "video"]'}, "at most once"),
        ({"engine": "liveportrait-tiny", "outputs": "video,sound"}, "outputs"),
    ],
)
def test_outputs_the_engine_does_not_make_are_refused_at_submit(
    client: TestClient, data: dict[str, str], message: str
) -> None:
    response = client.post("/v1/videos", files=FILES, data=data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_params" and message in error["message"], error
    assert client.get("/v1/videos").json()["data"] == []


@pytest.mark.parametrize("outputs", ["video,motion", "motion,video", '["motion", "video"]'])
def test_outputs_are_taken_as_a_list_or_json_and_recorded_video_first(
    client: TestClient, outputs: str
) -> None:
    response = client.post(
        "/v1/videos", files=FILES, data={"engine": "liveportrait-tiny", "outputs": outputs}
    )
    assert response.status_code == 202, response.text
    assert response.json()["params"]["outputs"] == ["video", "motion"]


def test_json_submissions_take_outputs_and_default_to_the_video(client: TestClient) -> None:
    uris = {
        "image_url": "data:image/png;base64," + base64.b64encode(FILES["image"][1]).decode(),
        "audio_url": "data:audio/wav;base64," + base64.b64encode(FILES["audio"][1]).decode(),
    }
    plain = client.post("/v1/videos", json={**uris, "engine": "test"})
    assert plain.status_code == 202 and plain.json()["params"]["outputs"] == ["video"]
    motion = client.post(
        "/v1/videos", json={**uris, "engine": "liveportrait-tiny", "outputs": ["video", "motion"]}
    )
    assert motion.status_code == 202 and motion.json()["params"]["outputs"] == ["video", "motion"]


def test_a_finished_jobs_output_has_a_url_and_downloads(client: TestClient, settings: Settings) -> None:
    job_id = finished(settings, ["video", "motion"])
    job = client.get(f"/v1/videos/{job_id}").json()
    output = job["result"]["outputs"]["motion"]
    assert output["url"].endswith(f"/v1/videos/{job_id}/outputs/motion") and output["bytes"] == len(MOTION)
    response = client.get(f"/v1/videos/{job_id}/outputs/motion")
    assert response.status_code == 200 and response.content == MOTION
    assert response.headers["content-disposition"] == f'attachment; filename="{job_id}-motion.npz"'


@pytest.mark.parametrize(
    ("outputs", "name", "stored", "status", "code"),
    [
        (["video"], "motion", True, 404, "output_not_found"),  # not asked for
        (["video", "motion"], "video", True, 404, "output_not_found"),  # the video has its own route
        (["video", "motion"], "motion", False, 404, "output_not_found"),  # its file is gone
        (["video", "motion"], "sound", True, 422, "invalid_request"),  # no such output at all
    ],
)
def test_output_downloads_that_cannot_be_served(
    client: TestClient,
    settings: Settings,
    outputs: list[str],
    name: str,
    stored: bool,
    status: int,
    code: str,
) -> None:
    job_id = finished(settings, outputs, stored=stored)
    response = client.get(f"/v1/videos/{job_id}/outputs/{name}")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_an_output_of_a_job_still_queued_is_not_ready(client: TestClient) -> None:
    submitted = client.post(
        "/v1/videos", files=FILES, data={"engine": "liveportrait-tiny", "outputs": "video,motion"}
    )
    response = client.get(f"/v1/videos/{submitted.json()['id']}/outputs/motion")
    assert response.status_code == 409 and response.json()["error"]["code"] == "video_not_ready"


def test_engines_list_the_outputs_they_make(client: TestClient) -> None:
    engines = {engine["name"]: engine for engine in client.get("/v1/engines").json()["data"]}
    assert engines["liveportrait-tiny"]["capabilities"]["outputs"] == ["video", "motion"]
    assert engines["test"]["capabilities"]["outputs"] == ["video"]
