"""Face analysis: detection, the 478-point face mesh, pose and openness measures, crop and paste-back.

Every engine shares this front-end. The one implementation is ``MediaPipeFaceAnalyzer`` (mediapipe
0.10.21, whose detector and mesh models ship inside the wheel, so nothing is downloaded); other
detectors (e.g. insightface when its weights are on disk) can sit behind the ``FaceAnalyzer``
protocol as long as they fill a ``Face``.

This module imports numpy, OpenCV and mediapipe only (never torch): the API process runs
``admit_portrait`` at submit time.

Documented thresholds (see docs/warp.md):

- ``MIN_FACE_SIZE_PX = 64``: a face whose box is shorter than this on its shorter side is refused
  (``face_too_small``); the crop would be upscaled too much to look sharp.
- ``MAX_ABS_YAW_DEG = 45``: beyond this the mesh of the far half of the face is guessed, not seen
  (``face_not_frontal``).
- ``CROP_MARGIN = 0.6``: the square crop side is ``(1 + 2 * margin)`` times the larger side of the face
  box, so the crop shows hair, ears and neck.
- ``PASTE_MAX_SIDE = 1024``: ``framing="full"`` videos are scaled down to this longer side.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from core.errors import InvalidInput

T = TypeVar("T")

MIN_FACE_SIZE_PX = 64
MAX_ABS_YAW_DEG = 45.0
CROP_MARGIN = 0.6
CROP_LIFT = 0.08
"""The crop centre sits this fraction of the face box height above the box centre (the mesh box stops
at the hairline, so a centred crop would cut the top of the head)."""
PASTE_MAX_SIDE = 1024
NUM_LANDMARKS = 478

# Indices into mediapipe's 478-point mesh (refine_landmarks=True adds the irises, 468..477).
IRIS_A = slice(468, 473)
IRIS_B = slice(473, 478)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
INNER_LIP_TOP, INNER_LIP_BOTTOM = 13, 14
CHEEK_CONTOUR = (234, 454)
FOREHEAD, CHIN = 10, 152
# Eyes as (upper lid, lower lid, corner, corner).
EYE_LIDS = ((159, 145, 33, 133), (386, 374, 362, 263))


@dataclass(frozen=True)
class Face:
    """One face found in an image (all coordinates in that image's pixels).

    Attributes:
        box: float32 ``(4,)`` ``x0, y0, x1, y1``, the bounds of the mesh (forehead to chin).
        landmarks: float32 ``(478, 3)``; x, y in pixels; z is mediapipe's relative depth scaled like
            x (smaller is nearer the camera).
        keypoints: float32 ``(5, 2)``: image-left eye centre, image-right eye centre, nose tip,
            image-left mouth corner, image-right mouth corner (insightface order).
        yaw, pitch, roll: head pose in degrees. Positive yaw: the face turns towards image-right;
            positive pitch: the chin goes towards the camera (face looks down); positive roll: the
            eye line turns clockwise on screen.
        mouth_open: inner lip gap / mouth width (0 when the lips touch).
        eyes_open: mean eyelid gap / eye width over both eyes (about 0.25-0.35 for open eyes).
        score: detection confidence in [0, 1].
    """

    box: np.ndarray
    landmarks: np.ndarray
    keypoints: np.ndarray
    yaw: float
    pitch: float
    roll: float
    mouth_open: float
    eyes_open: float
    score: float = 1.0

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


class FaceAnalyzer(Protocol):
    """Anything that finds faces (MediaPipe here; insightface or others behind the same method)."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 ``(H, W, 3)`` image, largest first."""
        ...


def face_from_landmarks(landmarks: np.ndarray, score: float = 1.0) -> Face:
    """Derive box, keypoints, pose and openness from a ``(478, 3)`` mesh in pixel units."""
    points = np.asarray(landmarks, dtype=np.float32)
    if points.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"landmarks must have shape (478, 3), got {points.shape}")
    xy = points[:, :2]
    box = np.array([*xy.min(axis=0), *xy.max(axis=0)], dtype=np.float32)

    eyes = sorted([xy[IRIS_A].mean(axis=0), xy[IRIS_B].mean(axis=0)], key=lambda p: float(p[0]))
    mouth = sorted([xy[MOUTH_CORNERS[0]], xy[MOUTH_CORNERS[1]]], key=lambda p: float(p[0]))
    keypoints = np.stack([eyes[0], eyes[1], xy[NOSE_TIP], mouth[0], mouth[1]]).astype(np.float32)

    mouth_width = float(np.linalg.norm(xy[MOUTH_CORNERS[0]] - xy[MOUTH_CORNERS[1]])) + 1e-6
    mouth_open = float(np.linalg.norm(xy[INNER_LIP_TOP] - xy[INNER_LIP_BOTTOM])) / mouth_width
    eye_ratios = [
        float(np.linalg.norm(xy[upper] - xy[lower])) / (float(np.linalg.norm(xy[a] - xy[b])) + 1e-6)
        for upper, lower, a, b in EYE_LIDS
    ]

    # Pose from two face axes of the 3D mesh: cheek to cheek (x axis) and forehead to chin (y axis).
    across = points[CHEEK_CONTOUR[1]] - points[CHEEK_CONTOUR[0]]
    down = points[CHIN] - points[FOREHEAD]
    yaw = math.degrees(math.atan2(float(across[2]), float(across[0])))
    pitch = math.degrees(math.atan2(-float(down[2]), float(down[1])))
    roll = math.degrees(math.atan2(float(across[1]), float(across[0])))
    return Face(
        box=box,
        landmarks=points,
        keypoints=keypoints,
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        mouth_open=mouth_open,
        eyes_open=float(np.mean(eye_ratios)),
        score=float(score),
    )


