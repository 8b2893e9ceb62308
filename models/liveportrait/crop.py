"""The LivePortrait face crop from our MediaPipe mesh, and the eye/lip close ratios.

The reference crops with its own 203-point landmark model (``src/utils/crop.py``,
``parse_rect_from_landmark``): the crop's vertical axis runs from the eye centre to the lip centre
(so the crop is rotated to cancel head roll), its side is ``scale`` times the larger side of the
landmarks' bounding box in that rotated frame, and its centre is moved by ``vy_ratio * side`` along
the axis (up for negative values). Source crops use ``scale=2.3, vy_ratio=-0.125`` (``CropConfig``),
driving crops ``scale=2.2, vy_ratio=-0.1``.

We compute the same construction from MediaPipe's 478-point mesh, on the subset of its points that
covers what the 203-point model covers (brows, eyes, nose, lips, jaw line; MediaPipe's forehead
points are left out, since the 203-point contour stops at the brows). The eye centres are the means of
the lid and corner points, the lip centre the midpoint of the mouth corners, as the reference takes
them from its own points. The boxes of the two point sets are not identical, so crops differ from the
reference's by a few percent in scale and offset (see docs/liveportrait.md).

Ratios (``src/utils/retargeting_utils.py``): eye close ratio = eyelid gap / eye width per eye, lip
close ratio = inner lip gap / mouth width, from the corresponding MediaPipe points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from models.face import EYE_LIDS, INNER_LIP_BOTTOM, INNER_LIP_TOP, MOUTH_CORNERS, Face, FaceCrop

SOURCE_SCALE, SOURCE_VY_RATIO = 2.3, -0.125
DRIVING_SCALE, DRIVING_VY_RATIO = 2.2, -0.1
CROP_SIZE = 512
"""Side of the source crop the rendered face is pasted back from (the reference's ``dsize``)."""

_BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
_EYES = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
_EYES_B = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
_NOSE = (1, 2, 4, 5, 6, 168, 197, 195, 98, 327, 48, 278)
_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 13, 14)
_JAW = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323)
_JAW_B = (454, 356, 162, 389)
CROP_POINTS = np.array(_BROWS + _EYES + _EYES_B + _NOSE + _LIPS + _JAW + _JAW_B, dtype=np.int64)
"""MediaPipe mesh points standing in for the reference's 203 landmarks."""


@dataclass(frozen=True)
class CropWindow:
    """A rotated square in the source image: centre ``(x, y)``, side and angle (radians, the reference's sign)."""

    center: tuple[float, float]
    side: float
    angle: float

    def matrix(self, size: int) -> npt.NDArray[np.float64]:
        """``(2, 3)`` affine source pixel -> crop pixel for a ``size`` x ``size`` crop (``M_o2c``)."""
        s = size / self.side
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        cx, cy = self.center
        tc = size / 2
        return np.array(
            [
                [s * cos, s * sin, tc - s * (cos * cx + sin * cy)],
                [-s * sin, s * cos, tc - s * (-sin * cx + cos * cy)],
            ],
            dtype=np.float64,
        )


def crop_window(
    landmarks: npt.NDArray[np.float32], scale: float, vy_ratio: float, rotate: bool = True
) -> CropWindow:
    """The reference's ``parse_rect_from_landmark`` on the MediaPipe mesh ``(478, 2+)`` (see module docstring)."""
    xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
    eye_a = xy[list(EYE_LIDS[0])].mean(axis=0)
    eye_b = xy[list(EYE_LIDS[1])].mean(axis=0)
    lip = (xy[MOUTH_CORNERS[0]] + xy[MOUTH_CORNERS[1]]) / 2
    uy = lip - (eye_a + eye_b) / 2
    length = float(np.linalg.norm(uy))
    uy = uy / length if length > 1e-3 and rotate else np.array([0.0, 1.0])
    ux = np.array([uy[1], -uy[0]])
    angle = math.acos(float(np.clip(ux[0], -1.0, 1.0)))
    if ux[1] < 0:
        angle = -angle
    points = xy[CROP_POINTS]
    center0 = points.mean(axis=0)
    rotated = (points - center0) @ np.stack([ux, uy]).T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    center1 = (low + high) / 2
    side = float(max(high - low)) * scale
    center = center0 + ux * center1[0] + uy * center1[1] + uy * (vy_ratio * side)
    return CropWindow(center=(float(center[0]), float(center[1])), side=side, angle=angle)


def crop_face(
    image: npt.NDArray[np.uint8],
    face: Face,
    size: int = CROP_SIZE,
    scale: float = SOURCE_SCALE,
    vy_ratio: float = SOURCE_VY_RATIO,
) -> FaceCrop:
    """The LivePortrait crop of `face` at ``size`` pixels (``matrix``: source -> crop, as `models.face.FaceCrop`).

    Outside the image the crop is black, as the reference's ``cv2.warpAffine`` without border mode.
    """
    matrix = crop_window(face.landmarks, scale, vy_ratio).matrix(size)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)
    return FaceCrop(image=crop, matrix=matrix)


def eye_close_ratios(face: Face) -> npt.NDArray[np.float32]:
    """``(2,)``: eyelid gap / eye width of the two eyes (MediaPipe's first and second eye)."""
    xy = face.landmarks[:, :2].astype(np.float64)
    ratios = [
        np.linalg.norm(xy[upper] - xy[lower]) / (np.linalg.norm(xy[a] - xy[b]) + 1e-6)
        for upper, lower, a, b in EYE_LIDS
    ]
    return np.asarray(ratios, dtype=np.float32)


def lip_close_ratio(face: Face) -> float:
    """Inner lip gap / mouth width."""
    xy = face.landmarks[:, :2].astype(np.float64)
    gap = np.linalg.norm(xy[INNER_LIP_TOP] - xy[INNER_LIP_BOTTOM])
    return float(gap / (np.linalg.norm(xy[MOUTH_CORNERS[0]] - xy[MOUTH_CORNERS[1]]) + 1e-6))
