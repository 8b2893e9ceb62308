"""Hallo's modules on tiny random weights: shapes, conditions that matter, refused inputs."""

from __future__ import annotations

import pytest
import torch

from models.hallo.checkpoint import HalloModules
from models.hallo.testing import tiny_modules

FRAMES, SIZE, ROWS = 2, 8, 3


@pytest.fixture(scope="module")
def modules() -> HalloModules:
    return tiny_modules(seed=0)


def _inputs(modules: HalloModules, seed: int = 0) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    tokens = modules.imageproj(torch.randn(2, 512, generator=g))
    bank = modules.reference_unet(
        torch.randn(2 * ROWS, 4, SIZE, SIZE, generator=g), 0, tokens.repeat(ROWS, 1, 1)
    )
    levels = [SIZE * SIZE // 4**i for i in range(4)]
    masks = [tuple(torch.rand(2, n, generator=g) for _ in range(3)) for n in levels]
    audio = modules.audioproj(torch.randn(2, FRAMES, 5, 2, 16, generator=g))
    face = modules.face_locator(torch.rand(2, 3, SIZE * 8, SIZE * 8, generator=g))
    sample = torch.randn(2, 4, FRAMES, SIZE, SIZE, generator=g)
    return {
        "sample": sample,
        "timestep": 500,
        "encoder_hidden_states": tokens,
        "reference_hidden_states": bank,
        "audio_tokens": audio,
        "audio_masks": masks,
        "face_features": face,
        "reference_rows": ROWS,
        "unconditional_samples": 1,
    }


@torch.no_grad()
def test_projection_and_locator_shapes(modules: HalloModules) -> None:
    assert modules.imageproj(torch.zeros(3, 512)).shape == (3, 4, 32)
    assert modules.audioproj(torch.zeros(1, 7, 5, 2, 16)).shape == (1, 7, 4, 16)
    assert modules.face_locator(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 8, 8)
    with pytest.raises(ValueError, match="audio_embeds must be"):
        modules.audioproj(torch.zeros(1, 7, 4, 2, 16))


@pytest.mark.slow
@torch.no_grad()
def test_denoiser_is_deterministic_and_uses_every_condition(modules: HalloModules) -> None:
    inputs = _inputs(modules)
    out = modules.denoising_unet(**inputs)
    assert out.shape == (2, 4, FRAMES, SIZE, SIZE)
    assert torch.equal(out, modules.denoising_unet(**inputs))
    changed = {
        "audio": {**inputs, "audio_tokens": torch.zeros_like(inputs["audio_tokens"])},  # type: ignore[arg-type]
        "face": {**inputs, "face_features": None},
        "scale": {**inputs, "motion_scale": (2.0, 0.5, 3.0)},
    }
    for name, variant in changed.items():
        assert not torch.allclose(modules.denoising_unet(**variant), out), name


@torch.no_grad()
def test_denoiser_refuses_bad_inputs(modules: HalloModules) -> None:
    inputs = _inputs(modules)
    with pytest.raises(ValueError, match="audio_masks has 2 levels"):
        modules.denoising_unet(**{**inputs, "audio_masks": inputs["audio_masks"][:2]})  # type: ignore[index]
    with pytest.raises(ValueError, match="audio_tokens must be"):
        modules.denoising_unet(**{**inputs, "audio_tokens": inputs["audio_tokens"][:, :1]})  # type: ignore[index]
    with pytest.raises(ValueError, match="exceed the motion modules"):
        modules.denoising_unet(**{**inputs, "reference_rows": 40})
