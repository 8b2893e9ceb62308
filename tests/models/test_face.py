"""Face analysis on real photos: detection, mesh-derived measures, admission checks, crop and paste-back."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from core.errors import InvalidInput
from models.face import (
    CROP_MARGIN,
    MAX_ABS_YAW_DEG,
    MIN_FACE_SIZE_PX,
    Face,
    MediaPipeFaceAnalyzer,
    admit_portrait,
    crop_around_face,
    face_from_landmarks,
    paste_back,
    select_face,
    transform_points,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def load_image(name: str) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(ASSETS / name)).convert("RGB"))


@pytest.fixture(scope="module")
def analyzer() -> MediaPipeFaceAnalyzer:
    return MediaPipeFaceAnalyzer()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image("portrait.png")


@pytest.fixture(scope="module")
def face(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> Face:
    faces = analyzer.detect(portrait)
    assert len(faces) == 1
    return faces[0]


def test_mesh_measures_on_the_astronaut(face: Face) -> None:
    assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
    assert face.box.shape == (4,) and face.keypoints.shape == (5, 2)
    x0, y0, x1, y1 = face.box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 220  # the face is upper-left of centre in the photo
    left_eye, right_eye, nose, mouth_left, mouth_right = face.keypoints
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert ((face.keypoints >= face.box[:2]) & (face.keypoints <= face.box[2:])).all()
    assert abs(face.yaw) < 12 and abs(face.roll) < 8
    assert 0.05 < face.mouth_open < 0.35  # a smile that shows the teeth
    assert 0.2 < face.eyes_open < 0.5
    assert face.size >= MIN_FACE_SIZE_PX


def test_roll_follows_an_image_rotation(
    analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray, face: Face
) -> None:
    centre = tuple(float(v) for v in face.keypoints[2])
    rotated = cv2.warpAffine(portrait, cv2.getRotationMatrix2D(centre, 20, 1.0), portrait.shape[1::-1])
    turned = analyzer.detect(rotated)[0]
    # getRotationMatrix2D turns counter-clockwise on screen: negative roll in our convention.
    assert turned.roll - face.roll == pytest.approx(-20, abs=4)


def test_yaw_of_a_mesh_turned_in_3d(face: Face) -> None:
    centre = face.landmarks.mean(axis=0)
    for degrees in (-60.0, 30.0, 60.0):
        angle = math.radians(degrees)
        # Turn about the vertical axis so that the face looks towards image-right for positive angles.
        rotation = np.array(
            [[math.cos(angle), 0, -math.sin(angle)], [0, 1, 0], [math.sin(angle), 0, math.cos(angle)]]
        )
        turned = face_from_landmarks((face.landmarks - centre) @ rotation.T + centre)
        assert turned.yaw - face.yaw == pytest.approx(degrees, abs=6)


class _FixedAnalyzer:
    """Another detector behind the FaceAnalyzer protocol: returns the faces it was given."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.faces


def test_admission_refuses_a_turned_head(face: Face) -> None:
    angle = math.radians(MAX_ABS_YAW_DEG + 20)
    rotation = np.array(
        [[math.cos(angle), 0, -math.sin(angle)], [0, 1, 0], [math.sin(angle), 0, math.cos(angle)]]
    )
    centre = face.landmarks.mean(axis=0)
    turned = face_from_landmarks((face.landmarks - centre) @ rotation.T + centre)
    with pytest.raises(InvalidInput) as error:
        admit_portrait(np.zeros((8, 8, 3), np.uint8), analyzer=_FixedAnalyzer([turned]))
    assert error.value.code == "face_not_frontal"
    assert admit_portrait(np.zeros((8, 8, 3), np.uint8), analyzer=_FixedAnalyzer([face])) is face
    lenient = admit_portrait(np.zeros((8, 8, 3), np.uint8), analyzer=_FixedAnalyzer([turned]), max_abs_yaw=90)
    assert lenient is turned


def test_admission_of_the_real_photos(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> None:
    assert admit_portrait(portrait, analyzer=analyzer).size >= MIN_FACE_SIZE_PX
    heldout = load_image("portrait_heldout.jpg")  # stored sideways with an EXIF orientation tag
    assert heldout.shape[0] > heldout.shape[1]
    found = admit_portrait(heldout, analyzer=analyzer)
    assert found.keypoints[0, 1] < found.keypoints[3, 1]  # upright: eyes above the mouth


def test_no_face(analyzer: MediaPipeFaceAnalyzer) -> None:
    rng = np.random.default_rng(0)
    landscape = cv2.GaussianBlur(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), (0, 0), 6)
    assert analyzer.detect(landscape) == []
    with pytest.raises(InvalidInput) as error:
        admit_portrait(landscape, analyzer=analyzer)
    assert error.value.code == "no_face_found"


