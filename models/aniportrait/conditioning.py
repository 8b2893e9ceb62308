"""The L2V conditions of a window: the CLIP image token of the portrait, the pose guider's maps of the
window's landmark images and the reference bank, batched for classifier-free guidance the way the
reference does it (zeros CLIP token for the unconditional half; its frames skip the bank).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from models.aniportrait.configs import CLIP_IMAGE_SIZE
from models.aniportrait.guider import PoseGuider


@torch.inference_mode()
def clip_image_tokens(image_encoder: Any, image_processor: Any, image: npt.NDArray[np.uint8]) -> torch.Tensor:
    r"""The portrait's CLIP image embedding as one cross-attention token.

    Args:
        image_encoder: transformers ``CLIPVisionModelWithProjection`` (sd-image-variations' ``image_encoder``).
        image_processor: transformers ``CLIPImageProcessor`` with its defaults (what the reference builds).
        image (`np.ndarray` of shape `(H, W, 3)`): uint8 RGB portrait.

    Returns:
        `torch.Tensor` of shape `(1, 1, projection_dim)` on the encoder's device and dtype.
    """
    # The reference resizes to 224 x 224 with PIL's default (bicubic) before the processor's own
    # resize and centre crop, so the whole portrait is seen, squashed, not a centre crop of it.
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE))
    pixel_values = image_processor.preprocess(resized, return_tensors="pt").pixel_values
    parameter = next(image_encoder.parameters())
    embeds: torch.Tensor = image_encoder(pixel_values.to(parameter.device, parameter.dtype)).image_embeds
    return embeds.unsqueeze(1)


def guider_input(
    pose_images: npt.NDArray[np.uint8], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    r"""Landmark images as the guider was fed them: ``2 * pixel - 1`` on 0..255 pixels.

    Args:
        pose_images (`np.ndarray` of shape `(F, H, W, 3)`): from ``landmarks.draw_landmarks``.

    Returns:
        `torch.Tensor` of shape `(1, 3, F, H, W)`.
    """
    if pose_images.ndim != 4 or pose_images.shape[3] != 3 or pose_images.dtype != np.uint8:
        raise ValueError(
            f"pose_images must be uint8 (F, H, W, 3), got {pose_images.dtype} {pose_images.shape}"
        )
    pixels = torch.from_numpy(np.ascontiguousarray(pose_images)).permute(3, 0, 1, 2)[None].float()
    return (pixels * 2.0 - 1.0).to(device, dtype)


@dataclass
class AniPortraitWindowConditions:
    """Keyword arguments of [`~models.aniportrait.unet.AniPortraitUNet3D`] for one window, batched
    ``[unconditional; conditional]`` when `unconditional_samples` is 1."""

    encoder_hidden_states: torch.Tensor
    reference_hidden_states: list[torch.Tensor]
    pose_features: list[torch.Tensor]
    unconditional_samples: int

    def denoiser_kwargs(self) -> dict[str, Any]:
        return {
            "encoder_hidden_states": self.encoder_hidden_states,
            "reference_hidden_states": self.reference_hidden_states,
            "pose_features": self.pose_features,
            "unconditional_samples": self.unconditional_samples,
        }


@torch.inference_mode()
def window_conditions(
    pose_guider: PoseGuider,
    clip_tokens: torch.Tensor,
    bank: Sequence[torch.Tensor],
    pose_images: npt.NDArray[np.uint8],
    *,
    guidance: bool,
) -> AniPortraitWindowConditions:
    r"""The conditions of one window.

    Args:
        pose_guider: the loaded guider.
        clip_tokens (`torch.Tensor` of shape `(1, 1, D)`): from `clip_image_tokens`.
        bank (list of `torch.Tensor` of shape `(1, L_i, C_i)`): the ReferenceNet's, computed with
            `clip_tokens` as its context (the unconditional half never reads it, so it is not recomputed
            for the zeros context).
        pose_images (`np.ndarray` of shape `(F, H, W, 3)`): the window's landmark images.
        guidance: batch ``[unconditional; conditional]`` for classifier-free guidance.
    """
    parameter = next(pose_guider.parameters())
    features = pose_guider(guider_input(pose_images, parameter.device, parameter.dtype))
    if not guidance:
        return AniPortraitWindowConditions(clip_tokens, list(bank), features, 0)
    return AniPortraitWindowConditions(
        encoder_hidden_states=torch.cat([torch.zeros_like(clip_tokens), clip_tokens]),
        reference_hidden_states=[torch.cat([entry, entry]) for entry in bank],
        pose_features=[torch.cat([feature, feature]) for feature in features],
        unconditional_samples=1,
    )
