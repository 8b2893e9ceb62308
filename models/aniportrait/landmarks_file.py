"""The ``landmarks`` job output: the A2L stage's per-frame 2D landmarks and head poses, as an NPZ.

Format ``parla-landmarks``, version 1: an NPZ (no pickled objects) holding

- ``points``: float32 ``(F, 468, 2)``: MediaPipe face-mesh vertices 0..467 in pixels of the
  ``width`` x ``height`` face crop the model renders (x right, y down, origin at the top-left
  corner of the top-left pixel), one row per output frame;
- ``poses``: float32 ``(F, 6)``: the head pose applied to the portrait's mesh, ``rx, ry, rz`` (extrinsic
  ``xyz`` Euler angles, degrees) then ``tx, ty, tz`` (MediaPipe's metric canonical space, cm);
- ``meta``: the UTF-8 bytes (uint8) of a JSON object: ``format``, ``version``, ``fps``,
  ``num_frames``, ``width``, ``height``, ``convention`` (``"mediapipe-468"``), ``head_motion``, and
  ``crop_matrix`` (the 2 x 3 affine that maps photo pixels to crop pixels; for ``framing="full"``
  videos, its inverse places the points in the photo) plus any keys the writer adds.

Torch-free (the API and clients may read it).
"""

from __future__ import annotations

import io
import json
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

LANDMARKS_FORMAT = "parla-landmarks"
LANDMARKS_FORMAT_VERSION = 1
LANDMARKS_CONVENTION = "mediapipe-468"
NUM_POINTS = 468


class LandmarksFormatError(ValueError):
    """Bytes that are not a ``parla-landmarks`` file of a version we read."""


def _check_arrays(points: npt.NDArray[Any], poses: npt.NDArray[Any]) -> None:
    if points.ndim != 3 or points.shape[1:] != (NUM_POINTS, 2):
        raise LandmarksFormatError(f"points must be (F, {NUM_POINTS}, 2), got {points.shape}")
    if poses.shape != (points.shape[0], 6):
        raise LandmarksFormatError(f"poses must be ({points.shape[0]}, 6), got {poses.shape}")


def write_landmarks_npz(
    target: BinaryIO,
    points: npt.NDArray[Any],
    poses: npt.NDArray[Any],
    *,
    fps: float,
    width: int,
    height: int,
    **meta: Any,
) -> None:
    """Write the file into `target` (`meta` adds JSON-serialisable keys, e.g. ``crop_matrix``).

    Raises:
        LandmarksFormatError: arrays of the wrong shapes.
    """
    points32 = np.ascontiguousarray(points, dtype=np.float32)
    poses32 = np.ascontiguousarray(poses, dtype=np.float32)
    _check_arrays(points32, poses32)
    header = {
        "format": LANDMARKS_FORMAT,
        "version": LANDMARKS_FORMAT_VERSION,
        "fps": float(fps),
        "num_frames": int(points32.shape[0]),
        "width": int(width),
        "height": int(height),
        "convention": LANDMARKS_CONVENTION,
        **meta,
    }
    np.savez(
        target,
        points=points32,
        poses=poses32,
        meta=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )


def read_landmarks_npz(
    data: bytes | BinaryIO,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], dict[str, Any]]:
    """``(points, poses, meta)`` of a ``parla-landmarks`` file.

    Raises:
        LandmarksFormatError: not an NPZ, not this format or version, or inconsistent arrays.
    """
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        with np.load(source, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise LandmarksFormatError(f"not a {LANDMARKS_FORMAT} npz: {error}") from error
    missing = sorted({"points", "poses", "meta"} - set(arrays))
    if missing:
        raise LandmarksFormatError(f"landmarks npz lacks {', '.join(missing)}")
    try:
        header = json.loads(arrays["meta"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LandmarksFormatError(f"landmarks npz meta is not JSON: {error}") from error
    if not isinstance(header, dict) or header.get("format") != LANDMARKS_FORMAT:
        raise LandmarksFormatError(f"not a {LANDMARKS_FORMAT} file")
    if header.get("version") != LANDMARKS_FORMAT_VERSION:
        raise LandmarksFormatError(f"unsupported {LANDMARKS_FORMAT} version {header.get('version')!r}")
    points, poses = arrays["points"], arrays["poses"]
    _check_arrays(points, poses)
    if header.get("num_frames") != points.shape[0]:
        raise LandmarksFormatError(
            f"meta says {header.get('num_frames')} frames, arrays hold {points.shape[0]}"
        )
    return points.astype(np.float32), poses.astype(np.float32), header
