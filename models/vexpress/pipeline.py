"""The V-Express sampling pipeline: portrait + keypoints + speech -> video frames.

``VExpressPipeline`` is the skeleton's pipeline (``models.sd.pipeline.SDVideoPipeline``: reference
latents and bank, seeded noise, DDIM with guidance over the chunked or overlap-average schedule,
decoding) with V-Express's conditions plugged in:

- speech -> wav2vec2 (whole clip) -> two tokens per frame -> per-frame 10-token windows -> audio
  projection -> ``[F, 5, 768]`` tokens per frame (``models.vexpress.audio``), the denoiser's
  cross-attention tokens;
- per-frame keypoints -> V-kps images -> V-kps guider -> ``[1, 320, F, h, w]``, added after the
  denoiser's ``conv_in``;
- the unconditional half of classifier-free guidance is all zeros (zero bank, zero audio tokens,
  zero kps features), as in the reference; the ReferenceNet runs at t = 0 on a zero context.

``VExpressPipeline.__call__`` renders a whole clip in one call and reads as the reference's story;
the engine (``models.vexpress.engine``) calls the same steps one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from models.sd.pipeline import (
    AutoencoderKL,
    ClassifierFreeGuidance,
    SDVideoPipeline,
    StepCallback,
    unconditional_first,
)
from models.sd.sampler import Continuity
from models.vexpress.audio import audio_windows, encode_audio, frame_audio_tokens
from models.vexpress.kps import draw_kps_video
from models.vexpress.scheduler import vexpress_scheduler_config

if TYPE_CHECKING:
    from models.vexpress.checkpoint import VExpressModules

GUIDER_FRAMES_PER_CALL = 16
"""The reference runs the guider on 16 frames at a time; frames are independent, so this only bounds memory."""


@dataclass
class VExpressComponents:
    """Everything a pipeline runs: the four V-Express modules plus the VAE and the audio encoder."""

    modules: VExpressModules
    vae: AutoencoderKL
    audio_encoder: Wav2Vec2Model
    feature_extractor: Wav2Vec2FeatureExtractor


@dataclass(frozen=True)
class GuidanceOptions(ClassifierFreeGuidance):
    """Guidance scale and the weights of the denoiser's reference and audio attentions."""

    guidance_scale: float = 3.5
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0


