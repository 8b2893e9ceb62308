"""The V-Kps guider: keypoint images to features added after the denoiser's input convolution."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class VKpsGuider(ModelMixin, ConfigMixin):  # type: ignore[misc]
    r"""
    Per-frame conv stack: ``conv_in`` (3x3) + SiLU; for each pair of consecutive widths a 3x3 conv and a
    3x3 stride-2 conv, each + SiLU (``blocks.0 ..``); ``conv_out`` (3x3, no activation). With 4 widths the
    output is at 1/8 resolution, the latent grid.

    Parameters:
        conditioning_embedding_channels (`int`): Output channels (the denoiser's first block width, 320).
        conditioning_channels (`int`): Input channels (RGB keypoint images: 3).
        block_out_channels (`tuple[int]`): Widths; V-Express: (16, 32, 96, 256).
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        conditioning_embedding_channels: int = 320,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        for name, value in (
            ("conditioning_embedding_channels", conditioning_embedding_channels),
            ("conditioning_channels", conditioning_channels),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if len(block_out_channels) < 1 or any(c < 1 for c in block_out_channels):
            raise ValueError(
                f"block_out_channels must be a non-empty list of positive widths, got {list(block_out_channels)}"
            )
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList([])
        for channels_in, channels_out in itertools.pairwise(block_out_channels):
            self.blocks.append(nn.Conv2d(channels_in, channels_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(
            block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1
        )

    def forward(self, kps_images: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            kps_images (`torch.Tensor` of shape `(B, conditioning_channels, F, H, W)`): Keypoint images in [0, 1].

        Returns:
            `torch.Tensor` of shape `(B, conditioning_embedding_channels, F, H/8, W/8)` (for 4 widths).
        """
        if kps_images.ndim != 5:
            raise ValueError(f"kps_images must be (B, C, F, H, W), got shape {tuple(kps_images.shape)}")
        batch, channels, num_frames, height, width = kps_images.shape
        frames = kps_images.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        embedding = F.silu(self.conv_in(frames))
        for block in self.blocks:
            embedding = F.silu(block(embedding))
        embedding = self.conv_out(embedding)
        return embedding.reshape(batch, num_frames, *embedding.shape[1:]).transpose(1, 2).contiguous()
