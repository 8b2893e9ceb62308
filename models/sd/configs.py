"""UNet configurations: SD1.5's UNet config, a tiny config of the same layout for tests, the reading and
checking of a diffusers ``unet/config.json``, and of AnimateDiff-format ``unet_additional_kwargs``."""

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


# AnimateDiff-format ``unet_additional_kwargs`` -> (UNet3DConditionModel keyword argument, conversion).
_ADDITIONAL_KEYS: dict[str, tuple[str, Any]] = {
    "use_motion_module": ("use_motion_module", bool),
    "motion_module_resolutions": ("motion_module_resolutions", tuple),
    "motion_module_mid_block": ("motion_module_mid_block", bool),
    "motion_module_decoder_only": ("motion_module_decoder_only", bool),
}
_MOTION_MODULE_KEYS: dict[str, tuple[str, Any]] = {
    "num_attention_heads": ("motion_module_num_attention_heads", int),
    "num_transformer_block": ("motion_module_num_transformer_blocks", int),
    "temporal_position_encoding_max_len": ("motion_module_max_positions", int),
    "temporal_position_encoding": ("motion_module_position_encoding", bool),
}


def unet_3d_kwargs_from_additional(
    unet_additional_kwargs: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Translates ``unet_additional_kwargs`` in the AnimateDiff format of an ``inference_v2.yaml`` into
    `UNet3DConditionModel` keyword arguments.

    Args:
        unet_additional_kwargs: The settings; keys of `defaults` they leave out keep the default, and
            ``motion_module_kwargs`` is merged key by key.
        defaults: An engine's published settings; keys absent from both keep the constructor defaults.

    Raises:
        ValueError: for settings this implementation does not build (temporal attention in the spatial
            blocks, cross-frame attention, non-inflated GroupNorm, a motion module type other than
            "Vanilla") and for unknown keys.
    """
    extra = {**(defaults or {}), **unet_additional_kwargs}
    motion = dict((defaults or {}).get("motion_module_kwargs") or {})
    motion.update(unet_additional_kwargs.get("motion_module_kwargs") or {})
    extra.pop("motion_module_kwargs", None)
    if extra.pop("use_inflated_groupnorm", True) is not True:
        raise ValueError("use_inflated_groupnorm must be true (the denoiser normalises per frame)")
    for key in ("unet_use_cross_frame_attention", "unet_use_temporal_attention"):
        if extra.pop(key, False):
            raise ValueError(f"{key}=true is not supported (the spatial blocks attend within the frame)")
    if extra.pop("motion_module_type", "Vanilla") != "Vanilla":
        raise ValueError("motion_module_type must be 'Vanilla'")
    kwargs: dict[str, Any] = {}
    if "attention_block_types" in motion:
        block_types = motion.pop("attention_block_types")
        if any(name != "Temporal_Self" for name in block_types):
            raise ValueError(f"attention_block_types={block_types!r}: only 'Temporal_Self' is supported")
        kwargs["motion_module_num_attention_blocks"] = len(block_types)
    if motion.pop("temporal_attention_dim_div", 1) != 1:
        raise ValueError("temporal_attention_dim_div must be 1")
    motion.pop("zero_initialize", None)  # initialisation only; the weights are loaded
    for source, keys in ((extra, _ADDITIONAL_KEYS), (motion, _MOTION_MODULE_KEYS)):
        for key, (name, convert) in keys.items():
            if key in source:
                kwargs[name] = convert(source.pop(key))
    if extra or motion:
        raise ValueError(f"unknown unet_additional_kwargs: {sorted(extra) + sorted(motion)}")
    return kwargs


def validate_unet_config(config: Mapping[str, Any]) -> tuple[int, ...]:
    """Checks the SD hyperparameters of a UNet's registered config; returns the number of heads of each block.

    Raises:
        ValueError: naming the argument and its value.
    """
    in_channels, out_channels = config["in_channels"], config["out_channels"]
    down_block_types, up_block_types = config["down_block_types"], config["up_block_types"]
    block_out_channels, layers_per_block = config["block_out_channels"], config["layers_per_block"]
    act_fn, norm_num_groups, norm_eps = config["act_fn"], config["norm_num_groups"], config["norm_eps"]
    cross_attention_dim, attention_head_dim = config["cross_attention_dim"], config["attention_head_dim"]
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
