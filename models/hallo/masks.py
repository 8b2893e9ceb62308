"""Hallo's face-region, face and lip masks from a face mesh (the reference's ``get_mask`` and
``ImageProcessor.preprocess``), from our MediaPipe landmarks (``models.face.Face.landmarks``, the same
478-point mesh the reference reads with MediaPipe's face landmarker).

- face box: the bounds of the silhouette landmarks, grown by `face_expand_ratio` about its centre
  (shifted back inside the image); lip box: the lip landmarks' bounds grown by 2;
- both resized to 64x64, Gaussian-blurred (face 51x51, lip 31x31), min-max normalised to 0..255;
- full (pose) = 1 - blurred face (as the reference, in floats, truncated to uint8), face = blurred face
  - blurred lip (saturating), lip = blurred lip;
- per attention level, each resized (bilinear, PIL) to the level's latent size and scaled to [0, 1];
- the face locator's input is the sharp face box at image size, as RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

SILHOUETTE_IDS = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375)
LIP_EXPAND_RATIO = 2.0
BLUR_SIZE = 64


@dataclass(frozen=True)
class HalloMasks:
    """Attributes:
    face_region: float32 `(3, H, W)` in [0, 1]: the face locator's input.
    levels: per attention level, float32 `(full, face, lip)` each `(h_l * w_l,)` in [0, 1].
    """

    face_region: npt.NDArray[np.float32]
    levels: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]]


def expand_region(
    box: tuple[float, float, float, float], width: int, height: int, ratio: float
) -> tuple[int, int, int, int]:
    """The reference's ``expand_region``: `(min_x, max_x, min_y, max_y)` grown by `ratio` about its
    centre (floor-divided as the reference), shifted back inside the image."""
    min_x, max_x, min_y, max_y = box
    mid_x, mid_y = (max_x + min_x) // 2, (max_y + min_y) // 2
    half_x, half_y = ((max_x - min_x) * ratio) // 2, ((max_y - min_y) * ratio) // 2
    min_x, max_x, min_y, max_y = mid_x - half_x, mid_x + half_x, mid_y - half_y, mid_y + half_y
    if min_x < 0:
        max_x, min_x = max_x - min_x, 0
    if max_x > width:
        min_x, max_x = min_x - (max_x - width), width
    if min_y < 0:
        max_y, min_y = max_y - min_y, 0
    if max_y > height:
        min_y, max_y = min_y - (max_y - height), height
    return round(min_x), round(max_x), round(min_y), round(max_y)


def invert_mask(mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The reference's ``get_background_mask``: ``(1 - x / 255) * 255`` in floats, truncated to uint8;
    not ``255 - x``: the two differ by one for 50 of the 256 values (43 -> 211, not 212)."""
    return ((1.0 - mask / 255.0) * 255).astype(np.uint8)


def _box_mask(
    points: npt.NDArray[np.float32], width: int, height: int, ratio: float
) -> npt.NDArray[np.uint8]:
    low, high = np.round(points.min(axis=0)), np.round(points.max(axis=0))
    min_x, max_x, min_y, max_y = expand_region((low[0], high[0], low[1], high[1]), width, height, ratio)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[min_y:max_y, min_x:max_x] = 255
    return mask


def _blur(mask: npt.NDArray[np.uint8], kernel: int) -> npt.NDArray[np.uint8]:
    import cv2

    blurred = cv2.GaussianBlur(cv2.resize(mask, (BLUR_SIZE, BLUR_SIZE)), (kernel, kernel), 0)
    return np.asarray(cv2.normalize(blurred, np.empty_like(blurred), 0, 255, cv2.NORM_MINMAX), dtype=np.uint8)


def _resized(mask: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    image = Image.fromarray(mask).resize(size, Image.Resampling.BILINEAR)
    return (np.asarray(image, dtype=np.float32) / 255.0).reshape(-1)


def hallo_masks(
    landmarks: npt.NDArray[np.float32],
    image_size: tuple[int, int],
    face_expand_ratio: float,
    level_sizes: list[tuple[int, int]],
) -> HalloMasks:
    """The masks for one portrait.

    Args:
        landmarks: `(478, 2+)` mesh points in pixels of the portrait (x, y first).
        image_size: `(width, height)` of the portrait (the model size).
        face_expand_ratio: Growth of the face box.
        level_sizes: `(width, height)` of each attention level's latent map (512: 64, 32, 16, 8).

    Raises:
        ValueError: fewer than 478 landmarks.
    """
    if landmarks.ndim != 2 or landmarks.shape[0] < 478:
        raise ValueError(f"landmarks must be (478, 2+), got {landmarks.shape}")
    width, height = image_size
    points = landmarks[:, :2].astype(np.float32)
    face_box = _box_mask(points[list(SILHOUETTE_IDS)], width, height, face_expand_ratio)
    lip_box = _box_mask(points[list(LIP_IDS)], width, height, LIP_EXPAND_RATIO)
    face_blur, lip_blur = _blur(face_box, 51), _blur(lip_box, 31)
    full = invert_mask(face_blur)
    face = np.clip(face_blur.astype(np.int16) - lip_blur.astype(np.int16), 0, 255).astype(np.uint8)
    levels = [(_resized(full, size), _resized(face, size), _resized(lip_blur, size)) for size in level_sizes]
    region = np.repeat(face_box[None].astype(np.float32) / 255.0, 3, axis=0)
    return HalloMasks(face_region=region, levels=levels)
