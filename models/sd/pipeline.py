"""The skeleton's sampling pipeline: portrait + per-window conditions -> video frames.

``SDVideoPipeline.__call__`` renders a whole clip in one call; an engine calls the same steps one
chunk at a time (``denoise_motion_frames_chunk`` with the carry, or ``overlap_average_latents``):

1. reference image -> VAE posterior mean x ``scaling_factor`` -> reference latents ``[1, 4, h, w]``;
2. ReferenceNet once on those latents (t = 0, zero context unless given) -> the reference bank;
3. per window of frames, the engine's conditions (the plug: ``WindowConditionsPlug``), e.g. audio
   tokens and guider features for V-Express, CLIP tokens for another engine;
4. seeded standard-normal latents drawn on the CPU (reproducible on every device), then moved to
   the model's device, where they stay through every step (the scheduler steps them there);
5. DDIM with classifier-free guidance, the unconditional half batched with the conditional half in
   one denoiser call per window and step, over the chunked or the overlap-average schedule
   (``models.sd.sampler``);
6. VAE decode in batches of frames -> uint8 RGB frames, copied to the host once per call.

Latents stay float32 between steps whatever the model dtype (the reference keeps them in the
model dtype); every model input is cast to the model dtype. In fp32 both are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import torch

from models.engine import ChunkCarry, ChunkSpec
from models.sd.attention import Context
from models.sd.reference_net import ReferenceNet
from models.sd.sampler import (
    ChunkSchedule,
    Continuity,
    check_window_options,
    motion_frame_windows,
    overlap_windows,
)
from models.sd.scheduler import build_ddim_scheduler
from models.sd.unet_3d import UNet3DConditionModel
from models.sd.unet_blocks import transformer_blocks_in_order

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (step index, timestep)."""
# diffusers' lazily imported classes carry no attributes for mypy: name what they are, typed Any.
AutoencoderKL: TypeAlias = Any
"""``diffusers.AutoencoderKL``."""
DDIMScheduler: TypeAlias = Any
"""``diffusers.DDIMScheduler`` (see ``models.sd.scheduler``)."""


class DenoiserConditions(Protocol):
    """The conditions of one window of ``F`` frames, already batched ``[unconditional; conditional]``
    when guiding: whatever the engine's denoiser takes besides latents and timestep."""

    def denoiser_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the denoiser call."""
        ...


WindowConditionsPlug = Callable[[Sequence[torch.Tensor], int, int], DenoiserConditions]
"""``(reference_bank, start, stop) -> conditions`` of frames ``[start, stop)``: the engine's plug."""


