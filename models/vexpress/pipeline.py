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
  zero kps features), as in the reference; the ReferenceNet runs at t = 0 on a zero context. Those
  zeros are never built: the denoiser is told that its first sample has a null context
  (``null_context_samples=1``) and substitutes the exact outputs of its reference and audio
  attentions (``weight x to_out.0.bias``), computing them for the conditional half only;
- the bank's keys and values are projected once per job (``project_reference_bank``), keypoint
  images go to the device as uint8, and a clip's conditions are built once (``clip_conditions``).

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

from models.sd.attention import Context
from models.sd.pipeline import (
    AutoencoderKL,
    ClassifierFreeGuidance,
    SDVideoPipeline,
    StepCallback,
)
from models.sd.sampler import Continuity
from models.vexpress.audio import audio_windows, encode_audio, frame_audio_tokens
from models.vexpress.kps import draw_kps_frames, kps_frames_to_guider_input
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
    """Denoiser conditions of one window of ``F`` frames, for a guided or unguided call.

    The tensors are the conditional sample's only. With guidance the denoiser's batch is
    ``[unconditional ; conditional]`` and ``null_context_samples = 1`` tells it that the first
    sample's conditions are all zeros (see ``VExpressUNet3D.forward``).

    Attributes:
        audio_tokens (`torch.Tensor` of shape `(F, 5, D)`): per-frame audio tokens.
        kps_features (`torch.Tensor` of shape `(1, 320, F, h, w)`).
        reference_hidden_states (list of `torch.Tensor` `(1, L_l, C_l)` or `ProjectedContext`): the bank.
        reference_attention_weight, audio_attention_weight: the guidance's attention weights.
        null_context_samples: 1 with guidance, else 0.
    """

    audio_tokens: torch.Tensor
    kps_features: torch.Tensor
    reference_hidden_states: list[Context]
    reference_attention_weight: float = 1.0
    audio_attention_weight: float = 1.0
    null_context_samples: int = 0

    def denoiser_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``VExpressUNet3D.forward``."""
        return {
            "encoder_hidden_states": self.audio_tokens,
            "reference_hidden_states": self.reference_hidden_states,
            "kps_features": self.kps_features,
            "reference_attention_weight": self.reference_attention_weight,
            "audio_attention_weight": self.audio_attention_weight,
            "null_context_samples": self.null_context_samples,
        }


@dataclass
class ClipConditions:
    """Per-frame conditions of a run of frames ``[start, start + F)``, built once; windows are views.

    Audio projection and guider are per frame, so a window's conditions are slices of these.

    Attributes:
        audio_tokens (`torch.Tensor` of shape `(F, 5, D)`).
        kps_features (`torch.Tensor` of shape `(1, 320, F, h, w)`).
        start: the first frame's index in the clip.
    """

    audio_tokens: torch.Tensor
    kps_features: torch.Tensor
    start: int = 0

    def frames(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(audio_tokens, kps_features)`` of clip frames ``[start, stop)`` (views, no copy)."""
        first, last = start - self.start, stop - self.start
        if first < 0 or last > self.audio_tokens.shape[0] or first >= last:
            raise ValueError(
                f"frames [{start}, {stop}) are not within [{self.start}, {self.start + self.audio_tokens.shape[0]})"
            )
        return self.audio_tokens[first:last], self.kps_features[:, :, first:last]


def reference_compatible_noise(
    shape: Sequence[int], seed: int, layerdrop_draws: int, dtype: torch.dtype
) -> torch.Tensor:
    """The initial noise the V-Express script draws for `seed`, as float32.

    The script seeds the global CPU generator (``torch.manual_seed(seed)``); its wav2vec2
    (transformers 4.41) then draws ``torch.rand([])`` once per encoder layer (LayerDrop, drawn even
    in eval mode); then the latents are drawn with ``randn`` in the model dtype, on the CPU. A
    generator of our own replays that without touching the global one.

    Args:
        layerdrop_draws: the audio encoder's ``num_hidden_layers`` (12 for wav2vec2-base).
        dtype: the model dtype the script runs in (``randn`` consumes the generator differently per dtype).
    """
    generator = torch.Generator().manual_seed(seed)
    for _ in range(layerdrop_draws):
        torch.rand([], generator=generator)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype).float()


