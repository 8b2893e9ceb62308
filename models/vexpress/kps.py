"""V-kps: the three-point face keypoint images that steer V-Express's head pose.

A keypoint set is ``(3, 2)`` float32 pixel coordinates: image-left eye, image-right eye, nose tip
(the first three of insightface's five points, which ``models.face`` also returns). A sequence is
``(L, 3, 2)``. Sequences come from one of three head-motion sources:

- ``still``: the reference image's own keypoints for every frame (the reference's ``fix_face``);
- ``sway``: a gentle, seeded synthetic motion around the reference keypoints (ours);
- ``driving``: keypoints detected in a driving video, retargeted onto the reference face with the
  reference's ``offset_retarget`` (default) or ``naive_retarget``, or used as they are (``none``).

Drawing uses OpenCV itself so that the pixels match the images the guider was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from core.media import frames_at_rate
from models.face import hold_last_found

Keypoints = npt.NDArray[np.float32]
Retarget = Literal["offset", "naive", "none"]

KPS_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
"""RGB colour of each point; a limb takes 0.6 x the colour of its first point."""
LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2))
LIMB_HALF_WIDTH = 4
POINT_RADIUS = 4


def draw_kps_image(height: int, width: int, kps: Keypoints) -> npt.NDArray[np.uint8]:
    """Draw one V-kps image.

    Args:
        height, width: canvas size in pixels.
        kps (`np.ndarray` of shape `(3, 2)`): eye, eye, nose in pixel coordinates ``(x, y)``.

    Returns:
        `np.ndarray` of shape `(height, width, 3)`, uint8 RGB: two filled ellipses (eye -> nose),
        then three filled discs, on black. Coordinates are truncated to int as in the reference.
    """
    points = np.asarray(kps, dtype=np.float64)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for first, second in LIMBS:
        (x0, y0), (x1, y1) = points[first], points[second]
        length = math.hypot(x0 - x1, y0 - y1)
        angle = int(math.degrees(math.atan2(y0 - y1, x0 - x1)))
        centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), angle, 0, 360, 1)
        cv2.fillConvexPoly(
            canvas, np.asarray(polygon, dtype=np.int32), [int(float(c) * 0.6) for c in KPS_COLORS[first]]
        )
    for (x, y), color in zip(points, KPS_COLORS, strict=True):
        cv2.circle(canvas, (int(x), int(y)), POINT_RADIUS, color, -1)
    return canvas


def draw_kps_frames(height: int, width: int, kps_sequence: Keypoints) -> torch.Tensor:
    """Draw a sequence of V-kps images, as uint8 (a quarter of the float32 bytes to upload).

    Args:
        kps_sequence (`np.ndarray` of shape `(F, 3, 2)`).

    Returns:
        `torch.Tensor` of shape `(1, 3, F, height, width)`, uint8 RGB.
    """
    frames = np.stack([draw_kps_image(height, width, kps) for kps in kps_sequence])
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None]


def kps_frames_to_guider_input(frames: torch.Tensor) -> torch.Tensor:
    """uint8 V-kps frames -> the guider's float32 input in [0, 1] (not normalised to [-1, 1], as in
    the reference); run on the device, after the uint8 upload."""
    return frames.float() / 255.0


def draw_kps_video(height: int, width: int, kps_sequence: Keypoints) -> torch.Tensor:
    """Draw a sequence of V-kps images as the guider's input.

    Args:
        kps_sequence (`np.ndarray` of shape `(F, 3, 2)`).

    Returns:
        `torch.Tensor` of shape `(1, 3, F, height, width)`, float32 in [0, 1] (not normalised to
        [-1, 1], as in the reference).
    """
    return kps_frames_to_guider_input(draw_kps_frames(height, width, kps_sequence))


def transform_kps(kps: Keypoints, matrix: npt.NDArray[np.floating]) -> Keypoints:
    """Apply a ``(2, 3)`` affine map (e.g. source image -> face crop) to ``(..., 2)`` points."""
    points = np.asarray(kps, dtype=np.float64)
    mapped = points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix)[:, 2]
    return mapped.astype(np.float32)


def still_kps(reference_kps: Keypoints, num_frames: int) -> Keypoints:
    """The reference keypoints repeated for every frame: ``(num_frames, 3, 2)``."""
    return np.repeat(np.asarray(reference_kps, dtype=np.float32)[None], num_frames, axis=0)


def sway_kps(
    reference_kps: Keypoints, num_frames: int, fps: float, amplitude: float, seed: int = 0
) -> Keypoints:
    """A gentle synthetic head motion: slow roll, nod, turn and drift around the reference pose.

    Each motion is a sum of two sines with incommensurate periods (2-7 s) and seeded phases, so the
    motion never visibly repeats and is the same for the same seed. ``amplitude`` 1.0 gives at most
    about 5 degrees of roll, a nose shift of 12% of the eye distance (turn and nod) and a drift of
    6% of the eye distance; the motion starts at the reference pose (every sine is 0 at frame 0).

    Returns:
        `np.ndarray` of shape `(num_frames, 3, 2)`, float32.
    """
    if amplitude < 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude}")
    kps = np.asarray(reference_kps, dtype=np.float64)
    eye_distance = max(float(np.linalg.norm(kps[0] - kps[1])), 1.0)
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64) / fps

    def wave(max_value: float) -> npt.NDArray[np.float64]:
        periods = rng.uniform(2.0, 7.0, size=2)
        phases = rng.uniform(0.0, 2.0 * math.pi, size=2)
        value = np.sin(2.0 * math.pi * t[:, None] / periods + phases) - np.sin(phases)
        return max_value * amplitude * value.sum(axis=1) / 4.0  # |sum of 2 shifted sines| <= 4

    roll = np.radians(wave(5.0))
    turn, nod = wave(0.12 * eye_distance), wave(0.12 * eye_distance)
    drift_x, drift_y = wave(0.06 * eye_distance), wave(0.06 * eye_distance)

    centre = kps.mean(axis=0)
    cos, sin = np.cos(roll), np.sin(roll)
    offsets = kps[None] - centre  # [1, 3, 2]
    rotated = np.stack(
        [cos[:, None] * offsets[..., 0] - sin[:, None] * offsets[..., 1],
         sin[:, None] * offsets[..., 0] + cos[:, None] * offsets[..., 1]],
        axis=-1,
    )  # fmt: skip
    sequence = rotated + centre + np.stack([drift_x, drift_y], axis=-1)[:, None]
    # turning and nodding move the nose against the eye line
    sequence[:, 2, 0] += turn
    sequence[:, 2, 1] += nod
    return sequence.astype(np.float32)


def resample_kps(sequence: Keypoints, num_frames: int) -> Keypoints:
    """Fit a driving sequence to ``num_frames``: cut when longer, else stretch linearly in time.

    This is the reference's handling of a ``kps.pth`` sequence (linear, ``align_corners=False``).
    """
    sequence = np.asarray(sequence, dtype=np.float32)[:num_frames]
    if len(sequence) == num_frames:
        return sequence
    flat = torch.from_numpy(sequence).reshape(len(sequence), -1).T[None]  # [1, 6, T]
    stretched = F.interpolate(flat, size=num_frames, mode="linear", align_corners=False)
    return stretched[0].T.reshape(num_frames, 3, 2).numpy().astype(np.float32)


def _eye_nose_ratio(kps: npt.NDArray[np.float64]) -> float:
    return float(np.linalg.norm(kps[0] - kps[2]) / (np.linalg.norm(kps[1] - kps[2]) + 1e-6))


def _face_size(kps: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Eye distance and distance of the nose from the eye segment."""
    eye_a, eye_b, nose = kps
    line = eye_b - eye_a
    length = float(np.linalg.norm(line))
    t = float(np.clip(np.dot(line / length, (nose - eye_a) / length), 0.0, 1.0))
    return length, float(np.linalg.norm(nose - (eye_a + t * line)))


