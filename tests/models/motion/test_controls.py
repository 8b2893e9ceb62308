"""Each control changes the motion in its documented direction (tiny weights), chunked == one-shot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.engine import ChunkCarry
from models.motion.generator import GAZE_X_RATIO, PortraitMotion
from models.motion.kp_info import MotionSequence
from models.motion.options import MotionOptions
from models.motion.testing import portrait_motion

FRAMES = 50
PORTRAIT: PortraitMotion = portrait_motion()


def _run(
    generator: Any, speech: np.ndarray, chunks: tuple[int, ...] = (FRAMES,), **fields: Any
) -> MotionSequence:
    options = MotionOptions(**fields)
    carry = generator.start(speech.size, FRAMES, PORTRAIT, options, seed=0)
    parts = []
    for count in chunks:
        carry = ChunkCarry.from_bytes(carry.to_bytes())
        part, carry = generator.next_frames(carry, count, lambda a, b: speech[a:b], PORTRAIT, options)
        parts.append(part)
    return MotionSequence.concat(parts)


@pytest.mark.parametrize("model", ["ditto", "joyvasa"])
def test_chunked_equals_one_shot(generator: Any, speech: np.ndarray, model: str) -> None:
    whole = _run(generator, speech, motion_model=model)
    chunked = _run(generator, speech, (7, 20, 23), motion_model=model)
    assert whole.num_frames == FRAMES
    for name, value in whole.arrays().items():
        np.testing.assert_array_equal(getattr(chunked, name), value)


@pytest.mark.parametrize("model", ["ditto", "joyvasa"])
def test_head_motion_and_distance(generator: Any, speech: np.ndarray, model: str) -> None:
    base = _run(generator, speech, motion_model=model)
    still = _run(generator, speech, motion_model=model, head_motion=0.0)
    lively = _run(generator, speech, motion_model=model, head_motion=2.0)
    for key in ("pitch", "yaw", "roll"):
        np.testing.assert_allclose(getattr(still, key), getattr(base, key)[0:1].repeat(FRAMES, 0), atol=1e-5)
        spread = np.ptp(getattr(base, key))
        assert np.ptp(getattr(lively, key)) == pytest.approx(2 * spread, rel=1e-4)
    closer = _run(generator, speech, motion_model=model, head_distance=1.5)
    np.testing.assert_allclose(closer.scale, base.scale * 1.5, rtol=1e-6)


def test_gaze_moves_the_eyeballs(generator: Any, speech: np.ndarray) -> None:
    base = _run(generator, speech)
    right = _run(generator, speech, gaze=(10.0, 0.0))
    up = _run(generator, speech, gaze=(0.0, 10.0))
    flat = lambda m: m.exp.reshape(FRAMES, 63)  # noqa: E731
    assert np.all(flat(right)[:, 33] > flat(base)[:, 33]) and np.all(flat(right)[:, 45] > flat(base)[:, 45])
    assert np.all(flat(up)[:, 34] < flat(base)[:, 34])  # the reference's sign: dy lowers exp[34]
    np.testing.assert_array_equal(flat(right)[:, :33], flat(base)[:, :33])


def test_forward_gaze_is_the_reference_fix() -> None:
    from models.motion.generator import apply_controls, eye_delta

    rng = np.random.RandomState(0)
    motion = MotionSequence.from_arrays(
        {
            "scale": np.ones((3, 1)),
            "pitch": rng.randn(3, 1) * 5,
            "yaw": rng.randn(3, 1) * 5,
            "roll": np.zeros((3, 1)),
            "t": np.zeros((3, 3)),
            "exp": np.zeros((3, 63)),
        }
    )
    first = {k: getattr(motion, k)[0:1] for k in ("pitch", "yaw", "roll", "t")}
    out = apply_controls(motion, MotionOptions(), first, (2.0, -1.0))
    dx = (motion.yaw[:, 0] - 2.0) * GAZE_X_RATIO
    dy = (motion.pitch[:, 0] + 1.0) * 0.28
    np.testing.assert_allclose(out.exp, eye_delta(motion.exp, dx, dy), rtol=1e-6)


@pytest.mark.parametrize(
    "fields",
    [
        {"emotion": "happy"},
        {"emotion_strength": 0.0},
        {"eye_open": 0.0},
        {"steps": 2},
        {"guidance_scale": 0.0},
    ],
)
def test_model_conditions_change_the_motion(
    generator: Any, speech: np.ndarray, fields: dict[str, Any]
) -> None:
    base = _run(generator, speech)
    changed = _run(generator, speech, **fields)
    assert not np.allclose(changed.exp, base.exp)


def test_seed_option(generator: Any, speech: np.ndarray) -> None:
    np.testing.assert_array_equal(_run(generator, speech, seed=0).exp, _run(generator, speech).exp)
    assert not np.allclose(_run(generator, speech, seed=1).exp, _run(generator, speech).exp)


def test_count_beyond_the_job_is_refused(generator: Any, speech: np.ndarray) -> None:
    options = MotionOptions()
    carry = generator.start(speech.size, 10, PORTRAIT, options, seed=0)
    with pytest.raises(ValueError, match="frames left"):
        generator.next_frames(carry, 11, lambda a, b: speech[a:b], PORTRAIT, options)
