"""The spatial transformer of the SD1.5 blocks and the transformer blocks that plug into it.

A UNet chooses its transformer block by class (`UNet3DConditionModel.transformer_block_class`,
`ReferenceNet.transformer_block_class`); every block is built as ``block(dim, heads,
cross_attention_dim)`` and called with the UNet's block keyword arguments (at least
``encoder_hidden_states``; ``reference_hidden_states`` when `reads_reference_bank`; any extras the
caller passes, e.g. attention weights). What a block does with them is the condition plug:

- [`CrossAttentionTransformerBlock`]: diffusers' BasicTransformerBlock, self-attention within the
  frame then cross-attention to the context tokens (per frame or per sample, e.g. CLIP tokens).
- [`ReferenceWriterTransformerBlock`]: the ReferenceNet's block, which also stores the query of its
  cross-attention in the reference bank.
- [`ReferenceReaderTransformerBlock`]: a separate attention to the paired bank entry (``attn1_5``)
  between the self- and cross-attention (V-Express's layout).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from models.sd.attention import Attention, Context, ProjectedContext


def same_layout(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`tensor` (a token map permuted back to `(N, C, H, W)`) in `like`'s memory layout.

    Without it the permuted map, and the sum with the block's residual, would be channels-last
    strided in an NCHW network, and every GroupNorm and convolution after the block would take the
    slower mixed-layout path (on CPU 4x slower GroupNorms, slower convolutions, extra copies). With
    channels-last weights (``use_channels_last``) `like` is channels-last and stays so.
    """
    if like.is_contiguous():
        return tensor.contiguous()
    if like.is_contiguous(memory_format=torch.channels_last):
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


class CrossAttentionTransformerBlock(nn.Module):
    r"""
    diffusers' BasicTransformerBlock layout (``norm1, attn1, norm2, attn2, norm3, ff``), each sub-layer
    pre-normed and residual: self-attention within the frame, cross-attention to the context tokens,
    GEGLU feed-forward.

    Parameters:
        dim (`int`): Channels.
        heads (`int`): Attention heads (head width `dim // heads`).
        cross_attention_dim (`int`): Channels of the cross-attention context.
    """

    reads_reference_bank: ClassVar[bool] = False

    def __init__(self, dim: int, heads: int, cross_attention_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim, heads=heads, dim_head=dim // heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        # Position of this block in the bank list (registration order), set by the owning model.
        self.bank_index = -1

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(N, L, C)`): Tokens (`N` = frames of all samples).
            encoder_hidden_states (`torch.Tensor` of shape `(N', S, cross_attention_dim)`): Context; `N'`
                divides `N` (one row per frame, or one per sample shared by its frames).

        Returns:
            `torch.Tensor` of shape `(N, L, C)`.
        """
        norm_hidden_states = self.norm1(hidden_states)
        hidden_states = self.attn1(norm_hidden_states) + hidden_states
        return self._cross_attend(hidden_states, self.norm2(hidden_states), encoder_hidden_states)

    def _cross_attend(
        self,
        hidden_states: torch.Tensor,
        norm_hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        """The cross-attention residual on ``norm2(x)`` = `norm_hidden_states`, then the feed-forward."""
        hidden_states = self.attn2(norm_hidden_states, encoder_hidden_states) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states


class ReferenceWriterTransformerBlock(CrossAttentionTransformerBlock):
    r"""
    The ReferenceNet's transformer block (BasicTransformerBlock layout) in "write" mode: the LayerNorm'd
    hidden state that is the query of the cross-attention (``norm2(x)``) is stored in the reference bank
    (V-Express's choice of what the bank holds).
    """

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        bank: list[torch.Tensor | None],
        bank_only: bool = False,
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B, L, C)`): Tokens.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, cross_attention_dim)`): Context.
            bank (`list`): Receives `norm2(x)` `(B, L, C)` at `bank[self.bank_index]`.
            bank_only (`bool`): Stop once the bank entry is written (nothing after it reaches any bank).

        Returns:
            `torch.Tensor` of shape `(B, L, C)` (the input, unchanged past the bank, if `bank_only`).
        """
        norm_hidden_states = self.norm1(hidden_states)
        hidden_states = self.attn1(norm_hidden_states) + hidden_states
        norm_hidden_states = self.norm2(hidden_states)
        bank[self.bank_index] = norm_hidden_states
        if bank_only:
            return hidden_states
        return self._cross_attend(hidden_states, norm_hidden_states, encoder_hidden_states)


class ReferenceReaderTransformerBlock(nn.Module):
    r"""
    A denoiser transformer block that reads the reference bank through its own attention (V-Express "read"
    mode). Sub-layers, each pre-normed, residual: ``attn1`` self-attention within the frame; ``attn1_5``
    attention to the paired reference bank only, output times `reference_attention_weight`; ``attn2``
    cross-attention to the frame's tokens (V-Express: audio), output times `audio_attention_weight`;
    ``ff`` GEGLU feed-forward. Registration order ``attn1, norm1, attn1_5, norm1_5, attn2, norm2, ff,
    norm3`` matches V-Express's published file.

    Parameters:
        dim (`int`): Channels.
        heads (`int`): Attention heads (head width `dim // heads`).
        cross_attention_dim (`int`): Channels of the cross-attention tokens.
    """

    reads_reference_bank: ClassVar[bool] = True
    takes_null_context: ClassVar[bool] = True

    def __init__(self, dim: int, heads: int, cross_attention_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim, heads=heads, dim_head=dim // heads)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1_5 = Attention(dim, heads=heads, dim_head=dim // heads)
        self.norm1_5 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim, heads=heads, dim_head=dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)
        self.bank_index = -1

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: list[Context],
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
        null_context_samples: int = 0,
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, L, C)`): Tokens of every frame.
            encoder_hidden_states (`torch.Tensor` of shape `((B-U)*F, S, cross_attention_dim)`): Each frame's
                tokens (V-Express: audio tokens), for the samples after the first `U = null_context_samples`.
            reference_hidden_states (`list`): The bank list; this block reads entry `self.bank_index`, of
                shape `(B-U, L_ref, C)` (or its [`~models.sd.attention.ProjectedContext`] for ``attn1_5``),
                shared by the `F` frames of each sample.
            reference_attention_weight (`float`): Scale of the reference attention's output (bias included).
            audio_attention_weight (`float`): Scale of the cross-attention's output (bias included).
            null_context_samples (`int`): The first `U` samples attend to an all-zero bank and all-zero
                tokens, which are left out of the inputs (classifier-free guidance's unconditional half).
                Attention to all-zero keys and values gives exactly zero before ``to_out``, so those
                samples' two attentions are exactly ``weight x to_out.0.bias``: substituted, not computed.

        Returns:
            `torch.Tensor` of shape `(B*F, L, C)`.
        """
        norm_hidden_states = self.norm1(hidden_states)
        hidden_states = self.attn1(norm_hidden_states) + hidden_states

        bank = reference_hidden_states[self.bank_index]
        null_rows = 0
        if null_context_samples:
            context_batch = bank.batch if isinstance(bank, ProjectedContext) else bank.shape[0]
            null_rows = null_context_samples * (
                hidden_states.shape[0] // (null_context_samples + context_batch)
            )
        hidden_states = _weighted_attention(
            self.attn1_5, self.norm1_5, hidden_states, bank, reference_attention_weight, null_rows
        )
        hidden_states = _weighted_attention(
            self.attn2, self.norm2, hidden_states, encoder_hidden_states, audio_attention_weight, null_rows
        )
        return self.ff(self.norm3(hidden_states)) + hidden_states


