"""The V-Express sampling pipeline: portrait + keypoints + speech -> video frames.

``VExpressPipeline.__call__`` renders a whole clip in one call and reads as the reference's story;
the engine (``models.vexpress.engine``) calls the same steps one chunk at a time:

1. reference image -> VAE posterior mean x 0.18215 -> reference latents ``[1, 4, h, w]``;
2. ReferenceNet once on those latents (t = 0, zero context) -> the reference bank;
3. speech -> wav2vec2 (whole clip) -> two tokens per frame -> per-frame 10-token windows ->
   audio projection -> ``[F, 5, 768]`` tokens per frame (``models.vexpress.audio``);
4. per-frame keypoints -> V-kps images -> V-kps guider -> ``[1, 320, F, h, w]``;
5. seeded standard-normal latents drawn on the CPU;
6. DDIM (v-prediction, trailing timesteps) with classifier-free guidance, the unconditional half
   (zero bank, zero audio tokens, zero kps features, as in the reference) batched with the
   conditional half in one denoiser call per window and step;
7. VAE decode in batches of frames -> uint8 RGB frames.

Latents stay float32 between steps whatever the model dtype (the reference keeps them in the
model dtype); every model input is cast to the model dtype. In fp32 both are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from models.vexpress.audio import audio_windows, encode_audio, frame_audio_tokens
from models.vexpress.kps import draw_kps_video
from models.vexpress.scheduler import build_scheduler

if TYPE_CHECKING:
    from models.vexpress.checkpoint import VExpressModules

VAE_SCALING_FACTOR = 0.18215
GUIDER_FRAMES_PER_CALL = 16
"""The reference runs the guider on 16 frames at a time; frames are independent, so this only bounds memory."""

Continuity = Literal["motion_frames", "overlap_average"]
StepCallback = Callable[[int, int], None]
# diffusers' lazily imported classes carry no attributes for mypy: name what they are, typed Any.
AutoencoderKL: TypeAlias = Any
"""``diffusers.AutoencoderKL``."""
DDIMScheduler: TypeAlias = Any
"""``diffusers.DDIMScheduler`` (see ``models.vexpress.scheduler``)."""
"""Called after each denoising step with (step index, timestep)."""


@dataclass
class VExpressComponents:
    """Everything a pipeline runs: the four V-Express modules plus the VAE and the audio encoder."""

    modules: VExpressModules
    vae: AutoencoderKL
    audio_encoder: Wav2Vec2Model
    feature_extractor: Wav2Vec2FeatureExtractor


@dataclass
class WindowConditions:
    """Denoiser conditions of one window of ``F`` frames, already batched for guidance.

    With guidance the batch is ``[unconditional ; conditional]`` (``B = 2``), else conditional only.

    Attributes:
        audio_tokens (`torch.Tensor` of shape `(B * F, 5, D)`): batch-major per-frame audio tokens.
        kps_features (`torch.Tensor` of shape `(B, 320, F, h, w)`).
        reference_hidden_states (list of `torch.Tensor` of shape `(B, L_l, C_l)`): the bank.
    """

    audio_tokens: torch.Tensor
    kps_features: torch.Tensor
    reference_hidden_states: list[torch.Tensor]


@dataclass(frozen=True)
class GuidanceOptions:
    guidance_scale: float = 3.5
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0


def overlap_windows(num_frames: int, context_frames: int, motion_frames: int) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` of the reference's overlap-average schedule.

    Windows of ``context_frames`` at a stride of ``context_frames - motion_frames``. The reference
    trims the clip so that the last window ends on the last frame; we keep every frame and, when the
    stride does not land there, add one last window ending on the last frame (more overlap there).
    A clip of at most ``context_frames`` frames is one window.
    """
    if num_frames <= context_frames:
        return [(0, num_frames)]
    stride = context_frames - motion_frames
    windows = [(start, start + context_frames) for start in range(0, num_frames - context_frames + 1, stride)]
    if windows[-1][1] < num_frames:
        windows.append((num_frames - context_frames, num_frames))
    return windows


