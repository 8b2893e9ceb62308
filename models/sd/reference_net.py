"""The ReferenceNet: an SD1.5 2D UNet that computes the reference bank once per job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from models.sd.configs import unet_kwargs_from_config, validate_unet_config
from models.sd.transformer_blocks import ReferenceWriterTransformerBlock
from models.sd.unet_blocks import (
    build_unet_layout,
    timestep_embedding,
    transformer_blocks_in_order,
    upsample_sizes,
)


class ReferenceNet(ModelMixin, ConfigMixin):  # type: ignore[misc]
    r"""
    SD1.5 UNet2DConditionModel layout without ``conv_norm_out`` (684 published keys). Its forward returns
    the reference bank: what every transformer block (`transformer_block_class`) writes, by default the
    LayerNorm'd hidden state ``norm2(x)`` that is the query of the block's cross-attention.

    Bank order: the transformer blocks in registration order, i.e. ``down_blocks`` (block by block,
    attention by attention), then ``up_blocks``, then ``mid_block``; for SD1.5 that is 6 down, 9 up and
    1 mid = 16 entries. [`UNet3DConditionModel`] registers its blocks in the same order, so ``bank[i]``
    is read by its ``i``-th transformer block, the same-named block (V-Express's pairing).

    Parameters are those of a diffusers UNet config (see [`~models.sd.configs.sd15_unet_config`]).
    """

    transformer_block_class: ClassVar[type[ReferenceWriterTransformerBlock]] = ReferenceWriterTransformerBlock
    has_conv_out: ClassVar[bool] = True
    """Whether the layout keeps ``conv_out`` (V-Express's does; Hallo's trimmed one has neither it nor
    ``conv_norm_out``). The forward never reads it: it stops after the last bank entry."""

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
    ) -> None:
        super().__init__()
        heads = validate_unet_config(self.config)
        if not up_block_types[-1].startswith("CrossAttn"):
            raise ValueError(f"up_block_types={list(up_block_types)}: the last up block must have attention")
        build_unet_layout(
            self,
            self.config,
            heads,
            transformer_block=self.transformer_block_class,
            motion_module_factory=lambda resolution, is_up: None,
            conv_norm_out=False,
        )
        if not self.has_conv_out:
            del self.conv_out
        self.num_banks = len(transformer_blocks_in_order(self))

    @classmethod
    def from_unet_config(cls, config: Mapping[str, Any]) -> ReferenceNet:
        """Builds the ReferenceNet from a diffusers UNet config (e.g. SD1.5's ``unet/config.json``)."""
        return cls(**unet_kwargs_from_config(config))

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, encoder_hidden_states: torch.Tensor
    ) -> list[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, h, w)`): Reference latents.
            timestep (`torch.Tensor` or `int`): V-Express uses 0.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, cross_attention_dim)`): V-Express uses
                zeros of shape `(B, 1, 768)`.

        Returns:
            `list[torch.Tensor]`: `num_banks` tensors, entry `i` of shape `(B, h_i*w_i, C_i)`, ordered as the
            transformer blocks are registered (down, up, mid). The UNet's own output is never computed:
            the forward stops right after the last bank entry (``up_blocks[-1]``'s last transformer
            block), since nothing after it can change a bank.
        """
        if sample.ndim != 4:
            raise ValueError(f"sample must be (B, C, h, w), got shape {tuple(sample.shape)}")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != sample.shape[0]:
            raise ValueError(
                f"encoder_hidden_states must be (B={sample.shape[0]}, S, C), got {tuple(encoder_hidden_states.shape)}"
            )
        if self.config["center_input_sample"]:
            sample = 2 * sample - 1.0
        batch = sample.shape[0]
        bank: list[torch.Tensor | None] = [None] * self.num_banks
        block_kwargs: dict[str, Any] = {"encoder_hidden_states": encoder_hidden_states, "bank": bank}

        temb = timestep_embedding(self, timestep, batch, sample)
        hidden_states = self.conv_in(sample)

        skip_states: tuple[torch.Tensor, ...] = (hidden_states,)
        for down_block in self.down_blocks:
            hidden_states, block_skips = down_block(hidden_states, temb, 1, block_kwargs)
            skip_states += block_skips

        hidden_states = self.mid_block(hidden_states, temb, 1, block_kwargs)

        sizes = upsample_sizes(self, skip_states, sample)
        last = len(self.up_blocks) - 1
        for i, up_block in enumerate(self.up_blocks):
            block_skips = skip_states[-len(up_block.resnets) :]
            skip_states = skip_states[: -len(up_block.resnets)]
            hidden_states = up_block(
                hidden_states,
                block_skips,
                temb,
                1,
                block_kwargs,
                upsample_size=sizes[i],
                stop_after_bank=i == last,
            )

        missing = [i for i, entry in enumerate(bank) if entry is None]
        if missing:
            raise RuntimeError(f"reference bank entries {missing} were not written")
        return [entry for entry in bank if entry is not None]
