"""Hallo's own modules: face locator, image and audio projections, and the hierarchical audio attention.

Key names are the reference's (they are what ``net.pth`` holds under ``face_locator.``, ``imageproj.``,
``audioproj.`` and, for the audio attention, ``denoising_unet.*.audio_modules.*``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

from models.sd.attention import Attention
from models.sd.transformer_blocks import CrossAttentionTransformerBlock, ReferenceWriterTransformerBlock

AudioMasks = Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""Per level (0 = full latent resolution, 1 = half, ...): ``(full, face, lip)`` masks, each ``(B, h*w)``."""


class FaceLocator(nn.Module):
    r"""
    Face-region mask -> features added to the denoiser's ``conv_in`` output (EMO's face-region
    condition). ``conv_in`` 3x3, then per stage a 3x3 conv and a stride-2 3x3 conv, SiLU after each,
    then the zero-initialised ``conv_out``. Per frame (the reference's inflated convs).

    Parameters:
        conditioning_embedding_channels (`int`): Output channels (the denoiser's first block width).
        conditioning_channels (`int`): Input channels (3: the mask as an RGB image in [0, 1]).
        block_out_channels (`tuple[int]`): Stage widths; ``len - 1`` stride-2 convs.
    """

    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList([])
        for channel_in, channel_out in itertools.pairwise(block_out_channels):
            self.blocks.append(nn.Conv2d(channel_in, channel_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(channel_in, channel_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(
            block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1
        )
        nn.init.zeros_(self.conv_out.weight)
        assert self.conv_out.bias is not None
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        r"""`conditioning` `(N, C_in, H, W)` -> `(N, C_out, H / 2**stages, W / 2**stages)`."""
        embedding = F.silu(self.conv_in(conditioning))
        for block in self.blocks:
            embedding = F.silu(block(embedding))
        result: torch.Tensor = self.conv_out(embedding)
        return result


class ImageProjection(nn.Module):
    r"""
    ArcFace identity embedding -> `clip_extra_context_tokens` cross-attention tokens (``proj`` Linear,
    reshape, ``norm`` LayerNorm): the denoiser's and ReferenceNet's ``encoder_hidden_states``.
    """

    def __init__(
        self,
        cross_attention_dim: int = 768,
        clip_embeddings_dim: int = 512,
        clip_extra_context_tokens: int = 4,
    ) -> None:
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.clip_extra_context_tokens = clip_extra_context_tokens
        self.proj = nn.Linear(clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        r"""`image_embeds` `(B, clip_embeddings_dim)` -> `(B, tokens, cross_attention_dim)`."""
        tokens = self.proj(image_embeds).reshape(-1, self.clip_extra_context_tokens, self.cross_attention_dim)
        result: torch.Tensor = self.norm(tokens)
        return result


class AudioProjection(nn.Module):
    r"""
    Per video frame, the wav2vec2 hidden states of `blocks` layers over a `seq_len`-frame window
    (flattened) -> `context_tokens` tokens: three Linears with ReLU between, LayerNorm per token.
    """

    def __init__(
        self,
        seq_len: int = 5,
        blocks: int = 12,
        channels: int = 768,
        intermediate_dim: int = 512,
        output_dim: int = 768,
        context_tokens: int = 32,
    ) -> None:
        super().__init__()
        self.seq_len, self.blocks, self.channels = seq_len, blocks, channels
        self.context_tokens, self.output_dim = context_tokens, output_dim
        self.proj1 = nn.Linear(seq_len * blocks * channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = nn.LayerNorm(output_dim)

    def forward(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        r"""`audio_embeds` `(B, F, seq_len, blocks, channels)` -> `(B, F, context_tokens, output_dim)`."""
        batch, frames = audio_embeds.shape[:2]
        expected = (self.seq_len, self.blocks, self.channels)
        if tuple(audio_embeds.shape[2:]) != expected:
            raise ValueError(f"audio_embeds must be (B, F, {expected}), got {tuple(audio_embeds.shape)}")
        hidden = audio_embeds.reshape(batch * frames, -1)
        hidden = torch.relu(self.proj1(hidden))
        hidden = torch.relu(self.proj2(hidden))
        tokens = self.proj3(hidden).reshape(batch * frames, self.context_tokens, self.output_dim)
        result: torch.Tensor = self.norm(tokens).reshape(batch, frames, self.context_tokens, self.output_dim)
        return result


class HalloReferenceWriterBlock(ReferenceWriterTransformerBlock):
    r"""
    The ReferenceNet's block in Hallo's "write" mode: the bank entry is ``norm1(x)``, the input of the
    self-attention (Hallo's reference attention concatenates it to the denoiser's self-attention keys).
    """

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        bank: list[torch.Tensor | None],
        bank_only: bool = False,
    ) -> torch.Tensor:
        r"""As [`ReferenceWriterTransformerBlock`], with `bank[self.bank_index] = norm1(x)`."""
        norm_hidden_states = self.norm1(hidden_states)
        bank[self.bank_index] = norm_hidden_states
        if bank_only:
            return hidden_states
        hidden_states = self.attn1(norm_hidden_states) + hidden_states
        return self._cross_attend(hidden_states, self.norm2(hidden_states), encoder_hidden_states)


class HalloReaderTransformerBlock(CrossAttentionTransformerBlock):
    r"""
    The denoiser's spatial block (Hallo's TemporalBasicTransformerBlock in "read" mode): the
    self-attention's keys/values are the frame's own tokens followed by a reference image's bank
    entry (``norm1`` of the paired ReferenceNet block), except for the unconditional samples of
    classifier-free guidance, which attend to themselves only; then cross-attention to the identity
    tokens and the feed-forward. Same parameter layout as BasicTransformerBlock.

    Which reference image a frame reads is the reference's: frame row ``r`` (of ``B*F``, batch-major)
    reads sample ``r % B``'s (the reference tiles the bank over the frames instead of repeating each
    sample's row), which with CFG mixes the unconditional sample's reference features into every
    other conditional frame. Reproduced, since the published weights were trained with it.
    """

    reads_reference_bank: ClassVar[bool] = True

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[torch.Tensor],
        num_frames: int,
        reference_rows: int,
        unconditional_samples: int = 0,
        **_: object,
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, L, C)`).
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, D)` or `(B*F, S, D)`): Identity tokens.
            reference_hidden_states (`list[torch.Tensor]`): The bank; entry `self.bank_index` has shape
                `(B*R, L, C)`, `R = reference_rows` rows per sample (the reference image, then motion frames).
            num_frames (`int`): `F`.
            reference_rows (`int`): `R`.
            unconditional_samples (`int`): The first samples skip the reference (CFG's unconditional half).

        Returns:
            `torch.Tensor` of shape `(B*F, L, C)`.
        """
        norm_hidden_states = self.norm1(hidden_states)
        batch_frames, _, channels = norm_hidden_states.shape
        batch = batch_frames // num_frames
        bank = reference_hidden_states[self.bank_index]
        reference = bank.reshape(batch, reference_rows, -1, channels)[:, 0]
        # As the reference: frame row r reads the reference image of sample r % B (its bank rows are
        # tiled, not repeated per sample), so with CFG the conditional frames alternate between the
        # unconditional and the conditional sample's reference features.
        rows = torch.arange(batch_frames, device=reference.device) % batch
        reference = reference[rows]
        context = torch.cat([norm_hidden_states, reference], dim=1)
        split = unconditional_samples * num_frames
        if split > 0:
            attended = torch.cat(
                [
                    self.attn1(norm_hidden_states[:split]),
                    self.attn1(norm_hidden_states[split:], context[split:]),
                ]
            )
        else:
            attended = self.attn1(norm_hidden_states, context)
        hidden_states = attended + hidden_states
        return self._cross_attend(hidden_states, self.norm2(hidden_states), encoder_hidden_states)


class HierarchicalAudioBlock(nn.Module):
    r"""
    Hallo's AudioTemporalBasicTransformerBlock: self-attention, then audio cross-attention and the
    feed-forward. With `hierarchical`, the audio cross-attention has three branches (``attn2_0`` full,
    ``attn2_1`` face, ``attn2_2`` lip), each masked by its region, passed through its zero-initialised
    1x1 conv, scaled by its weight (pose, face, lip; 1 where the reference passes none) and summed;
    otherwise one ``attn2``. The three zero convs exist in both cases (the published layout).

    Parameters:
        dim (`int`): Channels of the tokens.
        heads (`int`): Attention heads.
        dim_head (`int`): Channels per head (``heads * dim_head == dim`` in Hallo's layout).
        audio_dim (`int`): Channels of the audio tokens.
        hierarchical (`bool`): Three masked branches (Hallo's default everywhere) or one.
        level (`int`): Which mask level this block reads (its depth in the UNet: 0 = full resolution).
    """

    def __init__(
        self, dim: int, heads: int, dim_head: int, audio_dim: int, hierarchical: bool, level: int
    ) -> None:
        super().__init__()
        self.hierarchical = hierarchical
        self.level = level
        self.zero_conv_full = nn.Conv2d(dim, dim, kernel_size=1)
        self.zero_conv_face = nn.Conv2d(dim, dim, kernel_size=1)
        self.zero_conv_lip = nn.Conv2d(dim, dim, kernel_size=1)
        for conv in (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip):
            nn.init.zeros_(conv.weight)
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2: Attention | None = None
        if hierarchical:
            self.attn2_0 = Attention(dim, audio_dim, heads=heads, dim_head=dim_head)
            self.attn2_1 = Attention(dim, audio_dim, heads=heads, dim_head=dim_head)
            self.attn2_2 = Attention(dim, audio_dim, heads=heads, dim_head=dim_head)
        else:
            self.attn2 = Attention(dim, audio_dim, heads=heads, dim_head=dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        audio_tokens: torch.Tensor,
        size: tuple[int, int],
        num_frames: int,
        audio_masks: AudioMasks | None = None,
        motion_scale: Sequence[float] | None = None,
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, h*w, C)`).
            audio_tokens (`torch.Tensor` of shape `(B*F, S, audio_dim)`).
            size (`tuple[int, int]`): `(h, w)`.
            num_frames (`int`): `F` (the masks are per sample, shared by its frames).
            audio_masks: Per level `(full, face, lip)` of shape `(B, h*w)`; required when hierarchical.
            motion_scale: `(pose, face, lip)` weights of the three branches; None: all 1.

        Returns:
            `torch.Tensor` of shape `(B*F, h*w, C)`.
        """
        norm_hidden_states = self.norm1(hidden_states)
        hidden_states = self.attn1(norm_hidden_states) + hidden_states
        norm_hidden_states = self.norm2(hidden_states)
        if self.attn2 is not None:
            hidden_states = self.attn2(norm_hidden_states, audio_tokens) + hidden_states
            result: torch.Tensor = self.ff(self.norm3(hidden_states)) + hidden_states
            return result
        if audio_masks is None or len(audio_masks) <= self.level:
            raise ValueError(f"audio_masks must have an entry for level {self.level}")
        height, width = size
        batch_frames, length, channels = norm_hidden_states.shape
        branches = (
            (self.attn2_0, self.zero_conv_full),
            (self.attn2_1, self.zero_conv_face),
            (self.attn2_2, self.zero_conv_lip),
        )
        scales = (1.0, 1.0, 1.0) if motion_scale is None else tuple(motion_scale)
        total = hidden_states
        for (attention, conv), mask, scale in zip(branches, audio_masks[self.level], scales, strict=True):
            if mask.shape[-1] != length:
                raise ValueError(
                    f"level-{self.level} mask has {mask.shape[-1]} positions, tokens have {length}"
                )
            frame_mask = mask.to(norm_hidden_states.dtype).repeat_interleave(num_frames, dim=0)
            branch = attention(norm_hidden_states, audio_tokens) * frame_mask[:, :, None]
            branch = branch.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2)
            branch = conv(branch).permute(0, 2, 3, 1).reshape(batch_frames, length, channels)
            total = scale * branch + total
        hidden_states = total
        output: torch.Tensor = self.ff(self.norm3(hidden_states)) + hidden_states
        return output


class AudioTransformer(nn.Module):
    r"""
    Hallo's audio module (a Transformer3DModel with one [`HierarchicalAudioBlock`]): GroupNorm,
    ``proj_in`` 1x1 conv to `inner_dim`, the block, ``proj_out`` back to `channels`, residual.
    Hallo sizes `inner_dim` as ``heads * (layer_in_channels // heads)``, which differs from `channels`
    in the first layer of a down block that widens.
    """

    def __init__(
        self,
        channels: int,
        inner_dim_channels: int,
        heads: int,
        audio_dim: int,
        norm_num_groups: int,
        hierarchical: bool,
        level: int,
    ) -> None:
        super().__init__()
        dim_head = inner_dim_channels // heads
        inner_dim = heads * dim_head
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [HierarchicalAudioBlock(inner_dim, heads, dim_head, audio_dim, hierarchical, level)]
        )
        self.proj_out = nn.Conv2d(inner_dim, channels, kernel_size=1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        audio_tokens: torch.Tensor,
        num_frames: int,
        audio_masks: AudioMasks | None = None,
        motion_scale: Sequence[float] | None = None,
    ) -> torch.Tensor:
        r"""`hidden_states` `(B*F, C, h, w)`, `audio_tokens` `(B*F, S, audio_dim)` -> `(B*F, C, h, w)`."""
        batch_frames, _, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.proj_in(self.norm(hidden_states))
        inner_dim = hidden_states.shape[1]
        tokens = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        for block in self.transformer_blocks:
            tokens = block(tokens, audio_tokens, (height, width), num_frames, audio_masks, motion_scale)
        hidden_states = (
            tokens.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        )
        result: torch.Tensor = self.proj_out(hidden_states) + residual
        return result