def retarget_kps(reference_kps: Keypoints, driving_kps: Keypoints, mode: Retarget = "offset") -> Keypoints:
    """Move the reference face the way the driving face moves (the reference's retarget_kps).

    The driving sequence is first scaled (x by the ratio of eye distances, y by the ratio of
    nose-to-eye-line distances) using one driving frame picked by the reference's search. That
    search compares each frame's left/right eye-nose ratio with the reference's but stores the
    frame's ratio, not the difference, as the running best; we keep that quirk for parity.

    - ``offset``: the reference keypoints, shifted by minus half the scaled nose displacement from
      the first driving frame (the reference default, ``offset_retarget``);
    - ``naive``: the scaled driving keypoints, shifted so that the first frame's nose lands on the
      reference nose (``naive_retarget``);
    - ``none``: the driving keypoints unchanged (``no_retarget``).

    Returns:
        `np.ndarray` of shape `(T, 3, 2)`, float32.
    """
    driving = np.asarray(driving_kps, dtype=np.float64)
    if mode == "none":
        return driving.astype(np.float32)
    reference = np.asarray(reference_kps, dtype=np.float64)
    reference_ratio = _eye_nose_ratio(reference)
    best, selected = 10000.0, 0
    for index, frame_kps in enumerate(driving):
        ratio = _eye_nose_ratio(frame_kps)
        if abs(ratio - reference_ratio) < best:
            selected, best = index, ratio  # sic: the ratio, as in the reference
    reference_width, reference_height = _face_size(reference)
    driving_width, driving_height = _face_size(driving[selected])
    scaled = driving.copy()
    scaled[:, :, 0] *= reference_width / driving_width
    scaled[:, :, 1] *= reference_height / driving_height
    if mode == "offset":
        nose_offset = scaled[:, 2, :] - scaled[0, 2, :]
        result = np.tile(reference, (len(driving), 1, 1)) - nose_offset[:, None, :] / 2.0
    elif mode == "naive":
        result = scaled - (scaled[0, 2, :] - reference[2])
    else:
        raise ValueError(f"unknown retarget mode {mode!r}")
    return result.astype(np.float32)


