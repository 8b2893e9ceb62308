"""The LivePortrait crop construction on a MediaPipe-layout mesh, and the eye/lip ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.face import face_from_landmarks
from models.liveportrait.crop import (
    SOURCE_SCALE,
    SOURCE_VY_RATIO,
    crop_face,
    crop_window,
    eye_close_ratios,
    lip_close_ratio,
)
from models.liveportrait.testing import SyntheticFaceAnalyzer


def _face(size: int = 200) -> np.ndarray:
    return SyntheticFaceAnalyzer().detect(np.full((size, size, 3), 128, np.uint8))[0].landmarks


def _rotated(landmarks: np.ndarray, degrees: float, center: tuple[float, float]) -> np.ndarray:
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    out = landmarks.copy()
    out[:, :2] = (landmarks[:, :2] - center) @ rotation.T + center
    return out


def test_window_follows_the_face_and_cancels_roll() -> None:
    upright = crop_window(_face(), SOURCE_SCALE, SOURCE_VY_RATIO)
    assert upright.angle == pytest.approx(0.0, abs=1e-6)
    tilted = crop_window(_rotated(_face(), 20.0, (100.0, 100.0)), SOURCE_SCALE, SOURCE_VY_RATIO)
    assert tilted.angle == pytest.approx(math.radians(20.0), abs=1e-6)
    assert tilted.side == pytest.approx(upright.side, rel=1e-6)  # the box is measured in the face's frame
    # twice the image: twice the window; the centre sits above the face centre by vy_ratio * side
    double = crop_window(_face(400), SOURCE_SCALE, SOURCE_VY_RATIO)
    assert double.side == pytest.approx(2 * upright.side, rel=1e-6)
    unshifted = crop_window(_face(), SOURCE_SCALE, 0.0)
    assert unshifted.center[1] - upright.center[1] == pytest.approx(0.125 * upright.side, rel=1e-6)


def test_crop_matrix_maps_the_window_onto_the_crop() -> None:
    image = np.full((200, 200, 3), 128, np.uint8)
    landmarks = _rotated(_face(), -15.0, (100.0, 100.0))
    face = face_from_landmarks(landmarks)
    crop = crop_face(image, face, 64)
    window = crop_window(landmarks, SOURCE_SCALE, SOURCE_VY_RATIO)
    centre = crop.matrix @ np.array([*window.center, 1.0])
    np.testing.assert_allclose(centre, [32.0, 32.0], atol=1e-6)
    assert crop.image.shape == (64, 64, 3)
    # the eye line is horizontal in the crop
    eyes = landmarks[[33, 263], :2]
    mapped = eyes @ crop.matrix[:, :2].T + crop.matrix[:, 2]
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-3)


def test_ratios() -> None:
    face = SyntheticFaceAnalyzer().detect(np.full((100, 100, 3), 128, np.uint8))[0]
    np.testing.assert_allclose(eye_close_ratios(face), [0.3, 0.3], rtol=1e-4)
    assert lip_close_ratio(face) == pytest.approx(0.01 / 0.3, rel=1e-3)
