"""Projection of the mesh to pixels, pose post-processing and the landmark drawing."""

from __future__ import annotations

import numpy as np
import pytest

from models.aniportrait.landmarks import (
    CANVAS_SIZE,
    CONNECTIONS,
    draw_landmarks,
    pose_matrix,
    postprocess_poses,
    project_mesh,
    smooth_poses,
)


def _face(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A face-sized random mesh (cm) and a placement 40 cm in front of the camera."""
    rng = np.random.default_rng(seed)
    vertices = rng.uniform(-6, 6, (1, 468, 3))
    placement = np.eye(4)
    placement[2, 3] = -40.0
    return vertices, placement


def test_pose_matrix_is_extrinsic_xyz() -> None:
    quarter = pose_matrix(np.array([0.0, 0.0, 90.0, 1.0, 2.0, 3.0]))
    np.testing.assert_allclose(quarter[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(quarter[:3, 3], [1, 2, 3])
    # x first, then z: (0, 1, 0) -x90-> (0, 0, 1) -z90-> (0, 0, 1)
    both = pose_matrix(np.array([90.0, 0.0, 90.0, 0, 0, 0]))
    np.testing.assert_allclose(both[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)


def test_projection_centre_and_orientation() -> None:
    vertices, placement = _face()
    vertices[0, 0] = [0, 0, 0]
    vertices[0, 1] = [3, 3, 0]  # right and up in camera space
    pixels = project_mesh(vertices, placement, np.zeros((1, 6)), 64, 96)
    assert pixels.shape == (1, 468, 2)
    np.testing.assert_allclose(pixels[0, 0], [48, 32], atol=1e-9)
    assert pixels[0, 1, 0] > 48 and pixels[0, 1, 1] < 32  # y grows downwards
    with pytest.raises(ValueError, match="poses"):
        project_mesh(vertices, placement, np.zeros((2, 6)), 64, 64)


def test_drawing_colours_size_and_clipping() -> None:
    vertices, placement = _face()
    pixels = project_mesh(vertices, placement, np.zeros((1, 6)), 512, 512)[0]
    image = draw_landmarks(pixels, 512, 512)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    palette = {color for _, color in CONNECTIONS}
    drawn = {tuple(int(c) for c in value) for value in image.reshape(-1, 3)} - {(0, 0, 0)}
    assert drawn and drawn <= palette
    small = draw_landmarks(pixels * (64 / 512), 64, 64)
    assert small.shape == (64, 64, 3) and small.any()
    outside = np.full((468, 2), -5.0)
    assert not draw_landmarks(outside, 64, 64).any()
    normalized = draw_landmarks(pixels / 512, 512, 512, normalized=True)
    np.testing.assert_array_equal(normalized, image)
    with pytest.raises(ValueError, match="468"):
        draw_landmarks(np.zeros((10, 2)), 64, 64)
    assert CANVAS_SIZE == 512 and len(CONNECTIONS) == 114


def test_pose_postprocessing() -> None:
    poses = np.arange(60, dtype=np.float64).reshape(10, 6)
    processed = postprocess_poses(poses)
    assert processed.shape == (10, 6)
    halved = poses.copy()
    halved[:, :3] *= 0.5
    np.testing.assert_allclose(processed[5], halved[2:9].mean(axis=0))
    np.testing.assert_allclose(processed[0], halved[0:4].mean(axis=0))
    np.testing.assert_allclose(smooth_poses(np.ones((3, 6)), 7), np.ones((3, 6)))
