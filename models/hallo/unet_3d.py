"""Hallo's denoiser and ReferenceNet on the shared skeleton.

The denoiser is the skeleton's SD1.5 3D UNet with Hallo's reference-reading spatial block and one
more module per attention layer, ``audio_modules`` ([`~models.hallo.modules.AudioTransformer`]),
between the spatial transformer and the motion module. The forward is Hallo's inference path:

- every layer: resnet -> spatial transformer (reference attention, identity tokens) -> audio module
  -> motion module;
- only in the mid block the motion module also sees the motion frames: their ReferenceNet bank entry
  (``norm1`` tokens of the paired block) is put in front of the window's frames and dropped after it,
  and only the mid block's audio module applies the pose/face/lip weights (the reference passes
  ``motion_scale`` to the mid block alone at inference; its down/up blocks sum the three branches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from models.hallo.modules import (
    AudioMasks,
    AudioTransformer,
    HalloReaderTransformerBlock,
    HalloReferenceWriterBlock,
)
from models.sd.configs import unet_3d_kwargs_from_additional, unet_kwargs_from_config, validate_unet_config
from models.sd.reference_net import ReferenceNet
from models.sd.unet_3d import UNet3DConditionModel
from models.sd.unet_blocks import timestep_embedding, transformer_blocks_in_order, upsample_sizes

AUDIO_KEYS = (
    "use_audio_module",
    "audio_attention_dim",
    "stack_enable_blocks_name",
    "stack_enable_blocks_depth",
)
"""The ``unet_additional_kwargs`` keys of Hallo's audio modules (the rest are AnimateDiff's)."""


@dataclass(frozen=True)
class AudioModuleSettings:
    """Hallo's audio-module settings (``unet_additional_kwargs`` of ``configs/inference/default.yaml``)."""

    use_audio_module: bool = True
    audio_attention_dim: int = 768
    stack_enable_blocks_name: tuple[str, ...] = ("up", "down", "mid")
    stack_enable_blocks_depth: tuple[int, ...] = (0, 1, 2, 3)

    def hierarchical(self, block_name: str, depth: int) -> bool:
        """Whether the audio module of that block has the three masked branches."""
        return block_name in self.stack_enable_blocks_name and depth in self.stack_enable_blocks_depth


def hallo_unet_additional_kwargs() -> dict[str, Any]:
    """``unet_additional_kwargs`` of Hallo's ``configs/inference/default.yaml``."""
    return {
        "use_inflated_groupnorm": True,
        "unet_use_cross_frame_attention": False,
        "unet_use_temporal_attention": False,
        "use_motion_module": True,
        "use_audio_module": True,
        "motion_module_resolutions": [1, 2, 4, 8],
        "motion_module_mid_block": True,
        "motion_module_decoder_only": False,
        "motion_module_type": "Vanilla",
        "motion_module_kwargs": {
            "num_attention_heads": 8,
            "num_transformer_block": 1,
            "attention_block_types": ["Temporal_Self", "Temporal_Self"],
            "temporal_position_encoding": True,
            "temporal_position_encoding_max_len": 32,
            "temporal_attention_dim_div": 1,
        },
        "audio_attention_dim": 768,
        "stack_enable_blocks_name": ["up", "down", "mid"],
        "stack_enable_blocks_depth": [0, 1, 2, 3],
    }


class HalloReferenceNet(ReferenceNet):
    r"""
    Hallo's ``reference_unet``: the SD1.5 UNet2DConditionModel layout without ``conv_norm_out`` and
    ``conv_out`` (682 keys; the reference's trimmed 2D UNet, whose output is never used), with blocks
    that write ``norm1(x)`` to the bank.
    """

    transformer_block_class: ClassVar[type[HalloReferenceWriterBlock]] = HalloReferenceWriterBlock
    has_conv_out: ClassVar[bool] = False

    @classmethod
    def from_unet_config(cls, config: Mapping[str, Any]) -> HalloReferenceNet:
        """Builds it from a diffusers UNet config (SD1.5's ``unet/config.json``)."""
        model: HalloReferenceNet = cls(**unet_kwargs_from_config(config))
        return model


