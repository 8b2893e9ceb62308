"""Building blocks shared by the ReferenceNet (2D) and the denoising UNet (3D).

Both UNets run on frame-flattened feature maps ``(B*F, C, H, W)`` (batch-major: sample ``b``, frame
``f`` is row ``b*F+f``); the ReferenceNet is the ``F = 1`` case. Convolutions and GroupNorms on that
layout are exactly the reference's per-frame ("inflated") ones. Only the motion modules look across
frames; they get ``num_frames`` to undo the flattening.

Key layout (SD1.5 / diffusers): blocks hold ``attentions``, ``resnets``, ``motion_modules`` (3D only),
``downsamplers``/``upsamplers`` in that registration order, which is the order of the published files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from models.sd.motion_module import VanillaTemporalModule
from models.sd.transformer_blocks import SpatialTransformer, TransformerBlock

MotionModuleFactory = Callable[[int], VanillaTemporalModule]
TransformerBlockClass = Callable[[int, int, int], nn.Module]
"""``block(dim, heads, cross_attention_dim)``: a transformer block class (see ``transformer_blocks``)."""


def _resnet(
    in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float, scale: float = 1.0
) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=temb_channels,
        groups=groups,
        eps=eps,
        non_linearity="silu",
        output_scale_factor=scale,
    )


def _per_layer(
    factory: Callable[[int], nn.Module] | None, channels: int, num_layers: int
) -> nn.ModuleList | None:
    """One module per layer from `factory(channels)`, built in layer order; None without a factory."""
    if factory is None:
        return None
    return nn.ModuleList([factory(channels) for _ in range(num_layers)])


class UNetDownBlock(nn.Module):
    r"""
    SD1.5 down block: `num_layers` x (resnet [-> spatial transformer] [-> motion module]), then an optional
    stride-2 conv. Returns the output and the skip states (each layer's output, then the downsampled one).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        groups: int,
        eps: float,
        add_downsample: bool,
        downsample_padding: int,
        transformer_factory: Callable[[int], SpatialTransformer] | None,
        motion_module_factory: MotionModuleFactory | None,
    ) -> None:
        super().__init__()
        self.attentions = _per_layer(transformer_factory, out_channels, num_layers)
        self.resnets = nn.ModuleList(
            [
                _resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps)
                for i in range(num_layers)
            ]
        )
        self.motion_modules = _per_layer(motion_module_factory, out_channels, num_layers)
        if add_downsample:
            self.downsamplers: nn.ModuleList | None = nn.ModuleList(
                [
                    Downsample2D(
                        out_channels,
                        use_conv=True,
                        out_channels=out_channels,
                        padding=downsample_padding,
                        name="op",
                    )
                ]
            )
        else:
            self.downsamplers = None

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, num_frames: int, block_kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, C_in, H, W)`).
            temb (`torch.Tensor` of shape `(B*F, temb_channels)`): Time embedding, repeated per frame.
            num_frames (`int`): `F`.
            block_kwargs (`dict`): Keyword arguments of the transformer blocks.

        Returns:
            `(hidden_states, skip_states)`: `(B*F, C_out, H', W')` and the tuple of skip feature maps.
        """
        skip_states: tuple[torch.Tensor, ...] = ()
        for i, resnet in enumerate(self.resnets):
            hidden_states = resnet(hidden_states, temb)
            if self.attentions is not None:
                hidden_states = self.attentions[i](hidden_states, **block_kwargs)
            if self.motion_modules is not None:
                hidden_states = self.motion_modules[i](hidden_states, num_frames)
            skip_states += (hidden_states,)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            skip_states += (hidden_states,)
        return hidden_states, skip_states


class UNetMidBlock(nn.Module):
    r"""SD1.5 mid block: resnet, then per layer: spatial transformer [-> motion module] -> resnet."""

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        groups: int,
        eps: float,
        output_scale_factor: float,
        transformer_factory: Callable[[int], SpatialTransformer],
        motion_module_factory: MotionModuleFactory | None,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([transformer_factory(channels) for _ in range(num_layers)])
        self.resnets = nn.ModuleList(
            [
                _resnet(channels, channels, temb_channels, groups, eps, output_scale_factor)
                for _ in range(num_layers + 1)
            ]
        )
        self.motion_modules = _per_layer(motion_module_factory, channels, num_layers)

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, num_frames: int, block_kwargs: dict[str, Any]
    ) -> torch.Tensor:
        r"""`hidden_states` `(B*F, C, H, W)` -> `(B*F, C, H, W)`."""
        hidden_states = self.resnets[0](hidden_states, temb)
        for i, (attention, resnet) in enumerate(zip(self.attentions, self.resnets[1:], strict=True)):
            hidden_states = attention(hidden_states, **block_kwargs)
            if self.motion_modules is not None:
                hidden_states = self.motion_modules[i](hidden_states, num_frames)
            hidden_states = resnet(hidden_states, temb)
        return hidden_states


class UNetUpBlock(nn.Module):
    r"""
    SD1.5 up block: `num_layers` x (concat skip -> resnet [-> spatial transformer] [-> motion module]), then an
    optional nearest-2x upsampling conv.
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        groups: int,
        eps: float,
        add_upsample: bool,
        transformer_factory: Callable[[int], SpatialTransformer] | None,
        motion_module_factory: MotionModuleFactory | None,
    ) -> None:
        super().__init__()
        self.attentions = _per_layer(transformer_factory, out_channels, num_layers)
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in_channels = prev_output_channels if i == 0 else out_channels
            resnets.append(
                _resnet(resnet_in_channels + skip_channels, out_channels, temb_channels, groups, eps)
            )
        self.resnets = nn.ModuleList(resnets)
        self.motion_modules = _per_layer(motion_module_factory, out_channels, num_layers)
        if add_upsample:
            self.upsamplers: nn.ModuleList | None = nn.ModuleList(
                [Upsample2D(out_channels, use_conv=True, out_channels=out_channels)]
            )
        else:
            self.upsamplers = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        skip_states: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        num_frames: int,
        block_kwargs: dict[str, Any],
        upsample_size: tuple[int, int] | None = None,
        stop_after_bank: bool = False,
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, C, H, W)`).
            skip_states (`tuple[torch.Tensor]`): Skip maps, consumed from the end.
            temb (`torch.Tensor` of shape `(B*F, temb_channels)`).
            num_frames (`int`): `F`.
            block_kwargs (`dict`): Keyword arguments of the transformer blocks.
            upsample_size (`tuple[int, int]`, *optional*): Forced output size of the upsampler.
            stop_after_bank (`bool`): ReferenceNet only: return as soon as the last transformer block has
                written its bank entry (everything after it is dead code for the banks).

        Returns:
            `torch.Tensor` of shape `(B*F, C_out, H', W')`.
        """
        for i, resnet in enumerate(self.resnets):
            hidden_states = torch.cat([hidden_states, skip_states[-1]], dim=1)
            skip_states = skip_states[:-1]
            hidden_states = resnet(hidden_states, temb)
            if self.attentions is not None:
                attention: Any = self.attentions[i]
                if stop_after_bank and i == len(self.resnets) - 1:
                    tokens = attention.tokens_in(hidden_states)
                    for block in attention.transformer_blocks:
                        tokens = block(tokens, bank_only=True, **block_kwargs)
                    return hidden_states
                hidden_states = attention(hidden_states, **block_kwargs)
            if self.motion_modules is not None:
                hidden_states = self.motion_modules[i](hidden_states, num_frames)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


def build_unet_layout(
    model: Any,
    config: Mapping[str, Any],
    heads: tuple[int, ...],
    *,
    transformer_block: TransformerBlockClass,
    motion_module_factory: Callable[[int, bool], MotionModuleFactory | None],
    conv_norm_out: bool,
) -> None:
    """Registers the SD1.5 UNet layout of `config` (the model's registered config, checked by
    `validate_unet_config`, which gives `heads`) on `model`, in the published state-dict order:
    ``conv_in, time_embedding, down_blocks, up_blocks, mid_block, [conv_norm_out], conv_out``.

    `transformer_block(channels, heads, cross_attention_dim)` builds the block of each spatial
    transformer; `motion_module_factory(resolution, is_up_block)` returns a factory for the motion
    modules of the block at that resolution (1, 2, 4, ... from the top; the mid block asks for
    resolution 0), or None for none.
    """
    _register_layout(
        model,
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        down_block_types=tuple(config["down_block_types"]),
        up_block_types=tuple(config["up_block_types"]),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config["layers_per_block"],
        heads=heads,
        norm_num_groups=config["norm_num_groups"],
        norm_eps=config["norm_eps"],
        flip_sin_to_cos=config["flip_sin_to_cos"],
        freq_shift=config["freq_shift"],
        downsample_padding=config["downsample_padding"],
        mid_block_scale_factor=config["mid_block_scale_factor"],
        transformer_factory=lambda channels, block_heads: SpatialTransformer(
            transformer_block(channels, block_heads, config["cross_attention_dim"]),
            channels,
            config["norm_num_groups"],
            config["use_linear_projection"],
        ),
        motion_module_factory=motion_module_factory,
        conv_norm_out=conv_norm_out,
    )


def _register_layout(
    model: Any,
    *,
    in_channels: int,
    out_channels: int,
    down_block_types: tuple[str, ...],
    up_block_types: tuple[str, ...],
    block_out_channels: tuple[int, ...],
    layers_per_block: int,
    heads: tuple[int, ...],
    norm_num_groups: int,
    norm_eps: float,
    flip_sin_to_cos: bool,
    freq_shift: int,
    downsample_padding: int,
    mid_block_scale_factor: float,
    transformer_factory: Callable[[int, int], SpatialTransformer],
    motion_module_factory: Callable[[int, bool], MotionModuleFactory | None],
    conv_norm_out: bool,
) -> None:
    from diffusers.models.embeddings import TimestepEmbedding, Timesteps

    time_embed_dim = block_out_channels[0] * 4
    model.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
    model.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
    model.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim, act_fn="silu")
    model.down_blocks = nn.ModuleList([])
    model.up_blocks = nn.ModuleList([])

    def attention_factory(block_type: str, block_heads: int) -> Callable[[int], SpatialTransformer] | None:
        if not block_type.startswith("CrossAttn"):
            return None
        return lambda channels: transformer_factory(channels, block_heads)

    output_channels = block_out_channels[0]
    for i, block_type in enumerate(down_block_types):
        input_channels = output_channels
        output_channels = block_out_channels[i]
        model.down_blocks.append(
            UNetDownBlock(
                in_channels=input_channels,
                out_channels=output_channels,
                temb_channels=time_embed_dim,
                num_layers=layers_per_block,
                groups=norm_num_groups,
                eps=norm_eps,
                add_downsample=i < len(block_out_channels) - 1,
                downsample_padding=downsample_padding,
                transformer_factory=attention_factory(block_type, heads[i]),
                motion_module_factory=motion_module_factory(2**i, False),
            )
        )

    model.mid_block = UNetMidBlock(
        channels=block_out_channels[-1],
        temb_channels=time_embed_dim,
        groups=norm_num_groups,
        eps=norm_eps,
        output_scale_factor=mid_block_scale_factor,
        transformer_factory=lambda channels: transformer_factory(channels, heads[-1]),
        motion_module_factory=motion_module_factory(0, False),
    )

    reversed_channels = tuple(reversed(block_out_channels))
    reversed_heads = tuple(reversed(heads))
    output_channels = reversed_channels[0]
    num_blocks = len(up_block_types)
    for i, block_type in enumerate(up_block_types):
        prev_output_channels = output_channels
        output_channels = reversed_channels[i]
        input_channels = reversed_channels[min(i + 1, num_blocks - 1)]
        model.up_blocks.append(
            UNetUpBlock(
                in_channels=input_channels,
                prev_output_channels=prev_output_channels,
                out_channels=output_channels,
                temb_channels=time_embed_dim,
                num_layers=layers_per_block + 1,
                groups=norm_num_groups,
                eps=norm_eps,
                add_upsample=i < num_blocks - 1,
                transformer_factory=attention_factory(block_type, reversed_heads[i]),
                motion_module_factory=motion_module_factory(2 ** (num_blocks - 1 - i), True),
            )
        )

    if conv_norm_out:
        model.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
    model.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)


def transformer_blocks_in_order(model: nn.Module) -> list[TransformerBlock]:
    """The blocks of the model's spatial transformers in registration order (down, up, mid), with
    `bank_index` set to their position: entry ``i`` of a reference bank pairs with block ``i``."""
    blocks = [
        cast(TransformerBlock, block)
        for module in model.modules()
        if isinstance(module, SpatialTransformer)
        for block in module.transformer_blocks
    ]
    for index, block in enumerate(blocks):
        block.bank_index = index
    return blocks


def timestep_embedding(
    model: Any, timestep: torch.Tensor | int | float, batch: int, like: torch.Tensor
) -> torch.Tensor:
    r"""
    SD time embedding: sinusoid (fp32, cos first with `flip_sin_to_cos`), cast to the model dtype, MLP.

    Args:
        timestep (`torch.Tensor` of shape `()` or `(batch,)`, or a number).
        batch (`int`): Samples.
        like (`torch.Tensor`): Gives device and dtype.

    Returns:
        `torch.Tensor` of shape `(batch, 4 * block_out_channels[0])`.
    """
    timesteps = timestep if torch.is_tensor(timestep) else torch.tensor([timestep])
    assert isinstance(timesteps, torch.Tensor)
    timesteps = timesteps.to(like.device).reshape(-1)
    if timesteps.numel() == 1:
        timesteps = timesteps.expand(batch)
    elif timesteps.numel() != batch:
        raise ValueError(f"timestep has {timesteps.numel()} entries for a batch of {batch}")
    t_emb = model.time_proj(timesteps).to(dtype=like.dtype)
    return model.time_embedding(t_emb)


def upsample_sizes(
    model: Any, skip_states: tuple[torch.Tensor, ...], sample: torch.Tensor
) -> list[tuple[int, int] | None]:
    """Per up block, the size its upsampler must produce when the latents are not a multiple of
    ``2**num_upsamplers`` (else None: plain 2x), as diffusers' UNet forwards it."""
    num_upsamplers = len(model.up_blocks) - 1
    forced = any(s % (2**num_upsamplers) != 0 for s in sample.shape[-2:])
    sizes: list[tuple[int, int] | None] = []
    remaining = skip_states
    for i, block in enumerate(model.up_blocks):
        remaining = remaining[: -len(block.resnets)]
        if forced and i < len(model.up_blocks) - 1:
            height, width = remaining[-1].shape[-2:]
            sizes.append((int(height), int(width)))
        else:
            sizes.append(None)
    return sizes
