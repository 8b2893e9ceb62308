"""AnimateDiff "Vanilla" temporal module, as the denoiser places it.

State-dict layout per module: ``temporal_transformer.{norm, proj_in, transformer_blocks.{i}.{
attention_blocks.{j}.{to_q,to_k,to_v,to_out.0,pos_encoder.pe}, norms.{j}, ff.net.{0.proj,2}, ff_norm},
proj_out}``. The ``pe`` tables are persistent buffers: the published files carry them (fp16) and
loading overwrites the computed table, as the reference does.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from models.sd.attention import Attention
from models.sd.transformer_blocks import same_layout


def sinusoidal_position_table(max_positions: int, channels: int) -> torch.Tensor:
    """`(1, max_positions, channels)` table: even channels ``sin(p * 10000^(-2i/C))``, odd ones ``cos``."""
    position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, max_positions, channels)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class TemporalPositionalEncoding(nn.Module):
    r"""Adds row ``p`` of the ``pe`` table to the token at frame position ``p`` (``p = 0..F-1``)."""

    def __init__(self, channels: int, max_positions: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_table(max_positions, channels), persistent=True)
        self.pe: torch.Tensor

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        r"""`hidden_states` `(N, F, C)` -> `(N, F, C)`."""
        return hidden_states + self.pe[:, : hidden_states.shape[1]].to(hidden_states.dtype)


class TemporalSelfAttention(Attention):
    r"""
    Self-attention along the frame axis at every spatial position, with the positional table added to
    the (already normed) queries/keys/values input.

    Parameters:
        dim (`int`): Channels.
        heads (`int`): Number of heads (`dim` must be divisible by it).
        max_positions (`int`): Rows of the ``pe`` table, i.e. the longest window it can encode.
        position_encoding (`bool`): Whether the module has a ``pos_encoder`` (V-Express: true).
    """

    def __init__(self, dim: int, heads: int, max_positions: int, position_encoding: bool = True) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads)
        self.pos_encoder = TemporalPositionalEncoding(dim, max_positions) if position_encoding else None
        self.max_positions = max_positions

    def forward(  # type: ignore[override]
        self, hidden_states: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, L, C)`): Frame-major tokens, `L` spatial positions.
            num_frames (`int`): `F`.

        Returns:
            `torch.Tensor` of shape `(B*F, L, C)`.
        """
        batch_frames, length, channels = hidden_states.shape
        batch = batch_frames // num_frames
        tokens = hidden_states.reshape(batch, num_frames, length, channels).transpose(1, 2)
        tokens = tokens.reshape(batch * length, num_frames, channels)
        if self.pos_encoder is not None:
            tokens = self.pos_encoder(tokens)
        out = self.processor(self, tokens, None)
        out = out.reshape(batch, length, num_frames, channels).transpose(1, 2)
        return out.reshape(batch_frames, length, channels)


class TemporalTransformerBlock(nn.Module):
    r"""Pre-norm temporal self-attentions (``attention_blocks`` / ``norms``), then a GEGLU feed-forward."""

    def __init__(
        self, dim: int, heads: int, num_attention_blocks: int, max_positions: int, position_encoding: bool
    ) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [
                TemporalSelfAttention(dim, heads, max_positions, position_encoding)
                for _ in range(num_attention_blocks)
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        r"""`hidden_states` `(B*F, L, C)` -> `(B*F, L, C)`; the residual stream never carries the PE."""
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            hidden_states = attention(norm(hidden_states), num_frames) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer(nn.Module):
    r"""Per-frame GroupNorm, Linear in, temporal transformer blocks, Linear out, residual."""

    def __init__(
        self,
        channels: int,
        heads: int,
        num_layers: int,
        num_attention_blocks: int,
        max_positions: int,
        position_encoding: bool,
        norm_num_groups: int,
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(
                    channels, heads, num_attention_blocks, max_positions, position_encoding
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        batch_frames, channels, height, width = hidden_states.shape
        residual = hidden_states
        tokens = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, num_frames)
        tokens = self.proj_out(tokens)
        out = same_layout(tokens.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2), residual)
        return out + residual


class VanillaTemporalModule(nn.Module):
    r"""
    AnimateDiff's "Vanilla" motion module (V-Express: 8 heads, 1 block, two temporal self-attentions,
    PE table of 32 positions).

    Parameters:
        channels (`int`): Channels of the feature map it runs on.
        num_attention_heads (`int`): Heads; `channels` must be divisible by it.
        num_transformer_blocks (`int`): Temporal transformer blocks.
        num_attention_blocks (`int`): Temporal self-attentions per block ("Temporal_Self" entries).
        max_positions (`int`): PE table length, the most frames one window may have.
        position_encoding (`bool`): Whether the attentions add the PE table.
        norm_num_groups (`int`): GroupNorm groups.
    """

    def __init__(
        self,
        channels: int,
        num_attention_heads: int = 8,
        num_transformer_blocks: int = 1,
        num_attention_blocks: int = 2,
        max_positions: int = 32,
        position_encoding: bool = True,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        if num_attention_heads < 1 or channels % num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads must be >= 1 and divide channels={channels}, got {num_attention_heads}"
            )
        if channels % norm_num_groups != 0:
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide channels={channels}")
        if max_positions < 1:
            raise ValueError(f"max_positions must be >= 1, got {max_positions}")
        self.max_positions = max_positions
        self.temporal_transformer = TemporalTransformer(
            channels,
            num_attention_heads,
            num_transformer_blocks,
            num_attention_blocks,
            max_positions,
            position_encoding,
            norm_num_groups,
        )

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, C, H, W)`): Frames of `B` samples, batch-major.
            num_frames (`int`): `F`, at most `max_positions`; the PE uses positions `0..F-1`.

        Returns:
            `torch.Tensor` of shape `(B*F, C, H, W)`.
        """
        if num_frames > self.max_positions:
            raise ValueError(
                f"num_frames={num_frames} exceeds the motion module's {self.max_positions} positions"
            )
        return self.temporal_transformer(hidden_states, num_frames)
