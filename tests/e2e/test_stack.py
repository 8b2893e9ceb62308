"""End to end: real uvicorn and worker processes, real Redis and S3 (moto server), real MP4s."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from core.media import probe_video
from service.stack import Stack
from tests.media import image_bytes, wav_bytes

pytestmark = pytest.mark.e2e


def stack_env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PARLA_REDIS_URL": redis_url,
        "PARLA_ENGINE": "test",
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_FACE_CHECK": "false",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
        **extra,
    }


def wait_for(client: httpx.Client, job_id: str, condition: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/videos/{job_id}").json()
        if condition(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"condition not reached; last state {job}")


def submit(client: httpx.Client, seconds: float, **fields: Any) -> str:
    files = {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(seconds))}
    response = client.post("/v1/videos", files=files, data={"size": "64", "seed": "3", **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.fixture()
def s3_env(s3_server: dict[str, Any]) -> Iterator[dict[str, str]]:
    boto3.client("s3", **s3_server).create_bucket(Bucket="parla-e2e")
    yield {
        "PARLA_STORAGE": "s3",
        "PARLA_S3_BUCKET": "parla-e2e",
        "PARLA_S3_ENDPOINT_URL": s3_server["endpoint_url"],
        "PARLA_S3_REGION": s3_server["region_name"],
        "AWS_ACCESS_KEY_ID": s3_server["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": s3_server["aws_secret_access_key"],
    }


def test_submit_render_download_over_http_with_s3(
    redis_url: str, tmp_path: Path, s3_env: dict[str, str]
) -> None:
    env = stack_env(redis_url, tmp_path, **s3_env, PARLA_ENGINE_CONFIG=json.dumps({"chunk_frames": 10}))
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        job_id = submit(client, 1.6, fps="25")
        job = wait_for(client, job_id, lambda j: j["status"] in ("succeeded", "failed"))
        assert job["status"] == "succeeded", job
        assert job["progress"] == {
            "chunks_done": 4,
            "chunks_total": 4,
            "frames_done": 40,
            "frames_total": 40,
            "eta_s": None,  # only while running
            "queue_position": None,  # only while queued
        }
        assert job["result"]["video_url"].startswith(s3_env["PARLA_S3_ENDPOINT_URL"])
        download = client.get(f"/v1/videos/{job_id}/video")
        assert download.status_code == 307
        video = httpx.get(download.headers["location"])
        assert video.status_code == 200 and len(video.content) == job["result"]["bytes"]
        path = tmp_path / "out.mp4"
        path.write_bytes(video.content)
        info = probe_video(path)
        assert (info.frames, info.width, info.height) == (40, 64, 64)
        assert info.video_codec == "h264" and info.audio_codec == "aac"
        assert abs(info.duration_s - 1.6) <= 1 / 25 and info.audio_duration_s is not None


def test_cancel_running_job_stops_within_a_chunk(redis_url: str, tmp_path: Path) -> None:
    env = stack_env(
        redis_url, tmp_path, PARLA_ENGINE_CONFIG=json.dumps({"chunk_frames": 5, "frame_delay_s": 0.05})
    )
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        job_id = submit(client, 4.0)
        wait_for(client, job_id, lambda j: j["progress"]["chunks_done"] >= 1)
        response = client.post(f"/v1/videos/{job_id}/cancel")
        assert response.status_code == 200
        asked_at = response.json()["progress"]["chunks_done"]
        job = wait_for(client, job_id, lambda j: j["status"] != "running")
        assert job["status"] == "canceled" and job["error"]["code"] == "canceled"
        assert job["progress"]["chunks_done"] <= asked_at + 1 < job["progress"]["chunks_total"]
        assert client.get(f"/v1/videos/{job_id}/video").status_code == 409


ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_default_warp_engine_full_framing_keeps_the_photo_aspect(redis_url: str, tmp_path: Path) -> None:
    """The default deployment (warp engine, face check on) renders a real portrait given as data: URIs."""
    from PIL import Image, ImageOps

    env = {
        "PARLA_REDIS_URL": redis_url,
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
    }
    photo = ASSETS / "portrait_heldout.jpg"
    with Image.open(photo) as image:
        width, height = ImageOps.exif_transpose(image).size
    audio = wav_bytes(1.2)
    body = {
        "image_url": "data:image/jpeg;base64," + base64.b64encode(photo.read_bytes()).decode(),
        "audio_url": "data:audio/wav;base64," + base64.b64encode(audio).decode(),
        "framing": "full",
        "size": 256,
    }
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        no_face = client.post(
            "/v1/videos", files={"image": ("x.png", image_bytes(300, 300)), "audio": ("a.wav", audio)}
        )
        assert no_face.status_code == 422 and no_face.json()["error"]["code"] == "no_face_found"
        response = client.post("/v1/videos", json=body)
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 120)
        assert job["status"] == "succeeded", job
        assert job["params"]["engine"] == "warp"
        path = tmp_path / "full.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert info.frames == 30
        assert abs(info.width / info.height - width / height) < 0.02


def test_tiny_vexpress_engine_through_the_service(redis_url: str, tmp_path: Path) -> None:
    """The diffusion engine (tiny random weights) behind the real API and worker, chunked with motion frames."""
    env = {
        "PARLA_REDIS_URL": redis_url,
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_ENGINE": "vexpress-tiny",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
    }
    files = {"image": ("p.png", (ASSETS / "portrait.png").read_bytes()), "audio": ("a.wav", wav_bytes(1.3))}
    fields = {
        "size": "64",
        "fps": "25",
        "context_frames": "12",
        "motion_frames": "4",
        "num_inference_steps": "2",
    }
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        response = client.post("/v1/videos", files=files, data=fields)
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240)
        assert job["status"] == "succeeded", job
        assert job["progress"]["chunks_total"] >= 3 and job["progress"]["frames_done"] == 32
        path = tmp_path / "vexpress.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert (info.frames, info.width, info.height) == (32, 64, 64) and info.audio_codec == "aac"
