"""The person matte of the warp engine: the background stays still while the head moves over it.

The rig's control points outside the face (the ring around the head, the crop border) cannot tell
hair from the wall behind it, so the head's sway drags the background next to it along (a flag's
stars and poles slide with the head). Confining the warp itself to the person does not work where
the face contour is the person's outline (a cheek against the wall): the face would be squeezed and
fold. So the person is cut out instead and laid over a still background:

- at ``prepare``: a person mask (mediapipe selfie segmentation, whose model ships in the wheel,
  joined with the face mesh's hull), its soft alpha (1 on the mask, falling to 0 over a couple of
  pixels outside it), and a background plate: the crop with a band just inside the person's outline
  filled from the surroundings (``cv2.inpaint``), for what the head uncovers when it moves;
- per frame: the alpha is warped with the same map as the portrait, and the warped portrait is
  blended over the plate with it.

At rest this gives the crop back exactly (the plate equals the crop wherever the alpha is below 1),
and outside the moving person's alpha the frame is the crop, pixel for pixel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

UNCOVER = 0.04
"""Depth of the band inside the outline that the plate fills, as a fraction of the crop side (the
outline moves less than this even at ``head_motion = 1``)."""
GROW = 0.006
"""The mask is grown by this fraction of the crop side before use: segmentation stops a little short
of fine hair, and a fringe left on the plate would show as a ghost outline when the head moves."""
FEATHER = 1.5
"""Width in pixels over which the alpha falls from 1 to 0 outside the mask (at 512 px; scaled)."""
PERSON_THRESHOLD = 0.5
"""Segmentation confidence above which a pixel is the person."""


def remap(image: np.ndarray, sample_map: np.ndarray) -> np.ndarray:
    """``image`` sampled (bilinear, edges replicated) at ``sample_map`` (float32 ``(H, W, 2)`` x, y)."""
    result: np.ndarray = cv2.remap(  # type: ignore[call-overload]  # the stubs lack map2=None
        image, sample_map, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return result


class PersonSegmenter(Protocol):
    """Anything that gives a person mask of an RGB image."""

    def person_mask(self, image: np.ndarray) -> np.ndarray:
        """bool ``(H, W)`` of uint8 RGB ``(H, W, 3)``."""
        ...


class MediaPipeSegmenter:
    """mediapipe selfie segmentation (general model), built on first use, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graph: Any = None

    def person_mask(self, image: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._graph is None:
                from mediapipe.python.solutions import selfie_segmentation

                self._graph = selfie_segmentation.SelfieSegmentation(model_selection=0)
            result = self._graph.process(np.ascontiguousarray(image))
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(image.shape[:2], bool)
        return np.asarray(mask) > PERSON_THRESHOLD


def person_mask(person: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """bool ``(S, S)``: ``person`` joined with the face mesh's hull, the part connected to the face.

    Args:
        person: bool ``(S, S)`` from a segmenter (or any mask): the face always counts, whatever the
            segmentation says.
        landmarks: ``(478, >=2)`` face mesh in crop pixels.
    """
    size = person.shape[0]
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    hull = cv2.convexHull(np.round(xy).astype(np.int32))
    face = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(face, hull, (1,))
    mask = (person | (face > 0)).astype(np.uint8)
    count, labels = cv2.connectedComponents(mask)
    if count > 2:  # drop stray blobs on the background
        touching = np.unique(labels[(face > 0) & (mask > 0)])
        mask = np.isin(labels, touching[touching > 0]).astype(np.uint8)
    result: np.ndarray = mask > 0
    return result


@dataclass
class Matte:
    """Soft person alpha float32 ``(S, S)`` and the background plate uint8 ``(S, S, 3)``."""

    alpha: np.ndarray
    plate: np.ndarray
    _source: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def composite(self, crop: np.ndarray, sample_map: np.ndarray) -> np.ndarray:
        """The crop warped by ``sample_map`` (float32 ``(S, S, 2)``, where each output pixel samples)
        over the plate, through the alpha warped the same way; uint8 ``(S, S, 3)``.

        The alpha rides along as the crop's fourth channel, so one ``remap`` warps both.
        """
        if self._source is None or self._source[0] is not crop:
            alpha = np.round(self.alpha * 255).astype(np.uint8)
            self._source = (crop, np.ascontiguousarray(np.dstack([crop, alpha])))
        warped = remap(self._source[1], sample_map)
        weight = warped[..., 3].astype(np.float32) * np.float32(1 / 255)
        rgb = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
        result: np.ndarray = cv2.blendLinear(rgb, self.plate, weight, 1.0 - weight)
        return result


def build_matte(crop: np.ndarray, mask: np.ndarray) -> Matte:
    """The alpha and the plate of a crop (uint8 ``(S, S, 3)``) and its person mask (bool ``(S, S)``)."""
    size = crop.shape[0]
    grow = max(1.0, GROW * size)
    mask = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5) <= grow
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    feather = max(1.0, FEATHER * size / 512)
    alpha = np.clip(1.0 - distance / feather, 0.0, 1.0).astype(np.float32)
    # The band the moving outline may uncover: inside the mask, near its outline (not along the crop
    # border, which the person does not leave).
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    inside = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    band = (mask & (inside <= max(2.0, UNCOVER * size))).astype(np.uint8)
    plate = cv2.inpaint(crop, band, max(3.0, size / 128), cv2.INPAINT_TELEA) if band.any() else crop.copy()
    return Matte(alpha=alpha, plate=plate)
