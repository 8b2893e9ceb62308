"""End to end: the aniportrait engine (tiny random weights) behind the real API and worker processes,
head pose from audio2pose (its default, with the landmarks as a second output) and from a driving
video."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from core.media import probe_video
from models.aniportrait.landmarks_file import read_landmarks_npz
from service.stack import Stack
from tests.e2e.test_liveportrait_e2e import _driving_video
from tests.e2e.test_stack import wait_for
from tests.media import wav_bytes

pytestmark = pytest.mark.e2e
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_tiny_aniportrait_engine_through_the_service(redis_url: str, tmp_path: Path) -> None:
    env = {
        "PARLA_REDIS_URL": redis_url,
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_ENGINE": "aniportrait-tiny",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
    }
    portrait = (ASSETS / "portrait.png").read_bytes()
    audio = wav_bytes(1.0)
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        # 1. Head pose from the audio (audio2pose), pasted back into the photo; the landmarks too.
        response = client.post(
            "/v1/videos",
            files={"image": ("p.png", portrait), "audio": ("a.wav", audio)},
            data={
                "size": "64", "fps": "25", "framing": "full", "context_frames": "12",
                "outputs": "video,landmarks",
            },
        )  # fmt: skip
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240)
        assert job["status"] == "succeeded", job
        assert job["progress"]["frames_done"] == 25
        assert job["params"]["engine_options"]["head_motion"] == "audio2pose"
        path = tmp_path / "audio.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert info.frames == 25 and info.audio_codec == "aac"
        landmarks_file = job["result"]["outputs"]["landmarks"]
        download = client.get(landmarks_file["url"])
        assert download.status_code == 200 and len(download.content) == landmarks_file["bytes"]
        points, poses, meta = read_landmarks_npz(download.content)
        assert points.shape == (25, 468, 2) and poses.shape == (25, 6)
        assert (meta["format"], meta["num_frames"], meta["fps"], meta["width"]) == (
            "parla-landmarks",
            25,
            25.0,
            64,
        )

        # 2. Head pose from a driving video.
        response = client.post(
            "/v1/videos",
            files={
                "image": ("p.png", portrait),
                "audio": ("a.wav", audio),
                "driving_video": ("d.mp4", _driving_video()),
            },
            data={"size": "64", "fps": "25", "head_motion": "driving", "context_frames": "12"},
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240)
        assert job["status"] == "succeeded", job
        path = tmp_path / "driving.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert (info.frames, info.width, info.height) == (25, 64, 64)
        assert job["result"]["outputs"] == {}

        # 3. A refused option comes back at submit, not from the worker.
        response = client.post(
            "/v1/videos",
            files={"image": ("p.png", portrait), "audio": ("a.wav", audio)},
            data={"size": "64", "context_frames": "40"},
        )
        assert response.status_code == 422, response.text
