"""The liveportrait motion-source adapter (with a stand-in for the renderer's MotionFrames)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from models.motion import source as source_module
from models.motion.options import MotionOptions
from models.motion.source import EYE_KEYPOINTS, LIP_KEYPOINTS, AudioMotionSource
from models.motion.testing import portrait_motion


@dataclass(frozen=True)
class _Frames:
    scale: np.ndarray
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    t: np.ndarray
    exp: np.ndarray


@pytest.fixture(autouse=True)
def _stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import models.liveportrait.motion_source  # noqa: F401
    except ImportError:
        monkeypatch.setattr(source_module, "_motion_frames_class", lambda: _Frames)


def _relative_exp(frames: Any, reference: Any, exp_s: np.ndarray) -> np.ndarray:
    # the renderer's relative rule
    return exp_s + frames.exp - reference.exp[0]


@pytest.mark.parametrize("model", ["ditto", "joyvasa"])
def test_chunks_and_reference_rules(generator: Any, speech: np.ndarray, model: str) -> None:
    portrait = portrait_motion()
    options = MotionOptions(motion_model=model, head_distance=1.25)  # type: ignore[arg-type]
    src = AudioMotionSource(generator, options, portrait, speech, 40, seed=0)
    whole, _ = src.frames(0, 40, None)
    first, carry = src.frames(0, 13, None)
    rest, _ = src.frames(13, 40, carry)
    np.testing.assert_array_equal(np.concatenate([first.exp, rest.exp]), whole.exp)
    np.testing.assert_array_equal(np.concatenate([first.yaw, rest.yaw]), whole.yaw)
    exp_s = portrait.kp_info["exp"].reshape(21, 3)
    applied = _relative_exp(whole, src.reference, exp_s)
    generated = generator.next_frames(
        generator.start(speech.size, 40, portrait, options, 0),
        40,
        lambda a, b: speech[a:b],
        portrait,
        options,
    )[0]
    lips = list(LIP_KEYPOINTS)
    if model == "ditto":
        others = [k for k in range(21) if k not in LIP_KEYPOINTS + EYE_KEYPOINTS]
        np.testing.assert_allclose(
            applied[:, others], np.broadcast_to(exp_s[others], (40, len(others), 3)), atol=1e-6
        )
        np.testing.assert_allclose(whole.scale / src.reference.scale[0], 1.25, rtol=1e-6)  # scale not driven
    else:
        np.testing.assert_allclose(applied[:, lips], generated.exp[:, lips], atol=1e-5)  # lips absolute


def test_bad_ranges(generator: Any, speech: np.ndarray) -> None:
    src = AudioMotionSource(generator, MotionOptions(), portrait_motion(), speech, 20, seed=0)
    with pytest.raises(ValueError, match="outside"):
        src.frames(0, 21, None)
    with pytest.raises(ValueError, match="needs the previous"):
        src.frames(5, 10, None)
    _, carry = src.frames(0, 5, None)
    with pytest.raises(ValueError, match="not 6"):
        src.frames(6, 10, carry)


def _fields(frames: Any) -> dict[str, np.ndarray]:
    return {k: getattr(frames, k) for k in ("scale", "pitch", "yaw", "roll", "t", "exp")}


def _chunked(src: AudioMotionSource, bounds: list[int]) -> dict[str, np.ndarray]:
    from models.engine import ChunkCarry

    parts, carry = [], None
    for a, b in itertools.pairwise(bounds):
        frames, carry = src.frames(a, b, carry)
        parts.append(_fields(frames))
        # through bytes, as the job store keeps it
        carry = ChunkCarry.from_bytes(ChunkCarry(arrays=carry).to_bytes()).arrays
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.mark.parametrize("model", ["ditto", "joyvasa"])
def test_other_fps_resamples_the_25_fps_motion(generator: Any, speech: np.ndarray, model: str) -> None:
    portrait, options = portrait_motion(), MotionOptions(motion_model=model)  # type: ignore[arg-type]
    native = AudioMotionSource(generator, options, portrait, speech, 50, seed=0)  # 2 s at 25 fps
    at25 = _fields(native.frames(0, 50, None)[0])
    double = AudioMotionSource(generator, options, portrait, speech, 100, seed=0, fps=50.0)
    assert double.resampled and double.model_frames == 50
    at50 = _fields(double.frames(0, 100, None)[0])
    for key in at25:
        np.testing.assert_array_equal(at50[key][0:100:2], at25[key])  # on the model's frames: exact
        midpoint = (at25[key][:-1] + at25[key][1:]) / 2
        np.testing.assert_allclose(at50[key][1:99:2], midpoint, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(at50[key][99], at25[key][49])  # the last model frame is held
    np.testing.assert_array_equal(double.reference.exp, native.reference.exp)  # same first frame

    thirty = AudioMotionSource(generator, options, portrait, speech, 60, seed=0, fps=30.0)
    at30 = _fields(thirty.frames(0, 60, None)[0])
    u = np.arange(60) * 25 / 30
    lo = np.floor(u).astype(int)
    w = (u - lo).astype(np.float32)
    expected = at25["yaw"][lo] + w[:, None] * (at25["yaw"][np.minimum(lo + 1, 49)] - at25["yaw"][lo])
    np.testing.assert_allclose(at30["yaw"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("fps", "frames"), [(30.0, 60), (10.0, 20), (60.0, 120)])
def test_resampled_chunks_resume_exactly(generator: Any, speech: np.ndarray, fps: float, frames: int) -> None:
    options = MotionOptions(motion_model="ditto")
    src = AudioMotionSource(generator, options, portrait_motion(), speech, frames, seed=0, fps=fps)
    whole = _fields(src.frames(0, frames, None)[0])
    for bounds in ([0, 1, 2, 7, frames // 2, frames - 1, frames], [0, frames // 3, frames]):
        chunked = _chunked(src, bounds)
        for key in whole:
            np.testing.assert_array_equal(chunked[key], whole[key])
    _, carry = src.frames(0, 7, None)
    with pytest.raises(ValueError, match="carry ends at frame 7, not 8"):
        src.frames(8, 10, carry)
    with pytest.raises(ValueError, match="fps must be > 0"):
        AudioMotionSource(generator, options, portrait_motion(), speech, frames, seed=0, fps=0.0)