class MediaPipeFaceAnalyzer:
    """Full-range face detection, then the refined 478-point mesh on a crop around each detection.

    Running the mesh on a crop per detection (instead of on the whole image) finds small faces in
    large photos and keeps one mesh per face when there are several. The graphs are built lazily on
    first use and guarded by a lock (mediapipe graphs are not re-entrant).

    Args:
        min_detection_confidence: detector score threshold.
        max_faces: at most this many detections get a mesh.
        video_mode: track the mesh across calls (for consecutive frames of one video) instead of
            detecting from scratch every time; faster and steadier, only for one face.
    """

    def __init__(self, min_detection_confidence: float = 0.5, max_faces: int = 4, video_mode: bool = False):
        self.min_detection_confidence = min_detection_confidence
        self.max_faces = max_faces
        self.video_mode = video_mode
        self._lock = threading.Lock()
        self._detector: Any = None
        self._mesh: Any = None

    def _graphs(self) -> tuple[Any, Any]:
        if self._detector is None:
            from mediapipe.python.solutions import face_detection, face_mesh

            # Full range (faces up to ~5 m) first; short range (close-ups) when it finds nothing.
            self._detector = [
                face_detection.FaceDetection(
                    min_detection_confidence=self.min_detection_confidence, model_selection=selection
                )
                for selection in (1, 0)
            ]
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=not self.video_mode,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=self.min_detection_confidence,
            )
        return self._detector, self._mesh

    def close(self) -> None:
        with self._lock:
            for graph in [*(self._detector or []), self._mesh]:
                if graph is not None:
                    graph.close()
            self._detector = self._mesh = None

    def _mesh_in(self, mesh: Any, image: np.ndarray, x0: int, y0: int) -> np.ndarray | None:
        result = mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        raw = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)
        return np.stack([raw[:, 0] * w + x0, raw[:, 1] * h + y0, raw[:, 2] * w], axis=1)

    def _detect_boxes(self, detectors: list[Any], image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        for detector in detectors:
            boxes = self._detect_boxes_with(detector, image)
            if boxes:
                return boxes
        return []

    def _detect_boxes_with(self, detector: Any, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Detector boxes ``(score, [x, y, w, h])`` in pixels, largest first.

        The detector sees a square input, so in a very wide or tall photo a face shrinks to a few
        pixels: such photos are also scanned in overlapping square windows.
        """
        height, width = image.shape[:2]
        side = min(height, width)
        windows = [(0, 0, width, height)]
        if max(height, width) > 1.6 * side:
            stride = side // 2
            for offset in range(0, max(height, width) - side + stride, stride):
                offset = min(offset, max(height, width) - side)
                windows.append((offset, 0, side, side) if width > height else (0, offset, side, side))
        found: list[tuple[float, np.ndarray]] = []
        for wx, wy, ww, wh in windows:
            result = detector.process(np.ascontiguousarray(image[wy : wy + wh, wx : wx + ww]))
            for detection in result.detections or []:
                rel = detection.location_data.relative_bounding_box
                box = np.array([wx + rel.xmin * ww, wy + rel.ymin * wh, rel.width * ww, rel.height * wh])
                found.append((float(detection.score[0]), box))
        found.sort(key=lambda item: -float(item[1][2] * item[1][3]))
        kept: list[tuple[float, np.ndarray]] = []
        for score, box in found:  # the same face seen in two windows: keep the first (largest)
            if all(_iou(box, other) < 0.3 for _, other in kept):
                kept.append((score, box))
        return kept

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 ``(H, W, 3)`` image, largest first (empty list when none)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        faces: list[Face] = []
        with self._lock:
            detector, mesh = self._graphs()
            if self.video_mode:
                landmarks = self._mesh_in(mesh, image, 0, 0)
                return [face_from_landmarks(landmarks)] if landmarks is not None else []
            boxes = self._detect_boxes(detector, image)
            for score, (bx, by, bw, bh) in boxes[: self.max_faces]:
                cx, cy = bx + bw / 2, by + bh / 2
                half = max(bw, bh)  # crop 2x the box: the whole head
                x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
                x1, y1 = min(width, int(cx + half)), min(height, int(cy + half))
                if x1 - x0 < 8 or y1 - y0 < 8:
                    continue
                landmarks = self._mesh_in(mesh, image[y0:y1, x0:x1], x0, y0)
                if landmarks is not None:
                    faces.append(face_from_landmarks(landmarks, score=score))
        faces.sort(key=lambda f: -f.area)
        return faces


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return float(inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9))


def select_face(faces: list[Face], face_index: int | None) -> Face:
    """The face to animate: ``faces[face_index]``, or the largest when ``face_index`` is None.

    Raises:
        InvalidInput: ``no_face_found`` when ``faces`` is empty, ``face_not_found`` when
            ``face_index`` names a face that is not there.
    """
    if not faces:
        raise InvalidInput("no face was found in the image", code="no_face_found")
    if face_index is None:
        return faces[0]
    if not 0 <= face_index < len(faces):
        found = f"only {len(faces)} face was" if len(faces) == 1 else f"only {len(faces)} faces were"
        raise InvalidInput(
            f"face_index {face_index} but {found} found (numbered from 0, largest first)",
            code="face_not_found",
        )
    return faces[face_index]


def admit_portrait(
    image: np.ndarray,
    face_index: int | None = None,
    analyzer: FaceAnalyzer | None = None,
    *,
    min_face_size: float = MIN_FACE_SIZE_PX,
    max_abs_yaw: float = MAX_ABS_YAW_DEG,
) -> Face:
    """The submit-time check: is there one usable face in this portrait? Returns it.

    Args:
        image: RGB uint8 ``(H, W, 3)``, EXIF-oriented.
        face_index: the face to animate (largest first); None for the largest.
        analyzer: defaults to a process-wide ``MediaPipeFaceAnalyzer`` built on first use.
        min_face_size: pixels, shorter side of the face box (``MIN_FACE_SIZE_PX`` by default).
        max_abs_yaw: degrees (``MAX_ABS_YAW_DEG`` by default).

    Raises:
        InvalidInput: ``no_face_found``; ``face_not_found`` (``face_index`` out of range);
            ``face_too_small`` (shorter box side < ``min_face_size``); ``face_not_frontal``
            (``|yaw| > max_abs_yaw``).
    """
    face = select_face((analyzer or _default_analyzer()).detect(image), face_index)
    if face.size < min_face_size:
        raise InvalidInput(
            f"the face is {face.size:.0f} px, the minimum is {min_face_size:.0f} px: use a larger or closer photo",
            code="face_too_small",
        )
    if abs(face.yaw) > max_abs_yaw:
        raise InvalidInput(
            f"the head is turned {abs(face.yaw):.0f} degrees, the maximum is {max_abs_yaw:.0f}",
            code="face_not_frontal",
        )
    return face


_shared_analyzer: MediaPipeFaceAnalyzer | None = None
_shared_lock = threading.Lock()


def _default_analyzer() -> MediaPipeFaceAnalyzer:
    global _shared_analyzer
    with _shared_lock:
        if _shared_analyzer is None:
            _shared_analyzer = MediaPipeFaceAnalyzer()
        return _shared_analyzer


@dataclass(frozen=True)
class FaceCrop:
    """A square crop around a face.

    Attributes:
        image: uint8 ``(size, size, 3)``.
        matrix: float64 ``(2, 3)`` affine, source pixel -> crop pixel.
    """

    image: np.ndarray
    matrix: np.ndarray


def crop_square(
    face: Face, image_shape: tuple[int, ...], margin: float = CROP_MARGIN
) -> tuple[float, float, float]:
    """Centre x, centre y and side (source pixels) of the crop window of ``crop_around_face``.

    The side is ``(1 + 2 * margin) * max(box width, box height)``, at most the image's shorter side
    (so that a crop video shows no padding when the photo allows it); the window is then moved
    inside the image when it fits.
    """
    height, width = image_shape[:2]
    x0, y0, x1, y1 = (float(v) for v in face.box)
    box_side = max(x1 - x0, y1 - y0)
    side = min((1 + 2 * margin) * box_side, float(min(height, width)))
    side = max(side, 1.2 * box_side)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - CROP_LIFT * (y1 - y0)
    if side <= width:
        cx = min(max(cx, side / 2), width - side / 2)
    if side <= height:
        cy = min(max(cy, side / 2), height - side / 2)
    return cx, cy, side


def crop_around_face(image: np.ndarray, face: Face, size: int, margin: float = CROP_MARGIN) -> FaceCrop:
    """Square crop around ``face`` resized to ``size`` (see ``crop_square``); keeps the affine."""
    cx, cy, side = crop_square(face, image.shape, margin)
    scale = size / side
    matrix = np.array(
        [[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]], dtype=np.float64
    )
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    crop = cv2.warpAffine(image, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return FaceCrop(image=crop, matrix=matrix)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(N, 2)`` points."""
    return np.asarray(points[:, :2], dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64)), dtype=np.float64)


