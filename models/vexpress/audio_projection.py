"""The audio projection: a Perceiver resampler from a window of audio features to a few audio tokens."""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class PerceiverAttention(nn.Module):
    r"""
    Queries attend to ``[inputs; queries]``. Keys/values come from one bias-free Linear (``to_kv``: first
    half keys, second half values); q and k are each scaled by ``dim_head**-0.25`` before the product and
    the softmax runs in fp32 (the reference's fp16-stable formulation).
    """

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.dim_head = dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            inputs (`torch.Tensor` of shape `(N, S, dim)`): Projected audio features.
            latents (`torch.Tensor` of shape `(N, Q, dim)`): Queries.

        Returns:
            `torch.Tensor` of shape `(N, Q, dim)` (to be added to `latents`).
        """
        inputs = self.norm1(inputs)
        latents = self.norm2(latents)
        batch, num_queries, _ = latents.shape
        query = self._split_heads(self.to_q(latents))
        key, value = self.to_kv(torch.cat((inputs, latents), dim=-2)).chunk(2, dim=-1)
        key, value = self._split_heads(key), self._split_heads(value)
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = (query * scale) @ (key * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        out = (weight @ value).transpose(1, 2).reshape(batch, num_queries, -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    # Keys layers.{i}.1.{0,1,3}: LayerNorm, Linear (no bias), GELU, Linear (no bias).
    inner_dim = dim * mult
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner_dim, bias=False),
        nn.GELU(),
        nn.Linear(inner_dim, dim, bias=False),
    )


class AudioProjection(ModelMixin, ConfigMixin):  # type: ignore[misc]
    r"""
    Perceiver resampler (V-Express: dim 768, depth 4, 12 heads of 64, 5 queries, 10 input tokens).
    Input + learned position embedding -> ``proj_in``; learned ``latents`` are the queries; `depth` x
    (attention, feed-forward), both residual on the queries; ``proj_out``; ``norm_out``.

    Parameters:
        dim (`int`): Inner width.
        depth (`int`): Layers.
        dim_head (`int`): Channels per head.
        heads (`int`): Heads.
        num_queries (`int`): Output tokens per window.
        embedding_dim (`int`): Input feature width (wav2vec2 hidden size).
        output_dim (`int`): Output token width (the denoiser's cross-attention width).
        ff_mult (`int`): Feed-forward expansion.
        max_seq_len (`int`): Position-embedding rows = input tokens per window.
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        dim: int = 768,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 5,
        embedding_dim: int = 768,
        output_dim: int = 768,
        ff_mult: int = 4,
        max_seq_len: int = 10,
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("depth", depth),
            ("dim_head", dim_head),
            ("heads", heads),
            ("num_queries", num_queries),
            ("embedding_dim", embedding_dim),
            ("output_dim", output_dim),
            ("ff_mult", ff_mult),
            ("max_seq_len", max_seq_len),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.pos_emb = nn.Embedding(max_seq_len, embedding_dim)
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
                for _ in range(depth)
            ]
        )

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            audio_windows (`torch.Tensor` of shape `(N, S, embedding_dim)`): One window of `S <= max_seq_len`
                audio features per frame (V-Express: 10).

        Returns:
            `torch.Tensor` of shape `(N, num_queries, output_dim)`.
        """
        if audio_windows.ndim != 3 or audio_windows.shape[-1] != self.config["embedding_dim"]:
            raise ValueError(
                f"audio_windows must be (N, S, {self.config['embedding_dim']}), got {tuple(audio_windows.shape)}"
            )
        length = audio_windows.shape[1]
        if length > self.config["max_seq_len"]:
            raise ValueError(
                f"audio windows of {length} tokens exceed max_seq_len={self.config['max_seq_len']}"
            )
        positions = torch.arange(length, device=audio_windows.device)
        inputs = self.proj_in(audio_windows + self.pos_emb(positions))
        latents = self.latents.expand(audio_windows.shape[0], -1, -1)
        for layer in self.layers:
            attention: Any = layer[0]  # type: ignore[index]
            feed_forward: Any = layer[1]  # type: ignore[index]
            latents = attention(inputs, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))
