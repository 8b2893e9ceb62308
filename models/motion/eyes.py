"""Ditto's eye conditions from a 478-point MediaPipe mesh (the reference's ``EyeAttrUtilsByMP``).

The reference measures them on the portrait's 512 x 512 crop with landmarks normalised by the crop
size (x / width, y / height, z / width). `eye_attributes` takes landmarks in that frame:

- ``eye_open`` (2,): for each eye (image-left first) the sum of three lid gaps over the eye width.
- ``eye_ball`` (6,): for each eye the iris offset from the eye centre, its direction relative to the
  eye's inner->outer axis times its length, as (x, y, z) pairs stacked per axis:
  ``[xL, xR, yL, yR, zL, zR]`` (the reference's ``(3, 2)`` reshaped).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

_EPS = 1e-8
# (outer, inner) corners, three (lower, upper) lid pairs and the iris centre of each eye.
_Eye = tuple[tuple[int, int], tuple[tuple[int, int], ...], int]
_LEFT: _Eye = ((33, 133), ((145, 159), (144, 160), (153, 158)), 468)
_RIGHT: _Eye = ((263, 362), ((374, 386), (373, 387), (380, 385)), 473)


def _dist(a: FloatArray, b: FloatArray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum()))


def _direction(a: FloatArray, b: FloatArray) -> FloatArray:
    return (a - b) / (_dist(a, b) + _EPS)


def eye_attributes(landmarks: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(eye_open (2,), eye_ball (6,)) from (478, 3) crop-normalised landmarks."""
    lmk = np.asarray(landmarks, dtype=np.float32)
    if lmk.shape != (478, 3):
        raise ValueError(f"landmarks have shape {lmk.shape}, expected (478, 3) (a refined mesh with irises)")
    opens, moves = [], []
    for (outer_index, inner_index), lids, iris in (_LEFT, _RIGHT):
        outer, inner = lmk[outer_index], lmk[inner_index]
        width = _dist(outer, inner)
        gaps = sum(_dist(lmk[a], lmk[b]) for a, b in lids)
        opens.append(gaps / (width + _EPS))
        centre = (outer + inner) * 0.5
        ball = lmk[iris]
        move_direction = _direction(ball, centre) - _direction(outer, inner)
        moves.append(move_direction * _dist(ball, centre))
    eye_open = np.array(opens, np.float32)
    eye_ball = np.stack(moves, -1).reshape(6).astype(np.float32)
    return eye_open, eye_ball
