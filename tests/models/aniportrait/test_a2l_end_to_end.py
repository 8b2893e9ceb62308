"""The A2L stage end to end on tiny random weights: shapes, determinism, still vs audio2pose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.aniportrait.a2l import PortraitMesh, normalize_audio, num_frames_of, predict_landmarks
from models.aniportrait.checkpoint import build_a2l
from models.aniportrait.configs import (
    tiny_audio2mesh_config,
    tiny_audio2pose_config,
    tiny_audio_encoder_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_predict_landmarks() -> None:
    torch.manual_seed(0)
    modules = build_a2l(tiny_audio_encoder_config(), tiny_audio2mesh_config(), tiny_audio2pose_config())
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16_000 // 3).astype(np.float32)
    placement = np.eye(4)
    placement[2, 3] = -40.0
    portrait = PortraitMesh(vertices=rng.uniform(-6, 6, (468, 3)), transformation_matrix=placement)
    still = predict_landmarks(modules, audio, portrait, head_motion="still", seed=1, height=64, width=64)
    assert num_frames_of(audio.size) == 10 and still.points.shape == (10, 468, 2) and not still.poses.any()
    moving = predict_landmarks(
        modules, audio, portrait, head_motion="audio2pose", seed=1, height=64, width=64
    )
    again = predict_landmarks(modules, audio, portrait, head_motion="audio2pose", seed=1, height=64, width=64)
    np.testing.assert_array_equal(moving.points, again.points)
    assert moving.poses.shape == (10, 6) and moving.poses.any()
    with pytest.raises(ValueError, match="mono"):
        normalize_audio(np.zeros((2, 10), dtype=np.float32))
