"""The V-Express script's framing: the whole portrait resized to ``width x height``.

Parla's own framing is a square face crop (``models.face.crop_around_face``). The script instead
resizes the whole portrait, without keeping its aspect ratio, in two steps: PIL's
``image.resize((image_height, image_width))`` (bicubic; PIL takes ``(width, height)``, so the
first step produces a ``image_width`` high, ``image_height`` wide image), then diffusers'
``VaeImageProcessor.preprocess(height=image_height, width=image_width)`` (a Lanczos resize to
``width x height``). For a square frame the second step is a copy. Its keypoints come from a face
detection in ``cv2.resize(image, (width, height))`` (bilinear), and are drawn on a
``height x width`` canvas.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image


def reference_portrait(image: npt.NDArray[np.uint8], height: int, width: int) -> npt.NDArray[np.uint8]:
    """The portrait as the script's reference net sees it: ``(height, width, 3)`` uint8 RGB.

    Args:
        image (`np.ndarray` of shape `(H, W, 3)`): uint8 RGB, any size.
    """
    portrait = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    portrait = portrait.resize((height, width), Image.Resampling.BICUBIC)  # the script's swapped sides
    if portrait.size != (width, height):
        portrait = portrait.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(portrait, dtype=np.uint8).copy()


def detection_image(image: npt.NDArray[np.uint8], height: int, width: int) -> npt.NDArray[np.uint8]:
    """The image the script detects the portrait's keypoints in: a bilinear resize to ``width x height``."""
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(resized, dtype=np.uint8)
