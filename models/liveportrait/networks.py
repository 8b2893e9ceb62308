"""The five LivePortrait networks, with the published state dicts' parameter names.

- `AppearanceFeatureExtractor` (F): crop ``(B, 3, S, S)`` in [0, 1] -> feature volume ``(B, 32, 16, S/4, S/4)``.
- `MotionExtractor` (M): crop -> canonical keypoints, head-pose bins, translation, expression, scale.
- `WarpingNetwork` (W): volume + source/driving keypoints -> warped features ``(B, 256, S/4, S/4)``.
- `SPADEDecoder` (G): warped features -> image ``(B, 3, 2S, 2S)`` in [0, 1].
- `StitchingRetargetingNetwork` (S, R_eyes, R_lip): small MLPs on flattened keypoints.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.liveportrait.configs import (
    AppearanceConfig,
    DenseMotionConfig,
    MLPConfig,
    MotionExtractorConfig,
    SpadeConfig,
    WarpingConfig,
)
from models.liveportrait.layers import (
    GRN,
    ConvNeXtV2Block,
    DownBlock2d,
    Hourglass,
    LayerNorm2d,
    ResBlock3d,
    SameBlock2d,
    SPADEResnetBlock,
    keypoint_gaussians,
    make_coordinate_grid,
)

__all__ = [
    "GRN",
    "AppearanceFeatureExtractor",
    "DenseMotionNetwork",
    "MotionExtractor",
    "MotionOutput",
    "SPADEDecoder",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
]


class AppearanceFeatureExtractor(nn.Module):
    """F: ``(B, 3, S, S)`` -> ``(B, reshape_channel, reshape_depth, S / 2**num_down_blocks, ...)``."""

    def __init__(self, config: AppearanceConfig) -> None:
        super().__init__()
        self.arch = config
        widths = [
            min(config.max_features, config.block_expansion * 2**i) for i in range(config.num_down_blocks + 1)
        ]
        self.first = SameBlock2d(config.image_channel, config.block_expansion)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(config.num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], config.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(config.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(config.reshape_channel))

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        bs, _, h, w = out.shape
        volume = out.view(bs, self.arch.reshape_channel, self.arch.reshape_depth, h, w)
        return self.resblocks_3d(volume)  # type: ignore[no-any-return]


class MotionOutput(NamedTuple):
    """Raw outputs of the motion extractor for ``B`` images.

    ``pitch``/``yaw``/``roll`` are ``(B, num_bins)`` logits over 3-degree bins (see
    `keypoints.bins_to_degrees`); ``kp`` and ``exp`` are ``(B, 3 * num_kp)``; ``t`` ``(B, 3)``; ``scale`` ``(B, 1)``.
    """

    kp: torch.Tensor
    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor


class ConvNeXtV2(nn.Module):
    """The ConvNeXt-v2 backbone (stem, 3 downsampling layers, 4 stages, pooled LayerNorm) and M's heads."""

    def __init__(self, config: MotionExtractorConfig) -> None:
        super().__init__()
        dims = config.dims
        self.downsample_layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(config.in_channels, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0])
                )
            ]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(dims[i]) for _ in range(config.depths[i]))) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * config.num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], config.num_bins)
        self.fc_yaw = nn.Linear(dims[-1], config.num_bins)
        self.fc_roll = nn.Linear(dims[-1], config.num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * config.num_kp)

    def forward(self, x: torch.Tensor) -> MotionOutput:
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        features = self.norm(x.mean([-2, -1]))
        return MotionOutput(
            kp=self.fc_kp(features),
            pitch=self.fc_pitch(features),
            yaw=self.fc_yaw(features),
            roll=self.fc_roll(features),
            t=self.fc_t(features),
            exp=self.fc_exp(features),
            scale=self.fc_scale(features),
        )


class MotionExtractor(nn.Module):
    """M: ``(B, 3, S, S)`` in [0, 1] -> `MotionOutput` (the backbone sits under ``detector.``, as published)."""

    def __init__(self, config: MotionExtractorConfig) -> None:
        super().__init__()
        self.arch = config
        self.detector = ConvNeXtV2(config)

    def forward(self, x: torch.Tensor) -> MotionOutput:
        return self.detector(x)  # type: ignore[no-any-return]


