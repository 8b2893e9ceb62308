"""The ArcFace identity embedding: insightface's alignment, onnxruntime on an ONNX file, the stand-in."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import WeightsError
from models.hallo.arcface import (
    ARCFACE_TEMPLATE,
    ArcFaceEmbedder,
    StandInEmbedder,
    align_face,
    alignment_matrix,
    similarity_transform,
)
from models.hallo.onnx_wire import node_names, tiny_recognition_model


def _face_image(seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (160, 144, 3), dtype=np.uint8)


KEYPOINTS = np.array([[50.0, 60.0], [92.0, 58.0], [71.0, 82.0], [55.0, 104.0], [88.0, 103.0]], np.float32)


def _reference_network(
    blob: npt.NDArray[np.float32], weights: dict[str, npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """The tiny recognition network in numpy: Conv 16x16 stride 16, Flatten, Gemm."""
    n, c, h, w = blob.shape
    cells = blob.reshape(n, c, h // 16, 16, w // 16, 16).transpose(0, 2, 4, 1, 3, 5)
    conv = np.einsum("nyxcij,ocij->noyx", cells, weights["conv_w"]) + weights["conv_b"][None, :, None, None]
    return np.asarray(conv.reshape(n, -1) @ weights["fc_w"] + weights["fc_b"], dtype=np.float32)


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = np.random.default_rng(0).normal(0, 20, (5, 2))
    target = scale * source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_alignment_maps_the_template_onto_itself_and_scales_with_the_size() -> None:
    np.testing.assert_allclose(alignment_matrix(ARCFACE_TEMPLATE), [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    doubled = alignment_matrix(ARCFACE_TEMPLATE, 224)
    np.testing.assert_allclose(doubled[:, :2], 2 * np.eye(2), atol=1e-6)
    shifted = alignment_matrix(ARCFACE_TEMPLATE, 128)  # insightface's 128 layout: 8 px to the right
    np.testing.assert_allclose(shifted[:, 2], [8.0, 0.0], atol=1e-5)
    with pytest.raises(ValueError, match="keypoints must be"):
        alignment_matrix(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        alignment_matrix(ARCFACE_TEMPLATE, 100)
    assert align_face(_face_image(), KEYPOINTS).shape == (112, 112, 3)


@pytest.mark.parametrize("mxnet_style", [False, True])
def test_arcface_through_onnxruntime_matches_the_network(tmp_path: Path, mxnet_style: bool) -> None:
    model, weights = tiny_recognition_model(seed=1, mxnet_style=mxnet_style)
    path = tmp_path / "glintr100.onnx"
    path.write_bytes(model)
    assert node_names(path)[:2] == (
        ["_minusscalar0", "_mulscalar0"] if mxnet_style else ["Conv_0", "Flatten_1"]
    )
    embedder = ArcFaceEmbedder(path, providers=["CPUExecutionProvider"])
    assert (embedder.input_name, embedder.input_size) == ("input.1", 112)
    assert (embedder.input_mean, embedder.input_std) == ((0.0, 1.0) if mxnet_style else (127.5, 127.5))
    image = _face_image()
    embedding = embedder.embed(image, KEYPOINTS)
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    # insightface: RGB, (x - 127.5) / 127.5, NCHW (the MXNet graph does that itself).
    aligned = align_face(image, KEYPOINTS).astype(np.float32)
    blob = (aligned - 127.5) / 127.5 if not mxnet_style else (aligned - 127.5) / 128.0
    expected = _reference_network(blob.transpose(2, 0, 1)[None], weights)[0]
    np.testing.assert_allclose(embedding, expected, rtol=1e-4, atol=1e-4)
    other = embedder.embed(_face_image(5), KEYPOINTS)
    assert not np.allclose(embedding, other)


def test_a_missing_or_broken_model_or_runtime_is_a_weights_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "face_analysis" / "models" / "glintr100.onnx"
    with pytest.raises(WeightsError, match=r"glintr100\.onnx is missing"):
        ArcFaceEmbedder(missing)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x0a\x03abc")  # a protobuf without a graph
    with pytest.raises(WeightsError, match=r"broken\.onnx is not an ONNX model"):
        ArcFaceEmbedder(broken)
    model, _ = tiny_recognition_model()
    good = tmp_path / "good.onnx"
    good.write_bytes(model)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(WeightsError, match=r"onnxruntime is not installed; it runs .*good\.onnx"):
        ArcFaceEmbedder(good)


def test_the_stand_in_is_deterministic_and_tells_faces_apart() -> None:
    image = _face_image()
    first = StandInEmbedder(0).embed(image, KEYPOINTS)
    assert first.shape == (512,)
    np.testing.assert_array_equal(first, StandInEmbedder(0).embed(image, KEYPOINTS))
    assert not np.allclose(first, StandInEmbedder(0).embed(_face_image(3), KEYPOINTS))
