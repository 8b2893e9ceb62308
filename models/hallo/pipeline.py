"""Hallo's sampling of one clip and its continuation (the reference's ``FaceAnimatePipeline.__call__``
and the clip loop of ``scripts/inference.py``).

One clip: the identity tokens (ArcFace embedding through the image projection; CFG's unconditional
tokens are the projection of zeros), the ReferenceNet bank over ``[reference image, motion frames]``
(computed once per clip, with the reference's token tiling), the face locator's features (zeros for
the unconditional half), the projected audio tokens (zeros for the unconditional half), DDIM with
CFG, then a per-frame VAE decode to floats in [0, 1]. The next clip's motion frames are the last
``motion_frames`` decoded frames (floats, ``* 2 - 1``); the first clip's are the reference image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.hallo.checkpoint import HalloModules
from models.hallo.modules import AudioMasks
from models.sd.scheduler import build_ddim_scheduler

LATENT_SCALE = 0.18215


@dataclass(frozen=True)
class ClipInputs:
    """What one clip needs besides its noise.

    Attributes:
        reference_pixels: `(1 + M, 3, H, W)` in [-1, 1]: the portrait, then the `M` motion frames.
        identity_embedding: `(1, clip_embeddings_dim)`: the ArcFace embedding.
        face_mask: `(1, 3, H, W)` in [0, 1]: the face-region mask image.
        audio_features: `(1, F, window, layers, channels)`: the wav2vec2 windows of the clip's frames.
        audio_masks: Per level `(full, face, lip)`, each `(1, h_l * w_l)`.
    """

    reference_pixels: torch.Tensor
    identity_embedding: torch.Tensor
    face_mask: torch.Tensor
    audio_features: torch.Tensor
    audio_masks: AudioMasks


@torch.no_grad()
def sample_clip(
    modules: HalloModules,
    vae: Any,
    scheduler_config: Mapping[str, Any],
    inputs: ClipInputs,
    *,
    num_inference_steps: int,
    guidance_scale: float,
    motion_scale: Sequence[float] | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """One clip of `F` frames (`F` = the audio features' frames).

    Returns:
        `torch.Tensor` of shape `(F, 3, H, W)`: floats in [0, 1].
    """
    cfg = guidance_scale > 1.0
    denoiser = modules.denoising_unet
    dtype = next(denoiser.parameters()).dtype
    device = next(denoiser.parameters()).device
    rows, _, height, width = inputs.reference_pixels.shape
    num_frames = inputs.audio_features.shape[1]
    scheduler = build_ddim_scheduler(scheduler_config, num_inference_steps)

    embedding = inputs.identity_embedding.to(device, dtype)
    tokens = modules.imageproj(embedding)
    face = modules.face_locator(inputs.face_mask.to(device, dtype))
    audio = modules.audioproj(inputs.audio_features.to(device, dtype))
    masks = [tuple(mask.to(device, dtype) for mask in level) for level in inputs.audio_masks]
    if cfg:
        tokens = torch.cat([modules.imageproj(torch.zeros_like(embedding)), tokens])
        face = torch.cat([torch.zeros_like(face), face])
        audio = torch.cat([torch.zeros_like(audio), audio])
        masks = [tuple(torch.cat([mask, mask]) for mask in level) for level in masks]
    batch = 2 if cfg else 1

    shape = (1, denoiser.config["in_channels"], num_frames, height // 8, width // 8)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
    latents = latents * scheduler.init_noise_sigma
    reference = vae.encode(inputs.reference_pixels.to(device, vae.dtype)).latent_dist.mean * LATENT_SCALE
    bank = modules.reference_unet(reference.to(dtype).repeat(batch, 1, 1, 1), 0, tokens.repeat(rows, 1, 1))

    for timestep in scheduler.timesteps:
        model_input = torch.cat([latents] * batch)
        model_input = scheduler.scale_model_input(model_input, timestep)
        prediction = denoiser(
            model_input,
            timestep,
            tokens,
            bank,
            audio,
            masks,
            face_features=face,
            reference_rows=rows,
            unconditional_samples=1 if cfg else 0,
            motion_scale=motion_scale,
        )
        if cfg:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(prediction, timestep, latents, eta=0.0, return_dict=False)[0]

    frames = latents[0].transpose(0, 1) / LATENT_SCALE
    decoded = torch.cat([vae.decode(frame[None].to(vae.dtype)).sample for frame in frames])
    return (decoded / 2 + 0.5).clamp(0, 1).float()


def next_reference_pixels(
    portrait: torch.Tensor, previous_clip: torch.Tensor | None, motion_frames: int
) -> torch.Tensor:
    """`(1 + motion_frames, 3, H, W)`: the portrait `(1, 3, H, W)` in [-1, 1], then the last
    `motion_frames` frames of the previous clip (`(F, 3, H, W)` in [0, 1]) or, for the first clip,
    the portrait repeated."""
    if previous_clip is None:
        motion = portrait.repeat(motion_frames, 1, 1, 1)
    else:
        motion = previous_clip[previous_clip.shape[0] - motion_frames :] * 2.0 - 1.0
    return torch.cat([portrait, motion.to(portrait.dtype)])
