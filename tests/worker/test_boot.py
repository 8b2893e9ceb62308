from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from worker.boot import load_engine


def test_worker_refuses_to_start_on_an_incomplete_weights_directory(tmp_path: Path) -> None:
    (tmp_path / "v-express").mkdir()
    (tmp_path / "v-express" / "audio_projection.bin").write_bytes(b"")
    settings = Settings(engine="vexpress", weights_dir=tmp_path, device="cpu")
    with pytest.raises(SystemExit) as caught:
        load_engine(settings)
    message = str(caught.value)
    assert "vexpress" in message and "denoising_unet.bin" in message


def test_worker_refuses_to_start_without_weights(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="weights"):
        load_engine(Settings(engine="vexpress", device="cpu"))


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="unknown engine"):
        load_engine(Settings(engine="nope", device="cpu"))


def test_a_config_key_the_engine_does_not_take_stops_the_worker() -> None:
    with pytest.raises(SystemExit, match="does not take colour"):
        load_engine(Settings(engine="test", device="cpu", engine_config={"colour": "red"}))
