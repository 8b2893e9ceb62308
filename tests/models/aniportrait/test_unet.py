"""AniPortrait's ReferenceNet and denoiser on the skeleton: published-size layout, the bank read inside
self-attention, CFG's unconditional rows and the pose maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from core.errors import WeightsError
from models.aniportrait.checkpoint import (
    DENOISING_UNET_FILE,
    MOTION_MODULE_FILE,
    REFERENCE_UNET_FILE,
    build_unets,
    load_unets,
)
from models.aniportrait.guider import PoseGuider
from models.aniportrait.unet import AniPortraitReferenceNet, AniPortraitUNet3D
from models.sd.checkpoint import is_motion_module_key
from models.sd.configs import sd15_unet_config, tiny_unet_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_config() -> dict[str, Any]:
    config = tiny_unet_config()
    config.update(block_out_channels=[32, 64, 128, 128])  # the guider's widths are c, c, 2c, 4c, 4c
    return config


def test_published_layout_on_meta() -> None:
    with torch.device("meta"):
        reference = AniPortraitReferenceNet.from_unet_config(sd15_unet_config())
        denoiser = AniPortraitUNet3D.from_unet_config(sd15_unet_config())
    assert len(reference.state_dict()) == 682 and "conv_out.weight" not in reference.state_dict()
    keys = denoiser.state_dict()
    assert len(keys) == 1274 and sum(map(is_motion_module_key, keys)) == 588
    assert reference.num_banks == denoiser.num_banks == 16


def test_denoiser_reads_bank_and_pose_maps() -> None:
    torch.manual_seed(0)
    reference = AniPortraitReferenceNet.from_unet_config(_tiny_config()).eval()
    denoiser = AniPortraitUNet3D.from_unet_config(_tiny_config()).eval()
    guider = PoseGuider(32, 2, 8).eval()
    latents, clip = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 1, 32)
    with torch.no_grad():
        bank = reference(torch.randn(2, 4, 8, 8), 0, clip)
        pose = guider(torch.randn(2, 3, 2, 64, 64))
        out = denoiser(latents, 10, clip, bank, pose)
        assert out.shape == latents.shape
        other_bank = [entry + 1 for entry in bank]
        assert not torch.allclose(denoiser(latents, 10, clip, other_bank, pose), out)
        # Unconditional rows ignore the bank: sample 0 is unchanged by a different bank.
        a = denoiser(latents, 10, clip, bank, pose, unconditional_samples=1)
        b = denoiser(latents, 10, clip, other_bank, pose, unconditional_samples=1)
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[1], out[1])
        with pytest.raises(ValueError, match="pose_features"):
            denoiser(latents, 10, clip, bank, pose[:4])


def test_unet_files_load_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference, denoiser = build_unets(_tiny_config())
    torch.save(reference.state_dict(), tmp_path / REFERENCE_UNET_FILE)
    state = denoiser.state_dict()
    torch.save(
        {k: v for k, v in state.items() if not is_motion_module_key(k)}, tmp_path / DENOISING_UNET_FILE
    )
    torch.save({k: v for k, v in state.items() if is_motion_module_key(k)}, tmp_path / MOTION_MODULE_FILE)
    loaded_reference, loaded_denoiser = load_unets(tmp_path, unet_config=_tiny_config())
    for a, b in ((reference, loaded_reference), (denoiser, loaded_denoiser)):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), key
    # A denoiser file that also holds the motion modules is refused, as is a missing config.
    torch.save(state, tmp_path / DENOISING_UNET_FILE)
    with pytest.raises(WeightsError, match=r"denoising_unet\.pth does not match"):
        load_unets(tmp_path, unet_config=_tiny_config())
    with pytest.raises(WeightsError, match="stable-diffusion-v1-5"):
        load_unets(tmp_path)
