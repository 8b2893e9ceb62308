"""Tiny random-weight LivePortrait modules, for tests and the ``liveportrait-tiny`` engine.

The random weights are made less trivial than PyTorch's initialisation (batch-norm statistics, GRN and
layer-norm affines, spectral-norm vectors from power iteration), so that every branch of every network
changes the output and a wrong key or op shows up in the tests.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.face import Face, face_from_landmarks
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


class SyntheticFaceAnalyzer:
    """A face analyzer for tests: one frontal face whose 478-point mesh spans the central `extent` of
    any image that is not dark (mean below 10: no face), with open eyes and closed lips."""

    def __init__(self, seed: int = 0, extent: float = 0.5) -> None:
        self._extent = extent
        rng = np.random.default_rng(seed)
        unit = rng.uniform(0.1, 0.9, size=(478, 2))  # fractions of the face box
        fixed = {
            10: (0.5, 0.0), 152: (0.5, 1.0), 234: (0.0, 0.5), 454: (1.0, 0.5),
            33: (0.22, 0.4), 133: (0.42, 0.4), 159: (0.32, 0.37), 145: (0.32, 0.43),
            362: (0.58, 0.4), 263: (0.78, 0.4), 386: (0.68, 0.37), 374: (0.68, 0.43),
            61: (0.35, 0.75), 291: (0.65, 0.75), 13: (0.5, 0.745), 14: (0.5, 0.755), 1: (0.5, 0.58),
        }  # fmt: skip
        for index, point in fixed.items():
            unit[index] = point
        unit[468:473] = (0.32, 0.4)
        unit[473:478] = (0.68, 0.4)
        self._unit = unit

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Face]:
        if float(image.mean()) < 10:
            return []
        height, width = image.shape[:2]
        margin = (1 - self._extent) / 2
        box = np.array([margin * width, margin * height], np.float64)
        side = np.array([self._extent * width, self._extent * height], np.float64)
        xy = box + self._unit * side
        return [face_from_landmarks(np.concatenate([xy, np.zeros((478, 1))], axis=1).astype(np.float32))]
