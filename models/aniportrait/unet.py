"""AniPortrait's ReferenceNet and denoiser on the shared skeleton (``models.sd``).

What differs from the skeleton's defaults (and from V-Express):

- The reference bank holds ``norm1(x)``, the input of each block's self-attention
  ([`BankWriterTransformerBlock`]), and the denoiser reads it inside that same self-attention: the keys
  and values are the frame's own tokens followed by the paired reference tokens
  ([`BankConcatReaderTransformerBlock`], Moore-AnimateAnyone's "mutual self-attention"). With
  classifier-free guidance the unconditional rows use plain self-attention (no reference), as the
  reference's ``uc_mask`` does; the caller says how many leading rows are unconditional.
- The cross-attention tokens are one CLIP image embedding per sample.
- The pose guider's five maps are added after ``conv_in`` and after each down block (the skeleton adds
  one map after ``conv_in`` only), so `AniPortraitUNet3D.forward` re-states the skeleton's loop.
- The published ``reference_unet.pth`` has neither ``conv_norm_out`` nor ``conv_out`` (the reference's
  2D UNet drops its output head: only the bank is read), so [`AniPortraitReferenceNet`] drops
  ``conv_out`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.sd.reference_net import ReferenceNet
from models.sd.transformer_blocks import CrossAttentionTransformerBlock, ReferenceWriterTransformerBlock
from models.sd.unet_3d import UNet3DConditionModel
from models.sd.unet_blocks import timestep_embedding, upsample_sizes


class BankWriterTransformerBlock(ReferenceWriterTransformerBlock):
    """The ReferenceNet's block in "write" mode, storing ``norm1(x)`` in the bank."""

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
            bank (`list`): Receives ``norm1(x)`` `(B, L, C)` at `bank[self.bank_index]`.
            bank_only (`bool`): Stop once the bank entry is written.
        """
        norm_hidden_states = self.norm1(hidden_states)
        bank[self.bank_index] = norm_hidden_states
        if bank_only:
            return hidden_states
        hidden_states = self.attn1(norm_hidden_states) + hidden_states
        return self._cross_attend(hidden_states, self.norm2(hidden_states), encoder_hidden_states)


class BankConcatReaderTransformerBlock(CrossAttentionTransformerBlock):
    """BasicTransformerBlock layout whose self-attention also attends to the paired reference tokens."""

    reads_reference_bank: ClassVar[bool] = True

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[torch.Tensor],
        unconditional_samples: int = 0,
    ) -> torch.Tensor:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(B*F, L, C)`): Tokens of every frame, batch-major.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, cross_attention_dim)` or `(B*F, ...)`):
                CLIP image tokens.
            reference_hidden_states (`list[torch.Tensor]`): The bank; this block reads entry
                `self.bank_index`, of shape `(B, L_ref, C)`, shared by the `F` frames of each sample.
            unconditional_samples (`int`): Leading samples of the batch that are CFG's unconditional
                half; their frames use plain self-attention.
        """
        norm_hidden_states = self.norm1(hidden_states)
        bank = reference_hidden_states[self.bank_index]
        frames_per_sample = hidden_states.shape[0] // bank.shape[0]
        context = torch.cat([norm_hidden_states, bank.repeat_interleave(frames_per_sample, dim=0)], dim=1)
        attended = self.attn1(norm_hidden_states, context)
        if unconditional_samples:
            rows = unconditional_samples * frames_per_sample
            plain = self.attn1(norm_hidden_states[:rows])
            attended = torch.cat([plain, attended[rows:]], dim=0)
        hidden_states = attended + hidden_states
        return self._cross_attend(hidden_states, self.norm2(hidden_states), encoder_hidden_states)


class AniPortraitReferenceNet(ReferenceNet):
    """The skeleton's ReferenceNet with AniPortrait's bank (``norm1(x)``) and its published layout: no
    ``conv_out`` either (682 keys for SD1.5; only the bank is ever read). Parameters: those of
    [`~models.sd.reference_net.ReferenceNet`]."""

    transformer_block_class: ClassVar[type[ReferenceWriterTransformerBlock]] = BankWriterTransformerBlock

    def __init__(self, **unet_config: Any) -> None:
        super().__init__(**unet_config)
        del self.conv_out


class AniPortraitUNet3D(UNet3DConditionModel):
    r"""
    The denoiser (AniPortrait ``UNet3DConditionModel`` with ``inference_v2.yaml``, the skeleton's
    defaults): v-prediction for a window of frames, reading the reference bank in its self-attentions,
    CLIP tokens in its cross-attentions, and the pose guider's five maps.
    """

    transformer_block_class: ClassVar[type[nn.Module]] = BankConcatReaderTransformerBlock

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[torch.Tensor],
        pose_features: Sequence[torch.Tensor],
        unconditional_samples: int = 0,
    ) -> torch.Tensor:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, 4, F, h, w)`): Noisy latents of one window.
            timestep (`torch.Tensor` or `int`): Scalar or `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, 1, 768)`): CLIP image embeddings (zeros for
                the unconditional half).
            reference_hidden_states (`list[torch.Tensor]`): The ReferenceNet's bank, `(B, L_i, C_i)` each.
            pose_features (`list[torch.Tensor]`): The pose guider's five maps (see `PoseGuider.forward`).
            unconditional_samples (`int`): Leading samples that are CFG's unconditional half.

        Returns:
            `torch.Tensor` of shape `(B, 4, F, h, w)`.
        """
        self.check_inputs(sample, encoder_hidden_states, reference_hidden_states)
        if len(pose_features) != len(self.down_blocks) + 1:
            raise ValueError(
                f"pose_features must have {len(self.down_blocks) + 1} maps, got {len(pose_features)}"
            )
        batch, channels, num_frames, height, width = sample.shape
        block_kwargs: dict[str, Any] = {
            "encoder_hidden_states": encoder_hidden_states,
            "reference_hidden_states": reference_hidden_states,
            "unconditional_samples": unconditional_samples,
        }
        frames = sample.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        temb = timestep_embedding(self, timestep, batch, frames).repeat_interleave(num_frames, dim=0)

        def add_pose(hidden_states: torch.Tensor, index: int) -> torch.Tensor:
            feature = pose_features[index]
            if feature.shape[0] != batch or feature.shape[2] != num_frames:
                raise ValueError(
                    f"pose_features[{index}] must be (B={batch}, C, F={num_frames}, ...), got {tuple(feature.shape)}"
                )
            flat = feature.transpose(1, 2).reshape(
                batch * num_frames, *feature.shape[1:2], *feature.shape[3:]
            )
            if flat.shape != hidden_states.shape:
                raise ValueError(
                    f"pose_features[{index}] does not fit the denoiser's {tuple(hidden_states.shape)}"
                )
            return hidden_states + flat

        hidden_states = add_pose(self.conv_in(frames), 0)
        skip_states: tuple[torch.Tensor, ...] = (hidden_states,)
        for index, down_block in enumerate(self.down_blocks, start=1):
            hidden_states, block_skips = down_block(hidden_states, temb, num_frames, block_kwargs)
            skip_states += block_skips
            # The reference adds the map to the block's output only, not to the skips it already kept.
            hidden_states = add_pose(hidden_states, index)

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
        output: torch.Tensor = hidden_states.reshape(batch, num_frames, -1, height, width).transpose(1, 2)
        return output.contiguous()
