"""Random-weight pieces of the skeleton for tests, tiny engines and benchmarks (nothing downloaded)."""

from __future__ import annotations

from typing import Any

from diffusers import AutoencoderKL
from transformers import Wav2Vec2Config


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


def tiny_wav2vec2_config(
    hidden_size: int = 32, num_hidden_layers: int = 1, **overrides: Any
) -> Wav2Vec2Config:
    """wav2vec2-base's layout (7-conv feature encoder with group norm, hop 320, post-norm encoder) at
    ``hidden_size`` wide with ``num_hidden_layers`` layers and no dropout: the audio front-end of the
    tiny vexpress, hallo and aniportrait models. ``overrides`` replace any other field."""
    values: dict[str, Any] = {
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": 2,
        "intermediate_size": 2 * hidden_size,
        "conv_dim": (16,) * 7,
        "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "feat_extract_norm": "group",
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "do_stable_layer_norm": False,
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "feat_proj_dropout": 0.0,
        "layerdrop": 0.0,
        "mask_time_prob": 0.0,
        "vocab_size": 8,
    }
    return Wav2Vec2Config(**{**values, **overrides})
