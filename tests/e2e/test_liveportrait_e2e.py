"""End to end: the liveportrait engine (tiny random weights) behind the real API and worker processes,
with the procedural audio motion source, with a driving video, and with the Ditto and JoyVASA motion
models (tiny random ones)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from core.media import probe_video
from models.motion.kp_info import read_motion_npz
from service.stack import Stack
from tests.e2e.test_stack import wait_for
from tests.media import wav_bytes

pytestmark = pytest.mark.e2e
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _driving_video(num_frames: int = 10, fps: int = 25) -> bytes:
    """The test portrait sliding and turning a little: MediaPipe finds its face in every frame."""
    with Image.open(ASSETS / "portrait.png") as image:
        portrait = np.asarray(image.convert("RGB").resize((192, 192)))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 192, 192, "yuv420p"
        for index in range(num_frames):
            frame = np.roll(portrait, 2 * index, axis=1)
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_tiny_liveportrait_engine_through_the_service(redis_url: str, tmp_path: Path) -> None:
    env = {
        "PARLA_REDIS_URL": redis_url,
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_ENGINE": "liveportrait-tiny",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
    }
    portrait = (ASSETS / "portrait.png").read_bytes()
    audio = wav_bytes(1.0)
    with (
        Stack(env, workers=1, state_dir=tmp_path) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        # 1. The procedural audio source (head_motion "sway" is the engine's default "audio").
        response = client.post(
            "/v1/videos",
            files={"image": ("p.png", portrait), "audio": ("a.wav", audio)},
            data={"size": "64", "fps": "25", "framing": "full"},
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240)
        assert job["status"] == "succeeded", job
        assert job["progress"]["frames_done"] == 25
        path = tmp_path / "audio.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert info.frames == 25 and info.audio_codec == "aac"

        # 2. A driving video.
        response = client.post(
            "/v1/videos",
            files={
                "image": ("p.png", portrait),
                "audio": ("a.wav", audio),
                "driving_video": ("d.mp4", _driving_video()),
            },
            data={"size": "64", "fps": "25", "head_motion": "driving"},
        )
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240)
        assert job["status"] == "succeeded", job
        path = tmp_path / "driving.mp4"
        path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
        info = probe_video(path)
        assert (info.frames, info.width, info.height) == (25, 64, 64)

        # 3. The audio -> motion models: Ditto (flat form fields, and its motion as an output too)
        # and JoyVASA (one JSON field).
        for name, data in (
            ("ditto", {"motion_model": "ditto", "head_distance": "1.2", "outputs": "video,motion"}),
            ("joyvasa", {"engine_options": json.dumps({"motion_model": "joyvasa", "gaze": [5.0, 0.0]})}),
        ):
            response = client.post(
                "/v1/videos",
                files={"image": ("p.png", portrait), "audio": ("a.wav", audio)},
                data={"size": "64", "fps": "25", **data},
            )
            assert response.status_code == 202, response.text
            job = wait_for(
                client, response.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), 240
            )
            assert job["status"] == "succeeded", (name, job)
            assert job["params"]["engine_options"]["motion_model"] == name
            path = tmp_path / f"{name}.mp4"
            path.write_bytes(client.get(f"/v1/videos/{job['id']}/video").content)
            info = probe_video(path)
            assert (info.frames, info.width, info.height) == (25, 64, 64), name
            if name == "ditto":
                motion_file = job["result"]["outputs"]["motion"]
                download = client.get(motion_file["url"])
                assert download.status_code == 200 and len(download.content) == motion_file["bytes"]
                motion, meta = read_motion_npz(download.content)
                assert motion.num_frames == 25 and meta["model"] == "ditto" and meta["fps"] == 25.0
            else:
                assert job["result"]["outputs"] == {}