class VExpressPipeline:
    """Runs the V-Express modules; owns no per-job state (see ``models.vexpress.engine`` for that).

    Args:
        components: the models, already on ``device`` in ``dtype`` and in eval mode.
        device: where the models run.
        dtype: the models' dtype (fp32 on CPU; fp16 or bf16 on CUDA).
    """

    def __init__(self, components: VExpressComponents, device: torch.device, dtype: torch.dtype) -> None:
        self.components = components
        self.device = device
        self.dtype = dtype
        unet_config = components.modules.denoising_unet.config
        self.cross_attention_dim = int(unet_config["cross_attention_dim"])

    # 1. reference latents -----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_reference(self, image: npt.NDArray[np.uint8]) -> torch.Tensor:
        """Encode the portrait.

        Args:
            image (`np.ndarray` of shape `(H, W, 3)`): uint8 RGB, H and W multiples of 8.

        Returns:
            `torch.Tensor` of shape `(1, 4, H/8, W/8)`: posterior mean x 0.18215, in the model dtype.
        """
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        pixels = (pixels * 2.0 - 1.0).to(self.device, self.dtype)
        posterior = self.components.vae.encode(pixels).latent_dist
        return posterior.mean * VAE_SCALING_FACTOR

    # 2. reference bank ----------------------------------------------------------------------------
    @torch.inference_mode()
    def reference_bank(self, reference_latents: torch.Tensor) -> list[torch.Tensor]:
        """Run the ReferenceNet once: returns the bank, each entry ``[1, h_l * w_l, C_l]``."""
        context = reference_latents.new_zeros(1, 1, self.cross_attention_dim)
        timestep = torch.zeros((), dtype=torch.long, device=self.device)
        bank = self.components.modules.reference_net(reference_latents, timestep, context)
        return list(bank)

    # 3. audio -----------------------------------------------------------------------------------
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

    # 4. keypoints ---------------------------------------------------------------------------------
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
        """
        if not guidance.do_classifier_free_guidance:
            return WindowConditions(audio_tokens, kps_features, list(reference_bank))
        return WindowConditions(
            audio_tokens=torch.cat([torch.zeros_like(audio_tokens), audio_tokens]),
            kps_features=torch.cat([torch.zeros_like(kps_features), kps_features]),
            reference_hidden_states=[torch.cat([torch.zeros_like(bank), bank]) for bank in reference_bank],
        )

    # 5. initial noise ---------------------------------------------------------------------------
    @staticmethod
    def draw_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Standard-normal float32 noise drawn on the CPU (the reference draws it there too)."""
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)

    # 6. denoising ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_v(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditions: WindowConditions,
        guidance: GuidanceOptions,
    ) -> torch.Tensor:
        """One guided denoiser call on a window.

        Args:
            latents (`torch.Tensor` of shape `(1, 4, F, h, w)`): float32 noisy latents of the window.
            timestep: the scheduler's integer timestep.

        Returns:
            `torch.Tensor` of shape `(1, 4, F, h, w)`, float32: ``v_u + g * (v_c - v_u)`` (or ``v_c``).
        """
        sample = latents.to(self.device, self.dtype)
        if guidance.do_classifier_free_guidance:
            sample = torch.cat([sample, sample])
        output = self.components.modules.denoising_unet(
            sample,
            timestep.to(self.device),
            encoder_hidden_states=conditions.audio_tokens,
            reference_hidden_states=conditions.reference_hidden_states,
            kps_features=conditions.kps_features,
            reference_attention_weight=guidance.reference_attention_weight,
            audio_attention_weight=guidance.audio_attention_weight,
        )
        v_pred = (output.sample if hasattr(output, "sample") else output).float()
        if guidance.do_classifier_free_guidance:
            v_uncond, v_cond = v_pred.chunk(2)
            v_pred = v_uncond + guidance.guidance_scale * (v_cond - v_uncond)
        return v_pred.to(latents.device)

    @torch.inference_mode()
    def denoise_window(
        self,
        noise: torch.Tensor,
        conditions: WindowConditions,
        guidance: GuidanceOptions,
        scheduler: DDIMScheduler,
        *,
        motion_latents: torch.Tensor | None = None,
        motion_noise: torch.Tensor | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Run the whole DDIM loop on one window, holding its first frames to known latents.

        The ``M`` motion frames are the last frames of the previous window. Before every denoiser
        call they are set to ``scheduler.add_noise(motion_latents, motion_noise, t)``: the clean
        latents at the step's noise level, with one fixed noise draw per chunk. With DDIM at eta 0
        and a fixed noise, that is exactly the trajectory a frame whose prediction is its known
        clean latent would follow, so the new frames attend to a consistent past at every step.
        After the loop the motion frames are restored exactly.

        Args:
            noise (`torch.Tensor` of shape `(1, 4, F, h, w)`): float32 initial latents; its first
                ``M`` frames are ignored when ``motion_latents`` is given.
            motion_latents (`torch.Tensor` of shape `(1, 4, M, h, w)`): float32 known clean latents.
            motion_noise (`torch.Tensor` of shape `(1, 4, M, h, w)`): float32 noise to re-noise them.

        Returns:
            `torch.Tensor` of shape `(1, 4, F, h, w)`: float32 denoised latents of the window.
        """
        latents = noise.clone()
        num_motion = 0 if motion_latents is None else motion_latents.shape[2]
        for step_index, timestep in enumerate(scheduler.timesteps):
            if motion_latents is not None:
                latents[:, :, :num_motion] = scheduler.add_noise(motion_latents, motion_noise, timestep)
            v_pred = self.predict_v(latents, timestep, conditions, guidance)
            latents = scheduler.step(v_pred, timestep, latents).prev_sample
            if callback is not None:
                callback(step_index, int(timestep))
        if motion_latents is not None:
            latents[:, :, :num_motion] = motion_latents
        return latents

    @torch.inference_mode()
    def denoise_chunk(
        self,
        num_new_frames: int,
        conditions: WindowConditions,
        guidance: GuidanceOptions,
        scheduler: DDIMScheduler,
        generator: torch.Generator,
        *,
        motion_latents: torch.Tensor | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Draw a chunk's noise from ``generator`` and denoise its window (motion-frames schedule).

        Noise is drawn in a fixed order: the motion frames' re-noising noise ``[1, 4, M, h, w]``
        first (when there are motion frames), then the new frames' ``[1, 4, N, h, w]``. A chunk's
        frames therefore depend only on the generator state it starts from and on the carried
        latents, which is what makes a resumed job reproduce an uninterrupted one.

        Returns:
            `torch.Tensor` of shape `(1, 4, M + N, h, w)`: float32 latents of the window, the first
            ``M`` equal to ``motion_latents``.
        """
        latent_height, latent_width = conditions.kps_features.shape[-2:]
        if motion_latents is not None and motion_latents.shape[2] == 0:
            motion_latents = None
        motion_noise = None
        if motion_latents is not None:
            motion_noise = self.draw_noise(motion_latents.shape, generator)
        noise = self.draw_noise((1, 4, num_new_frames, latent_height, latent_width), generator)
        if motion_latents is not None:
            noise = torch.cat([torch.zeros_like(motion_latents), noise], dim=2)
        return self.denoise_window(
            noise,
            conditions,
            guidance,
            scheduler,
            motion_latents=motion_latents,
            motion_noise=motion_noise,
            callback=callback,
        )

    @torch.inference_mode()
    def denoise_overlap_average(
        self,
        noise: torch.Tensor,
        window_conditions: Callable[[int, int], WindowConditions],
        guidance: GuidanceOptions,
        scheduler: DDIMScheduler,
        *,
        context_frames: int,
        motion_frames: int,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """The reference schedule: every step, average the guided ``v`` of overlapping windows.

        Needs the whole clip's latents (``[1, 4, L, h, w]``, float32) in memory. Conditions are
        built per window and step by ``window_conditions(start, stop)`` rather than held for the
        whole clip, whose kps features alone would grow to gigabytes for long clips at 512x512.
        Each window's ``v`` is divided by the number of windows covering each of its frames and
        summed per frame, as in the reference; then every frame is stepped.
        """
        latents = noise.clone()
        num_frames = latents.shape[2]
        windows = overlap_windows(num_frames, context_frames, motion_frames)
        coverage = torch.zeros(num_frames)
        for start, stop in windows:
            coverage[start:stop] += 1
        coverage = coverage.view(1, 1, num_frames, 1, 1)
        for step_index, timestep in enumerate(scheduler.timesteps):
            v_sum = torch.zeros_like(latents)
            for start, stop in windows:
                v_pred = self.predict_v(
                    latents[:, :, start:stop], timestep, window_conditions(start, stop), guidance
                )
                v_sum[:, :, start:stop] += v_pred / coverage[:, :, start:stop]
            latents = scheduler.step(v_sum, timestep, latents).prev_sample
            if callback is not None:
                callback(step_index, int(timestep))
        return latents

    # 7. decoding ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, decode_batch_frames: int = 8) -> npt.NDArray[np.uint8]:
        """Decode ``[1, 4, F, h, w]`` latents to uint8 RGB frames ``(F, H, W, 3)``.

        ``(x / 2 + 0.5).clamp(0, 1) * 255`` truncated to uint8, as the reference writes its video.
        The reference decodes one frame at a time; batching frames only changes kernel rounding.
        """
        frames = []
        per_frame = latents[0].permute(1, 0, 2, 3)  # [F, 4, h, w]
        for first in range(0, per_frame.shape[0], decode_batch_frames):
            batch = per_frame[first : first + decode_batch_frames].to(self.device, self.dtype)
            pixels = self.components.vae.decode(batch / VAE_SCALING_FACTOR).sample
            pixels = (pixels.float() / 2 + 0.5).clamp(0, 1) * 255
            frames.append(pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(frames)

    # the whole story, for one clip in one call ------------------------------------------------
    def __call__(
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
        check_window_options(context_frames, motion_frames)
        if height % 8 or width % 8:
            raise ValueError(f"image height and width must be multiples of 8, got {height}x{width}")
        guidance = guidance or GuidanceOptions()
        generator = generator or torch.Generator().manual_seed(42)
        # 2. Reference latents and the ReferenceNet bank, once
        reference_latents = self.encode_reference(image)
        bank = self.reference_bank(reference_latents)
        # 3. Audio tokens for the whole clip
        padded_tokens = self.encode_audio(audio, num_frames)

        # 4. Per-window conditions: kps features and projected audio tokens of the window's frames
        def conditions(start: int, stop: int) -> WindowConditions:
            tokens = self.project_audio(padded_tokens, start, stop)
            features = self.kps_features(kps_sequence[start:stop], height, width)
            return self.window_conditions(tokens, features, bank, guidance)

        # 5. Scheduler and initial noise
        scheduler = build_scheduler(num_inference_steps)
        latent_shape = (1, 4, num_frames, height // 8, width // 8)
        # 6. Denoise, 7. decode
        if continuity == "overlap_average":
            noise = self.draw_noise(latent_shape, generator)
            latents = self.denoise_overlap_average(
                noise,
                conditions,
                guidance,
                scheduler,
                context_frames=context_frames,
                motion_frames=motion_frames,
                callback=callback,
            )
            return self.decode_latents(latents, decode_batch_frames)
        frames: list[npt.NDArray[np.uint8]] = []
        motion_latents: torch.Tensor | None = None
        for start, stop in motion_frame_windows(num_frames, context_frames, motion_frames):
            num_motion = 0 if motion_latents is None else motion_latents.shape[2]
            latents = self.denoise_chunk(
                stop - start - num_motion,
                conditions(start, stop),
                guidance,
                scheduler,
                generator,
                motion_latents=motion_latents,
                callback=callback,
            )
            frames.append(self.decode_latents(latents[:, :, num_motion:], decode_batch_frames))
            motion_latents = latents[:, :, latents.shape[2] - motion_frames :] if motion_frames else None
        return np.concatenate(frames)


def check_window_options(context_frames: int, motion_frames: int, max_context_frames: int = 32) -> None:
    """Raise ``ValueError`` unless ``0 <= motion_frames < context_frames <= max_context_frames``.

    ``max_context_frames`` is the motion modules' position-encoding length (32 in V-Express).
    """
    if not 1 <= context_frames <= max_context_frames:
        raise ValueError(f"context_frames must be in [1, {max_context_frames}], got {context_frames}")
    if not 0 <= motion_frames < context_frames:
        raise ValueError(
            f"motion_frames must be >= 0 and < context_frames ({context_frames}), got {motion_frames}"
        )


def motion_frame_windows(num_frames: int, context_frames: int, motion_frames: int) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` of the motion-frames schedule, one per chunk.

    The first window is frames ``[0, context_frames)``; each later one starts ``motion_frames``
    before the end of the previous one and adds up to ``context_frames - motion_frames`` new frames
    (the last may add fewer). New frames of window ``k > 0`` are ``[start + motion_frames, stop)``.
    """
    windows = [(0, min(context_frames, num_frames))]
    while windows[-1][1] < num_frames:
        start = windows[-1][1] - motion_frames
        windows.append((start, min(start + context_frames, num_frames)))
    return windows


def as_uint8_state(generator: torch.Generator) -> npt.NDArray[np.uint8]:
    """A CPU generator's state as a uint8 numpy array (what ``ChunkCarry`` stores)."""
    state: torch.Tensor = generator.get_state()
    return state.numpy().copy()


def generator_from_state(state: npt.NDArray[np.uint8]) -> torch.Generator:
    """A CPU generator restored from ``as_uint8_state``."""
    generator = torch.Generator()
    generator.set_state(torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8)))
    return generator


def dtype_from_name(name: str | None, device: torch.device) -> torch.dtype:
    """``fp16``/``bf16``/``fp32`` (or ``None``: bf16 on CUDA when supported, else fp16; fp32 on CPU)."""
    if name is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names: dict[str, torch.dtype] = {
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if name not in names:
        raise ValueError(f"unknown dtype {name!r}; use one of fp16, bf16, fp32")
    return names[name]
