"""``python -m models.weights download``: an engine's published files fetched with huggingface_hub from
a loopback mirror of the Hub (never the internet), placed in the engine's layout, then checked
strictly; and what it says when the mirror lacks a file or the shapes are another checkpoint's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.hub import MOTION_SOURCES, WEIGHT_SOURCES, sources_for
from models.weights import main, required_files
from service.stack import REPO_ROOT
from tests.models.hub_mirror import HubMirror, serve_mirror


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubMirror]:
    """The mirror, with huggingface_hub pointed at it and online only inside this test."""
    from huggingface_hub import constants

    with serve_mirror(tmp_path / "hub") as mirror:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        # huggingface_hub reads it once, at import (the test process imported it offline).
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield mirror


@pytest.fixture(scope="module")
def tiny_vexpress(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random V-Express module files in the published layout (``v-express/*.bin`` + UNet config)."""
    from models.sd.configs import tiny_unet_config
    from models.vexpress.checkpoint import build_modules, save_published
    from models.vexpress.configs import tiny_audio_projection_config, tiny_guider_config

    torch.manual_seed(0)
    modules = build_modules(
        tiny_unet_config(),
        guider_config=tiny_guider_config(),
        audio_projection_config=tiny_audio_projection_config(),
    )
    out = tmp_path_factory.mktemp("tiny-vexpress")
    save_published(modules, out, tiny_unet_config())
    return out


def tiny_engine_config() -> str:
    from models.vexpress.configs import tiny_audio_projection_config, tiny_guider_config

    configs = {
        "guider_config": tiny_guider_config(),
        "audio_projection_config": tiny_audio_projection_config(),
    }
    return json.dumps({"module_configs": configs})


def publish_vexpress(hub: HubMirror, tiny: Path, *, skip: str = "") -> None:
    """tk93/V-Express as its README installs it: the module files at the root, the rest in model_ckpts/."""
    repo = "tk93/V-Express"
    for file in sorted((tiny / "v-express").iterdir()):
        if file.name != skip:
            hub.add(repo, file.name, file.read_bytes())
    unet_config = (tiny / "stable-diffusion-v1-5" / "unet" / "config.json").read_bytes()
    hub.add(repo, "model_ckpts/stable-diffusion-v1-5/unet/config.json", unet_config)
    hub.add(repo, "model_ckpts/sd-vae-ft-mse/config.json", b'{"_class_name": "AutoencoderKL"}')
    hub.add(
        repo,
        "model_ckpts/sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        torch.randn(8).numpy().tobytes(),
    )
    hub.add(repo, "model_ckpts/wav2vec2-base-960h/config.json", b'{"model_type": "wav2vec2"}')
    hub.add(repo, "model_ckpts/wav2vec2-base-960h/preprocessor_config.json", b'{"sampling_rate": 16000}')
    hub.add(repo, "model_ckpts/wav2vec2-base-960h/pytorch_model.bin", b"\0" * 64)  # the other alternative
    hub.add(repo, "model_ckpts/insightface_models/buffalo_l.onnx", b"not fetched")
    hub.add(repo, "README.md", b"# not fetched")


