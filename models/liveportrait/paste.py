"""Paste-back of the rendered crop into the photo (``framing="full"``), with the reference's mask.

The reference (``src/utils/crop.py``: ``prepare_paste_back``, ``paste_back``) warps a 512-pixel mask
image (``src/utils/resources/mask_template.png``) and the rendered crop into the photo with the crop
-> photo affine (bilinear) and blends ``clip(mask * render + (1 - mask) * photo)``, truncated to uint8.
Its mask image is reference data and is not used here; measured, it is not face-shaped but a
feathered square: 1 on the inner square ``[16, 496]`` of the 512-pixel crop, falling linearly to 0
over the 16 pixels (1/32 of the side) outside it, with corners rounded by the same ramp on the
distance to the inner square. `crop_mask` computes that shape for any crop side; on 512 pixels it
matches the image to its 8-bit quantisation (docs/liveportrait.md, "Paste-back").
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from models.face import PASTE_MAX_SIDE, PasteBack

FloatArray = npt.NDArray[np.float32]
MASK_RAMP_FRACTION = 1 / 32
"""Width of the mask's ramp as a fraction of the crop side (16 of 512 pixels in the reference)."""


def crop_mask(size: int, ramp_fraction: float = MASK_RAMP_FRACTION) -> FloatArray:
    """The paste-back mask on the crop, ``(size, size)`` float32 in [0, 1].

    Pixel ``x`` (0-based) is ``x`` pixels from the left edge and ``size - x`` from the right (so is
    the reference's image: 0 at the first column, 1/16 at the last); the mask is
    ``1 - distance to the inner square / ramp``, clipped, with ``ramp = ramp_fraction * size``.
    """
    if size < 1 or not 0 < ramp_fraction < 0.5:
        raise ValueError(f"size must be >= 1 and ramp_fraction in (0, 0.5), got {size}, {ramp_fraction}")
    ramp = ramp_fraction * size
    index = np.arange(size, dtype=np.float64)
    outside = np.maximum(ramp - index, 0.0) + np.maximum(index - (size - ramp), 0.0)
    distance = np.hypot(outside[:, None], outside[None, :])
    mask: FloatArray = np.clip(1.0 - distance / ramp, 0.0, 1.0).astype(np.float32)
    return mask


class LivePortraitPasteBack(PasteBack):
    """`models.face.PasteBack`'s geometry (the output scaled to ``max_side``, only the crop's footprint
    touched) with the reference's mask (`crop_mask`) and blend (truncation to uint8).

    Args:
        original: uint8 ``(H, W, 3)`` photo.
        crop_size: side of the rendered crops.
        matrix: ``(2, 3)`` photo -> crop affine of the crop.
        max_side: longer side of the output.
    """

    def __init__(
        self,
        original: npt.NDArray[np.uint8],
        crop_size: int,
        matrix: npt.NDArray[np.float64],
        max_side: int = PASTE_MAX_SIDE,
    ) -> None:
        super().__init__(original, crop_size, matrix, max_side)
        rx0, ry0, rx1, ry1 = self.roi
        self.mask = crop_mask(crop_size)
        self.alpha = cv2.warpAffine(
            self.mask, self.roi_matrix, (max(1, rx1 - rx0), max(1, ry1 - ry0)), flags=cv2.INTER_LINEAR
        )[..., None]

    def __call__(self, crop_frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """``(F, size, size, 3)`` uint8 crops -> ``(F, height, width, 3)`` uint8 frames."""
        rx0, ry0, rx1, ry1 = self.roi
        out = np.repeat(self.background[None], len(crop_frames), axis=0)
        if rx1 <= rx0 or ry1 <= ry0:
            return out
        base = self.background[ry0:ry1, rx0:rx1].astype(np.float32)
        keep = (1.0 - self.alpha) * base
        for i, crop in enumerate(crop_frames):
            warped = cv2.warpAffine(crop, self.roi_matrix, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR)
            blended = self.alpha * warped.astype(np.float32) + keep
            out[i, ry0:ry1, rx0:rx1] = np.clip(blended, 0, 255).astype(np.uint8)
        return out