class HalloUNet3D(UNet3DConditionModel):
    r"""
    Hallo's ``denoising_unet`` (see the module docstring): the skeleton's denoiser with
    [`HalloReaderTransformerBlock`] and ``audio_modules`` in every attention block.

    Parameters:
        audio (`AudioModuleSettings`): The audio modules' settings (Hallo's by default).
        unet_kwargs: [`~models.sd.unet_3d.UNet3DConditionModel`]'s.
    """

    transformer_block_class: ClassVar[type[nn.Module]] = HalloReaderTransformerBlock

    @classmethod
    def default_unet_additional_kwargs(cls) -> dict[str, Any]:
        """Hallo's published motion-module settings (the audio keys are taken out by `from_unet_config`)."""
        return {key: value for key, value in hallo_unet_additional_kwargs().items() if key not in AUDIO_KEYS}

    def __init__(self, audio: AudioModuleSettings | None = None, **unet_kwargs: Any) -> None:
        super().__init__(**unet_kwargs)
        self.audio = audio or AudioModuleSettings()
        heads = validate_unet_config(self.config)
        groups = self.config["norm_num_groups"]
        self.num_mask_levels = 0

        def audio_modules(
            name: str, depth: int, block_heads: int, pairs: list[tuple[int, int]]
        ) -> nn.ModuleList:
            self.num_mask_levels = max(self.num_mask_levels, depth + 1)
            return nn.ModuleList(
                [
                    AudioTransformer(
                        channels,
                        inner,
                        block_heads,
                        self.audio.audio_attention_dim,
                        groups,
                        self.audio.hierarchical(name, depth),
                        depth,
                    )
                    for channels, inner in pairs
                ]
            )

        if self.audio.use_audio_module:
            for i, block in enumerate(self.down_blocks):
                if block.attentions is not None:
                    pairs = [(resnet.out_channels, resnet.in_channels) for resnet in block.resnets]
                    block.audio_modules = audio_modules("down", i, heads[i], pairs)
            mid_channels = self.config["block_out_channels"][-1]
            self.mid_block.audio_modules = audio_modules(
                "mid", len(self.down_blocks) - 1, heads[-1], [(mid_channels, mid_channels)]
            )
            last = len(self.up_blocks) - 1
            for i, block in enumerate(self.up_blocks):
                if block.attentions is not None:
                    out_channels = block.resnets[0].out_channels
                    skip_channels = block.resnets[-1].in_channels - out_channels
                    pairs = [(out_channels, skip_channels)] * len(block.resnets)
                    block.audio_modules = audio_modules("up", last - i, heads[last - i], pairs)
        blocks = transformer_blocks_in_order(self)
        # The mid block's spatial block: its bank entry carries the motion frames' features.
        self.mid_bank_index = blocks[-1].bank_index

    @classmethod
    def from_unet_config(cls, config: Mapping[str, Any], **unet_additional_kwargs: Any) -> Self:
        """From SD1.5's UNet config and ``unet_additional_kwargs`` (Hallo's by default, merged key by key).

        Raises:
            ValueError: for settings this implementation does not build.
        """
        merged = {**hallo_unet_additional_kwargs(), **unet_additional_kwargs}
        audio = AudioModuleSettings(
            use_audio_module=bool(merged.pop("use_audio_module")),
            audio_attention_dim=int(merged.pop("audio_attention_dim")),
            stack_enable_blocks_name=tuple(merged.pop("stack_enable_blocks_name") or ()),
            stack_enable_blocks_depth=tuple(int(d) for d in merged.pop("stack_enable_blocks_depth") or ()),
        )
        kwargs = unet_kwargs_from_config(config)
        kwargs.update(unet_3d_kwargs_from_additional(merged, cls.default_unet_additional_kwargs()))
        return cls(audio=audio, **kwargs)

    def settings(self) -> dict[str, Any]:
        """The audio settings as plain values (for manifests)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self.audio).items()
        }

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        reference_hidden_states: Sequence[torch.Tensor],
        audio_tokens: torch.Tensor,
        audio_masks: AudioMasks,
        face_features: torch.Tensor | None = None,
        reference_rows: int = 1,
        unconditional_samples: int = 0,
        motion_scale: Sequence[float] | None = None,
    ) -> torch.Tensor:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, F, h, w)`): Noisy latents of one clip.
            timestep (`torch.Tensor` or `int`): Scalar or `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, S, cross_attention_dim)`): Identity tokens.
            reference_hidden_states (`list[torch.Tensor]`): The ReferenceNet bank run on `reference_rows`
                images per sample (the reference image, then the motion frames), entry `i` `(B*R, L_i, C_i)`.
            audio_tokens (`torch.Tensor` of shape `(B, F, S_a, audio_attention_dim)`): Projected audio.
            audio_masks: Per level `(full, face, lip)`, each `(B, h_l*w_l)`.
            face_features (`torch.Tensor` of shape `(B, block_out_channels[0], h, w)`, *optional*): The face
                locator's output, added to every frame after ``conv_in``.
            reference_rows (`int`): `R = 1 + motion frames`.
            unconditional_samples (`int`): Leading samples that skip the reference attention (CFG).
            motion_scale: `(pose, face, lip)` weights (mid block only, as the reference).

        Returns:
            `torch.Tensor` of shape `(B, out_channels, F, h, w)`: the v-prediction.
        """
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, C, F, h, w), got shape {tuple(sample.shape)}")
        batch, channels, num_frames, height, width = sample.shape
        if self.max_frames is not None and num_frames + reference_rows - 1 > self.max_frames:
            raise ValueError(
                f"{num_frames} frames + {reference_rows - 1} motion frames exceed the motion modules' "
                f"{self.max_frames} positions"
            )
        if len(reference_hidden_states) != self.num_banks:
            raise ValueError(
                f"reference_hidden_states has {len(reference_hidden_states)} entries, expected {self.num_banks}"
            )
        if tuple(audio_tokens.shape[:2]) != (batch, num_frames):
            raise ValueError(
                f"audio_tokens must be (B={batch}, F={num_frames}, S, C), got {tuple(audio_tokens.shape)}"
            )
        if len(audio_masks) < self.num_mask_levels:
            raise ValueError(f"audio_masks has {len(audio_masks)} levels, expected {self.num_mask_levels}")
        tokens = audio_tokens.reshape(batch * num_frames, *audio_tokens.shape[2:])
        spatial_kwargs: dict[str, Any] = {
            "encoder_hidden_states": encoder_hidden_states,
            "reference_hidden_states": reference_hidden_states,
            "num_frames": num_frames,
            "reference_rows": reference_rows,
            "unconditional_samples": unconditional_samples,
        }
        frames = sample.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        temb = timestep_embedding(self, timestep, batch, frames).repeat_interleave(num_frames, dim=0)
        hidden_states = self.conv_in(frames)
        if face_features is not None:
            if tuple(face_features.shape) != (batch, *hidden_states.shape[1:]):
                raise ValueError(f"face_features must be (B, C, h, w) = {(batch, *hidden_states.shape[1:])}")
            hidden_states = hidden_states + face_features.repeat_interleave(num_frames, dim=0)

        def layer(
            block: Any, index: int, hidden: torch.Tensor, scale: Sequence[float] | None
        ) -> torch.Tensor:
            if block.attentions is not None:
                hidden = block.attentions[index](hidden, **spatial_kwargs)
            audio = getattr(block, "audio_modules", None)
            if audio is not None:
                hidden = audio[index](hidden, tokens, num_frames, audio_masks, scale)
            return hidden

        skip_states: tuple[torch.Tensor, ...] = (hidden_states,)
        for block in self.down_blocks:
            for i, resnet in enumerate(block.resnets):
                hidden_states = layer(block, i, resnet(hidden_states, temb), None)
                if block.motion_modules is not None:
                    hidden_states = block.motion_modules[i](hidden_states, num_frames)
                skip_states += (hidden_states,)
            if block.downsamplers is not None:
                for downsampler in block.downsamplers:
                    hidden_states = downsampler(hidden_states)
                skip_states += (hidden_states,)

        mid = self.mid_block
        hidden_states = mid.resnets[0](hidden_states, temb)
        for i, resnet in enumerate(mid.resnets[1:]):
            hidden_states = layer(mid, i, hidden_states, motion_scale)
            if mid.motion_modules is not None:
                hidden_states = self._mid_motion(
                    mid.motion_modules[i],
                    hidden_states,
                    reference_hidden_states,
                    batch,
                    num_frames,
                    reference_rows,
                )
            hidden_states = resnet(hidden_states, temb)

        sizes = upsample_sizes(self, skip_states, frames)
        for index, block in enumerate(self.up_blocks):
            for i, resnet in enumerate(block.resnets):
                hidden_states = torch.cat([hidden_states, skip_states[-1]], dim=1)
                skip_states = skip_states[:-1]
                hidden_states = layer(block, i, resnet(hidden_states, temb), None)
                if block.motion_modules is not None:
                    hidden_states = block.motion_modules[i](hidden_states, num_frames)
            if block.upsamplers is not None:
                for upsampler in block.upsamplers:
                    hidden_states = upsampler(hidden_states, sizes[index])

        hidden_states = self.conv_out(F.silu(self.conv_norm_out(hidden_states)))
        result: torch.Tensor = (
            hidden_states.reshape(batch, num_frames, -1, height, width).transpose(1, 2).contiguous()
        )
        return result

    def _mid_motion(
        self,
        motion_module: nn.Module,
        hidden_states: torch.Tensor,
        bank: Sequence[torch.Tensor],
        batch: int,
        num_frames: int,
        reference_rows: int,
    ) -> torch.Tensor:
        """The mid block's motion module over ``[motion-frame features; frames]`` per sample."""
        motion_count = reference_rows - 1
        if motion_count == 0:
            unchanged: torch.Tensor = motion_module(hidden_states, num_frames)
            return unchanged
        _, channels, height, width = hidden_states.shape
        entry = bank[self.mid_bank_index].reshape(batch, reference_rows, height, width, channels)
        motion = entry[:, 1:].permute(0, 1, 4, 2, 3).to(hidden_states.dtype)
        frames = hidden_states.reshape(batch, num_frames, channels, height, width)
        joined = torch.cat([motion, frames], dim=1).reshape(-1, channels, height, width)
        out = motion_module(joined, num_frames + motion_count)
        kept = out.reshape(batch, num_frames + motion_count, channels, height, width)[:, motion_count:]
        result: torch.Tensor = kept.reshape(batch * num_frames, channels, height, width)
        return result
