"""The portrait's face geometry as AniPortrait's landmark extractor computes it.

The reference (``src/utils/mp_utils.py``) runs MediaPipe's FaceLandmarker task with facial
transformation matrices on, from the model bundle it ships (``src/utils/mp_models/
face_landmarker_v2_with_blendshapes.task``), and reads three things of the one face:

- ``lmks``: the 478 normalised landmarks (x / width, y / height, z);
- ``lmks3d``: the face-geometry mesh, the 468 vertices of MediaPipe's canonical face model moved to
  this face's metric landmarks and brought back into canonical space (``FaceGeometry.mesh``, which
  the stock Python task drops: the reference patches MediaPipe to return it);
- ``trans_mat``: the facial transformation matrix (``FaceGeometry.pose_transform_matrix``) that
  places the canonical space in the camera's metric space.

``FaceGeometryAnalyzer`` runs the same graph (mediapipe 0.10.21's ``FaceLandmarkerGraph``) and reads
the same packets, so the numbers are MediaPipe's own. The bundle is not in the mediapipe wheel (which
lacks the geometry pipeline's metadata): the engine reads it from its weights directory
(``LANDMARKER_FILE``). Numpy, OpenCV and mediapipe only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import WeightsError
from models.aniportrait.a2l import PortraitMesh

LANDMARKER_FILE = "face_landmarker_v2_with_blendshapes.task"
"""MediaPipe's FaceLandmarker bundle (detector, 478-point mesh, blendshapes, geometry metadata), as
the reference ships it in ``src/utils/mp_models/``."""

NUM_LANDMARKS = 478
NUM_VERTICES = 468
VERTEX_SIZE = 5
"""The face-geometry mesh's vertex layout: ``x, y, z, u, v`` (``VERTEX_PT``)."""


@dataclass(frozen=True)
class FaceGeometry:
    """One face as the reference's ``LMKExtractor`` returns it.

    Attributes:
        landmarks: float64 ``(478, 3)``: normalised ``x / width, y / height, z`` (``lmks``).
        vertices: float64 ``(468, 3)``: the canonical-space metric mesh (``lmks3d``).
        transformation_matrix: float64 ``(4, 4)``: the facial transformation matrix (``trans_mat``).
    """

    landmarks: npt.NDArray[np.float64]
    vertices: npt.NDArray[np.float64]
    transformation_matrix: npt.NDArray[np.float64]

    def portrait_mesh(self) -> PortraitMesh:
        return PortraitMesh(self.vertices, self.transformation_matrix)


def matrix_from_proto(matrix: Any) -> npt.NDArray[np.float64]:
    """A ``mediapipe.MatrixData`` as a float64 array (its ``packed_data`` is column-major unless
    ``layout`` says row-major, as MediaPipe's own result builder reads it)."""
    data = np.asarray(matrix.packed_data, dtype=np.float64)
    if data.size != matrix.rows * matrix.cols:
        raise ValueError(f"matrix data has {data.size} values for {matrix.rows}x{matrix.cols}")
    row_major = matrix.layout == type(matrix).Layout.ROW_MAJOR
    if row_major:
        return data.reshape(matrix.rows, matrix.cols)
    return data.reshape(matrix.cols, matrix.rows).T.copy()


def geometry_from_protos(landmarks: Any, geometry: Any) -> FaceGeometry:
    """A ``FaceGeometry`` from one face's ``NormalizedLandmarkList`` and ``FaceGeometry`` protos.

    Raises:
        ValueError: not 478 landmarks, not a 468-vertex ``x, y, z, u, v`` mesh, or not a 4 x 4 matrix.
    """
    points = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float64)
    if points.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected {NUM_LANDMARKS} landmarks, got {points.shape[0]}")
    buffer = np.asarray(geometry.mesh.vertex_buffer, dtype=np.float64)
    if buffer.size != NUM_VERTICES * VERTEX_SIZE:
        raise ValueError(
            f"expected a mesh of {NUM_VERTICES} vertices x {VERTEX_SIZE} values, got {buffer.size} values"
        )
    matrix = matrix_from_proto(geometry.pose_transform_matrix)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a 4x4 transformation matrix, got {matrix.shape}")
    return FaceGeometry(points, buffer.reshape(NUM_VERTICES, VERTEX_SIZE)[:, :3].copy(), matrix)


class FaceGeometryAnalyzer:
    """MediaPipe's FaceLandmarker with face geometry, as the reference configures it (image mode, one
    face, CPU), returning the mesh the stock task drops.

    Args:
        task_path: the FaceLandmarker bundle (``LANDMARKER_FILE``).

    The graph is built on first use and guarded by a lock (MediaPipe graphs are not re-entrant).

    Raises:
        WeightsError: the bundle is missing (at construction) or not a FaceLandmarker bundle with the
            geometry metadata (on first use).
    """

    def __init__(self, task_path: str | Path) -> None:
        self.task_path = Path(task_path)
        if not self.task_path.is_file():
            raise WeightsError(f"the MediaPipe FaceLandmarker bundle {self.task_path} is missing")
        self._lock = threading.Lock()
        self._landmarker: Any = None

    def _graph(self) -> Any:
        if self._landmarker is None:
            from mediapipe.tasks.python import BaseOptions, vision

            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(
                    model_asset_path=str(self.task_path), delegate=BaseOptions.Delegate.CPU
                ),
                running_mode=vision.RunningMode.IMAGE,
                output_facial_transformation_matrixes=True,
                num_faces=1,
            )
            try:
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
            except (RuntimeError, ValueError) as error:
                raise WeightsError(
                    f"{self.task_path} is not a usable FaceLandmarker bundle: {error}"
                ) from error
        return self._landmarker

    def close(self) -> None:
        with self._lock:
            if self._landmarker is not None:
                self._landmarker.close()
                self._landmarker = None

    def analyze(self, image: npt.NDArray[np.uint8]) -> FaceGeometry | None:
        """The geometry of the face in an RGB uint8 ``(H, W, 3)`` image; None when there is no face."""
        import mediapipe as mp
        from mediapipe.python import packet_creator, packet_getter

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        with self._lock:
            landmarker = self._graph()
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            rect = landmarker.convert_to_normalized_rect(None, frame, roi_allowed=False)
            packets = landmarker._process_image_data(
                {
                    "image_in": packet_creator.create_image(frame),
                    "norm_rect_in": packet_creator.create_proto(rect.to_pb2()),
                }
            )
            if packets["norm_landmarks"].is_empty() or packets["face_geometry"].is_empty():
                return None
            landmarks = packet_getter.get_proto_list(packets["norm_landmarks"])
            geometries = packet_getter.get_proto_list(packets["face_geometry"])
        if not landmarks or not geometries:
            return None
        return geometry_from_protos(landmarks[0], geometries[0])
