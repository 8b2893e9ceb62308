"""The V-Express denoising UNet: SD1.5 layout, per-frame convs/norms, reference and audio attention in
every transformer block, AnimateDiff motion modules at every resolution and in the mid block."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from models.vexpress.configs import (
    unet_kwargs_from_config,
    validate_unet_args,
    vexpress_unet_additional_kwargs,
)
from models.vexpress.motion_module import VanillaTemporalModule
from models.vexpress.unet_blocks import (
    MotionModuleFactory,
    ReferenceReaderTransformerBlock,
    SpatialTransformer,
    build_unet_layout,
    timestep_embedding,
    transformer_blocks_in_order,
    upsample_sizes,
)


class VExpressUNet3D(ModelMixin, ConfigMixin):  # type: ignore[misc]
    r"""
    The denoiser (V-Express ``UNet3DConditionModel`` with ``inference_v2.yaml``): predicts v for a window of
    frames. Published layout: 1386 keys, the 2D UNet's names plus ``attn1_5``/``norm1_5`` in every
    transformer block and ``motion_modules`` in every block (2 per down block, 3 per up block, 1 in the
    mid block between its transformer and its second resnet).

    Parameters:
        sample_size ... use_linear_projection: as in a diffusers UNet config (SD1.5 values by default).
        use_motion_module (`bool`): Build motion modules.
        motion_module_resolutions (`tuple[int]`): Resolutions (1 = full, 2 = half, ...) whose blocks get them.
        motion_module_mid_block (`bool`): Whether the mid block gets one.
        motion_module_decoder_only (`bool`): Only the up blocks get them.
        motion_module_num_attention_heads (`int`): Heads of the temporal attentions.
        motion_module_num_transformer_blocks (`int`): Temporal transformer blocks per module.
        motion_module_num_attention_blocks (`int`): Temporal self-attentions per block.
        motion_module_max_positions (`int`): PE table length = the most frames per window.
        motion_module_position_encoding (`bool`): Whether the temporal attentions add the PE table.
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int | tuple[int, ...] = 8,
        use_linear_projection: bool = False,
        use_motion_module: bool = True,
        motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8),
        motion_module_mid_block: bool = True,
        motion_module_decoder_only: bool = False,
        motion_module_num_attention_heads: int = 8,
        motion_module_num_transformer_blocks: int = 1,
        motion_module_num_attention_blocks: int = 2,
        motion_module_max_positions: int = 32,
        motion_module_position_encoding: bool = True,
    ) -> None:
        super().__init__()
        heads = validate_unet_args(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
        )
        for name, value in (
            ("motion_module_num_attention_heads", motion_module_num_attention_heads),
            ("motion_module_num_transformer_blocks", motion_module_num_transformer_blocks),
            ("motion_module_num_attention_blocks", motion_module_num_attention_blocks),
            ("motion_module_max_positions", motion_module_max_positions),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if use_motion_module:
            for channels in block_out_channels:
                if channels % motion_module_num_attention_heads != 0:
                    raise ValueError(
                        f"motion_module_num_attention_heads={motion_module_num_attention_heads} does not divide {channels} channels"
                    )
        self.max_frames = motion_module_max_positions if use_motion_module else None

        def transformer(channels: int, block_heads: int) -> SpatialTransformer:
            block = ReferenceReaderTransformerBlock(channels, block_heads, cross_attention_dim)
            return SpatialTransformer(block, channels, norm_num_groups, use_linear_projection)

        def motion_modules_at(resolution: int, is_up_block: bool) -> MotionModuleFactory | None:
            if not use_motion_module:
                return None
            if resolution == 0:
                wanted = motion_module_mid_block
            else:
                wanted = resolution in motion_module_resolutions and (
                    is_up_block or not motion_module_decoder_only
                )
            if not wanted:
                return None
            return lambda channels: VanillaTemporalModule(
                channels,
                num_attention_heads=motion_module_num_attention_heads,
                num_transformer_blocks=motion_module_num_transformer_blocks,
                num_attention_blocks=motion_module_num_attention_blocks,
                max_positions=motion_module_max_positions,
                position_encoding=motion_module_position_encoding,
                norm_num_groups=norm_num_groups,
            )

        build_unet_layout(
            self,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            heads=heads,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            transformer_factory=transformer,
            motion_module_factory=motion_modules_at,
            conv_norm_out=True,
        )
        self.num_banks = len(transformer_blocks_in_order(self))

    @classmethod
    def from_unet_config(cls, config: Mapping[str, Any], **unet_additional_kwargs: Any) -> VExpressUNet3D:
        """Builds the denoiser from a diffusers 2D UNet config plus ``unet_additional_kwargs`` in the
        format of V-Express's ``inference_v2.yaml`` (its values are the defaults; given keys override).

        Raises:
            ValueError: for settings this implementation does not build (e.g. temporal attention in the
                spatial blocks, cross-frame attention, a motion module type other than "Vanilla").
        """
        kwargs = unet_kwargs_from_config(config)
        extra = vexpress_unet_additional_kwargs()
        extra.update(unet_additional_kwargs)
        motion_kwargs = dict(vexpress_unet_additional_kwargs()["motion_module_kwargs"])
        motion_kwargs.update(extra.pop("motion_module_kwargs", None) or {})
        if extra.pop("use_inflated_groupnorm") is not True:
            raise ValueError(
                "use_inflated_groupnorm must be true (the published denoiser normalises per frame)"
            )
        for key in ("unet_use_cross_frame_attention", "unet_use_temporal_attention"):
            if extra.pop(key):
                raise ValueError(f"{key}=true is not supported (V-Express inference uses false)")
        if extra.pop("motion_module_type") != "Vanilla":
            raise ValueError("motion_module_type must be 'Vanilla'")
        block_types = motion_kwargs.pop("attention_block_types")
        if any(name != "Temporal_Self" for name in block_types):
            raise ValueError(f"attention_block_types={block_types!r}: only 'Temporal_Self' is supported")
        if motion_kwargs.pop("temporal_attention_dim_div", 1) != 1:
            raise ValueError("temporal_attention_dim_div must be 1")
        motion_kwargs.pop("zero_initialize", None)  # initialisation only; the weights are loaded
        kwargs.update(
            use_motion_module=bool(extra.pop("use_motion_module")),
            motion_module_resolutions=tuple(extra.pop("motion_module_resolutions")),
            motion_module_mid_block=bool(extra.pop("motion_module_mid_block")),
            motion_module_decoder_only=bool(extra.pop("motion_module_decoder_only")),
            motion_module_num_attention_heads=int(motion_kwargs.pop("num_attention_heads")),
            motion_module_num_transformer_blocks=int(motion_kwargs.pop("num_transformer_block")),
            motion_module_num_attention_blocks=len(block_types),
            motion_module_max_positions=int(motion_kwargs.pop("temporal_position_encoding_max_len")),
            motion_module_position_encoding=bool(motion_kwargs.pop("temporal_position_encoding")),
        )
        if extra or motion_kwargs:
            raise ValueError(f"unknown unet_additional_kwargs: {sorted(extra) + sorted(motion_kwargs)}")
        return cls(**kwargs)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[torch.Tensor],
        kps_features: torch.Tensor | None = None,
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
    ) -> torch.Tensor:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, F, h, w)`): Noisy latents of one window.
            timestep (`torch.Tensor` or `int`): Scalar or `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B*F, S, cross_attention_dim)`): Audio tokens of
                every frame, batch-major (row `b*F+f`); V-Express: `S = 5`.
            reference_hidden_states (`list[torch.Tensor]`): The reference bank from [`ReferenceNet`], entry `i`
                of shape `(B, L_i, C_i)` for this model's `i`-th transformer block (registration order);
                with CFG the caller stacks `[zeros; bank]`.
            kps_features (`torch.Tensor` of shape `(B, block_out_channels[0], F, h, w)`, *optional*): V-Kps
                guider features, added to the output of ``conv_in``.
            reference_attention_weight (`float`): Scale of every reference attention's output.
            audio_attention_weight (`float`): Scale of every audio cross-attention's output.

        Returns:
            `torch.Tensor` of shape `(B, out_channels, F, h, w)`: the v-prediction.
        """
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, C, F, h, w), got shape {tuple(sample.shape)}")
        batch, channels, num_frames, height, width = sample.shape
        if self.max_frames is not None and num_frames > self.max_frames:
            raise ValueError(
                f"num_frames={num_frames} exceeds the motion modules' {self.max_frames} positions"
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch * num_frames:
            raise ValueError(
                f"encoder_hidden_states must be (B*F={batch * num_frames}, S, C), got {tuple(encoder_hidden_states.shape)}"
            )
        if len(reference_hidden_states) != self.num_banks:
            raise ValueError(
                f"reference_hidden_states has {len(reference_hidden_states)} entries, expected {self.num_banks}"
            )
        for i, entry in enumerate(reference_hidden_states):
            if entry.ndim != 3 or entry.shape[0] != batch:
                raise ValueError(
                    f"reference_hidden_states[{i}] must be (B={batch}, L, C), got {tuple(entry.shape)}"
                )

        if self.config["center_input_sample"]:
            sample = 2 * sample - 1.0
        block_kwargs: dict[str, Any] = {
            "encoder_hidden_states": encoder_hidden_states,
            "reference_hidden_states": reference_hidden_states,
            "reference_attention_weight": reference_attention_weight,
            "audio_attention_weight": audio_attention_weight,
        }
        frames = sample.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        temb = timestep_embedding(self, timestep, batch, frames).repeat_interleave(num_frames, dim=0)

        hidden_states = self.conv_in(frames)
        if kps_features is not None:
            expected = (batch, hidden_states.shape[1], num_frames, height, width)
            if tuple(kps_features.shape) != expected:
                raise ValueError(f"kps_features must have shape {expected}, got {tuple(kps_features.shape)}")
            hidden_states = hidden_states + kps_features.transpose(1, 2).reshape(hidden_states.shape)

        skip_states: tuple[torch.Tensor, ...] = (hidden_states,)
        for down_block in self.down_blocks:
            hidden_states, block_skips = down_block(hidden_states, temb, num_frames, block_kwargs)
            skip_states += block_skips

        hidden_states = self.mid_block(hidden_states, temb, num_frames, block_kwargs)

        sizes = upsample_sizes(self, skip_states, frames)
        for i, up_block in enumerate(self.up_blocks):
            block_skips = skip_states[-len(up_block.resnets) :]
            skip_states = skip_states[: -len(up_block.resnets)]
            hidden_states = up_block(
                hidden_states, block_skips, temb, num_frames, block_kwargs, upsample_size=sizes[i]
            )

        hidden_states = F.silu(self.conv_norm_out(hidden_states))
        hidden_states = self.conv_out(hidden_states)
        return hidden_states.reshape(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()
