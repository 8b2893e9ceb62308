"""AniPortrait's published hyperparameters and inference defaults, and the tiny test variants.

Published values come from the reference's ``configs/inference/inference_audio.yaml`` (A2L),
``inference_v2.yaml`` (denoiser and scheduler) and ``scripts/audio2vid.py`` (512 x 512, 25 steps,
guidance 3.5, 30 fps, seed 42).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transformers import Wav2Vec2Config

FPS = 30
SAMPLE_RATE = 16_000
DEFAULT_SIZE = 512
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 3.5
CONTEXT_FRAMES = 16
CONTEXT_OVERLAP = 4
CLIP_IMAGE_SIZE = 224


@dataclass(frozen=True)
class Audio2MeshConfig:
    """`Audio2Mesh` hyperparameters besides the audio encoder's."""

    latent_dim: int = 512
    out_dim: int = 1404


@dataclass(frozen=True)
class Audio2PoseConfig:
    """`Audio2Pose` hyperparameters besides the audio encoder's."""

    latent_dim: int = 512
    out_dim: int = 6
    num_heads: int = 8
    num_layers: int = 8
    max_positions: int = 600
    num_ids: int = 100

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


def tiny_audio2mesh_config() -> Audio2MeshConfig:
    return Audio2MeshConfig(latent_dim=16)


def tiny_audio2pose_config() -> Audio2PoseConfig:
    return Audio2PoseConfig(latent_dim=16, num_layers=2)


def tiny_audio_encoder_config(hidden_size: int = 32) -> Wav2Vec2Config:
    """wav2vec2-base's feature encoder (7 convs, hop 320, group norm) and one narrow transformer layer."""
    from models.sd.testing import tiny_wav2vec2_config

    return tiny_wav2vec2_config(hidden_size, mask_time_prob=0.05)


def wav2vec2_base_config() -> Wav2Vec2Config:
    """wav2vec2-base-960h's architecture (for structure checks; loading reads the directory's config.json)."""
    return Wav2Vec2Config(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        mask_time_prob=0.05,
        vocab_size=32,
    )