@dataclass
class WindowConditions:
    """Denoiser conditions of one window of ``F`` frames, already batched for guidance.

    With guidance the batch is ``[unconditional ; conditional]`` (``B = 2``), else conditional only.

    Attributes:
        audio_tokens (`torch.Tensor` of shape `(B * F, 5, D)`): batch-major per-frame audio tokens.
        kps_features (`torch.Tensor` of shape `(B, 320, F, h, w)`).
        reference_hidden_states (list of `torch.Tensor` of shape `(B, L_l, C_l)`): the bank.
        reference_attention_weight, audio_attention_weight: the guidance's attention weights.
    """

    audio_tokens: torch.Tensor
    kps_features: torch.Tensor
    reference_hidden_states: list[torch.Tensor]
    reference_attention_weight: float = 1.0
    audio_attention_weight: float = 1.0

    def denoiser_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``VExpressUNet3D.forward``."""
        return {
            "encoder_hidden_states": self.audio_tokens,
            "reference_hidden_states": self.reference_hidden_states,
            "kps_features": self.kps_features,
            "reference_attention_weight": self.reference_attention_weight,
            "audio_attention_weight": self.audio_attention_weight,
        }


class VExpressPipeline(SDVideoPipeline):
    """Runs the V-Express modules; owns no per-job state (see ``models.vexpress.engine`` for that).

    Args:
        components: the models, already on ``device`` in ``dtype`` and in eval mode.
        device: where the models run.
        dtype: the models' dtype (fp32 on CPU; fp16 or bf16 on CUDA).
    """

    def __init__(self, components: VExpressComponents, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(
            components.vae,
            components.modules.reference_net,
            components.modules.denoising_unet,
            vexpress_scheduler_config(),
            device,
            dtype,
        )
        self.components = components

    # audio ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_audio(self, audio: npt.NDArray[np.float32], num_frames: int) -> torch.Tensor:
        """Speech (16 kHz mono) -> padded per-frame tokens ``[2 * num_frames + 8, D]`` (see ``audio.py``)."""
        hidden_states = encode_audio(audio, self.components.audio_encoder, self.components.feature_extractor)
        return frame_audio_tokens(hidden_states, num_frames).to(self.dtype)

    @torch.inference_mode()
    def project_audio(self, padded_tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Audio projection of frames ``[start, stop)``: ``[stop - start, 5, D]``."""
        windows = audio_windows(padded_tokens, start, stop).to(self.device, self.dtype)
        return self.components.modules.audio_projection(windows)

    # keypoints ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def kps_features(self, kps_sequence: npt.NDArray[np.float32], height: int, width: int) -> torch.Tensor:
        """V-kps images of ``(F, 3, 2)`` keypoints through the guider: ``[1, 320, F, H/8, W/8]``."""
        features = []
        for first in range(0, len(kps_sequence), GUIDER_FRAMES_PER_CALL):
            images = draw_kps_video(height, width, kps_sequence[first : first + GUIDER_FRAMES_PER_CALL])
            features.append(self.components.modules.v_kps_guider(images.to(self.device, self.dtype)))
        return torch.cat(features, dim=2)

    def window_conditions(
        self,
        audio_tokens: torch.Tensor,
        kps_features: torch.Tensor,
        reference_bank: Sequence[torch.Tensor],
        guidance: GuidanceOptions,
    ) -> WindowConditions:
        """Batch one window's conditions with their unconditional (all-zero) halves when guiding.

        Args:
            audio_tokens (`torch.Tensor` of shape `(F, 5, D)`): projected tokens of the window's frames.
            kps_features (`torch.Tensor` of shape `(1, 320, F, h, w)`).
            reference_bank: the ReferenceNet bank, each ``[1, L_l, C_l]``.
            guidance: decides the batching and gives the attention weights.
        """
        weights = {
            "reference_attention_weight": guidance.reference_attention_weight,
            "audio_attention_weight": guidance.audio_attention_weight,
        }
        if not guidance.do_classifier_free_guidance:
            return WindowConditions(audio_tokens, kps_features, list(reference_bank), **weights)
        return WindowConditions(
            audio_tokens=unconditional_first(audio_tokens),
            kps_features=unconditional_first(kps_features),
            reference_hidden_states=[unconditional_first(bank) for bank in reference_bank],
            **weights,
        )

    # the whole story, for one clip in one call ------------------------------------------------
    def __call__(  # type: ignore[override]
        self,
        image: npt.NDArray[np.uint8],
        kps_sequence: npt.NDArray[np.float32],
        audio: npt.NDArray[np.float32],
        *,
        num_inference_steps: int = 25,
        guidance: GuidanceOptions | None = None,
        context_frames: int = 24,
        motion_frames: int = 4,
        continuity: Continuity = "overlap_average",
        generator: torch.Generator | None = None,
        decode_batch_frames: int = 8,
        callback: StepCallback | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Render a whole clip: ``(L, H, W, 3)`` uint8 frames, ``L = len(kps_sequence)``.

        Args:
            image (`np.ndarray` of shape `(H, W, 3)`): the portrait, uint8 RGB, H and W multiples of 8.
            kps_sequence (`np.ndarray` of shape `(L, 3, 2)`): per-frame keypoints in image pixels.
            audio (`np.ndarray` of shape `(samples,)`): 16 kHz mono speech spanning the clip.
            continuity: ``overlap_average`` (the reference schedule, default here) or
                ``motion_frames`` (windows rendered one after another, see ``denoise_window``).
            generator: CPU generator for the initial noise; the reference seeds it with 42.
        """
        # 1. Check inputs
        height, width = image.shape[:2]
        num_frames = len(kps_sequence)
        self.check_inputs(image, num_frames, context_frames, motion_frames)
        guidance = guidance or GuidanceOptions()
        # 2. Audio tokens for the whole clip, once
        padded_tokens = self.encode_audio(audio, num_frames)

        # 3. Per-window conditions: projected audio tokens and kps features of the window's frames
        def conditions(bank: Sequence[torch.Tensor], start: int, stop: int) -> WindowConditions:
            tokens = self.project_audio(padded_tokens, start, stop)
            features = self.kps_features(kps_sequence[start:stop], height, width)
            return self.window_conditions(tokens, features, bank, guidance)

        # 4. The shared story: reference bank, scheduler and noise, denoising, decoding
        return super().__call__(
            image,
            num_frames,
            conditions,
            num_inference_steps=num_inference_steps,
            guidance=guidance,
            context_frames=context_frames,
            motion_frames=motion_frames,
            continuity=continuity,
            generator=generator or torch.Generator().manual_seed(42),
            decode_batch_frames=decode_batch_frames,
            callback=callback,
        )
