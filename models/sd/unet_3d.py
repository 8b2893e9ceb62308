"""The 3D denoising UNet of the skeleton: SD1.5 layout, per-frame convs/norms, a pluggable transformer block
in every spatial transformer, AnimateDiff motion modules at the chosen resolutions and in the mid block,
and guider features added after ``conv_in``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from models.sd.attention import Context, ProjectedContext
from models.sd.configs import unet_3d_kwargs_from_additional, unet_kwargs_from_config, validate_unet_config
from models.sd.motion_module import VanillaTemporalModule
from models.sd.transformer_blocks import CrossAttentionTransformerBlock
from models.sd.unet_blocks import (
    MotionModuleFactory,
    build_unet_layout,
    timestep_embedding,
    transformer_blocks_in_order,
    upsample_sizes,
)


class UNet3DConditionModel(ModelMixin, ConfigMixin):  # type: ignore[misc]
    r"""
    The denoiser: predicts the scheduler's target (v for V-Express) for a window of frames. Key layout: the
    2D UNet's names with the transformer blocks of `transformer_block_class` (an engine's subclass picks
    its own; see ``models.sd.transformer_blocks``) and ``motion_modules`` in every block (2 per down block,
    3 per up block, 1 in the mid block between its transformer and its second resnet).

    Conditions are pluggable (see `forward`): cross-attention tokens per frame or per sample, a reference
    bank for blocks that read one, guider features added after ``conv_in``, and keyword arguments for the
    transformer blocks.

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

    transformer_block_class: ClassVar[type[nn.Module]] = CrossAttentionTransformerBlock

    @classmethod
    def default_unet_additional_kwargs(cls) -> dict[str, Any]:
        """The ``unet_additional_kwargs`` `from_unet_config` starts from: none here (the constructor's
        defaults); an engine's subclass returns its published ones."""
        return {}

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
        heads = validate_unet_config(self.config)
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
            self.config,
            heads,
            transformer_block=self.transformer_block_class,
            motion_module_factory=motion_modules_at,
            conv_norm_out=True,
        )
        blocks = transformer_blocks_in_order(self)
        self.num_banks = (
            len(blocks) if any(getattr(block, "reads_reference_bank", False) for block in blocks) else 0
        )

    @classmethod
    def from_unet_config(cls, config: Mapping[str, Any], **unet_additional_kwargs: Any) -> Self:
        """Builds the denoiser from a diffusers 2D UNet config plus ``unet_additional_kwargs`` in the
        AnimateDiff format of an ``inference_v2.yaml``, over `default_unet_additional_kwargs`
        (``motion_module_kwargs`` merged key by key).

        Raises:
            ValueError: for settings this implementation does not build (e.g. temporal attention in the
                spatial blocks, cross-frame attention, a motion module type other than "Vanilla").
        """
        kwargs = unet_kwargs_from_config(config)
        kwargs.update(
            unet_3d_kwargs_from_additional(unet_additional_kwargs, cls.default_unet_additional_kwargs())
        )
        return cls(**kwargs)

    def check_inputs(
        self,
        sample: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[Context] | None,
        null_context_samples: int = 0,
    ) -> None:
        """Raises `ValueError` unless the inputs fit together (see `forward` for the shapes)."""
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, C, F, h, w), got shape {tuple(sample.shape)}")
        if not 0 <= null_context_samples < sample.shape[0]:
            raise ValueError(
                f"null_context_samples must be in [0, B={sample.shape[0]}), got {null_context_samples}"
            )
        if null_context_samples and not getattr(self.transformer_block_class, "takes_null_context", False):
            raise ValueError(f"{self.transformer_block_class.__name__} does not take null_context_samples")
        # the contexts hold only the samples after the null-context ones
        batch, num_frames = sample.shape[0] - null_context_samples, sample.shape[2]
        if self.max_frames is not None and num_frames > self.max_frames:
            raise ValueError(
                f"num_frames={num_frames} exceeds the motion modules' {self.max_frames} positions"
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] not in (
            batch * num_frames,
            batch,
        ):
            raise ValueError(
                f"encoder_hidden_states must be (B*F={batch * num_frames}, S, C) per frame or (B={batch}, S, C) "
                f"per sample, got {tuple(encoder_hidden_states.shape)}"
            )
        if self.num_banks == 0:
            if reference_hidden_states is not None:
                raise ValueError(
                    "reference_hidden_states given, but no transformer block reads a reference bank"
                )
            return
        if reference_hidden_states is None:
            raise ValueError(
                f"reference_hidden_states is required: the transformer blocks read {self.num_banks}"
            )
        if len(reference_hidden_states) != self.num_banks:
            raise ValueError(
                f"reference_hidden_states has {len(reference_hidden_states)} entries, expected {self.num_banks}"
            )
        for i, entry in enumerate(reference_hidden_states):
            shape = tuple(entry.key.shape if isinstance(entry, ProjectedContext) else entry.shape)
            if len(shape) != (4 if isinstance(entry, ProjectedContext) else 3) or shape[0] != batch:
                raise ValueError(f"reference_hidden_states[{i}] must be (B={batch}, L, C), got {shape}")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[Context] | None = None,
        guider_features: torch.Tensor | None = None,
        block_kwargs: Mapping[str, Any] | None = None,
        null_context_samples: int = 0,
    ) -> torch.Tensor:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, F, h, w)`): Noisy latents of one window.
            timestep (`torch.Tensor` or `int`): Scalar or `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B*F, S, cross_attention_dim)` or
                `(B, S, cross_attention_dim)`): The cross-attention tokens: per frame, batch-major (row
                `b*F+f`; V-Express's audio tokens, `S = 5`), or per sample, shared by its frames (e.g. CLIP
                image tokens).
            reference_hidden_states (`list[torch.Tensor]`, *optional*): The reference bank from
                [`ReferenceNet`], entry `i` of shape `(B, L_i, C_i)` for this model's `i`-th transformer
                block (registration order); with CFG the caller stacks `[zeros; bank]`. Required when the
                transformer blocks read a bank (`num_banks > 0`), refused otherwise.
            guider_features (`torch.Tensor` of shape `(B, block_out_channels[0], F, h, w)`, *optional*):
                A condition encoder's features (V-Express: the V-Kps guider's), added to the output of
                ``conv_in``.
            block_kwargs (`dict`, *optional*): More keyword arguments of every transformer block (e.g.
                `reference_attention_weight` and `audio_attention_weight` of
                [`~models.sd.transformer_blocks.ReferenceReaderTransformerBlock`]).
            null_context_samples (`int`): The first `U` samples have an all-zero context (tokens and bank)
                and no guider features (classifier-free guidance's unconditional half): those are left out,
                `encoder_hidden_states`, `reference_hidden_states` and `guider_features` holding the other
                `B - U` samples only, and the blocks substitute the attentions' constant outputs. Needs a
                transformer block that `takes_null_context`.

        Returns:
            `torch.Tensor` of shape `(B, out_channels, F, h, w)`: the prediction.
        """
        self.check_inputs(sample, encoder_hidden_states, reference_hidden_states, null_context_samples)
        batch, channels, num_frames, height, width = sample.shape
        if self.config["center_input_sample"]:
            sample = 2 * sample - 1.0
        transformer_kwargs: dict[str, Any] = {"encoder_hidden_states": encoder_hidden_states}
        if reference_hidden_states is not None:
            transformer_kwargs["reference_hidden_states"] = reference_hidden_states
        transformer_kwargs.update(block_kwargs or {})
        if null_context_samples:
            transformer_kwargs["null_context_samples"] = null_context_samples
        frames = sample.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        temb = timestep_embedding(self, timestep, batch, frames).repeat_interleave(num_frames, dim=0)

        hidden_states = self.conv_in(frames)
        if guider_features is not None:
            guided = batch - null_context_samples
            expected = (guided, hidden_states.shape[1], num_frames, height, width)
            if tuple(guider_features.shape) != expected:
                raise ValueError(
                    f"guider_features must have shape {expected}, got {tuple(guider_features.shape)}"
                )
            features = guider_features.transpose(1, 2).reshape(guided * num_frames, *hidden_states.shape[1:])
            if null_context_samples:
                null_rows = null_context_samples * num_frames
                hidden_states = torch.cat([hidden_states[:null_rows], hidden_states[null_rows:] + features])
            else:
                hidden_states = hidden_states + features

        skip_states: tuple[torch.Tensor, ...] = (hidden_states,)
        for down_block in self.down_blocks:
            hidden_states, block_skips = down_block(hidden_states, temb, num_frames, transformer_kwargs)
            skip_states += block_skips

        hidden_states = self.mid_block(hidden_states, temb, num_frames, transformer_kwargs)

        sizes = upsample_sizes(self, skip_states, frames)
        for i, up_block in enumerate(self.up_blocks):
            block_skips = skip_states[-len(up_block.resnets) :]
            skip_states = skip_states[: -len(up_block.resnets)]
            hidden_states = up_block(
                hidden_states, block_skips, temb, num_frames, transformer_kwargs, upsample_size=sizes[i]
            )

        hidden_states = F.silu(self.conv_norm_out(hidden_states))
        hidden_states = self.conv_out(hidden_states)
        return hidden_states.reshape(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()
