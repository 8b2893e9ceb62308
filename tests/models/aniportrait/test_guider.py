"""The pose guider: published-size structure, strict loading of ``pose_guider.pth``, feature shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import WeightsError
from models.aniportrait.checkpoint import POSE_GUIDER_FILE, build_pose_guider, load_pose_guider

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"noise_latent_channels": 32, "attention_heads": 2, "attention_head_dim": 8}


def test_published_structure_on_meta() -> None:
    guider = build_pose_guider(device="meta")
    state = guider.state_dict()
    assert len(state) == 184
    assert state["cross_attn1.proj_in.weight"].shape == (1408, 320, 1, 1)
    assert state["conv_layers_3.3.weight"].shape == (1280, 640, 3, 3)
    assert state["final_proj.weight"].shape == (320, 128, 1, 1) and state["scale"].shape == (1,)


def test_features_and_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    guider = build_pose_guider(TINY)
    torch.save(guider.state_dict(), tmp_path / POSE_GUIDER_FILE)
    loaded = load_pose_guider(tmp_path, config=TINY)
    images = torch.rand(1, 3, 2, 64, 128) * 510 - 1
    with torch.no_grad():
        features, again = guider(images), loaded(images)
    assert [tuple(f.shape) for f in features] == [
        (1, 32, 2, 8, 16),
        (1, 32, 2, 4, 8),
        (1, 64, 2, 2, 4),
        (1, 128, 2, 1, 2),
        (1, 128, 2, 1, 2),
    ]
    for a, b in zip(features, again, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="multiple of 64"):
        guider(torch.zeros(1, 3, 1, 32, 32))


def test_strict_loading_lists_problems(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="lacks pose_guider"):
        load_pose_guider(tmp_path, config=TINY)
    state = build_pose_guider(TINY).state_dict()
    del state["conv_layers.1.running_var"]
    state["scale"] = torch.ones(2)
    torch.save(state, tmp_path / POSE_GUIDER_FILE)
    with pytest.raises(WeightsError) as error:
        load_pose_guider(tmp_path, config=TINY)
    assert "conv_layers.1.running_var" in str(error.value) and "scale (file (2,), model (1,))" in str(
        error.value
    )
