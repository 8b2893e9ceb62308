"""Tiny random-weight Hallo modules, for tests, the ``hallo-tiny`` engine and benchmarks (nothing downloaded).

The layout is the real one (SD1.5 block structure, motion modules, hierarchical audio modules at
every level, face locator, projections) at widths of 8-64 channels. The layers Hallo initialises to
zero (face locator ``conv_out``, the audio branches' zero convs, the motion modules' ``proj_out``)
get small random values, so every condition path changes the output.
"""

from __future__ import annotations

import torch
from torch import nn

from models.hallo.checkpoint import HalloModules, ModuleSizes, build_modules
from models.hallo.configs import (
    tiny_audio_projection_config,
    tiny_face_locator_config,
    tiny_hallo_unet_config,
    tiny_image_projection_config,
    tiny_unet_additional_kwargs,
)


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