class KeypointDetector(Protocol):
    """What the driving-video reader needs from a face analyzer (``models.face.MediaPipeFaceAnalyzer``)."""

    def detect(self, image: npt.NDArray[np.uint8]) -> Sequence[Any]:
        """Faces in an RGB uint8 image, largest first, each with ``keypoints`` ``(5, 2)`` in pixels."""
        ...


def driving_video_kps(video: bytes, detector: KeypointDetector, num_frames: int, fps: float) -> Keypoints:
    """Keypoints of the largest face in a driving video, one set per output frame.

    The video is decoded with PyAV one frame at a time (a long video is never held in memory);
    output frame ``i`` takes the last driving frame shown at time ``i / fps``, and faces are
    detected only in the frames that are used. A frame without a face repeats the keypoints of the
    nearest earlier frame (the first found, for leading frames). A video shorter than the audio is
    stretched in time (``resample_kps``), as the reference does with a short keypoint sequence.

    Returns:
        `np.ndarray` of shape `(num_frames, 3, 2)` in the driving video's pixel coordinates.

    Raises:
        ValueError: the bytes are not a decodable video, or no frame shows a face.
    """
    sampled = [_first_face_kps(frame, detector) for frame in frames_at_rate(video, fps, num_frames)]
    filled = hold_last_found(sampled)
    return resample_kps(np.stack(filled), num_frames)


def _first_face_kps(image: npt.NDArray[np.uint8], detector: KeypointDetector) -> Keypoints | None:
    faces = detector.detect(image)
    if not faces:
        return None
    return np.asarray(faces[0].keypoints, dtype=np.float32)[:3]
