"""The L2V sampling on tiny random weights: frames of the right shape, deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.aniportrait.checkpoint import build_unets
from models.aniportrait.guider import PoseGuider
from models.aniportrait.pipeline import aniportrait_scheduler_config, render_clip
from models.sd.configs import tiny_unet_config
from models.sd.pipeline import SDVideoPipeline
from models.sd.testing import sd_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_render_clip_is_deterministic() -> None:
    torch.manual_seed(0)
    config = tiny_unet_config()
    config.update(block_out_channels=[32, 64, 128, 128])
    reference, denoiser = build_unets(config)
    pipeline = SDVideoPipeline(
        sd_vae(), reference, denoiser, aniportrait_scheduler_config(), torch.device("cpu"), torch.float32
    )
    guider = PoseGuider(32, 2, 8).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    clip = torch.randn(1, 1, 32)

    def render(seed: int) -> np.ndarray:
        return render_clip(
            pipeline,
            guider,
            image,
            clip,
            poses,
            num_inference_steps=2,
            context_frames=4,
            context_overlap=1,
            generator=torch.Generator().manual_seed(seed),
        )

    frames = render(1)
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, render(1))
    with pytest.raises(ValueError, match="pose images"):
        render_clip(pipeline, guider, image, clip, poses[:, :32], num_inference_steps=1)
