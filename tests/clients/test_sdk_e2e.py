"""The SDK and the ``parla`` CLI against a real stack (uvicorn API, a worker, Redis): real jobs, real MP4s."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from parla_client import APIError, AsyncClient, Client, Job, JobFailed

from core.media import probe_video
from service.stack import REPO_ROOT, Stack
from tests.media import image_bytes, wav_bytes

pytestmark = pytest.mark.e2e

SDK_ROOT = REPO_ROOT / "clients" / "python"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("sdk-stack")
    env = {
        "PARLA_ENGINE": "test",
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_FACE_CHECK": "false",
        "PARLA_ENGINE_CONFIG": json.dumps({"chunk_frames": 10, "frame_delay_s": 0.01}),
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PARLA_")}, **env}
    with Stack(env, workers=1, state_dir=state) as running:
        yield running


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    image, audio = tmp_path / "portrait.png", tmp_path / "speech.wav"
    image.write_bytes(image_bytes(200, 200))
    audio.write_bytes(wav_bytes(1.2))
    return image, audio


def test_sync_client_submits_files_waits_with_progress_downloads_and_lists(
    stack: Stack, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    seen: list[Job] = []
    with Client(stack.base_url) as parla:
        assert [engine.name for engine in parla.engines()] == ["test"]
        job = parla.submit(
            *inputs, size=64, fps=25, seed=3, metadata={"who": "sdk"}, idempotency_key="sdk-e2e-1"
        )
        again = parla.submit(
            *inputs, size=64, fps=25, seed=3, metadata={"who": "sdk"}, idempotency_key="sdk-e2e-1"
        )
        assert again.id == job.id  # the same key replays the job
        done = parla.wait(job.id, timeout_s=60, poll_interval_s=0.05, on_progress=seen.append)
        assert done.status == "succeeded" and done.metadata == {"who": "sdk"}
        assert done.progress.frames_done == done.progress.frames_total == 30
        assert seen[-1].status == "succeeded" and len(seen) >= 2
        out = parla.download(job.id, tmp_path / "out.mp4")
        assert isinstance(out, Path)
        info = probe_video(out)
        assert (info.frames, info.width, info.height, info.audio_codec) == (30, 64, 64, "aac")
        assert job.id in [item.id for item in parla.iter_jobs(status="succeeded", page_size=1)]


def test_data_urls_go_as_json_refusals_raise_api_errors_previews_and_cancel(
    stack: Stack, tmp_path: Path
) -> None:
    audio = "data:audio/wav;base64," + base64.b64encode(wav_bytes(1.0)).decode()
    with Client(stack.base_url) as parla:
        job = parla.submit(image_bytes(200, 200), audio, size=64)  # bytes + a data: URL -> JSON body
        assert parla.wait(job.id, timeout_s=60).result is not None
        with pytest.raises(APIError) as refused:
            parla.submit(image_bytes(200, 200), wav_bytes(1.0), engine_options={"nope": 1})
        assert refused.value.status_code == 422 and refused.value.code == "invalid_params"
        assert "engine_options.nope" in refused.value.message
        with pytest.raises(APIError) as missing:
            parla.get("vid_doesnotexist")
        assert missing.value.code == "job_not_found"
        long = parla.submit(image_bytes(200, 200), wav_bytes(10.0), size=64)  # 25 chunks
        while parla.get(long.id).progress.chunks_done < 1:
            time.sleep(0.05)
        preview = parla.preview(long.id, tmp_path / "preview.mp4")
        assert isinstance(preview, Path) and 0 < probe_video(preview).frames < 100
        assert parla.thumbnail(long.id)[:2] == b"\xff\xd8"  # JPEG
        assert parla.stream_url(long.id).endswith(f"/v1/videos/{long.id}/stream.m3u8")
        parla.cancel(long.id)
        with pytest.raises(JobFailed) as canceled:
            parla.wait(long.id, timeout_s=60)
        assert canceled.value.job.status == "canceled"


def test_async_client_renders_a_job(stack: Stack, inputs: tuple[Path, Path], tmp_path: Path) -> None:
    async def scenario() -> tuple[Job, bytes]:
        async with AsyncClient(stack.base_url) as parla:
            progress: list[float] = []

            async def note(job: Job) -> None:
                progress.append(job.progress.fraction)

            job = await parla.render(*inputs, tmp_path / "a.mp4", size=64, timeout_s=60, on_progress=note)
            assert progress[-1] == 1.0
            page = await parla.list(limit=5)
            assert job.id in [item.id for item in page.data]
            video = await parla.download(job.id)
            assert isinstance(video, bytes)
            return job, video

    job, video = asyncio.run(scenario())
    assert job.result is not None and len(video) == job.result.bytes == (tmp_path / "a.mp4").stat().st_size


def run_cli(
    stack: Stack, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARLA_")}
    extra = env if env is not None else {"PYTHONPATH": str(SDK_ROOT)}
    command = (
        [sys.executable, "-m", "parla_client", *args]
        if "PARLA_CLI" not in extra
        else [extra.pop("PARLA_CLI"), *args]
    )
    return subprocess.run(
        command,
        env={**base, "PARLA_BASE_URL": stack.base_url, **extra},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_render_status_list_cancel_engines(
    stack: Stack, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    image, audio = inputs
    out = tmp_path / "cli.mp4"
    done = run_cli(stack, "render", str(image), str(audio), "-o", str(out), "--size", "64", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and probe_video(out).frames == 30
    assert "[" in done.stderr and "chunks" in done.stderr and "succeeded" in done.stderr  # the progress bar
    job_id = done.stderr.split()[0]
    status = run_cli(stack, "--json", "status", job_id, cwd=tmp_path)
    assert json.loads(status.stdout)["status"] == "succeeded"
    assert job_id in run_cli(stack, "list", "--limit", "50", cwd=tmp_path).stdout
    engines = run_cli(stack, "engines", cwd=tmp_path)
    assert engines.stdout.startswith("test (default):"), engines.stdout
    refused = run_cli(stack, "render", str(image), str(audio), "--option", "nope=1", cwd=tmp_path)
    assert refused.returncode == 2 and "invalid_params" in refused.stderr
    gone = run_cli(stack, "cancel", "vid_doesnotexist", cwd=tmp_path)
    assert gone.returncode == 2 and "job_not_found" in gone.stderr


@pytest.mark.slow
def test_cli_from_a_fresh_install_of_the_sdk_package_alone(
    stack: Stack, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    target, source = tmp_path / "site", tmp_path / "sdk-source"
    # A copy: building in the checkout would leave build/ and *.egg-info behind there.
    shutil.copytree(SDK_ROOT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    # Only the installed package (and httpx from the environment) is importable: not the repository.
    env = {"PYTHONPATH": str(target), "PARLA_CLI": str(target / "bin" / "parla")}
    out = tmp_path / "fresh.mp4"
    done = run_cli(stack, "render", *map(str, inputs), "-o", str(out), "--size", "64", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert probe_video(out).frames == 30
