"""AniPortrait's L2V sampling on the skeleton's pipeline steps (``models.sd.pipeline.SDVideoPipeline``).

The steps are the skeleton's (reference latents, bank, noise, overlap-averaged windows, decode); what
is AniPortrait's: the scheduler configuration, the bank computed with the CLIP token as the
ReferenceNet's context, and the per-window conditions (``conditioning.window_conditions``). The
reference's window order ("uniform" context schedule) is not reproduced yet; see docs/aniportrait.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.aniportrait.conditioning import window_conditions
from models.aniportrait.configs import CONTEXT_FRAMES, CONTEXT_OVERLAP, DEFAULT_GUIDANCE, DEFAULT_STEPS
from models.aniportrait.guider import PoseGuider
from models.sd.pipeline import ClassifierFreeGuidance, DenoiserConditions, SDVideoPipeline


def aniportrait_scheduler_config() -> dict[str, Any]:
    """``inference_v2.yaml``'s DDIM: SD's *linear* betas (not "scaled_linear") rescaled to zero terminal
    SNR, v-prediction, trailing timesteps."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "linear",
        "rescale_betas_zero_snr": True,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
        "steps_offset": 1,
        "clip_sample": False,
    }


@torch.inference_mode()
def render_clip(
    pipeline: SDVideoPipeline,
    pose_guider: PoseGuider,
    image: npt.NDArray[np.uint8],
    clip_tokens: torch.Tensor,
    pose_images: npt.NDArray[np.uint8],
    *,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    context_frames: int = CONTEXT_FRAMES,
    context_overlap: int = CONTEXT_OVERLAP,
    generator: torch.Generator | None = None,
) -> npt.NDArray[np.uint8]:
    r"""Render a whole clip in one call (overlap-averaged windows: memory grows with the clip).

    Args:
        pipeline: built with the AniPortrait ReferenceNet and denoiser and `aniportrait_scheduler_config()`.
        image (`np.ndarray` of shape `(H, W, 3)`): uint8 RGB portrait, sides multiples of 64.
        clip_tokens (`torch.Tensor` of shape `(1, 1, D)`): ``conditioning.clip_image_tokens`` of the portrait.
        pose_images (`np.ndarray` of shape `(L, H, W, 3)`): landmark images of every frame.

    Returns:
        `np.ndarray` of shape `(L, H, W, 3)`: uint8 RGB frames.
    """
    num_frames = pose_images.shape[0]
    # 1. Check inputs
    pipeline.check_inputs(image, num_frames, context_frames, context_overlap)
    if pose_images.shape[1:3] != image.shape[:2]:
        raise ValueError(f"pose images are {pose_images.shape[1:3]}, the portrait {image.shape[:2]}")
    guidance = ClassifierFreeGuidance(guidance_scale)
    generator = generator or torch.Generator().manual_seed(0)
    # 2. Reference latents and bank (CLIP token as the ReferenceNet's context)
    reference_latents = pipeline.encode_reference(image)
    bank = pipeline.reference_bank(reference_latents, clip_tokens.to(pipeline.device, pipeline.dtype))

    # 3. Per-window conditions, built when a window is denoised
    def conditions(start: int, stop: int) -> DenoiserConditions:
        return window_conditions(
            pose_guider,
            clip_tokens,
            bank,
            pose_images[start:stop],
            guidance=guidance.do_classifier_free_guidance,
        )

    # 4. Scheduler, 5. noise and denoising, 6. decode
    scheduler = pipeline.make_scheduler(num_inference_steps)
    latent_size = (image.shape[0] // pipeline.vae_scale_factor, image.shape[1] // pipeline.vae_scale_factor)
    noise = pipeline.draw_noise((1, pipeline.latent_channels, num_frames, *latent_size), generator)
    latents = pipeline.denoise_overlap_average(
        noise, conditions, guidance, scheduler, context_frames=context_frames, motion_frames=context_overlap
    )
    return pipeline.decode_latents(latents)


def uniform_windows(num_frames: int, context_frames: int, context_overlap: int) -> list[list[int]]:
    """The reference's "uniform" context schedule as ``Pose2VideoPipeline`` uses it (step 0, stride 1,
    closed loop): windows of `context_frames` starting every ``context_frames - context_overlap``
    frames, the last ones wrapping around to the clip's first frames; one window of every frame when
    the clip is no longer than `context_frames`."""
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    stride = context_frames - context_overlap
    if stride < 1:
        raise ValueError(
            f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames})"
        )
    return [
        [frame % num_frames for frame in range(start, start + context_frames)]
        for start in range(0, num_frames, stride)
    ]