def test_face_too_small(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> None:
    canvas = np.full((600, 600, 3), 200, np.uint8)
    small = cv2.resize(portrait, (240, 240), interpolation=cv2.INTER_AREA)  # face about 45 px
    canvas[100:340, 150:390] = small
    faces = analyzer.detect(canvas)
    assert len(faces) == 1 and faces[0].size < MIN_FACE_SIZE_PX
    with pytest.raises(InvalidInput) as error:
        admit_portrait(canvas, analyzer=analyzer)
    assert error.value.code == "face_too_small"
    assert admit_portrait(canvas, analyzer=analyzer, min_face_size=32) is not None


def test_several_faces_largest_first(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> None:
    smaller = cv2.resize(portrait, (360, 360), interpolation=cv2.INTER_AREA)
    pair = np.full((512, 900, 3), 180, np.uint8)
    pair[:, :512] = portrait
    pair[76:436, 530:890] = smaller
    faces = analyzer.detect(pair)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area and faces[1].box[0] > 512
    assert select_face(faces, None) is faces[0]
    assert select_face(faces, 1) is faces[1]
    assert admit_portrait(pair, face_index=1, analyzer=analyzer).box[0] > 512
    for index in (2, -1):
        with pytest.raises(InvalidInput) as error:
            admit_portrait(pair, face_index=index, analyzer=analyzer)
        assert error.value.code == "face_not_found"
        assert error.value.message.startswith(f"face_index {index} but only 2 faces were found")
    with pytest.raises(InvalidInput) as error:
        select_face([], 0)
    assert error.value.code == "no_face_found"


def test_crop_keeps_the_transform(portrait: np.ndarray, face: Face) -> None:
    crop = crop_around_face(portrait, face, 256)
    assert crop.image.shape == (256, 256, 3) and crop.image.dtype == np.uint8
    assert crop.matrix.shape == (2, 3) and crop.matrix.dtype == np.float64
    keypoints = transform_points(face.keypoints, crop.matrix)
    assert ((keypoints > 40) & (keypoints < 216)).all()
    box_side = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
    assert 256 / crop.matrix[0, 0] == pytest.approx((1 + 2 * CROP_MARGIN) * box_side, rel=1e-6)
    # The crop shows the same pixels: sample the source through the inverse transform.
    inverse = cv2.invertAffineTransform(crop.matrix)
    back = cv2.warpAffine(crop.image, inverse, portrait.shape[1::-1])
    x0, y0, x1, y1 = face.box.astype(int)
    difference = np.abs(back[y0:y1, x0:x1].astype(int) - portrait[y0:y1, x0:x1].astype(int)).mean()
    assert difference < 6


def test_crop_of_a_face_near_the_edge(analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray) -> None:
    wide = np.ascontiguousarray(portrait[:300, 120:])  # face close to the top and left edges
    found = analyzer.detect(wide)[0]
    crop = crop_around_face(wide, found, 128)
    assert crop.image.shape == (128, 128, 3)
    assert (transform_points(found.keypoints, crop.matrix) > 0).all()


@pytest.mark.parametrize("shape", [(480, 300), (300, 1600), (1500, 900)])
def test_paste_back_restores_the_photo(
    analyzer: MediaPipeFaceAnalyzer, portrait: np.ndarray, shape: tuple[int, int]
) -> None:
    height, width = shape
    photo = np.full((height, width, 3), 128, np.uint8)
    side = min(height, width, 512)
    photo[:side, :side] = cv2.resize(portrait, (side, side))
    found = analyzer.detect(photo)[0]
    crop = crop_around_face(photo, found, 256)
    frames = np.repeat(crop.image[None], 2, axis=0)
    frames[1] = 255 - frames[1]  # a changed crop must show through
    pasted = paste_back(photo, frames, crop.matrix, max_side=1024)
    out_h, out_w = pasted.shape[1:3]
    assert pasted.dtype == np.uint8 and out_h % 2 == 0 and out_w % 2 == 0
    assert max(out_h, out_w) <= 1024
    assert out_w / out_h == pytest.approx(width / height, rel=0.02)
    reference = cv2.resize(photo, (out_w, out_h), interpolation=cv2.INTER_AREA)
    psnr = cv2.PSNR(pasted[0], reference)
    assert psnr > 30
    centre = transform_points(found.keypoints[2:3], np.diag([out_w / width, out_h / height, 1.0])[:2])[0]
    cx, cy = int(centre[0]), int(centre[1])
    assert np.abs(pasted[1, cy, cx].astype(int) - (255 - reference[cy, cx].astype(int))).max() < 40
    assert np.array_equal(pasted[1, -1, -1], reference[-1, -1])  # far corner: the photo itself


def test_video_mode_tracks_a_moving_face(portrait: np.ndarray, face: Face) -> None:
    tracker = MediaPipeFaceAnalyzer(video_mode=True)
    try:
        for shift in range(0, 24, 4):
            moved = cv2.warpAffine(portrait, np.float64([[1, 0, shift], [0, 1, 0]]), portrait.shape[1::-1])
            tracked = tracker.detect(moved)
            assert len(tracked) == 1
            assert tracked[0].keypoints[2, 0] - face.keypoints[2, 0] == pytest.approx(shift, abs=2.5)
    finally:
        tracker.close()


def test_hold_last_found_fills_gaps_from_the_nearest_earlier_face() -> None:
    from models.face import hold_last_found

    assert hold_last_found([None, 2, None, None, 5, None]) == [2, 2, 2, 2, 5, 5]
    assert hold_last_found([1]) == [1]
    with pytest.raises(ValueError, match="no face found in the driving video"):
        hold_last_found([None, None])