def _weighted_attention(
    attn: Attention,
    norm: nn.Module,
    hidden_states: torch.Tensor,
    context: Context,
    weight: float,
    null_rows: int,
) -> torch.Tensor:
    """``hidden_states + weight x attn(norm(hidden_states), context)``, the first `null_rows` rows
    attending to an all-zero context (not in `context`): their output is ``weight x to_out.0.bias``."""
    if null_rows == 0:
        attn_output = attn(norm(hidden_states), context)
        if weight != 1.0:
            attn_output = attn_output * weight
        return attn_output + hidden_states
    rest = hidden_states[null_rows:]
    attn_output = attn(norm(rest), context)
    null_output = cast(torch.Tensor, attn.to_out[0].bias)
    if weight != 1.0:
        attn_output = attn_output * weight
        null_output = null_output * weight
    return torch.cat([null_output + hidden_states[:null_rows], attn_output + rest])


TransformerBlock = CrossAttentionTransformerBlock | ReferenceReaderTransformerBlock
"""What `SpatialTransformer` holds."""


class SpatialTransformer(nn.Module):
    r"""
    Transformer2DModel layout: GroupNorm(eps 1e-6), ``proj_in`` (1x1 conv, or Linear with
    `use_linear_projection`), one transformer block, ``proj_out``, residual.
    """

    def __init__(
        self,
        block: nn.Module,
        channels: int,
        norm_num_groups: int,
        use_linear_projection: bool,
    ) -> None:
        super().__init__()
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in: nn.Module = (
            nn.Linear(channels, channels) if use_linear_projection else nn.Conv2d(channels, channels, 1)
        )
        self.transformer_blocks = nn.ModuleList([block])
        self.proj_out: nn.Module = (
            nn.Linear(channels, channels) if use_linear_projection else nn.Conv2d(channels, channels, 1)
        )

    def tokens_in(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(N, C, H, W)` feature map -> `(N, H*W, C)` projected tokens."""
        batch, channels, height, width = hidden_states.shape
        hidden_states = self.norm(hidden_states)
        if not self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)
        tokens = hidden_states.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        if self.use_linear_projection:
            tokens = self.proj_in(tokens)
        return tokens

    def tokens_out(self, tokens: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`(N, H*W, C)` tokens -> `(N, C, H, W)`, plus the block input `residual`."""
        batch, channels, height, width = residual.shape
        if self.use_linear_projection:
            tokens = self.proj_out(tokens)
        hidden_states = same_layout(
            tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2), residual
        )
        if not self.use_linear_projection:
            hidden_states = self.proj_out(hidden_states)
        return hidden_states + residual

    def forward(self, hidden_states: torch.Tensor, **block_kwargs: Any) -> torch.Tensor:
        r"""`hidden_states` `(N, C, H, W)` -> `(N, C, H, W)`; `block_kwargs` go to the transformer block."""
        tokens = self.tokens_in(hidden_states)
        for block in self.transformer_blocks:
            tokens = block(tokens, **block_kwargs)
        return self.tokens_out(tokens, hidden_states)
