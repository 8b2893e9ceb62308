"""The motion NPZ format and the kp-info sequence."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from models.motion.kp_info import MotionFormatError, MotionSequence, read_motion_npz, write_motion_npz


def _motion(frames: int = 4) -> MotionSequence:
    rng = np.random.RandomState(0)
    return MotionSequence.from_arrays(
        {
            "scale": rng.rand(frames, 1),
            "pitch": rng.randn(frames),
            "yaw": rng.randn(frames, 1),
            "roll": rng.randn(frames, 1),
            "t": rng.randn(frames, 3),
            "exp": rng.randn(frames, 63),
        }
    )


def test_round_trip_file_and_buffer(tmp_path: Path) -> None:
    motion = _motion()
    write_motion_npz(tmp_path / "m.npz", motion, fps=25, model="ditto", seed=3)
    back, meta = read_motion_npz(tmp_path / "m.npz")
    assert meta["model"] == "ditto" and meta["seed"] == 3 and meta["num_frames"] == 4 and meta["fps"] == 25.0
    for name, value in motion.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), value)
    buffer = io.BytesIO()
    write_motion_npz(buffer, motion, fps=30, model="joyvasa")
    assert read_motion_npz(buffer.getvalue())[1]["fps"] == 30.0
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:  # plain numpy readers work
        assert archive["exp"].shape == (4, 21, 3)


def test_bad_files_and_arrays() -> None:
    with pytest.raises(MotionFormatError, match="not a motion npz"):
        read_motion_npz(b"not a zip")
    buffer = io.BytesIO()
    np.savez(buffer, scale=np.zeros((1, 1), np.float32))
    with pytest.raises(MotionFormatError, match="lacks meta"):
        read_motion_npz(buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(
        buffer, meta=np.frombuffer(json.dumps({"format": "parla-motion", "version": 9}).encode(), np.uint8)
    )
    with pytest.raises(MotionFormatError, match="version 9"):
        read_motion_npz(buffer.getvalue())
    with pytest.raises(MotionFormatError, match="t has shape"):
        MotionSequence(**{**_motion().arrays(), "t": np.zeros((4, 2), np.float32)})
    with pytest.raises(MotionFormatError, match="float32"):
        MotionSequence(**{**_motion().arrays(), "t": np.zeros((4, 3), np.float64)})


def test_slice_and_concat() -> None:
    motion = _motion(6)
    parts = [motion.slice(0, 2), motion.slice(2, 6)]
    np.testing.assert_array_equal(MotionSequence.concat(parts).exp, motion.exp)
    with pytest.raises(MotionFormatError):
        MotionSequence.concat([])
