"""Tiny random-weight LivePortrait modules, for tests and the ``liveportrait-tiny`` engine.

The random weights are made less trivial than PyTorch's initialisation (batch-norm statistics, GRN and
layer-norm affines, spectral-norm vectors from power iteration), so that every branch of every network
changes the output and a wrong key or op shows up in the tests.
"""

from __future__ import annotations

import torch
from torch import nn

from models.liveportrait.checkpoint import LivePortraitModules, build_modules
from models.liveportrait.configs import LivePortraitConfig, tiny_config
from models.liveportrait.layers import GRN, LayerNorm2d, LayerNormLast, SpectralNormConv2d


def randomize(modules: LivePortraitModules, seed: int = 0) -> LivePortraitModules:
    """Fills norms and spectral-norm vectors with seeded, plausible random values (in place)."""
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor: torch.Tensor, mean: float, std: float) -> None:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    with torch.no_grad():
        for _, module in modules.items():
            for layer in module.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    normal(layer.running_mean, 0.0, 0.1)  # type: ignore[arg-type]
                    layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=generator) + 0.5)  # type: ignore[union-attr]
                    normal(layer.weight, 1.0, 0.1)
                    normal(layer.bias, 0.0, 0.1)
                elif isinstance(layer, GRN):
                    normal(layer.gamma, 0.0, 0.1)
                    normal(layer.beta, 0.0, 0.1)
                elif isinstance(layer, LayerNorm2d | LayerNormLast | nn.LayerNorm):
                    normal(layer.weight, 1.0, 0.1)
                    normal(layer.bias, 0.0, 0.1)
                elif isinstance(layer, SpectralNormConv2d):
                    matrix = layer.weight_orig.reshape(layer.weight_orig.shape[0], -1)
                    v = torch.randn(matrix.shape[1], generator=generator)
                    for _ in range(20):
                        u = nn.functional.normalize(matrix @ v, dim=0)
                        v = nn.functional.normalize(matrix.t() @ u, dim=0)
                    layer.weight_u.copy_(u)
                    layer.weight_v.copy_(v)
    return modules


def tiny_modules(
    seed: int = 0, config: LivePortraitConfig | None = None, dtype: torch.dtype = torch.float32
) -> LivePortraitModules:
    """Random-weight modules of `tiny_config` (or `config`), the same for the same seed (CPU)."""
    torch.manual_seed(seed)
    modules = randomize(build_modules(config or tiny_config()), seed)
    return modules.to(dtype=dtype)
