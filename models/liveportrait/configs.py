"""Architecture parameters of the five LivePortrait networks.

`liveportrait_config()` holds the values of the reference's ``src/config/models.yaml`` (the networks
the published human weights fill); `tiny_config()` keeps every structural feature (21 keypoints,
ConvNeXt-v2 stages, hourglass, SPADE blocks with spectral norm, the three MLPs) at widths of 4-32
channels and a 64-pixel input, so that tests render in milliseconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AppearanceConfig:
    """``appearance_feature_extractor_params``: image -> feature volume ``(C=reshape_channel, D, H/4, W/4)``."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6


@dataclass(frozen=True)
class MotionExtractorConfig:
    """``motion_extractor_params``: a ConvNeXt-v2 backbone (``convnextv2_tiny`` by default) and heads."""

    num_kp: int = 21
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    num_bins: int = 66
    in_channels: int = 3


@dataclass(frozen=True)
class DenseMotionConfig:
    """``warping_module_params.dense_motion_params``."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass(frozen=True)
class WarpingConfig:
    """``warping_module_params``: keypoints + volume -> warped 2D features ``(block_expansion * 2**num_down_blocks)``."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


@dataclass(frozen=True)
class SpadeConfig:
    """``spade_generator_params``: warped features -> image (``upscale`` 2: 256-pixel crops give 512)."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64
    hidden_channels: int = 128
    """Width of each SPADE norm's shared conv (a constant 128 in the reference)."""


@dataclass(frozen=True)
class MLPConfig:
    """One stitching/retargeting MLP (``Linear`` + ReLU per hidden size, then a last ``Linear``)."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


@dataclass(frozen=True)
class RetargetingConfig:
    """``stitching_retargeting_module_params``: the shoulder stitcher and the lip and eye retargeters."""

    stitching: MLPConfig = field(default_factory=lambda: MLPConfig(126, (128, 128, 64), 65))
    lip: MLPConfig = field(default_factory=lambda: MLPConfig(65, (128, 128, 64), 63))
    eye: MLPConfig = field(default_factory=lambda: MLPConfig(66, (256, 256, 128, 128, 64), 63))


@dataclass(frozen=True)
class LivePortraitConfig:
    """The five networks' parameters and the crop size they take.

    Raises:
        ValueError: (from `validate`) when the networks' widths do not chain.
    """

    input_size: int = 256
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionExtractorConfig = field(default_factory=MotionExtractorConfig)
    warping: WarpingConfig = field(default_factory=WarpingConfig)
    spade: SpadeConfig = field(default_factory=SpadeConfig)
    retargeting: RetargetingConfig = field(default_factory=RetargetingConfig)

    @property
    def num_kp(self) -> int:
        return self.motion.num_kp

    @property
    def output_size(self) -> int:
        """Side of the rendered crop (the SPADE decoder upsamples the volume's side 4x, then ``upscale``)."""
        return self.input_size * max(1, self.spade.upscale)

    def validate(self) -> None:
        """Checks that the widths chain from one network to the next.

        Raises:
            ValueError: naming the two values that disagree.
        """
        app, warp, spade, motion = self.appearance, self.warping, self.spade, self.motion
        volume = app.reshape_channel * app.reshape_depth
        if app.max_features != volume:
            raise ValueError(
                f"appearance.max_features ({app.max_features}) must equal reshape_channel * reshape_depth ({volume})"
            )
        if warp.reshape_channel != app.reshape_channel or warp.max_features != volume:
            raise ValueError(
                f"warping (reshape_channel {warp.reshape_channel}, max_features {warp.max_features}) must match the "
                f"appearance volume ({app.reshape_channel} x {app.reshape_depth})"
            )
        if warp.dense_motion.reshape_depth != app.reshape_depth:
            raise ValueError(
                f"warping.dense_motion.reshape_depth ({warp.dense_motion.reshape_depth}) must equal "
                f"appearance.reshape_depth ({app.reshape_depth})"
            )
        if warp.num_kp != motion.num_kp:
            raise ValueError(f"warping.num_kp ({warp.num_kp}) must equal motion.num_kp ({motion.num_kp})")
        warped = warp.block_expansion * 2**warp.num_down_blocks
        decoder_in = min(spade.max_features, spade.block_expansion * 2**spade.num_down_blocks)
        if warped != decoder_in:
            raise ValueError(
                f"warping output width ({warped}) must equal the SPADE decoder input width ({decoder_in})"
            )
        if len(motion.depths) != 4 or len(motion.dims) != 4:
            raise ValueError(
                f"motion.depths and motion.dims need 4 stages, got {motion.depths} and {motion.dims}"
            )
        if self.input_size % 32 or self.input_size // 4 < 2**warp.dense_motion.num_blocks:
            raise ValueError(
                f"input_size {self.input_size} must be a multiple of 32 and leave the hourglass "
                f"({warp.dense_motion.num_blocks} blocks) at least one pixel"
            )
        points = 3 * motion.num_kp
        expected = {
            "stitching": (2 * points, points + 2),
            "lip": (points + 2, points),
            "eye": (points + 3, points),
        }
        for name, (inputs, outputs) in expected.items():
            mlp: MLPConfig = getattr(self.retargeting, name)
            if (mlp.input_size, mlp.output_size) != (inputs, outputs):
                raise ValueError(
                    f"retargeting.{name} maps {mlp.input_size} -> {mlp.output_size}, expected {inputs} -> {outputs}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (tuples become lists)."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LivePortraitConfig:
        """Inverse of `to_dict`."""
        warping = dict(data["warping"])
        warping["dense_motion"] = DenseMotionConfig(**warping["dense_motion"])
        motion = dict(data["motion"])
        motion["depths"], motion["dims"] = tuple(motion["depths"]), tuple(motion["dims"])
        retargeting = {
            name: MLPConfig(mlp["input_size"], tuple(mlp["hidden_sizes"]), mlp["output_size"])
            for name, mlp in data["retargeting"].items()
        }
        return cls(
            input_size=int(data["input_size"]),
            appearance=AppearanceConfig(**data["appearance"]),
            motion=MotionExtractorConfig(**motion),
            warping=WarpingConfig(**warping),
            spade=SpadeConfig(**data["spade"]),
            retargeting=RetargetingConfig(**retargeting),
        )


def liveportrait_config() -> LivePortraitConfig:
    """The reference's ``models.yaml`` (human model): what the published base/retargeting files hold."""
    return LivePortraitConfig()


def tiny_config() -> LivePortraitConfig:
    """Every structural feature at 4-32 channels, 64-pixel crops (rendered at 128)."""
    return LivePortraitConfig(
        input_size=64,
        appearance=AppearanceConfig(
            block_expansion=8,
            num_down_blocks=2,
            max_features=32,
            reshape_channel=4,
            reshape_depth=8,
            num_resblocks=1,
        ),
        motion=MotionExtractorConfig(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16)),
        warping=WarpingConfig(
            block_expansion=4,
            max_features=32,
            num_down_blocks=2,
            reshape_channel=4,
            dense_motion=DenseMotionConfig(
                block_expansion=8, max_features=16, num_blocks=2, reshape_depth=8, compress=2
            ),
        ),
        spade=SpadeConfig(
            block_expansion=4, max_features=16, num_down_blocks=2, out_channels=8, hidden_channels=8
        ),
        retargeting=RetargetingConfig(
            stitching=MLPConfig(126, (16, 16), 65),
            lip=MLPConfig(65, (16,), 63),
            eye=MLPConfig(66, (16, 16), 63),
        ),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