def test_download_fetches_the_published_layout_and_checks_it_strictly(
    hub: HubMirror, tiny_vexpress: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_vexpress(hub, tiny_vexpress)
    weights = tmp_path / "weights"
    code = main(["download", "vexpress", str(weights), "--engine-config", tiny_engine_config()])
    out = capsys.readouterr()
    assert code == 0, out
    assert "strict: every tensor" in out.err and "0 missing of" in out.err
    placed = sorted(str(p.relative_to(weights)) for p in weights.rglob("*") if p.is_file())
    assert placed == sorted(
        [
            *(f"v-express/{f.name}" for f in (tiny_vexpress / "v-express").iterdir()),
            "stable-diffusion-v1-5/unet/config.json",
            "sd-vae-ft-mse/config.json",
            "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
            "wav2vec2-base-960h/config.json",
            "wav2vec2-base-960h/preprocessor_config.json",
            "wav2vec2-base-960h/pytorch_model.bin",
        ]
    )  # nothing else (README, insightface), no staging left behind
    source = tiny_vexpress / "v-express" / "denoising_unet.bin"
    assert (weights / "v-express" / "denoising_unet.bin").read_bytes() == source.read_bytes()
    # Again: every file is in place with the hub's size, so nothing is fetched.
    fetched = [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    assert main(["download", "vexpress", str(weights), "--engine-config", tiny_engine_config()]) == 0
    assert [p for m, p in hub.requests if m == "GET" and "/resolve/" in p] == fetched
    assert "already in place" in capsys.readouterr().out


def test_a_file_missing_upstream_stops_before_anything_is_fetched(
    hub: HubMirror, tiny_vexpress: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_vexpress(hub, tiny_vexpress, skip="motion_module.bin")
    weights = tmp_path / "weights"
    assert main(["download", "vexpress", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "download failed: tk93/V-Express@main has no motion_module.bin" in err
    assert not [path for method, path in hub.requests if "/resolve/" in path]
    assert not [p for p in weights.rglob("*") if p.is_file()]


def test_another_checkpoints_shapes_fail_the_strict_check(
    hub: HubMirror, tiny_vexpress: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish_vexpress(hub, tiny_vexpress)
    weights = tmp_path / "weights"
    # Without the tiny module configs, the guider and audio projection are expected at V-Express's size.
    assert main(["download", "vexpress", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "0 missing of" in err and "wrong" in err and "v-express/v_kps_guider.bin" in err
    assert "shape" in err
    assert main(["check", "vexpress", str(weights)]) == 0  # names only: complete
    assert main(["check", "vexpress", str(weights), "--strict"]) == 1


def test_liveportrait_files_land_without_the_repository_folder(
    hub: HubMirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.liveportrait.checkpoint import save_published
    from models.liveportrait.testing import tiny_modules

    published = tmp_path / "published"
    save_published(tiny_modules(), published)
    for file in sorted(published.rglob("*.pth")):
        hub.add("KwaiVGI/LivePortrait", f"liveportrait/{file.relative_to(published)}", file.read_bytes())
    hub.add("KwaiVGI/LivePortrait", "liveportrait/landmark.onnx", b"not fetched")
    weights = tmp_path / "weights"
    assert main(["download", "liveportrait", str(weights)]) == 1  # tiny files: not the published shapes
    err = capsys.readouterr().err
    assert f"0 missing of {len(required_files('liveportrait'))}" in err and "wrong" in err
    assert sorted(str(p.relative_to(weights)) for p in weights.rglob("*") if p.is_file()) == sorted(
        required_files("liveportrait")
    )


def test_downloads_are_refused_offline_and_sources_cover_every_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["download", "vexpress", str(tmp_path)]) == 2  # conftest keeps the hub offline
    assert "downloads are off" in capsys.readouterr().err
    assert main(["download", "warp", str(tmp_path)]) == 0  # nothing to fetch
    for engine, motion in (("vexpress", ()), ("liveportrait", ("ditto", "joyvasa")), ("hallo", ())):
        targets = {
            source.target(choice if isinstance(choice, str) else choice[0])
            for source in sources_for(engine, motion)
            for choice in source.files
        }
        for name in required_files(engine, motion):
            first = name.split(" or ")[0]
            assert first in targets or any(Path(first).match(t) for t in targets), (engine, name)
    with pytest.raises(ValueError, match="motion models belong"):
        sources_for("vexpress", ("ditto",))
    assert main(["check", "vexpress", str(tmp_path), "--motion-models", "ditto"]) == 2
    assert main(["layout", "liveportrait", "--motion-models", "ditto"]) == 0
    assert "ditto_pytorch/models/lmdm_v0.4_hubert.pth" in capsys.readouterr().out
    assert set(MOTION_SOURCES) == {"ditto", "joyvasa"} and {"hallo", "aniportrait"} <= set(WEIGHT_SOURCES)
    assert main(["sources", "liveportrait", "--motion-models", "joyvasa"]) == 0
    assert "TencentGameMate/chinese-hubert-base@main" in capsys.readouterr().out


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers (~15 s)
def test_the_command_takes_the_mirror_from_hf_endpoint(tiny_vexpress: Path, tmp_path: Path) -> None:
    with serve_mirror(tmp_path / "hub") as mirror:
        publish_vexpress(mirror, tiny_vexpress)
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=mirror.url, HF_HOME=str(tmp_path / "hf-home"))
        command = [sys.executable, "-m", "models.weights", "download", "vexpress", str(tmp_path / "w")]
        done = subprocess.run(
            [*command, "--engine-config", tiny_engine_config()],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "strict: every tensor" in done.stderr and "ok       v-express/motion_module.bin" in done.stdout
        assert [m for m, p in mirror.requests if "/resolve/" in p]  # fetched from the mirror
        offline = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env={**env, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert offline.returncode == 2 and "downloads are off" in offline.stderr
