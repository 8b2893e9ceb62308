"""Hallo's clip sampling and continuation on tiny random weights."""

from __future__ import annotations

import pytest
import torch

from models.hallo.configs import hallo_scheduler_config
from models.hallo.pipeline import ClipInputs, next_reference_pixels, sample_clip
from models.hallo.testing import tiny_modules
from models.sd.testing import sd_vae

SIZE, FRAMES, MOTION = 64, 2, 2


def _inputs(previous: torch.Tensor | None) -> ClipInputs:
    g = torch.Generator().manual_seed(1)
    portrait = torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1
    latent = SIZE // 8
    masks = []
    for level in range(4):
        full, face, lip = (torch.rand(1, (latent // 2**level) ** 2, generator=g) for _ in range(3))
        masks.append((full, face, lip))
    return ClipInputs(
        next_reference_pixels(portrait, previous, MOTION),
        torch.randn(1, 512, generator=g),
        torch.rand(1, 3, SIZE, SIZE, generator=g),
        torch.randn(1, FRAMES, 5, 2, 16, generator=g),
        masks,
    )


def test_first_clip_motion_frames_are_the_portrait() -> None:
    portrait = torch.rand(1, 3, 4, 4)
    assert torch.equal(next_reference_pixels(portrait, None, 2), portrait.repeat(3, 1, 1, 1))
    previous = torch.rand(5, 3, 4, 4)
    assert torch.equal(next_reference_pixels(portrait, previous, 2)[1:], previous[3:] * 2 - 1)


@pytest.mark.slow
def test_two_clips_are_deterministic_and_continue() -> None:
    torch.manual_seed(0)
    modules, vae = tiny_modules(seed=0), sd_vae()

    def run() -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(42)
        clips: list[torch.Tensor] = []
        previous = None
        for _ in range(2):
            previous = sample_clip(
                modules,
                vae,
                hallo_scheduler_config(),
                _inputs(previous),
                num_inference_steps=1,
                guidance_scale=3.5,
                motion_scale=(1.0, 1.0, 1.0),
                generator=generator,
            )
            clips.append(previous)
        return clips

    first, second = run(), run()
    assert first[0].shape == (FRAMES, 3, SIZE, SIZE)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert float(first[0].min()) >= 0.0 and float(first[0].max()) <= 1.0
    assert not torch.equal(first[0], first[1])