class DenseMotionNetwork(nn.Module):
    """Dense 3D motion from sparse keypoint motion: per-keypoint warps of a compressed volume, blended by a
    softmax mask an hourglass predicts, and an occlusion map ``(B, 1, H, W)``."""

    def __init__(
        self, config: DenseMotionConfig, num_kp: int, feature_channel: int, estimate_occlusion_map: bool
    ):
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass(
            block_expansion=config.block_expansion,
            in_features=(num_kp + 1) * (config.compress + 1),
            max_features=config.max_features,
            num_blocks=config.num_blocks,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, config.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(config.compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * config.reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            feature: ``(B, C, D, H, W)`` source volume.
            kp_driving, kp_source: ``(B, K, 3)`` keypoints in the normalised ``[-1, 1]`` cube.

        Returns:
            ``deformation`` ``(B, D, H, W, 3)`` sampling grid and ``occlusion`` ``(B, 1, H, W)`` (or None).
        """
        feature = F.relu(self.norm(self.compress(feature)))
        bs, channels, d, h, w = feature.shape
        k = self.num_kp + 1

        # 1. Sparse motions: identity (background) plus one rigid shift per keypoint.
        identity = make_coordinate_grid((d, h, w), kp_source).view(1, 1, d, h, w, 3)
        shifted = (
            identity
            - kp_driving.view(bs, self.num_kp, 1, 1, 1, 3)
            + kp_source.view(bs, self.num_kp, 1, 1, 1, 3)
        )
        sparse_motion = torch.cat([identity.expand(bs, 1, d, h, w, 3), shifted], dim=1)

        # 2. The volume warped by each sparse motion.
        repeated = feature.unsqueeze(1).expand(bs, k, channels, d, h, w).reshape(bs * k, channels, d, h, w)
        deformed = F.grid_sample(repeated, sparse_motion.reshape(bs * k, d, h, w, 3), align_corners=False)
        deformed = deformed.view(bs, k, channels, d, h, w)

        # 3. Keypoint heatmaps (driving minus source), a zero map for the background.
        heatmap = keypoint_gaussians(kp_driving, (d, h, w), 0.01) - keypoint_gaussians(
            kp_source, (d, h, w), 0.01
        )
        heatmap = torch.cat([heatmap.new_zeros(bs, 1, d, h, w), heatmap], dim=1).unsqueeze(2)

        # 4. Blend the sparse motions with the predicted mask.
        prediction = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(bs, -1, d, h, w))
        mask = F.softmax(self.mask(prediction), dim=1).unsqueeze(2)
        deformation = (sparse_motion.permute(0, 1, 5, 2, 3, 4) * mask).sum(dim=1).permute(0, 2, 3, 4, 1)

        occlusion = None
        if self.occlusion is not None:
            occlusion = torch.sigmoid(self.occlusion(prediction.reshape(bs, -1, h, w)))
        return deformation, occlusion


class WarpingNetwork(nn.Module):
    """W: warps the source volume to the driving keypoints and flattens it to 2D features."""

    def __init__(self, config: WarpingConfig) -> None:
        super().__init__()
        self.arch = config
        width = config.block_expansion * 2**config.num_down_blocks
        self.dense_motion_network = DenseMotionNetwork(
            config.dense_motion, config.num_kp, config.reshape_channel, config.estimate_occlusion_map
        )
        self.third = SameBlock2d(config.max_features, width, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            feature_3d: ``(B, C, D, H, W)`` source volume (from F).
            kp_driving, kp_source: ``(B, K, 3)``.

        Returns:
            ``(B, block_expansion * 2**num_down_blocks, H, W)``, multiplied by the occlusion map.
        """
        deformation, occlusion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        out = F.grid_sample(feature_3d, deformation, align_corners=False)
        bs, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(bs, c * d, h, w)))
        if occlusion is not None:
            out = out * occlusion
        return out  # type: ignore[no-any-return]


class SPADEDecoder(nn.Module):
    """G: warped features ``(B, C, H, W)`` -> image ``(B, 3, 4H * upscale, ...)`` in [0, 1]."""

    def __init__(self, config: SpadeConfig) -> None:
        super().__init__()
        self.arch = config
        width = min(config.max_features, config.block_expansion * 2**config.num_down_blocks)
        hidden = config.hidden_channels
        self.fc = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * width, 2 * width, width, hidden))
        self.up_0 = SPADEResnetBlock(2 * width, width, width, hidden)
        self.up_1 = SPADEResnetBlock(width, config.out_channels, width, hidden)
        self.conv_img: nn.Module
        if config.upscale <= 1:
            self.conv_img = nn.Conv2d(config.out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(config.out_channels, 3 * config.upscale**2, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale_factor=config.upscale),
            )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


class StitchingRetargetingNetwork(nn.Module):
    """An MLP (``mlp.0``, ``mlp.2``, ... are the Linear layers, ReLU between)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.arch = config
        sizes = [config.input_size, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], config.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)  # type: ignore[no-any-return]
