"""V-Express's own module settings (inference.py, inference_v2.yaml) and tiny configs of the same layout
for tests. The SD1.5 UNet configs and their reading live in ``models.sd.configs``."""

from __future__ import annotations

from typing import Any


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
