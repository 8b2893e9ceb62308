"""Tiny random-weight Hallo modules, for tests, the ``hallo-tiny`` engine and benchmarks (nothing downloaded).

The layout is the real one (SD1.5 block structure, motion modules, hierarchical audio modules at
every level, face locator, projections) at widths of 8-64 channels. The layers Hallo initialises to
zero (face locator ``conv_out``, the audio branches' zero convs, the motion modules' ``proj_out``)
get small random values, so every condition path changes the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.hallo.checkpoint import HalloModules, ModuleSizes, build_modules
from models.hallo.configs import (
    TINY_WAV2VEC_DIM,
    TINY_WAV2VEC_LAYERS,
    tiny_audio_projection_config,
    tiny_face_locator_config,
    tiny_hallo_unet_config,
    tiny_image_projection_config,
    tiny_unet_additional_kwargs,
)

if TYPE_CHECKING:
    from models.hallo.engine import HalloComponents, HalloEngine


def tiny_sizes() -> ModuleSizes:
    """The small modules' and audio modules' tiny sizes."""
    return ModuleSizes(
        tiny_face_locator_config(),
        tiny_image_projection_config(),
        tiny_audio_projection_config(),
        tiny_unet_additional_kwargs(),
    )


@torch.no_grad()
def fill_zero_layers(module: nn.Module, generator: torch.Generator, std: float = 0.05) -> None:
    """Replaces every all-zero floating parameter of `module` by small normal noise."""
    for parameter in module.parameters():
        if parameter.is_floating_point() and not parameter.any():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32) * std
            parameter.copy_(noise.to(parameter.dtype))


def tiny_modules(seed: int = 0, dtype: torch.dtype = torch.float32) -> HalloModules:
    """Random-weight tiny modules, the same for the same seed (CPU)."""
    torch.manual_seed(seed)
    modules = build_modules(tiny_hallo_unet_config(), tiny_sizes(), dtype=dtype)
    generator = torch.Generator().manual_seed(seed + 1)
    for _, module in modules.items():
        fill_zero_layers(module, generator)
    return modules


def tiny_audio_encoder(seed: int = 0) -> Any:
    """wav2vec2-base's layout (7-conv feature encoder with group norm, hop 320, post-norm encoder)
    at `TINY_WAV2VEC_DIM` wide with `TINY_WAV2VEC_LAYERS` layers, random weights, eval mode."""
    from transformers import Wav2Vec2Model

    from models.sd.testing import tiny_wav2vec2_config

    torch.manual_seed(seed)
    config = tiny_wav2vec2_config(TINY_WAV2VEC_DIM, TINY_WAV2VEC_LAYERS)
    encoder: Any = Wav2Vec2Model(config)
    return encoder.eval()


def tiny_components(seed: int = 0, embedder: Any = None) -> HalloComponents:
    """Tiny random modules, VAE and wav2vec2, and the stand-in identity embedding (CPU, fp32)."""
    from models.hallo.arcface import StandInEmbedder
    from models.hallo.engine import HalloComponents
    from models.sd.testing import sd_vae

    modules = tiny_modules(seed)
    torch.manual_seed(seed + 2)
    vae = sd_vae()
    return HalloComponents(
        modules=modules,
        vae=vae,
        audio_encoder=tiny_audio_encoder(seed + 3),
        embedder=embedder if embedder is not None else StandInEmbedder(seed),
    )


def tiny_engine(
    seed: int = 0,
    face_analyzer: Any = None,
    device: str = "cpu",
    weights_dir: Any = None,
    audio_window_frames: int = 250,
    audio_context_frames: int = 50,
) -> HalloEngine:
    """A ``HalloEngine`` on tiny random weights (CPU, fp32) whose options default to 2 steps and
    4-frame clips; jobs at size 64 (any multiple of 64 works, the cost grows with its square).

    ``face_analyzer`` defaults to MediaPipe. ``device`` and ``weights_dir`` are what every engine is
    given by the worker; the tiny weights are always built on the CPU and ``weights_dir`` is ignored.
    """
    from models.hallo.engine import HalloEngine
    from models.hallo.options import HalloTinyOptions

    engine = HalloEngine(
        device="cpu",
        dtype="fp32",
        components=tiny_components(seed),
        face_analyzer=face_analyzer,
        audio_window_frames=audio_window_frames,
        audio_context_frames=audio_context_frames,
        warmup_size=64,
    )
    engine.options_model = HalloTinyOptions
    return engine
