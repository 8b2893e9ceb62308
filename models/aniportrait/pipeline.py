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