def unconditional_first(tensor: torch.Tensor) -> torch.Tensor:
    """``[zeros; tensor]`` along the batch: the all-zero unconditional half of a guided batch."""
    return torch.cat([torch.zeros_like(tensor), tensor])


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance: ``v_u + guidance_scale * (v_c - v_u)``; off at a scale of at most 1."""

    guidance_scale: float = 1.0

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0


@dataclass
class DenoiserInputs:
    """Conditions of [`~models.sd.unet_3d.UNet3DConditionModel`] for one window (see its `forward`).

    Attributes:
        encoder_hidden_states (`torch.Tensor` of shape `(B * F, S, D)` or `(B, S, D)`): cross-attention
            tokens per frame or per sample.
        reference_hidden_states (list of `torch.Tensor` of shape `(B, L_l, C_l)`, *optional*): the bank.
        guider_features (`torch.Tensor` of shape `(B, C_0, F, h, w)`, *optional*).
        block_kwargs (`dict`): more keyword arguments of the transformer blocks.
    """

    encoder_hidden_states: torch.Tensor
    reference_hidden_states: list[torch.Tensor] | None = None
    guider_features: torch.Tensor | None = None
    block_kwargs: dict[str, Any] = field(default_factory=dict)

    def denoiser_kwargs(self) -> dict[str, Any]:
        return {
            "encoder_hidden_states": self.encoder_hidden_states,
            "reference_hidden_states": self.reference_hidden_states,
            "guider_features": self.guider_features,
            "block_kwargs": self.block_kwargs,
        }

    def for_guidance(self, guidance: ClassifierFreeGuidance) -> DenoiserInputs:
        """These conditional inputs batched with all-zero unconditional ones when guiding."""
        if not guidance.do_classifier_free_guidance:
            return self
        bank = self.reference_hidden_states
        return DenoiserInputs(
            encoder_hidden_states=unconditional_first(self.encoder_hidden_states),
            reference_hidden_states=None if bank is None else [unconditional_first(entry) for entry in bank],
            guider_features=None
            if self.guider_features is None
            else unconditional_first(self.guider_features),
            block_kwargs=self.block_kwargs,
        )


class SDVideoPipeline:
    """Runs the skeleton's models (VAE, ReferenceNet, 3D denoiser); owns no per-job state.

    Args:
        vae: ``diffusers.AutoencoderKL``, already on `device` in `dtype` and in eval mode (as all models).
        reference_net: computes the reference bank; None for a denoiser that reads none.
        denoising_unet: a [`UNet3DConditionModel`] (or an engine's subclass; its call signature is what
            the engine's `DenoiserConditions` produce).
        scheduler_config: ``DDIMScheduler`` keyword arguments (the engine's published ones).
        device: where the models run.
        dtype: the models' dtype (fp32 on CPU; fp16 or bf16 on CUDA).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        reference_net: ReferenceNet | None,
        denoising_unet: UNet3DConditionModel,
        scheduler_config: Mapping[str, Any],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.vae = vae
        self.reference_net = reference_net
        self.denoising_unet = denoising_unet
        self.scheduler_config = dict(scheduler_config)
        self.device = device
        self.dtype = dtype
        unet_config = denoising_unet.config
        self.cross_attention_dim = int(unet_config["cross_attention_dim"])
        self.latent_channels = int(unet_config["in_channels"])
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        # the motion modules' position table bounds a window's length (32 for AnimateDiff modules)
        self.max_context_frames = int(getattr(denoising_unet, "max_frames", None) or 32)
        # set by compile_models; eager until then
        self.compiled_denoiser: Callable[..., Any] | None = None
        self.compiled_window: int | None = None
        self.compiled_decoder: Callable[..., Any] | None = None
        self.compiled_decode_batch: int | None = None

    def make_scheduler(self, num_inference_steps: int | None = None) -> DDIMScheduler:
        """A fresh scheduler for one render (see ``models.sd.scheduler.build_ddim_scheduler``)."""
        return build_ddim_scheduler(self.scheduler_config, num_inference_steps)

    # 1. reference latents -----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_reference(self, image: npt.NDArray[np.uint8]) -> torch.Tensor:
        """Encode the portrait.

        Args:
            image (`np.ndarray` of shape `(H, W, 3)`): uint8 RGB, H and W multiples of `vae_scale_factor`.

        Returns:
            `torch.Tensor` of shape `(1, 4, H/8, W/8)`: posterior mean x ``scaling_factor``, model dtype.
        """
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        pixels = (pixels * 2.0 - 1.0).to(self.device, self.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    # 2. reference bank ----------------------------------------------------------------------------
    @torch.inference_mode()
    def reference_bank(
        self, reference_latents: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Run the ReferenceNet once (t = 0): returns the bank, each entry ``[1, h_l * w_l, C_l]``.

        Args:
            reference_latents (`torch.Tensor` of shape `(1, 4, h, w)`).
            encoder_hidden_states (`torch.Tensor` of shape `(1, S, D)`, *optional*): the ReferenceNet's
                cross-attention context; zeros ``(1, 1, D)`` by default (V-Express).
        """
        if self.reference_net is None:
            raise ValueError("this pipeline has no ReferenceNet")
        context = encoder_hidden_states
        if context is None:
            context = reference_latents.new_zeros(1, 1, self.cross_attention_dim)
        timestep = torch.zeros((), dtype=torch.long, device=self.device)
        bank = self.reference_net(reference_latents, timestep, context)
        return list(bank)

    @torch.inference_mode()
    def project_reference_bank(self, bank: Sequence[torch.Tensor]) -> list[Context]:
        """The bank's keys and values, projected once by each denoiser block's reference attention.

        A job's bank never changes, so its ``to_k``/``to_v`` projections (``attn1_5``) are computed
        here once instead of at every denoiser call; the denoiser's output is the same. Blocks that
        read the bank through another layout keep the raw entries.

        Returns:
            One entry per bank entry: a `ProjectedContext` ``(1, heads, L_l, head_dim)`` each.
        """
        projected: list[Context] = list(bank)
        for block in transformer_blocks_in_order(self.denoising_unet):
            attention = getattr(block, "attn1_5", None)
            if attention is not None:
                projected[block.bank_index] = attention.project_context(bank[block.bank_index])
        return projected

    # 4. initial noise ---------------------------------------------------------------------------
    @staticmethod
    def draw_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Standard-normal float32 noise drawn on the CPU (the reference draws it there too), so
        that a seed gives the same noise on every device; callers move it to the device."""
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)

    # 5. denoising ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_v(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        conditions: DenoiserConditions,
        guidance: ClassifierFreeGuidance,
    ) -> torch.Tensor:
        """One guided denoiser call on a window.

        Args:
            latents (`torch.Tensor` of shape `(1, 4, F, h, w)`): float32 noisy latents of the window
                (on the model's device: nothing is copied between host and device).
            timestep: the scheduler's integer timestep.

        Returns:
            `torch.Tensor` of shape `(1, 4, F, h, w)`, float32, on the latents' device:
            ``v_u + g * (v_c - v_u)`` (or ``v_c``), in the scheduler's prediction type (v for V-Express).
        """
        sample = latents.to(self.device, self.dtype)
        if guidance.do_classifier_free_guidance:
            sample = torch.cat([sample, sample])
        denoiser = self.denoiser_for(sample.shape[2])
        output = denoiser(sample, timestep.to(self.device), **conditions.denoiser_kwargs())
        v_pred = (output.sample if hasattr(output, "sample") else output).float()
        if guidance.do_classifier_free_guidance:
            v_uncond, v_cond = v_pred.chunk(2)
            v_pred = v_uncond + guidance.guidance_scale * (v_cond - v_uncond)
        return v_pred.to(latents.device)

    @torch.inference_mode()
    def denoise_window(
        self,
        noise: torch.Tensor,
        conditions: DenoiserConditions,
        guidance: ClassifierFreeGuidance,
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
            `torch.Tensor` of shape `(1, 4, F, h, w)`: float32 denoised latents of the window, on the
            model's device (where every step runs).
        """
        latents = noise.to(self.device, torch.float32, copy=True)
        num_motion = 0 if motion_latents is None else motion_latents.shape[2]
        if motion_latents is not None:
            motion_latents = motion_latents.to(self.device, torch.float32)
            motion_noise = None if motion_noise is None else motion_noise.to(self.device, torch.float32)
        device_timesteps = scheduler.timesteps.to(self.device)
        for step_index, timestep in enumerate(scheduler.timesteps):
            if motion_latents is not None:
                latents[:, :, :num_motion] = scheduler.add_noise(motion_latents, motion_noise, timestep)
            v_pred = self.predict_v(latents, device_timesteps[step_index], conditions, guidance)
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
        conditions: DenoiserConditions,
        guidance: ClassifierFreeGuidance,
        scheduler: DDIMScheduler,
        generator: torch.Generator,
        *,
        latent_size: tuple[int, int],
        motion_latents: torch.Tensor | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Draw a chunk's noise from ``generator`` and denoise its window (motion-frames schedule).

        Noise is drawn in a fixed order: the motion frames' re-noising noise ``[1, 4, M, h, w]``
        first (when there are motion frames), then the new frames' ``[1, 4, N, h, w]``. A chunk's
        frames therefore depend only on the generator state it starts from and on the carried
        latents, which is what makes a resumed job reproduce an uninterrupted one.

        Args:
            latent_size: ``(h, w)`` of the latents.

        Returns:
            `torch.Tensor` of shape `(1, 4, M + N, h, w)`: float32 latents of the window, the first
            ``M`` equal to ``motion_latents``.
        """
        if motion_latents is not None and motion_latents.shape[2] == 0:
            motion_latents = None
        motion_noise = None
        if motion_latents is not None:
            motion_noise = self.draw_noise(motion_latents.shape, generator)
        noise = self.draw_noise((1, self.latent_channels, num_new_frames, *latent_size), generator)
        if motion_noise is not None:
            noise = torch.cat([torch.zeros_like(motion_noise), noise], dim=2)
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
        window_conditions: Callable[[int, int], DenoiserConditions],
        guidance: ClassifierFreeGuidance,
        scheduler: DDIMScheduler,
        *,
        context_frames: int,
        motion_frames: int,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """The reference schedule: every step, average the guided ``v`` of overlapping windows.

        Needs the whole clip's latents (``[1, 4, L, h, w]``, float32) in memory, on the device.
        ``window_conditions(start, stop)`` is called once per window, before the first step, and its
        conditions are held for the whole loop: a plug that builds them as views of the clip's
        conditions (``VExpressPipeline.clip_conditions``) holds one copy per frame, not per window.
        Each window's ``v`` is divided by the number of windows covering each of its frames and
        summed per frame, as in the reference; then every frame is stepped.
        """
        latents = noise.to(self.device, torch.float32, copy=True)
        num_frames = latents.shape[2]
        windows = overlap_windows(num_frames, context_frames, motion_frames)
        coverage = torch.zeros(num_frames)
        for start, stop in windows:
            coverage[start:stop] += 1
        coverage = coverage.view(1, 1, num_frames, 1, 1).to(self.device)
        # the conditions do not depend on the step: build each window's once, not once per step
        conditions = [window_conditions(start, stop) for start, stop in windows]
        device_timesteps = scheduler.timesteps.to(self.device)
        for step_index, timestep in enumerate(scheduler.timesteps):
            v_sum = torch.zeros_like(latents)
            for (start, stop), window in zip(windows, conditions, strict=True):
                v_pred = self.predict_v(
                    latents[:, :, start:stop], device_timesteps[step_index], window, guidance
                )
                v_sum[:, :, start:stop] += v_pred / coverage[:, :, start:stop]
            latents = scheduler.step(v_sum, timestep, latents).prev_sample
            if callback is not None:
                callback(step_index, int(timestep))
        return latents

    # the chunked sampler, one chunk per call (what an engine's render_chunk runs) ----------------
    @torch.inference_mode()
    def denoise_motion_frames_chunk(
        self,
        schedule: ChunkSchedule,
        chunk: ChunkSpec,
        carry: ChunkCarry | None,
        window_conditions: Callable[[int, int], DenoiserConditions],
        guidance: ClassifierFreeGuidance,
        scheduler: DDIMScheduler,
        *,
        latent_size: tuple[int, int],
    ) -> tuple[torch.Tensor, ChunkCarry]:
        """Denoise chunk `chunk` of the motion-frames schedule, continuing from `carry`.

        Returns:
            `(latents, carry)`: float32 latents ``(1, 4, N, h, w)`` of the chunk's ``N`` new frames (on the
            device), and the carry the next chunk needs (see `ChunkSchedule.carry_after`, host arrays).

        Raises:
            EngineFailure: the chunk is not the plan's, or comes without the carry it needs.
        """
        (start, stop), generator, motion_latents = schedule.start_chunk(chunk, carry)
        num_motion = 0 if motion_latents is None else schedule.motion_frames
        latents = self.denoise_chunk(
            stop - start - num_motion,
            window_conditions(start, stop),
            guidance,
            scheduler,
            generator,
            latent_size=latent_size,
            motion_latents=motion_latents,
        )
        return latents[:, :, num_motion:], schedule.carry_after(chunk, latents, generator)

    @torch.inference_mode()
    def overlap_average_latents(
        self,
        schedule: ChunkSchedule,
        window_conditions: Callable[[int, int], DenoiserConditions],
        guidance: ClassifierFreeGuidance,
        scheduler: DDIMScheduler,
        *,
        latent_size: tuple[int, int],
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The whole clip's denoised latents ``(1, 4, L, h, w)`` (float32, device) of the overlap-average
        schedule, from noise seeded with ``schedule.seed`` (or `noise` when given, e.g. the
        reference-compatible noise); chunks decode their frames from them."""
        shape = (1, self.latent_channels, schedule.num_frames, *latent_size)
        if noise is None:
            noise = self.draw_noise(shape, torch.Generator().manual_seed(schedule.seed))
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        return self.denoise_overlap_average(
            noise,
            window_conditions,
            guidance,
            scheduler,
            context_frames=schedule.context_frames,
            motion_frames=schedule.motion_frames,
        )

    # 6. decoding ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor, decode_batch_frames: int = 8) -> npt.NDArray[np.uint8]:
        """Decode ``[1, 4, F, h, w]`` latents to uint8 RGB frames ``(F, H, W, 3)``.

        ``(x / 2 + 0.5).clamp(0, 1) * 255`` truncated to uint8, as the reference writes its video.
        The reference decodes one frame at a time; batching frames only changes kernel rounding.
        The frames stay on the device until all are decoded, then come to the host in one copy.
        """
        frames = []
        per_frame = latents[0].permute(1, 0, 2, 3)  # [F, 4, h, w]
        for first in range(0, per_frame.shape[0], decode_batch_frames):
            batch = per_frame[first : first + decode_batch_frames].to(self.device, self.dtype)
            pixels = self.decode_vae(batch / self.vae.config.scaling_factor)
            pixels = (pixels.float() / 2 + 0.5).clamp(0, 1) * 255
            frames.append(pixels.to(torch.uint8).permute(0, 2, 3, 1))
        return torch.cat(frames).cpu().numpy()

    def decode_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE decoder on ``(N, 4, h, w)`` scaled latents -> ``(N, 3, H, W)`` pixels in [-1, 1]
        (the compiled decoder for the batch size it was compiled at, see `compile_models`)."""
        if self.compiled_decoder is not None and latents.shape[0] == self.compiled_decode_batch:
            return cast(torch.Tensor, self.compiled_decoder(latents))
        sample: torch.Tensor = self.vae.decode(latents).sample
        return sample

    # compile and capture ------------------------------------------------------------------------
    def denoiser_for(self, num_frames: int) -> Callable[..., Any]:
        """The denoiser for a window of `num_frames`: the compiled one at its window length, else eager.

        A job's windows all have the compiled length except (usually) its last, shorter one; that
        one runs eager rather than compiling a new graph inside a job."""
        if self.compiled_denoiser is not None and num_frames == self.compiled_window:
            return self.compiled_denoiser
        return self.denoising_unet

    def use_channels_last(self) -> None:
        """Store the convolution weights of the denoiser and the VAE channels-last (NHWC): the
        layout cuDNN's tensor-core convolutions run in without transposes. Results change only by
        kernel rounding."""
        cast(Any, self.denoising_unet).to(memory_format=torch.channels_last)
        self.vae.to(memory_format=torch.channels_last)

    def compile_models(
        self, window_frames: int, decode_batch_frames: int, *, cuda_graphs: bool = False
    ) -> None:
        """``torch.compile`` the denoiser (for windows of `window_frames`) and the VAE decoder (for
        batches of `decode_batch_frames`) with static shapes; other shapes keep the eager modules.

        Compiling happens at the first call of each, which the engine makes at warm-up, at the
        job's real shapes. Inductor's FX-graph and autotuning caches (on by default, on disk under
        ``TORCHINDUCTOR_CACHE_DIR``) keep the cost off later boots of the same build.

        Args:
            cuda_graphs: capture each compiled graph in a CUDA graph (``mode="reduce-overhead"``):
                the per-kernel launch cost goes away; inputs are copied into static buffers.
        """
        mode = "reduce-overhead" if cuda_graphs else "max-autotune-no-cudagraphs"
        self.compiled_denoiser = torch.compile(self.denoising_unet, mode=mode, dynamic=False, fullgraph=False)
        self.compiled_window = window_frames
        vae = self.vae

        def decode(latents: torch.Tensor) -> torch.Tensor:
            sample: torch.Tensor = vae.decode(latents).sample
            return sample

        self.compiled_decoder = torch.compile(decode, mode=mode, dynamic=False)
        self.compiled_decode_batch = decode_batch_frames

    # the whole story, for one clip in one call ------------------------------------------------
    def check_inputs(
        self, image: npt.NDArray[np.uint8], num_frames: int, context_frames: int, motion_frames: int
    ) -> None:
        """Raise ``ValueError`` for an image not a multiple of the VAE's scale, a clip without frames,
        or window options out of range (see ``models.sd.sampler.check_window_options``)."""
        height, width = image.shape[:2]
        scale = self.vae_scale_factor
        if height % scale or width % scale:
            raise ValueError(f"image height and width must be multiples of {scale}, got {height}x{width}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        check_window_options(context_frames, motion_frames, self.max_context_frames)

    def __call__(
        self,
        image: npt.NDArray[np.uint8],
        num_frames: int,
        window_conditions: WindowConditionsPlug,
        *,
        num_inference_steps: int = 25,
        guidance: ClassifierFreeGuidance | None = None,
        context_frames: int = 24,
        motion_frames: int = 4,
        continuity: Continuity = "motion_frames",
        generator: torch.Generator | None = None,
        decode_batch_frames: int = 8,
        callback: StepCallback | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Render a whole clip: ``(num_frames, H, W, 3)`` uint8 frames.

        Args:
            image (`np.ndarray` of shape `(H, W, 3)`): the portrait, uint8 RGB, H and W multiples of 8.
            num_frames: frames of the clip.
            window_conditions: the engine's plug, ``(reference_bank, start, stop) -> conditions`` of
                frames ``[start, stop)``, batched for `guidance`.
            continuity: ``motion_frames`` (windows rendered one after another, see ``denoise_window``)
                or ``overlap_average`` (the reference schedule, see ``denoise_overlap_average``).
            generator: CPU generator for the initial noise; seed 0 when not given.
        """
        # 1. Check inputs
        self.check_inputs(image, num_frames, context_frames, motion_frames)
        guidance = guidance or ClassifierFreeGuidance()
        generator = generator or torch.Generator().manual_seed(0)
        height, width = image.shape[:2]
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        # 2. Reference latents and the ReferenceNet bank, once
        bank = [] if self.reference_net is None else self.reference_bank(self.encode_reference(image))

        # 3. Per-window conditions, from the engine's plug
        def conditions(start: int, stop: int) -> DenoiserConditions:
            return window_conditions(bank, start, stop)

        # 4. Scheduler
        scheduler = self.make_scheduler(num_inference_steps)
        # 5. Denoise (initial noise drawn inside), 6. decode
        if continuity == "overlap_average":
            noise = self.draw_noise((1, self.latent_channels, num_frames, *latent_size), generator)
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
                latent_size=latent_size,
                motion_latents=motion_latents,
                callback=callback,
            )
            frames.append(self.decode_latents(latents[:, :, num_motion:], decode_batch_frames))
            motion_latents = latents[:, :, latents.shape[2] - motion_frames :] if motion_frames else None
        return np.concatenate(frames)


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
