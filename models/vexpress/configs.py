"""Model configurations: the SD1.5 UNet config V-Express builds on, V-Express's own module settings, and
tiny configs of the same layout for tests. Also the reading of a diffusers ``unet/config.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock3D", "UpBlock3D")

# Hyperparameters of our UNets that a diffusers UNet config provides.
UNET_CONFIG_KEYS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "attention_head_dim",
    "use_linear_projection",
)

# Keys a diffusers UNet config may carry that we accept only at the value that means "feature unused".
_NEUTRAL_UNET_KEYS: dict[str, Any] = {
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "upcast_attention": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "transformer_layers_per_block": 1,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_attention_heads": None,
    "projection_class_embeddings_input_dim": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "time_cond_proj_dim": None,
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "cross_attention_norm": None,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "mid_block_only_cross_attention": None,
    "dropout": 0.0,
    "attention_type": "default",
    "reverse_transformer_layers_per_block": None,
    "addition_embed_type_num_heads": 64,
}


def sd15_unet_config() -> dict[str, Any]:
    """The values of Stable Diffusion 1.5's ``unet/config.json`` (written out: nothing is downloaded)."""
    return {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }


def tiny_unet_config() -> dict[str, Any]:
    """SD1.5's layout (4 down/up blocks, attention where SD1.5 has it) at test size: 32-64 channels,
    8 heads, cross-attention (audio token) width 32, 8x8 latents."""
    config = sd15_unet_config()
    config.update(block_out_channels=[32, 64, 64, 64], cross_attention_dim=32, sample_size=8)
    return config


def vexpress_unet_additional_kwargs() -> dict[str, Any]:
    """``unet_additional_kwargs`` of V-Express's ``inference_v2.yaml`` (the denoiser's extra settings)."""
    return {
        "use_inflated_groupnorm": True,
        "unet_use_cross_frame_attention": False,
        "unet_use_temporal_attention": False,
        "use_motion_module": True,
        "motion_module_resolutions": [1, 2, 4, 8],
        "motion_module_mid_block": True,
        "motion_module_decoder_only": False,
        "motion_module_type": "Vanilla",
        "motion_module_kwargs": {
            "num_attention_heads": 8,
            "num_transformer_block": 1,
            "attention_block_types": ["Temporal_Self", "Temporal_Self"],
            "temporal_position_encoding": True,
            "temporal_position_encoding_max_len": 32,
            "temporal_attention_dim_div": 1,
        },
    }


def vexpress_guider_config() -> dict[str, Any]:
    """The V-Kps guider as inference.py builds it: ``VKpsGuider(320, block_out_channels=(16, 32, 96, 256))``."""
    return {
        "conditioning_embedding_channels": 320,
        "conditioning_channels": 3,
        "block_out_channels": [16, 32, 96, 256],
    }


def vexpress_audio_projection_config() -> dict[str, Any]:
    """The audio projection as inference.py builds it (num_pad_audio_frames = 2)."""
    return {
        "dim": 768,
        "depth": 4,
        "dim_head": 64,
        "heads": 12,
        "num_queries": 5,
        "embedding_dim": 768,
        "output_dim": 768,
        "ff_mult": 4,
        "max_seq_len": 10,
    }


def tiny_guider_config() -> dict[str, Any]:
    """Guider whose output width (32) matches `tiny_unet_config`'s first block."""
    return {
        "conditioning_embedding_channels": 32,
        "conditioning_channels": 3,
        "block_out_channels": [8, 8, 16, 16],
    }


def tiny_audio_projection_config() -> dict[str, Any]:
    """Audio projection from 32-wide audio features to 5 tokens of width 32 (`tiny_unet_config`'s
    cross-attention width), over windows of 10 tokens."""
    return {
        "dim": 32,
        "depth": 2,
        "dim_head": 16,
        "heads": 2,
        "num_queries": 5,
        "embedding_dim": 32,
        "output_dim": 32,
        "ff_mult": 4,
        "max_seq_len": 10,
    }


