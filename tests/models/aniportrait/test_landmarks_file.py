"""The ``parla-landmarks`` NPZ: round trip, and every way a file can be refused."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from models.aniportrait.landmarks_file import LandmarksFormatError, read_landmarks_npz, write_landmarks_npz


def _file(num_frames: int = 3, **meta: object) -> bytes:
    target = io.BytesIO()
    points = np.random.default_rng(0).random((num_frames, 468, 2)) * 64
    write_landmarks_npz(target, points, np.ones((num_frames, 6)), fps=25.0, width=64, height=64, **meta)
    return target.getvalue()


def test_round_trip() -> None:
    points, poses, meta = read_landmarks_npz(_file(crop_matrix=[[1, 0, 0], [0, 1, 0]]))
    assert points.shape == (3, 468, 2) and points.dtype == np.float32
    assert poses.shape == (3, 6) and poses.dtype == np.float32
    assert meta == {
        "format": "parla-landmarks", "version": 1, "fps": 25.0, "num_frames": 3, "width": 64,
        "height": 64, "convention": "mediapipe-468", "crop_matrix": [[1, 0, 0], [0, 1, 0]],
    }  # fmt: skip
    assert read_landmarks_npz(io.BytesIO(_file()))[0].shape == (3, 468, 2)  # a file object too


def test_wrong_shapes_are_not_written() -> None:
    with pytest.raises(LandmarksFormatError, match="points"):
        write_landmarks_npz(io.BytesIO(), np.zeros((3, 478, 2)), np.zeros((3, 6)), fps=25, width=8, height=8)
    with pytest.raises(LandmarksFormatError, match="poses"):
        write_landmarks_npz(io.BytesIO(), np.zeros((3, 468, 2)), np.zeros((2, 6)), fps=25, width=8, height=8)


def _archive(meta: object, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    payload = {"points": np.zeros((2, 468, 2), np.float32), "poses": np.zeros((2, 6), np.float32), **arrays}
    if meta is not None:
        payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buffer, **payload)
    return buffer.getvalue()


GOOD = {"format": "parla-landmarks", "version": 1, "num_frames": 2}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an npz", "not a parla-landmarks npz"),
        (_archive(None), "lacks meta"),
        (_archive({**GOOD, "format": "parla-motion"}), "not a parla-landmarks file"),
        (_archive({**GOOD, "version": 2}), "unsupported parla-landmarks version 2"),
        (_archive({**GOOD, "num_frames": 3}), "meta says 3 frames"),
        (_archive(GOOD, poses=np.zeros((2, 5), np.float32)), "poses must be"),
        (
            _archive(GOOD, points=np.array([None, None], dtype=object)),
            "not a parla-landmarks npz",
        ),  # no pickle
    ],
)
def test_bad_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(LandmarksFormatError, match=message):
        read_landmarks_npz(data)
