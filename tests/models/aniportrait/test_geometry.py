"""The portrait's face geometry: proto conversion, the bundle checks, and (with the bundle) a real face."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mediapipe.framework.formats import landmark_pb2, matrix_data_pb2
from mediapipe.tasks.cc.vision.face_geometry.proto import face_geometry_pb2

from core.errors import WeightsError
from models.aniportrait.geometry import (
    NUM_LANDMARKS,
    NUM_VERTICES,
    FaceGeometryAnalyzer,
    geometry_from_protos,
    matrix_from_proto,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _protos(num_landmarks: int = NUM_LANDMARKS, num_vertices: int = NUM_VERTICES) -> tuple[object, object]:
    rng = np.random.default_rng(0)
    landmarks = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in rng.random((num_landmarks, 3)):
        landmarks.landmark.add(x=x, y=y, z=z)
    geometry = face_geometry_pb2.FaceGeometry()
    geometry.mesh.vertex_buffer.extend(np.arange(num_vertices * 5, dtype=np.float32).tolist())
    matrix = geometry.pose_transform_matrix
    matrix.rows, matrix.cols = 4, 4
    matrix.packed_data.extend(np.arange(16, dtype=np.float32).tolist())  # column-major by default
    return landmarks, geometry


def test_geometry_from_protos_layout() -> None:
    landmarks, geometry = _protos()
    face = geometry_from_protos(landmarks, geometry)
    assert face.landmarks.shape == (NUM_LANDMARKS, 3)
    assert face.vertices.shape == (NUM_VERTICES, 3)
    np.testing.assert_array_equal(face.vertices[1], [5, 6, 7])  # x, y, z of x, y, z, u, v
    np.testing.assert_array_equal(face.transformation_matrix, np.arange(16).reshape(4, 4).T)
    mesh = face.portrait_mesh()
    assert mesh.vertices is face.vertices and mesh.transformation_matrix is face.transformation_matrix


def test_row_major_matrix() -> None:
    matrix = matrix_data_pb2.MatrixData(rows=2, cols=3, layout=matrix_data_pb2.MatrixData.ROW_MAJOR)
    matrix.packed_data.extend([0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(matrix_from_proto(matrix), [[0, 1, 2], [3, 4, 5]])
    matrix.packed_data.append(6)
    with pytest.raises(ValueError, match="7 values for 2x3"):
        matrix_from_proto(matrix)


@pytest.mark.parametrize(
    ("num_landmarks", "num_vertices", "message"), [(468, 468, "478 landmarks"), (478, 467, "468 vertices")]
)
def test_geometry_from_protos_refuses_other_topologies(
    num_landmarks: int, num_vertices: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        geometry_from_protos(*_protos(num_landmarks, num_vertices))


def test_missing_and_unusable_bundle(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="missing"):
        FaceGeometryAnalyzer(tmp_path / "face_landmarker.task")
    bundle = tmp_path / "bundle.task"  # a bundle without the geometry pipeline's metadata
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("face_detector.tflite", b"not a model")
    analyzer = FaceGeometryAnalyzer(bundle)
    with pytest.raises(WeightsError, match="not a usable FaceLandmarker bundle"):
        analyzer.analyze(np.zeros((64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        analyzer.analyze(np.zeros((64, 64), dtype=np.uint8))


@pytest.mark.skipif(
    not os.environ.get("PARLA_FACE_LANDMARKER_TASK"),
    reason="needs MediaPipe's face_landmarker_v2_with_blendshapes.task (PARLA_FACE_LANDMARKER_TASK)",
)
def test_real_face_geometry() -> None:
    import cv2

    analyzer = FaceGeometryAnalyzer(os.environ["PARLA_FACE_LANDMARKER_TASK"])
    image = cv2.cvtColor(cv2.imread(str(ASSETS / "portrait.png")), cv2.COLOR_BGR2RGB)
    face = analyzer.analyze(np.asarray(cv2.resize(image, (512, 512)), dtype=np.uint8))
    assert face is not None
    rotation = face.transformation_matrix[:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-4)  # a rigid placement
    assert face.transformation_matrix[2, 3] < 0  # in front of the camera (looking down -z)
    assert analyzer.analyze(np.zeros((128, 128, 3), dtype=np.uint8)) is None
    analyzer.close()
