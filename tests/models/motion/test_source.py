"""The liveportrait motion-source adapter (with a stand-in for the renderer's MotionFrames)."""

from __future__ import annotations

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
