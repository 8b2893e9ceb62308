"""Attention layers of the skeleton's UNets, with swappable processors.

Every attention in the two UNets has the same parameter layout (``to_q``/``to_k``/``to_v`` without bias,
``to_out.0`` with bias), which is also diffusers' layout, so the published key names load unchanged.
What differs between self-, reference-, audio- and temporal attention is only where queries, keys and
values come from; that lives in the modules that own the attention and in small processor classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ProjectedContext:
    """A fixed context's keys and values, already projected by one attention's ``to_k``/``to_v``.

    A context that does not change between calls (e.g. the reference bank of a job) is projected
    once (`Attention.project_context`) instead of at every call; the result is the same.

    Attributes:
        key (`torch.Tensor` of shape `(N', heads, S, head_dim)`).
        value (`torch.Tensor` of shape `(N', heads, S, head_dim)`).
    """

    key: torch.Tensor
    value: torch.Tensor

    @property
    def batch(self) -> int:
        return int(self.key.shape[0])


Context = torch.Tensor | ProjectedContext
"""What an attention attends to: context tokens ``(N', S, C)``, or their projected keys and values."""


class AttentionProcessor(Protocol):
    """Computes ``attn``'s output from queries (``hidden_states``) and a context (keys/values)."""

    def __call__(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: Context | None = None
    ) -> torch.Tensor: ...


class SDPAttnProcessor:
    r"""
    Multi-head attention with `torch.nn.functional.scaled_dot_product_attention` (scale ``head_dim**-0.5``).

    The context's batch may be a divisor of the query batch: then context row ``b`` serves query rows
    ``b*G .. b*G+G-1`` (batch-major, ``G`` = query batch / context batch). This is how one reference-bank
    row serves every frame of its sample: the ``G`` query rows are folded into the query sequence of one
    attention call, so the bank's keys and values are projected once per sample instead of once per
    frame, and nothing is repeated in memory. Softmax rows are independent, so the result is the same
    as attending frame by frame to a repeated bank. A [`ProjectedContext`] skips the key and value
    projections.
    """

    def __call__(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: Context | None = None
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, query_len, _ = hidden_states.shape
        context_batch = context.batch if isinstance(context, ProjectedContext) else context.shape[0]
        if context_batch == 0 or batch % context_batch != 0:
            raise ValueError(
                f"context batch {context_batch} does not divide the query batch {batch} "
                f"(query {tuple(hidden_states.shape)}, context batch {context_batch})"
            )
        group = batch // context_batch
        heads, head_dim = attn.heads, attn.dim_head

        query = attn.to_q(hidden_states).reshape(context_batch, group * query_len, heads, head_dim)
        projected = context if isinstance(context, ProjectedContext) else attn.project_context(context)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), projected.key, projected.value)
        out = out.transpose(1, 2).reshape(batch, query_len, heads * head_dim)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


class Attention(nn.Module):
    r"""
    Multi-head attention with diffusers' parameter names: ``to_q``, ``to_k``, ``to_v`` (no bias) and
    ``to_out.0`` (with bias; ``to_out.1`` is a parameter-free dropout kept for the key names).

    Parameters:
        query_dim (`int`): Channels of the queries and of the output.
        cross_attention_dim (`int`, *optional*): Channels of the context; defaults to `query_dim`.
        heads (`int`): Number of heads.
        dim_head (`int`): Channels per head; `heads * dim_head` is the inner width.
        dropout (`float`): Dropout after the output projection (inference: 0).
        processor (`AttentionProcessor`, *optional*): Defaults to [`SDPAttnProcessor`].
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        processor: AttentionProcessor | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("query_dim", query_dim), ("heads", heads), ("dim_head", dim_head)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        inner_dim = heads * dim_head
        context_dim = query_dim if cross_attention_dim is None else cross_attention_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(dropout)])
        self.processor: AttentionProcessor = processor if processor is not None else SDPAttnProcessor()

    def set_processor(self, processor: AttentionProcessor) -> None:
        self.processor = processor

    def project_context(self, context: torch.Tensor) -> ProjectedContext:
        """Keys and values of `context` ``(N', S, C)``, each ``(N', heads, S, head_dim)``."""
        batch = context.shape[0]
        key = self.to_k(context).reshape(batch, -1, self.heads, self.dim_head).transpose(1, 2)
        value = self.to_v(context).reshape(batch, -1, self.heads, self.dim_head).transpose(1, 2)
        return ProjectedContext(key, value)

    def forward(
        self, hidden_states: torch.Tensor, encoder_hidden_states: Context | None = None
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(N, L, query_dim)`): Queries.
            encoder_hidden_states (`torch.Tensor` of shape `(N', S, cross_attention_dim)` or
                [`ProjectedContext`], *optional*): Keys/values; `N'` divides `N` (see
                [`SDPAttnProcessor`]). Defaults to `hidden_states`.

        Returns:
            `torch.Tensor` of shape `(N, L, query_dim)`.
        """
        return self.processor(self, hidden_states, encoder_hidden_states)


def set_attn_processor(module: nn.Module, processor: AttentionProcessor) -> None:
    """Sets `processor` on every [`Attention`] inside `module`."""
    for child in module.modules():
        if isinstance(child, Attention):
            child.set_processor(processor)