def unet_kwargs_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Picks our UNet hyperparameters out of a diffusers UNet config.

    Keys starting with ``_`` are metadata and ignored. Keys of features we do not build are accepted
    only at their neutral value. Any other key is an error: a config we would silently misread.

    Raises:
        ValueError: naming the key and value that cannot be honoured.
    """
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith("_"):
            continue
        if key in UNET_CONFIG_KEYS:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        elif key in _NEUTRAL_UNET_KEYS:
            if not _is_neutral(key, value):
                raise ValueError(
                    f"unsupported UNet config value {key}={value!r} (supported: {_NEUTRAL_UNET_KEYS[key]!r})"
                )
        else:
            raise ValueError(f"unknown UNet config key {key!r} (value {value!r})")
    return kwargs


def _is_neutral(key: str, value: Any) -> bool:
    neutral = _NEUTRAL_UNET_KEYS[key]
    if value == neutral:
        return True
    if key == "only_cross_attention" and isinstance(value, Sequence):
        return not any(value)
    if key == "transformer_layers_per_block" and isinstance(value, Sequence):
        return all(v == 1 for v in value)
    if key == "num_attention_heads":
        return value is None
    return False


def validate_unet_args(
    *,
    in_channels: int,
    out_channels: int,
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    block_out_channels: Sequence[int],
    layers_per_block: int,
    act_fn: str,
    norm_num_groups: int,
    norm_eps: float,
    cross_attention_dim: int,
    attention_head_dim: int | Sequence[int],
) -> tuple[int, ...]:
    """Checks UNet hyperparameters; returns the number of heads of each block.

    Raises:
        ValueError: naming the argument and its value.
    """
    if len(block_out_channels) < 2:
        raise ValueError(f"block_out_channels needs at least 2 entries, got {list(block_out_channels)}")
    if len(down_block_types) != len(block_out_channels):
        raise ValueError(
            f"down_block_types has {len(down_block_types)} entries but block_out_channels has {len(block_out_channels)}"
        )
    if len(up_block_types) != len(block_out_channels):
        raise ValueError(
            f"up_block_types has {len(up_block_types)} entries but block_out_channels has {len(block_out_channels)}"
        )
    for name in down_block_types:
        if name not in DOWN_BLOCK_TYPES:
            raise ValueError(f"down_block_types entry {name!r} is not one of {DOWN_BLOCK_TYPES}")
    for name in up_block_types:
        if name not in UP_BLOCK_TYPES:
            raise ValueError(f"up_block_types entry {name!r} is not one of {UP_BLOCK_TYPES}")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if layers_per_block < 1:
        raise ValueError(f"layers_per_block must be >= 1, got {layers_per_block}")
    if act_fn != "silu":
        raise ValueError(f"act_fn must be 'silu', got {act_fn!r}")
    if norm_num_groups < 1:
        raise ValueError(f"norm_num_groups must be >= 1, got {norm_num_groups}")
    if not norm_eps > 0:
        raise ValueError(f"norm_eps must be > 0, got {norm_eps}")
    if cross_attention_dim < 1:
        raise ValueError(f"cross_attention_dim must be >= 1, got {cross_attention_dim}")
    heads = (
        (attention_head_dim,) * len(block_out_channels)
        if isinstance(attention_head_dim, int)
        else tuple(attention_head_dim)
    )
    if len(heads) != len(block_out_channels):
        raise ValueError(f"attention_head_dim={attention_head_dim!r} needs one entry per block")
    for channels, block_heads in zip(block_out_channels, heads, strict=True):
        if channels < 1 or channels % norm_num_groups != 0:
            raise ValueError(
                f"block_out_channels={list(block_out_channels)}: {channels} is not divisible by norm_num_groups={norm_num_groups}"
            )
        if block_heads < 1 or channels % block_heads != 0:
            raise ValueError(
                f"attention_head_dim={attention_head_dim!r}: {block_heads} heads do not divide {channels} channels"
            )
    return heads