@torch.inference_mode()
def denoise_uniform(
    pipeline: SDVideoPipeline,
    pose_guider: PoseGuider,
    clip_tokens: torch.Tensor,
    bank: list[torch.Tensor],
    pose_images: npt.NDArray[np.uint8],
    noise: torch.Tensor,
    *,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    context_frames: int = CONTEXT_FRAMES,
    context_overlap: int = CONTEXT_OVERLAP,
) -> torch.Tensor:
    r"""The reference sampler (``Pose2VideoPipeline.__call__``): at every step, the guided ``v`` of
    every `uniform_windows` window, averaged per frame over the windows that hold it, then one DDIM
    step of the whole clip. Needs the whole clip's latents and every window's guider maps in memory.

    Args:
        noise (`torch.Tensor` of shape `(1, 4, L, h, w)`): float32 initial latents.
        pose_images (`np.ndarray` of shape `(L, H, W, 3)`): the landmark images of every frame.

    Returns:
        `torch.Tensor` of shape `(1, 4, L, h, w)`: float32 denoised latents, on the model's device.
    """
    guidance = ClassifierFreeGuidance(guidance_scale)
    latents = noise.to(pipeline.device, torch.float32, copy=True)
    num_frames = latents.shape[2]
    windows = uniform_windows(num_frames, context_frames, context_overlap)
    counter = torch.zeros(num_frames, device=pipeline.device)
    for window in windows:
        counter[window] += 1  # a window never holds a frame twice (context_frames < num_frames)
    counter = counter.view(1, 1, num_frames, 1, 1)
    conditions = [
        window_conditions(
            pose_guider, clip_tokens, bank, pose_images[window],
            guidance=guidance.do_classifier_free_guidance,
        )
        for window in windows
    ]  # fmt: skip
    scheduler = pipeline.make_scheduler(num_inference_steps)
    device_timesteps = scheduler.timesteps.to(pipeline.device)
    for step_index, timestep in enumerate(scheduler.timesteps):
        v_sum = torch.zeros_like(latents)
        for window, window_condition in zip(windows, conditions, strict=True):
            v_sum[:, :, window] += pipeline.predict_v(
                latents[:, :, window], device_timesteps[step_index], window_condition, guidance
            )
        latents = scheduler.step(v_sum / counter, timestep, latents).prev_sample
    return latents


@torch.inference_mode()
def render_clip_reference(
    pipeline: SDVideoPipeline,
    pose_guider: PoseGuider,
    image: npt.NDArray[np.uint8],
    clip_tokens: torch.Tensor,
    pose_images: npt.NDArray[np.uint8],
    *,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    context_frames: int = CONTEXT_FRAMES,
    context_overlap: int = CONTEXT_OVERLAP,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""A whole clip the reference's way: its noise (``(1, 4, L, h, w)`` drawn at once from `generator`),
    its bank, its `uniform_windows` sampler (`denoise_uniform`).

    Returns:
        `torch.Tensor` of shape `(1, 4, L, h, w)`: float32 denoised latents (decode them with
        ``pipeline.decode_latents``).
    """
    num_frames = pose_images.shape[0]
    if pose_images.shape[1:3] != image.shape[:2]:
        raise ValueError(f"pose images are {pose_images.shape[1:3]}, the portrait {image.shape[:2]}")
    generator = generator or torch.Generator().manual_seed(0)
    tokens = clip_tokens.to(pipeline.device, pipeline.dtype)
    bank = pipeline.reference_bank(pipeline.encode_reference(image), tokens)
    latent_size = (image.shape[0] // pipeline.vae_scale_factor, image.shape[1] // pipeline.vae_scale_factor)
    noise = pipeline.draw_noise((1, pipeline.latent_channels, num_frames, *latent_size), generator)
    return denoise_uniform(
        pipeline, pose_guider, tokens, bank, pose_images, noise,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        context_frames=context_frames, context_overlap=context_overlap,
    )  # fmt: skip
