"""The V-Express denoiser: the skeleton's 3D UNet with V-Express's transformer block (reference attention
``attn1_5`` then audio cross-attention), its published motion-module settings, and its call signature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from models.sd.attention import Context
from models.sd.transformer_blocks import ReferenceReaderTransformerBlock
from models.sd.unet_3d import UNet3DConditionModel
from models.vexpress.configs import vexpress_unet_additional_kwargs


class VExpressUNet3D(UNet3DConditionModel):
    r"""
    The denoiser (V-Express ``UNet3DConditionModel`` with ``inference_v2.yaml``): predicts v for a window of
    frames. Published layout: 1386 keys, the 2D UNet's names plus ``attn1_5``/``norm1_5`` in every
    transformer block and ``motion_modules`` in every block. Hyperparameters: those of
    [`~models.sd.unet_3d.UNet3DConditionModel`].
    """

    transformer_block_class: ClassVar[type[nn.Module]] = ReferenceReaderTransformerBlock

    @classmethod
    def default_unet_additional_kwargs(cls) -> dict[str, Any]:
        """V-Express's ``inference_v2.yaml`` values, the defaults of `from_unet_config`."""
        return vexpress_unet_additional_kwargs()

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[Context],
        kps_features: torch.Tensor | None = None,
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
        null_context_samples: int = 0,
    ) -> torch.Tensor:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, F, h, w)`): Noisy latents of one window.
            timestep (`torch.Tensor` or `int`): Scalar or `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B*F, S, cross_attention_dim)`): Audio tokens of
                every frame, batch-major (row `b*F+f`); V-Express: `S = 5`.
            reference_hidden_states (`list[torch.Tensor]`): The reference bank from the ReferenceNet, entry
                `i` of shape `(B, L_i, C_i)` for this model's `i`-th transformer block; with CFG the caller
                stacks `[zeros; bank]`.
            kps_features (`torch.Tensor` of shape `(B, block_out_channels[0], F, h, w)`, *optional*): V-Kps
                guider features, added to the output of ``conv_in``.
            reference_attention_weight (`float`): Scale of every reference attention's output.
            audio_attention_weight (`float`): Scale of every audio cross-attention's output.
            null_context_samples (`int`): With CFG, ``1``: the unconditional sample's all-zero bank, audio
                tokens and kps features are left out of the inputs and its reference and audio attentions
                are substituted by their exact constant outputs (see
                [`~models.sd.transformer_blocks.ReferenceReaderTransformerBlock`]).

        Returns:
            `torch.Tensor` of shape `(B, out_channels, F, h, w)`: the v-prediction.
        """
        return super().forward(
            sample,
            timestep,
            encoder_hidden_states,
            reference_hidden_states,
            guider_features=kps_features,
            block_kwargs={
                "reference_attention_weight": reference_attention_weight,
                "audio_attention_weight": audio_attention_weight,
            },
            null_context_samples=null_context_samples,
        )
