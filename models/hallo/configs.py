"""Hallo's published module sizes and inference defaults (``scripts/inference.py``,
``configs/inference/default.yaml``), and the tiny sizes of the test engine."""

from __future__ import annotations

from typing import Any

from models.sd.configs import tiny_unet_config

CLIP_FRAMES = 16
"""``data.n_sample_frames``: frames per clip."""
MOTION_FRAMES = 2
"""``data.n_motion_frames``: generated frames carried into the next clip."""
INFERENCE_STEPS = 40
GUIDANCE_SCALE = 3.5
FACE_EXPAND_RATIO = 1.2
AUDIO_WINDOW = 5
"""Audio frames per video frame fed to the audio projection (the frame and 2 on each side)."""
SIZE = 512
FPS = 25
SAMPLE_RATE = 16000


def face_locator_config() -> dict[str, Any]:
    """``FaceLocator(conditioning_embedding_channels=320)``."""
    return {
        "conditioning_embedding_channels": 320,
        "conditioning_channels": 3,
        "block_out_channels": (16, 32, 64, 128),
    }


def image_projection_config() -> dict[str, Any]:
    """``ImageProjModel(cross_attention_dim=768, clip_embeddings_dim=512, clip_extra_context_tokens=4)``."""
    return {"cross_attention_dim": 768, "clip_embeddings_dim": 512, "clip_extra_context_tokens": 4}


def audio_projection_config() -> dict[str, Any]:
    """``AudioProjModel(seq_len=5, blocks=12, channels=768, intermediate_dim=512, output_dim=768, context_tokens=32)``."""
    return {
        "seq_len": AUDIO_WINDOW,
        "blocks": 12,
        "channels": 768,
        "intermediate_dim": 512,
        "output_dim": 768,
        "context_tokens": 32,
    }


def hallo_scheduler_config() -> dict[str, Any]:
    """The DDIMScheduler keyword arguments of Hallo's inference: ``noise_scheduler_kwargs`` with
    ``enable_zero_snr`` (v-prediction, zero terminal SNR, trailing timesteps). The betas are the
    plain "linear" schedule, not SD's "scaled_linear" (the reference switches to it only after the
    inference scheduler is built)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "linear",
        "clip_sample": False,
        "steps_offset": 1,
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
    }


TINY_AUDIO_DIM = 16
"""Audio-token width of the tiny models."""
TINY_WAV2VEC_LAYERS = 2
TINY_WAV2VEC_DIM = 16


def tiny_hallo_unet_config() -> dict[str, Any]:
    """SD1.5's layout at test size (32-64 channels; identity-token width 32)."""
    return tiny_unet_config()


def tiny_unet_additional_kwargs() -> dict[str, Any]:
    """Hallo's settings with a narrow audio-token width."""
    return {"audio_attention_dim": TINY_AUDIO_DIM}


def tiny_face_locator_config() -> dict[str, Any]:
    return {
        "conditioning_embedding_channels": 32,
        "conditioning_channels": 3,
        "block_out_channels": (8, 8, 16, 16),
    }


def tiny_image_projection_config() -> dict[str, Any]:
    return {"cross_attention_dim": 32, "clip_embeddings_dim": 512, "clip_extra_context_tokens": 4}


def tiny_audio_projection_config() -> dict[str, Any]:
    return {
        "seq_len": AUDIO_WINDOW,
        "blocks": TINY_WAV2VEC_LAYERS,
        "channels": TINY_WAV2VEC_DIM,
        "intermediate_dim": 32,
        "output_dim": TINY_AUDIO_DIM,
        "context_tokens": 4,
    }