def paste_geometry(image_shape: tuple[int, ...], max_side: int = PASTE_MAX_SIDE) -> tuple[int, int, float]:
    """Output height, width (even, for H.264) and scale of a pasted-back video for an image shape."""
    height, width = image_shape[:2]
    scale = min(1.0, max_side / max(height, width))
    out_h = max(2, int(height * scale) // 2 * 2)
    out_w = max(2, int(width * scale) // 2 * 2)
    return out_h, out_w, scale


class PasteBack:
    """Pastes crops of one size back into a (scaled) original; the per-job work is done once.

    Args:
        original: uint8 ``(H, W, 3)`` source image.
        crop_size: side of the crops.
        matrix: ``(2, 3)`` source -> crop affine of ``FaceCrop``.
        max_side: longer side of the output (see ``PASTE_MAX_SIDE``).
        feather: width of the seam blend, as a fraction of the crop side.
    """

    def __init__(
        self,
        original: np.ndarray,
        crop_size: int,
        matrix: np.ndarray,
        max_side: int = PASTE_MAX_SIDE,
        feather: float = 0.08,
    ):
        self.height, self.width, _ = paste_geometry(original.shape, max_side)
        self.background = cv2.resize(original, (self.width, self.height), interpolation=cv2.INTER_AREA)
        scale_xy = np.diag([self.width / original.shape[1], self.height / original.shape[0]])
        # crop pixel -> source pixel -> output pixel
        inverse = invert_affine(matrix)
        self.matrix = np.concatenate([scale_xy @ inverse[:, :2], (scale_xy @ inverse[:, 2])[:, None]], axis=1)
        corners = transform_points(
            np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], dtype=np.float64),
            self.matrix,
        )
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        self.roi = (max(0, x0), max(0, y0), min(self.width, x1), min(self.height, y1))
        rx0, ry0, rx1, ry1 = self.roi
        self.roi_matrix = self.matrix.copy()
        self.roi_matrix[:, 2] -= (rx0, ry0)
        # Alpha: 1 inside the crop, ramping to 0 over `feather` of its side at the crop's edges.
        ramp = max(1.0, feather * crop_size)
        distance = np.minimum(np.arange(crop_size) + 0.5, crop_size - 0.5 - np.arange(crop_size))
        edge = np.clip(distance / ramp, 0.0, 1.0).astype(np.float32)
        alpha_crop = np.minimum(edge[:, None], edge[None, :])
        alpha_crop = alpha_crop * alpha_crop * (3 - 2 * alpha_crop)  # smoothstep: no visible kink
        self.alpha = cv2.warpAffine(
            alpha_crop, self.roi_matrix, (max(1, rx1 - rx0), max(1, ry1 - ry0)), flags=cv2.INTER_LINEAR
        )[..., None]

    def __call__(self, crop_frames: np.ndarray) -> np.ndarray:
        """``(F, size, size, 3)`` uint8 crops -> ``(F, height, width, 3)`` uint8 frames."""
        rx0, ry0, rx1, ry1 = self.roi
        out = np.repeat(self.background[None], len(crop_frames), axis=0)
        if rx1 <= rx0 or ry1 <= ry0:
            return out
        base = self.background[ry0:ry1, rx0:rx1].astype(np.float32)
        for i, crop in enumerate(crop_frames):
            warped = cv2.warpAffine(crop, self.roi_matrix, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR)
            blended = base + (warped.astype(np.float32) - base) * self.alpha
            out[i, ry0:ry1, rx0:rx1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out


def paste_back(
    original: np.ndarray, crop_frames: np.ndarray, matrix: np.ndarray, max_side: int = PASTE_MAX_SIDE
) -> np.ndarray:
    """Paste animated crops back into the original photo with a feathered seam.

    Args:
        original: uint8 ``(H, W, 3)`` source image.
        crop_frames: uint8 ``(F, size, size, 3)`` crops made with ``matrix``.
        matrix: ``(2, 3)`` source -> crop affine of ``FaceCrop``.
        max_side: the output is scaled down so that its longer side is at most this.

    Returns:
        uint8 ``(F, H', W', 3)`` at the photo's aspect ratio, even dimensions (H.264).
    """
    return PasteBack(original, crop_frames.shape[1], matrix, max_side)(crop_frames)


def hold_last_found(values: list[T | None], missing: str = "no face found in the driving video") -> list[T]:
    """``values`` (per frame, None where no face was found) with each None replaced by the nearest
    earlier value, leading ones by the first found.

    Raises:
        ValueError: ``missing``, when no value was found at all.
    """
    found = [value for value in values if value is not None]
    if not found:
        raise ValueError(missing)
    previous = found[0]
    filled = []
    for value in values:
        previous = value if value is not None else previous
        filled.append(previous)
    return filled