@torch.inference_mode()
def median_filter_3x3x3(frames: torch.Tensor) -> torch.Tensor:
    """The V-Express script's post-filter: per channel, the median of each pixel's 3x3x3 neighbourhood.

    Args:
        frames (`torch.Tensor` of shape `(F + 2, H, W, 3)`, uint8): the frames with one neighbour
            frame before and after (the caller pads time; the script reflects at the clip's ends).

    Returns:
        `torch.Tensor` of shape `(F, H, W, 3)`, uint8. Space is reflect-padded as in the script.
        The median is an order statistic, so filtering the uint8 frames gives the script's result
        of filtering the float frames and converting after.
    """
    if frames.ndim != 4 or frames.shape[0] < 3:
        raise ValueError(f"frames must be (F + 2, H, W, 3) with F >= 1, got {tuple(frames.shape)}")
    channels_first = frames.permute(3, 0, 1, 2).to(torch.int16)  # [3, F + 2, H, W]
    padded = torch.nn.functional.pad(channels_first, (1, 1, 1, 1), mode="reflect")
    height, width = frames.shape[1:3]
    filtered = []
    for index in range(frames.shape[0] - 2):  # one frame at a time: 27 x one frame of memory
        window = padded[:, index : index + 3].unfold(2, 3, 1).unfold(3, 3, 1)  # [3, 3, H, W, 3, 3]
        window = window.permute(0, 2, 3, 1, 4, 5).reshape(3, height, width, 27)
        filtered.append(window.median(dim=-1).values)
    return torch.stack(filtered, dim=1).permute(1, 2, 3, 0).to(torch.uint8)


def reflect_index(index: int, length: int) -> int:
    """``index`` in ``[-1, length]`` mapped into the clip as reflect padding does (-1 -> 1, L -> L - 2);
    a one-frame clip repeats its frame."""
    if length == 1:
        return 0
    if index < 0:
        return -index
    if index >= length:
        return 2 * (length - 1) - index
    return index


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
        # what the reference's wav2vec2 (transformers 4.41) draws before the noise: one per layer
        self.layerdrop_draws = int(components.audio_encoder.config.num_hidden_layers)

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
        """V-kps images of ``(F, 3, 2)`` keypoints through the guider: ``[1, 320, F, H/8, W/8]``.

        Images are drawn on the host and uploaded as uint8, then scaled to [0, 1] on the device."""
        features = []
        for first in range(0, len(kps_sequence), GUIDER_FRAMES_PER_CALL):
            frames = draw_kps_frames(height, width, kps_sequence[first : first + GUIDER_FRAMES_PER_CALL])
            images = kps_frames_to_guider_input(frames.to(self.device, non_blocking=True)).to(self.dtype)
            features.append(self.components.modules.v_kps_guider(images))
        return torch.cat(features, dim=2)

    def clip_conditions(
        self,
        padded_tokens: torch.Tensor,
        kps_sequence: npt.NDArray[np.float32],
        height: int,
        width: int,
        start: int,
        stop: int,
    ) -> ClipConditions:
        """Projected audio tokens and kps features of frames ``[start, stop)``, once for all their windows.

        Args:
            padded_tokens: the clip's padded per-frame tokens (``encode_audio``).
            kps_sequence (`np.ndarray` of shape `(L, 3, 2)`): the clip's keypoints.
        """
        return ClipConditions(
            audio_tokens=self.project_audio(padded_tokens, start, stop),
            kps_features=self.kps_features(kps_sequence[start:stop], height, width),
            start=start,
        )

    def window_conditions(
        self,
        audio_tokens: torch.Tensor,
        kps_features: torch.Tensor,
        reference_bank: Sequence[Context],
        guidance: GuidanceOptions,
    ) -> WindowConditions:
        """One window's conditions for a guided (``null_context_samples=1``) or unguided call.

        Args:
            audio_tokens (`torch.Tensor` of shape `(F, 5, D)`): projected tokens of the window's frames.
            kps_features (`torch.Tensor` of shape `(1, 320, F, h, w)`).
            reference_bank: the ReferenceNet bank, each ``[1, L_l, C_l]``, or its projection
                (``project_reference_bank``).
            guidance: decides the batching and gives the attention weights.
        """
        return WindowConditions(
            audio_tokens,
            kps_features,
            list(reference_bank),
            reference_attention_weight=guidance.reference_attention_weight,
            audio_attention_weight=guidance.audio_attention_weight,
            null_context_samples=1 if guidance.do_classifier_free_guidance else 0,
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

        # 3. Per-window conditions: projected audio tokens and kps features of the window's frames,
        #    built once per window (motion frames) or once for the clip (overlap average)
        projected_bank: list[list[Context]] = []  # the one bank of this call, projected on first use
        clip: list[ClipConditions] = []

        def conditions(bank: Sequence[torch.Tensor], start: int, stop: int) -> WindowConditions:
            if not projected_bank:
                projected_bank.append(self.project_reference_bank(bank))
            if continuity == "overlap_average":
                if not clip:
                    clip.append(
                        self.clip_conditions(padded_tokens, kps_sequence, height, width, 0, num_frames)
                    )
                tokens, features = clip[0].frames(start, stop)
            else:
                tokens = self.project_audio(padded_tokens, start, stop)
                features = self.kps_features(kps_sequence[start:stop], height, width)
            return self.window_conditions(tokens, features, projected_bank[0], guidance)

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
