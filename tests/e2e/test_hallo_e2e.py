"""End to end: the hallo engine (tiny random weights) behind the real API and worker processes,
rendered in two clips carried by motion frames; its options refused at submit; a size the model
cannot take fails the job with a machine-readable code."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from core.media import probe_video
from service.stack import Stack
from tests.e2e.test_stack import wait_for
from tests.media import wav_bytes

pytestmark = pytest.mark.e2e
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_tiny_hallo_engine_through_the_service(redis_url: str, tmp_path: Path) -> None:
    env = {
        "PARLA_REDIS_URL": redis_url,
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_ENGINE": "hallo-tiny",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
    }
    files = {"image": ("p.png", (ASSETS / "portrait.png").read_bytes()), "audio": ("a.wav", wav_bytes(0.5))}
    options = {"clip_frames": 4, "motion_frames": 2, "num_inference_steps": 1, "lip_weight": 1.5}
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        # 1. Refused at submit: nothing queued.
        refused = client.post(
            "/v1/videos", files=files, data={"size": "64", "engine_options": json.dumps({"lip_weight": 9})}
        )
        assert (
            refused.status_code == 422 and "engine_options.lip_weight" in refused.json()["error"]["message"]
        )

        # 2. Two clips of 4 frames: 0.5 s at 16 fps is 8 frames (the reference counts ceil(s x fps)).
        response = client.post(
            "/v1/videos",
            files=files,
            data={"size": "64", "fps": "16", "seed": "4", "engine_options": json.dumps(options)},
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240)
        assert job["status"] == "succeeded", job
        assert job["params"]["engine_options"]["pose_weight"] == 1.0  # defaults recorded
        assert job["progress"]["chunks_total"] == 2 and job["progress"]["frames_done"] == 8
        path = tmp_path / "hallo.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert (info.frames, info.width, info.height) == (8, 64, 64) and info.audio_codec == "aac"

        # 3. A size the model cannot take (not a multiple of 64): the job fails with a code.
        response = client.post(
            "/v1/videos", files=files, data={"size": "96", "engine_options": json.dumps(options)}
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 120)
        assert job["status"] == "failed" and job["error"]["code"] == "invalid_params", job
