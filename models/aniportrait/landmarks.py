"""From A2L outputs to the L2V condition: head-pose post-processing, projection of the face mesh to the
image, and the landmark drawing the pose guider was trained on (AniPortrait's, numpy + OpenCV only).

The mesh lives in MediaPipe's canonical face space (the face-geometry module's metric mesh, 468
vertices); a pose ``(rx, ry, rz, tx, ty, tz)`` (degrees, extrinsic ``xyz``) moves it, the portrait's
facial transformation matrix places it in front of MediaPipe's virtual camera (63° vertical field of
view, near 1, far 10000) and the projection lands in pixels with y down.

The drawing is MediaPipe's ``draw_landmarks`` with AniPortrait's connection set (a face oval without
the forehead, eyes, eyebrows and eight coloured lip segments), lines 2 px wide on a 512 x 512 canvas,
resized bilinearly to the output size. Colours are written into channels 0, 1, 2 in the order the
reference lists them and are fed to the guider in that order (the reference never swaps channels on
this path).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

FIELD_OF_VIEW_DEG = 63.0
NEAR, FAR = 1.0, 10000.0
CANVAS_SIZE = 512
LINE_THICKNESS = 2
POSE_CHUNK_SECONDS = 5
POSE_FPS = 30
POSE_ROTATION_SCALE = 0.5
"""The reference halves the predicted rotations before smoothing."""
POSE_SMOOTHING_WINDOW = 7

Color = tuple[int, int, int]
Edge = tuple[int, int]

_FACE_OVAL: list[Edge] = [
    (176, 149), (150, 136), (356, 454), (58, 132), (152, 148), (361, 288), (251, 389), (132, 93),
    (389, 356), (400, 377), (136, 172), (377, 152), (323, 361), (172, 58), (454, 323), (365, 379),
    (379, 378), (148, 176), (93, 234), (397, 365), (149, 150), (288, 397), (234, 127), (378, 400),
    (127, 162), (162, 21),
]  # fmt: skip
# MediaPipe's eye and eyebrow edge sets, in the order CPython iterates mediapipe's frozensets (the
# reference fills its drawing dict that way, and later lines overdraw earlier ones where they cross).
_LEFT_EYE: list[Edge] = [
    (374, 380), (390, 373), (249, 390), (385, 384), (373, 374), (263, 466), (387, 386), (381, 382),
    (384, 398), (466, 388), (386, 385), (388, 387), (263, 249), (380, 381), (398, 362), (382, 362),
]  # fmt: skip
_LEFT_EYEBROW: list[Edge] = [
    (334, 296), (276, 283), (293, 334), (295, 285), (296, 336), (282, 295), (283, 282), (300, 293),
]  # fmt: skip
_RIGHT_EYE: list[Edge] = [
    (154, 155), (33, 7), (246, 161), (159, 158), (144, 145), (173, 133), (158, 157), (163, 144),
    (153, 154), (7, 163), (161, 160), (157, 173), (33, 246), (160, 159), (145, 153), (155, 133),
]  # fmt: skip
_RIGHT_EYEBROW: list[Edge] = [
    (46, 53),
    (66, 107),
    (52, 65),
    (53, 52),
    (63, 105),
    (70, 63),
    (65, 55),
    (105, 66),
]
_LIPS: list[tuple[list[Edge], Color]] = [
    ([(61, 146), (146, 91), (91, 181), (181, 84), (84, 17)], (10, 180, 20)),  # outer bottom left
    ([(17, 314), (314, 405), (405, 321), (321, 375), (375, 291)], (20, 10, 180)),  # outer bottom right
    ([(78, 95), (95, 88), (88, 178), (178, 87), (87, 14)], (100, 100, 30)),  # inner bottom left
    ([(14, 317), (317, 402), (402, 318), (318, 324), (324, 308)], (100, 150, 50)),  # inner bottom right
    ([(61, 185), (185, 40), (40, 39), (39, 37), (37, 0)], (20, 80, 100)),  # outer top left
    ([(0, 267), (267, 269), (269, 270), (270, 409), (409, 291)], (80, 100, 20)),  # outer top right
    ([(78, 191), (191, 80), (80, 81), (81, 82), (82, 13)], (120, 100, 200)),  # inner top left
    ([(13, 312), (312, 311), (311, 310), (310, 415), (415, 308)], (150, 120, 100)),  # inner top right
]


def _connections() -> list[tuple[Edge, Color]]:
    groups: list[tuple[list[Edge], Color]] = [
        (_FACE_OVAL, (10, 200, 10)),
        (_LEFT_EYE, (180, 200, 10)),
        (_LEFT_EYEBROW, (180, 220, 10)),
        (_RIGHT_EYE, (10, 200, 180)),
        (_RIGHT_EYEBROW, (10, 220, 180)),
        *_LIPS,
    ]
    ordered: dict[Edge, Color] = {}
    for edges, color in groups:
        for edge in edges:
            ordered[edge] = color
    return list(ordered.items())


CONNECTIONS: list[tuple[Edge, Color]] = _connections()
"""Every drawn edge with its colour, in drawing order."""


def perspective_matrix(aspect_ratio: float) -> npt.NDArray[np.float64]:
    """MediaPipe's perspective projection for row vectors (``clip = point @ P``), y flipped so the origin
    is the top-left corner."""
    focal = 1.0 / math.tan(math.radians(FIELD_OF_VIEW_DEG) / 2.0)
    denominator = 1.0 / (NEAR - FAR)
    # Built in float32 as MediaPipe's is, then used in float64.
    matrix = np.zeros((4, 4), dtype=np.float32)
    matrix[0, 0] = focal / aspect_ratio
    matrix[1, 1] = -focal
    matrix[2, 2] = (NEAR + FAR) * denominator
    matrix[3, 2] = -1.0
    matrix[2, 3] = FAR * NEAR * denominator
    return matrix.astype(np.float64)


def pose_matrix(pose: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """4x4 rigid transform of a pose ``(rx, ry, rz, tx, ty, tz)``: extrinsic x, then y, then z rotations
    (degrees), then the translation."""
    rx, ry, rz = np.radians(np.asarray(pose[:3], dtype=np.float64))
    cx, sx, cy, sy, cz, sz = (
        math.cos(rx),
        math.sin(rx),
        math.cos(ry),
        math.sin(ry),
        math.cos(rz),
        math.sin(rz),
    )
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rot_z @ rot_y @ rot_x
    matrix[:3, 3] = np.asarray(pose[3:6], dtype=np.float64)
    return matrix


def project_mesh(
    vertices: npt.NDArray[np.floating[Any]],
    transformation_matrix: npt.NDArray[np.floating[Any]],
    poses: npt.NDArray[np.floating[Any]],
    height: int,
    width: int,
) -> npt.NDArray[np.float64]:
    r"""Project each frame's mesh, moved by its pose and placed by the portrait's transformation matrix.

    Args:
        vertices (`np.ndarray` of shape `(L, N, 3)`): canonical-space meshes (portrait mesh + offsets).
        transformation_matrix (`np.ndarray` of shape `(4, 4)`): the portrait's facial transformation matrix.
        poses (`np.ndarray` of shape `(L, 6)`): one pose per frame.
        height, width: the output image size.

    Returns:
        `np.ndarray` of shape `(L, N, 2)`: pixel coordinates ``(x, y)``, y down.
    """
    if vertices.ndim != 3 or vertices.shape[2] != 3:
        raise ValueError(f"vertices must be (L, N, 3), got shape {vertices.shape}")
    if poses.shape != (vertices.shape[0], 6):
        raise ValueError(f"poses must be (L={vertices.shape[0]}, 6), got shape {poses.shape}")
    if transformation_matrix.shape != (4, 4):
        raise ValueError(f"transformation_matrix must be 4x4, got shape {transformation_matrix.shape}")
    projection = perspective_matrix(width / height)
    placement = np.asarray(transformation_matrix, dtype=np.float64)
    homogeneous = np.concatenate(
        [np.asarray(vertices, dtype=np.float64), np.ones((*vertices.shape[:2], 1))], axis=2
    )
    projected = np.empty((*vertices.shape[:2], 2))
    for i, pose in enumerate(poses):
        clip = homogeneous[i] @ (placement @ pose_matrix(pose)).T @ projection
        ndc = clip[:, :2] / clip[:, 3:4]
        projected[i, :, 0] = (ndc[:, 0] + 1) * 0.5 * width
        projected[i, :, 1] = (ndc[:, 1] + 1) * 0.5 * height
    return projected


def draw_landmarks(
    points: npt.NDArray[np.floating[Any]], width: int, height: int, *, normalized: bool = False
) -> npt.NDArray[np.uint8]:
    r"""Draw the landmark image of one frame.

    Args:
        points (`np.ndarray` of shape `(N, 2+)`, `N >= 468`): mesh points, in pixels of a `width` x `height`
            image, or in `[0, 1]` when `normalized`. Points outside the image are not drawn, nor any
            edge that touches them.
        width, height: the output size.

    Returns:
        `np.ndarray` of shape `(height, width, 3)`, uint8: coloured lines on black.
    """
    if points.ndim != 2 or points.shape[0] < 468 or points.shape[1] < 2:
        raise ValueError(f"points must be (N >= 468, 2), got shape {points.shape}")
    # MediaPipe stores landmarks as float32 (a protobuf float) before it scales them to the canvas.
    if normalized:
        xs, ys = points[:, 0].astype(np.float32), points[:, 1].astype(np.float32)
    else:
        xs = (points[:, 0] / width).astype(np.float32)
        ys = (points[:, 1] / height).astype(np.float32)
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE, 3), dtype=np.uint8)
    pixels: dict[int, tuple[int, int]] = {}

    def in_unit(value: float) -> bool:
        return (value > 0 or math.isclose(0, value)) and (value < 1 or math.isclose(1, value))

    for index, (x, y) in enumerate(zip(xs.tolist(), ys.tolist(), strict=True)):
        if in_unit(x) and in_unit(y):
            pixels[index] = (
                min(math.floor(x * CANVAS_SIZE), CANVAS_SIZE - 1),
                min(math.floor(y * CANVAS_SIZE), CANVAS_SIZE - 1),
            )
    for (start, end), color in CONNECTIONS:
        if start in pixels and end in pixels:
            cv2.line(canvas, pixels[start], pixels[end], color, LINE_THICKNESS)
    if (width, height) == (CANVAS_SIZE, CANVAS_SIZE):
        return canvas
    return np.asarray(cv2.resize(canvas, (width, height)), dtype=np.uint8)


def pose_windows(
    num_samples: int, num_frames: int, sample_rate: int = 16_000
) -> list[tuple[int, int, int, int]]:
    """How audio2pose splits a clip: 5 s windows of audio, each decoded on its own (150 frames at 30 fps),
    the last partial window merged into the one before it.

    Returns:
        ``(sample_start, sample_stop, frame_start, frame_stop)`` per window. Same as the reference
        wherever the reference runs; it fails on clips of one window and on clips whose frame count is
        a multiple of 150, which get one window and a correct last window here.
    """
    if num_samples < 1 or num_frames < 1:
        raise ValueError(f"need samples and frames, got {num_samples} samples, {num_frames} frames")
    chunk_samples, chunk_frames = POSE_CHUNK_SECONDS * sample_rate, POSE_CHUNK_SECONDS * POSE_FPS
    count = max(1, math.ceil(num_samples / chunk_samples) - 1)
    windows = []
    for i in range(count):
        last = i == count - 1
        windows.append(
            (
                i * chunk_samples,
                num_samples if last else (i + 1) * chunk_samples,
                i * chunk_frames,
                num_frames if last else (i + 1) * chunk_frames,
            )
        )
    return windows


def postprocess_poses(raw_poses: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """The reference's pose post-processing: rotations halved, then a centred moving mean over 7 frames
    (clipped at the ends).

    Args:
        raw_poses (`np.ndarray` of shape `(L, 6)`): audio2pose outputs of the whole clip.
    """
    poses = np.array(raw_poses, dtype=np.float64)
    poses[:, :3] *= POSE_ROTATION_SCALE
    return smooth_poses(poses, POSE_SMOOTHING_WINDOW)


def smooth_poses(poses: npt.NDArray[np.floating[Any]], window: int) -> npt.NDArray[np.float64]:
    """Centred moving mean over `window` frames, the window clipped at both ends."""
    values = np.asarray(poses, dtype=np.float64)
    half = window // 2
    smoothed = np.empty_like(values)
    for i in range(len(values)):
        smoothed[i] = values[max(0, i - half) : min(len(values), i + half + 1)].mean(axis=0)
    return smoothed
