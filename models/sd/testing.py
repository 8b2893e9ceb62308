"""Random-weight pieces of the skeleton for tests, tiny engines and benchmarks (nothing downloaded)."""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderKL


def sd_vae(
    block_out_channels: tuple[int, ...] = (8, 8, 16, 16),
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
    sample_size: int = 64,
) -> Any:
    """AutoencoderKL with the SD layout (4 blocks, 8x downsampling, 4 latent channels), random weights,
    in eval mode. The defaults are a tiny one (8-16 channels); SD's own is
    ``sd_vae((128, 256, 512, 512), 2, 32, 512)``."""
    vae: Any = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
    )
    return vae.eval()
